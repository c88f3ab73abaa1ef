"""Lineage on MLflow runs: which data commit, model commit, code and config a run used or made.

Tag names are the one vocabulary every step, the registry and ``main`` share. What a run records of its config
(params, tags, the config artifact) has its credentials masked (:mod:`segmodels.redaction`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping
from urllib.parse import urlsplit

import mlflow
from mlflow.tracking import MlflowClient
from mlflow.utils.uri import is_local_uri
from omegaconf import DictConfig, OmegaConf

from segmodels.config import flatten_config
from segmodels.redaction import MASK, redact_mapping, redact_text, redact_url, redact_value

log = logging.getLogger(__name__)

TAG_STEP = "segmodels.step"
TAG_GIT_COMMIT = "segmodels.git_commit"
TAG_GIT_DIRTY = "segmodels.git_dirty"
TAG_CONFIG_HASH = "segmodels.config_sha256"
TAG_LAKEFS_REPO = "lakefs.repo"
TAG_DATA_COMMIT = "lakefs.data_commit"
TAG_DATA_URI = "lakefs.data_uri"
TAG_MODEL_COMMIT = "lakefs.model_commit"
TAG_MODEL_URI = "lakefs.model_uri"
TAG_INPUT_MODEL_URI = "segmodels.model_uri"  # on an infer run: the model URI it predicted with
PREDICTIONS_MARKER_FILE = ".segmodels-predictions"  # in an infer run's output folder: the id of the run
TAG_PREDICTIONS_URI = "lakefs.predictions_uri"  # on an infer run: its committed predictions, pinned
TAG_LOGGED_MODEL_ID = "segmodels.logged_model_id"  # the train run's MLflow logged model (external: files in lakeFS)
TAG_MODEL_NAME = "segmodels.registered_model"
TAG_MODEL_VERSION = "segmodels.model_version"
TAG_TRAIN_RUN = "segmodels.train_run_id"
TAG_REPRODUCES = "segmodels.reproduces"  # on the reproduction and on the reproduce run: the train run reproduced
TAG_REPRODUCTION_RUN = "segmodels.reproduction_run_id"  # on the reproduce run: the new train run
TAG_REPRODUCED = "segmodels.reproduced"  # on both: exact | within_tolerance | differs
TAG_CACHE_KEY = "segmodels.cache_key"  # on a step run main started or reused: its inputs' digest
TAG_REUSED_RUN = "segmodels.reused_run_id"  # on a child run main reused: the run that did the work
TAG_WORK_STARTED = "segmodels.work_started_ms"  # when the step's own code started (epoch ms)
TAG_REGISTER_OUTCOME = "segmodels.register_outcome"  # on a register run: champion | challenger | unchanged
TAG_RESUMED_AFTER_EPOCH = "segmodels.resumed_after_epoch"  # on a train run that resumed a killed step's checkpoint

TRACKING_STORE_KEY = "mlflow_tracking_store"  # in the metadata of every lakeFS commit a step makes
BEST_EPOCH = "best_epoch"  # train run metric: the best epoch, counted from 1 as the training log counts
MODEL_TRAIN_METRICS = ("train_loss", "train_miou")  # with every val_* metric: what describes a model at an epoch

LINEAGE_TAGS = (TAG_LAKEFS_REPO, TAG_DATA_COMMIT, TAG_DATA_URI, TAG_MODEL_COMMIT, TAG_MODEL_URI, TAG_GIT_COMMIT)


def git_commit(path: Path | str = ".") -> tuple[str | None, bool]:
    """The git commit of the code at ``path`` and whether the work tree has uncommitted changes."""

    def git(*args):
        return subprocess.run(["git", *args], cwd=path, capture_output=True, text=True, check=False)

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return None, False
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return head.stdout.strip(), bool(dirty.stdout.strip())


def recorded_config(cfg: DictConfig) -> DictConfig:
    """The resolved config as a run records it: every string value with its credentials masked
    (``source=http://user:pw@host/d.zip`` is recorded as ``http://***@host/d.zip``)."""
    return OmegaConf.create(redact_value(OmegaConf.to_container(cfg, resolve=True)))


def config_sha256(cfg: DictConfig) -> str:
    """A stable hash of the resolved config as recorded (key order independent; credentials masked, so that the
    hash neither depends on nor reveals them)."""
    payload = json.dumps(redact_value(OmegaConf.to_container(cfg, resolve=True)), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


@contextmanager
def step_run(step: str, cfg: DictConfig, code_dir: Path | str = ".") -> Iterator[mlflow.ActiveRun]:
    """Open (or join, under ``mlflow run``) the step's MLflow run, recording the step name, the code's
    git commit, the resolved config (as an artifact and its hash) and its set values as params, all with
    credentials masked (:mod:`segmodels.redaction`)."""
    started_ms = int(time.time() * 1000)
    with mlflow.start_run() as run:
        commit, dirty = git_commit(code_dir)
        tags = {
            TAG_STEP: step,
            TAG_CONFIG_HASH: config_sha256(cfg),
            TAG_GIT_DIRTY: str(dirty).lower(),
            TAG_WORK_STARTED: str(started_ms),
        }
        if commit:
            tags[TAG_GIT_COMMIT] = commit
        set_tags(tags)
        mlflow.log_text(redact_text(OmegaConf.to_yaml(recorded_config(cfg))), f"config/{step}.yaml")
        log_new_params({key: value for key, value in flatten_config(cfg).items() if value != ""})  # unset: no param
        yield run


def set_tags(tags: Mapping[str, str]) -> None:
    """Set tags on the active run, credentials masked."""
    mlflow.set_tags(redact_mapping(tags))


def log_new_params(params: Mapping[str, str]) -> None:
    """Log params the active run does not hold yet (MLflow params are immutable; ``mlflow run``
    already logged the entry point's own parameters), credentials masked.

    Tags that ``mlflow run`` set with credentials in them (a git URL's token in ``mlflow.source.name``) are
    overwritten masked; a parameter it logged with credentials cannot be (MLflow params are immutable): the
    step warns, naming the parameter."""
    run = mlflow.active_run()
    data = MlflowClient().get_run(run.info.run_id).data
    leaked_tags = {key: redact_text(value) for key, value in data.tags.items() if redact_text(value) != value}
    if leaked_tags:
        mlflow.set_tags(leaked_tags)
    for key, value in data.params.items():
        if redact_text(value) != value:
            log.warning(
                "parameter %s was recorded by `mlflow run` as given, with credentials in it (MLflow "
                "parameters cannot be changed): pass credentials through the environment instead, "
                "e.g. -P %s='${oc.env:MY_SOURCE_URL}'",
                key,
                key,
            )
    fresh = {key: redact_text(value) for key, value in params.items() if key not in data.params}
    for start in range(0, len(fresh), 100):
        mlflow.log_params(dict(list(fresh.items())[start : start + 100]))


def tracking_store() -> str:
    """The MLflow tracking store in use, as lakeFS commit metadata records it: a sqlite or file store as an
    absolute path (a relative one names a different store in every folder), any other URI without its user
    info (credentials come from the environment) and with secret query parameters masked."""
    uri = mlflow.get_tracking_uri()
    parts = urlsplit(uri)
    if parts.scheme == "sqlite" and parts.path not in ("", "/", "/:memory:"):
        database = uri[len("sqlite:///") :].split("?")[0]
        return f"sqlite:///{Path(database).resolve()}"
    if is_local_uri(uri, is_tracking_or_registry_uri=True):  # a plain path or a file: URI
        return Path(parts.path if parts.scheme else uri).resolve().as_uri()
    return redact_url(uri).replace(f"://{MASK}@", "://", 1)


def best_metrics(epoch_metrics: Mapping[str, float], best_epoch: int) -> dict[str, float]:
    """The ``best_*`` metrics of a train run: :data:`BEST_EPOCH` (1-based) and the values of the best epoch
    (0-based ``best_epoch``) that describe the model (``val_*``, :data:`MODEL_TRAIN_METRICS`), not the learning
    rate, throughput or times."""
    values = {
        f"best_{key}": float(value)
        for key, value in epoch_metrics.items()
        if key.startswith("val_") or key in MODEL_TRAIN_METRICS
    }
    return {BEST_EPOCH: float(best_epoch + 1), **values}


def is_best_metric(key: str) -> bool:
    """Whether a run metric is one of :func:`best_metrics` (older runs also logged ``best_lr`` and the like)."""
    return key == BEST_EPOCH or key.startswith("best_val_") or key in {f"best_{name}" for name in MODEL_TRAIN_METRICS}


def short_commit(commit: str | None) -> str:
    """The first 12 characters of a commit id, as tables and messages show it."""
    return commit[:12] if commit else "(none)"


def run_tags(run_id: str) -> dict[str, str]:
    """The tags of a run."""
    return MlflowClient().get_run(run_id).data.tags
