"""Lineage on MLflow runs: which data commit, model commit, code and config a run used or made.

Tag names are the one vocabulary every step, the registry and ``main`` share.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import mlflow
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from segmodels.config import flatten_config

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


def config_sha256(cfg: DictConfig) -> str:
    """A stable hash of the resolved config (key order independent)."""
    payload = json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


@contextmanager
def step_run(step: str, cfg: DictConfig, code_dir: Path | str = ".") -> Iterator[mlflow.ActiveRun]:
    """Open (or join, under ``mlflow run``) the step's MLflow run, recording the step name, the code's
    git commit, the resolved config (as an artifact and its hash) and its set values as params."""
    started_ms = int(time.time() * 1000)
    with mlflow.start_run() as run:
        commit, dirty = git_commit(code_dir)
        tags = {TAG_STEP: step, TAG_CONFIG_HASH: config_sha256(cfg), TAG_GIT_DIRTY: str(dirty).lower(),
                TAG_WORK_STARTED: str(started_ms)}
        if commit:
            tags[TAG_GIT_COMMIT] = commit
        mlflow.set_tags(tags)
        mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), f"config/{step}.yaml")
        log_new_params({key: value for key, value in flatten_config(cfg).items() if value != ""})  # unset: no param
        yield run


def log_new_params(params: Mapping[str, str]) -> None:
    """Log params the active run does not hold yet (MLflow params are immutable; ``mlflow run``
    already logged the entry point's own parameters)."""
    run = mlflow.active_run()
    existing = MlflowClient().get_run(run.info.run_id).data.params
    fresh = {key: value for key, value in params.items() if key not in existing}
    for start in range(0, len(fresh), 100):
        mlflow.log_params(dict(list(fresh.items())[start:start + 100]))


def short_commit(commit: str | None) -> str:
    """The first 12 characters of a commit id, as tables and messages show it."""
    return commit[:12] if commit else "(none)"


def run_tags(run_id: str) -> dict[str, str]:
    """The tags of a run."""
    return MlflowClient().get_run(run_id).data.tags
