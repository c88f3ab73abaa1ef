"""The ``train`` step: data pinned to a lakeFS commit in; out, the complete MLflow pyfunc model committed to
lakeFS once, and on the run an external logged model and tags pointing at that commit.

The step trains in ``<segmodels home>/train-work/<key>``, keyed by the data commit, the resolved config and the
code's commit: a step killed mid-run leaves its last checkpoint there, and a rerun with the same inputs resumes
from it (``trainer.resume=auto``); the folder is removed once the model is committed."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import mlflow
from omegaconf import DictConfig

from segmodels.config import ConfigError
from segmodels.data import load_dataset_info
from segmodels.dataset_store import using_dataset
from segmodels.home import segmodels_home
from segmodels.inference.pyfunc import save_pyfunc_model
from segmodels.model_store import publish_model
from segmodels.pipeline.plan import PLAN_ARTIFACT, plan_document
from segmodels.pipeline.published_checkpoint import (
    PublishCheckpoint,
    delete_published_checkpoint,
    use_published_checkpoint,
)
from segmodels.pipeline.refs import pin_data_ref
from segmodels.tracking import lineage
from segmodels.tracking.dataset import log_dataset_input
from segmodels.tracking.models import record_logged_model
from segmodels.tracking.nodes import NodeRecord
from segmodels.tracking.stores import warn_if_other_store
from segmodels.tracking.training import MLflowTrainingLogger, enable_system_metrics
from segmodels.training import train
from segmodels.training.distributed import is_main_process, is_node_leader, spans_nodes
from segmodels.versioning import LakeFS, LakeFSUri, connect
from segmodels.versioning.stream import StreamReader, streamed_dataset

log = logging.getLogger(__name__)


WORK_ROOT = "train-work"  # in the segmodels home: one resumable work folder per (data, config, code)
LOCK_FILE = ".lock"


def work_key(data_commit: str, cfg: DictConfig, code_commit: str | None) -> str:
    """The work folder's name: equal for the same data commit, resolved config and code commit."""
    payload = json.dumps(
        {"data": data_commit, "config": lineage.config_sha256(cfg), "code": code_commit}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


@contextmanager
def resumable_work_dir(key: str, owner: bool = True) -> Iterator[Path]:
    """``<home>/train-work/<key>``, locked for this step: it survives a killed step (a rerun resumes from its
    checkpoint) and is removed when the block succeeds. A folder another live step holds gives way to a fresh
    temporary one (no resume). ``owner=False`` (a machine's other DDP processes) uses it without lock or removal."""
    folder = segmodels_home() / WORK_ROOT / key
    folder.mkdir(parents=True, exist_ok=True)
    if not owner:
        yield folder
        return
    with open(folder / LOCK_FILE, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("%s is in use by another train step with the same inputs: training in a fresh folder", folder)
            with tempfile.TemporaryDirectory(prefix="segmodels-train-") as work:
                yield Path(work)
            return
        yield folder
        shutil.rmtree(folder, ignore_errors=True)


def run(cfg: DictConfig) -> str | None:
    """Train on ``cfg.data_ref`` and return the MLflow run id. Under torchrun (DDP) every process trains;
    only rank 0 records the run and publishes the model."""
    lakefs = connect()
    data = pin_data_ref(lakefs, cfg.data_ref, cfg.lakefs.repo, cfg.lakefs.data_branch, cfg.lakefs.data_prefix)
    if is_main_process():
        warn_if_other_store(lakefs, data.repo, cfg.lakefs.model_branch, cfg.lakefs.data_branch)
    with dataset_access(cfg, lakefs, data) as (data_root, files):
        return train_on(cfg, lakefs, data, data_root, files)


@contextmanager
def dataset_access(cfg: DictConfig, lakefs: LakeFS, data: LakeFSUri) -> Iterator[tuple[Path, StreamReader | None]]:
    """``data.access``: ``download`` yields the data set's local folder (locked: the cache never evicts it while
    training reads) and no reader; ``stream`` a folder of its ``dataset.yaml`` and manifest and the reader of the rest
    through the bounded cache."""
    if cfg.data.access == "download":
        with using_dataset(lakefs, data) as data_root:
            yield data_root, None
    elif cfg.data.access == "stream":
        with streamed_dataset(lakefs, data) as streamed:
            yield streamed
    else:
        raise ConfigError(f"data.access={cfg.data.access!r}: expected download or stream")


def train_on(
    cfg: DictConfig, lakefs: LakeFS, data: LakeFSUri, data_root: Path, files: StreamReader | None = None
) -> str | None:
    """:func:`run` once the data set's ``dataset.yaml`` is local at ``data_root`` (and its samples there, or read
    through ``files``)."""
    commit, _ = lineage.git_commit()
    key = work_key(data.ref, cfg, commit)
    checkpoints = (lakefs, data.repo, cfg.lakefs.checkpoint_branch, key)  # several machines: published in lakeFS
    node_callbacks = [NodeRecord(data.ref)] if spans_nodes() else []
    if not is_main_process():
        with resumable_work_dir(key, owner=is_node_leader()) as work:
            if spans_nodes():
                use_published_checkpoint(*checkpoints, work)
            train(cfg, data_root, work, callbacks=node_callbacks, files=files)
        return None
    log.info("training on %s", data)
    enable_system_metrics()
    with lineage.step_run("train", cfg) as active, resumable_work_dir(key) as work:
        run_id = active.info.run_id
        mlflow.log_param("data_commit", data.ref)
        mlflow.set_tags(
            {lineage.TAG_LAKEFS_REPO: data.repo, lineage.TAG_DATA_COMMIT: data.ref, lineage.TAG_DATA_URI: str(data)}
        )
        log_dataset_input(str(data), data.ref, load_dataset_info(data_root), context="training")
        if cfg.plan.rules:
            mlflow.log_text(plan_document(cfg), PLAN_ARTIFACT)
        if spans_nodes():
            use_published_checkpoint(*checkpoints, work)
            node_callbacks.append(PublishCheckpoint(*checkpoints))
        result = train(cfg, data_root, work, callbacks=[*node_callbacks, MLflowTrainingLogger()], files=files)

        shutil.rmtree(work / "mlflow-model", ignore_errors=True)  # half-saved by a step killed while saving
        model_uri = publish_model(
            lakefs,
            save_pyfunc_model(result.package_dir, work / "mlflow-model"),
            data.repo,
            cfg.lakefs.model_branch,
            cfg.lakefs.model_prefix,
            run_id,
            metadata={
                "data_commit": data.ref,
                "data_uri": str(data),
                "git_commit": commit or "unknown",
                "best_epoch": str(result.best_epoch + 1),  # counted from 1, as the log counts
                lineage.TRACKING_STORE_KEY: lineage.tracking_store(),
            },
            source_ref=data.ref,
        )
        if spans_nodes():
            delete_published_checkpoint(*checkpoints)
        logged = record_logged_model(run_id, model_uri)
        mlflow.set_tags(
            {
                lineage.TAG_MODEL_COMMIT: model_uri.ref,
                lineage.TAG_MODEL_URI: str(model_uri),
                lineage.TAG_LOGGED_MODEL_ID: logged.model_id,
            }
        )
        log.info("MLflow model committed once, to lakeFS at %s (logged model %s)", model_uri, logged.model_id)
        return run_id
