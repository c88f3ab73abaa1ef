"""The ``train`` step: data pinned to a lakeFS commit in, a model package committed to lakeFS and
logged as an MLflow pyfunc model out, with the lineage of both on the run."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import mlflow
from omegaconf import DictConfig

from segmodels.data import load_dataset_info
from segmodels.dataset_store import fetch_dataset
from segmodels.inference.pyfunc import log_pyfunc_model
from segmodels.model_store import publish_model
from segmodels.pipeline.refs import pin_data_ref
from segmodels.tracking import lineage
from segmodels.tracking.dataset import log_dataset_input
from segmodels.tracking.training import MLflowTrainingLogger, enable_system_metrics
from segmodels.training import train
from segmodels.training.distributed import is_main_process
from segmodels.versioning import connect

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> str | None:
    """Train on ``cfg.data_ref`` and return the MLflow run id. Under torchrun (DDP) every process trains;
    only rank 0 records the run and publishes the model."""
    lakefs = connect()
    data = pin_data_ref(lakefs, cfg.data_ref, cfg.lakefs.repo, cfg.lakefs.data_branch, cfg.lakefs.data_prefix)
    data_root = fetch_dataset(lakefs, data)
    if not is_main_process():
        with tempfile.TemporaryDirectory(prefix="segmodels-train-") as work:
            train(cfg, data_root, Path(work))
        return None
    log.info("training on %s", data)
    enable_system_metrics()
    with lineage.step_run("train", cfg) as active, tempfile.TemporaryDirectory(prefix="segmodels-train-") as work:
        run_id = active.info.run_id
        mlflow.log_param("data_commit", data.ref)
        mlflow.set_tags({lineage.TAG_LAKEFS_REPO: data.repo, lineage.TAG_DATA_COMMIT: data.ref,
                         lineage.TAG_DATA_URI: str(data)})
        log_dataset_input(str(data), data.ref, load_dataset_info(data_root), context="training")
        result = train(cfg, data_root, Path(work), callbacks=[MLflowTrainingLogger()])

        commit, _ = lineage.git_commit()
        model_uri = publish_model(
            lakefs, result.package_dir, data.repo, cfg.lakefs.model_branch, cfg.lakefs.model_prefix, run_id,
            metadata={"data_commit": data.ref, "data_uri": str(data), "git_commit": commit or "unknown",
                      "best_epoch": str(result.best_epoch)},
            source_ref=data.ref,
        )
        model_info = log_pyfunc_model(result.package_dir, name="model")
        mlflow.set_tags({lineage.TAG_MODEL_COMMIT: model_uri.ref, lineage.TAG_MODEL_URI: str(model_uri),
                         lineage.TAG_MLFLOW_MODEL_URI: model_info.model_uri})
        log.info("model committed at %s; MLflow model %s", model_uri, model_info.model_uri)
        return run_id
