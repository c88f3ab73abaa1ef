"""The ``train`` step: data pinned to a lakeFS commit in; out, the complete MLflow pyfunc model committed to
lakeFS once, and on the run an external logged model and tags pointing at that commit."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import mlflow
from omegaconf import DictConfig

from segmodels.data import load_dataset_info
from segmodels.dataset_store import fetch_dataset
from segmodels.inference.pyfunc import save_pyfunc_model
from segmodels.model_store import publish_model
from segmodels.pipeline.refs import pin_data_ref
from segmodels.tracking import lineage
from segmodels.tracking.dataset import log_dataset_input
from segmodels.tracking.models import record_logged_model
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
            lakefs, save_pyfunc_model(result.package_dir, Path(work) / "mlflow-model"), data.repo,
            cfg.lakefs.model_branch, cfg.lakefs.model_prefix, run_id,
            metadata={"data_commit": data.ref, "data_uri": str(data), "git_commit": commit or "unknown",
                      "best_epoch": str(result.best_epoch)},
            source_ref=data.ref,
        )
        logged = record_logged_model(run_id, model_uri)
        mlflow.set_tags({lineage.TAG_MODEL_COMMIT: model_uri.ref, lineage.TAG_MODEL_URI: str(model_uri),
                         lineage.TAG_LOGGED_MODEL_ID: logged.model_id})
        log.info("MLflow model committed once, to lakeFS at %s (logged model %s)", model_uri, logged.model_id)
        return run_id
