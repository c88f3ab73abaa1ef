"""The ``main`` step: run ingest, train, register and infer as child MLflow runs of one parent run,
handing each step the lakeFS refs and run ids the previous one published."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Mapping

import mlflow
from mlflow.exceptions import ExecutionException
from omegaconf import DictConfig

from segmodels.config import flatten_config
from segmodels.pipeline import StepError
from segmodels.pipeline.params import CHAIN
from segmodels.tracking import lineage
from segmodels.versioning import LakeFSSettings, ensure_embedded_server

log = logging.getLogger(__name__)

ENV_MANAGERS = ("local", "virtualenv", "uv", "conda")


def detect_env_manager() -> str:
    """The MLflow env manager this process runs under: MLflow names the environments it makes
    ``mlflow-<hash>`` (conda envs, and virtualenv/uv envs under ``MLFLOW_ENV_ROOT``); uv records
    itself in the environment's ``pyvenv.cfg``."""
    prefix = Path(sys.prefix)
    if not prefix.name.startswith("mlflow-"):
        return "local"
    if os.environ.get("CONDA_PREFIX") == sys.prefix:
        return "conda"
    venv_config = prefix / "pyvenv.cfg"
    if venv_config.is_file() and any(line.split("=")[0].strip() == "uv"
                                     for line in venv_config.read_text().splitlines()):
        return "uv"
    return "virtualenv"


def export_lakefs_settings() -> None:
    """Make every child step talk to the same lakeFS: the configured one, else the embedded
    server (started once here) exported through lakectl's environment variables."""
    if LakeFSSettings.from_environment() is not None:
        return
    settings = ensure_embedded_server()
    os.environ.update({
        "LAKECTL_SERVER_ENDPOINT_URL": settings.endpoint,
        "LAKECTL_CREDENTIALS_ACCESS_KEY_ID": settings.access_key_id,
        "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY": settings.secret_access_key,
    })


class Chain:
    """Runs entry points of one project as children of the active run."""

    def __init__(self, project_dir: Path, env_manager: str):
        self.project_dir = project_dir
        self.env_manager = env_manager

    def run_step(self, entry_point: str, params: Mapping[str, str]) -> dict[str, str]:
        """Run ``entry_point`` to completion and return its run's tags (where steps publish outputs)."""
        log.info("running %s with %s", entry_point, params)
        try:
            submitted = mlflow.projects.run(str(self.project_dir), entry_point=entry_point, parameters=params,
                                            env_manager=self.env_manager, synchronous=True)
        except ExecutionException as exc:
            raise StepError(f"step {entry_point} failed: {' '.join(str(exc).split())}") from None
        tags = lineage.run_tags(submitted.run_id)
        tags["run_id"] = submitted.run_id
        return tags


def run(cfg: DictConfig) -> None:
    """Run the whole chain under one parent run."""
    env_manager = detect_env_manager() if cfg.env_manager == "auto" else cfg.env_manager
    if env_manager not in ENV_MANAGERS:
        raise StepError(f"env_manager={cfg.env_manager!r}: expected auto or one of {', '.join(ENV_MANAGERS)}")
    export_lakefs_settings()
    chain = Chain(Path.cwd(), env_manager)
    given = {step: flatten_config(cfg.steps[step]) for step in CHAIN}
    with lineage.step_run("main", cfg):
        ingested = chain.run_step("ingest", given["ingest"])
        data_uri = ingested[lineage.TAG_DATA_URI]
        trained = chain.run_step("train", {**given["train"], "data_ref": data_uri})
        registered = chain.run_step("register", {**given["register"], "run_id": trained["run_id"]})
        model_uri = f"models:/{registered[lineage.TAG_MODEL_NAME]}/{registered[lineage.TAG_MODEL_VERSION]}"
        inferred = chain.run_step("infer", {**given["infer"], "model_uri": model_uri, "data_ref": data_uri})
        mlflow.set_tags({lineage.TAG_DATA_URI: data_uri, lineage.TAG_MODEL_URI: trained[lineage.TAG_MODEL_URI],
                         lineage.TAG_TRAIN_RUN: trained["run_id"],
                         lineage.TAG_MODEL_NAME: registered[lineage.TAG_MODEL_NAME],
                         lineage.TAG_MODEL_VERSION: registered[lineage.TAG_MODEL_VERSION]})
        log.info("chain done: data %s, model %s version %s, predictions in %s", data_uri, model_uri,
                 registered[lineage.TAG_MODEL_VERSION], inferred.get("segmodels.output_dir"))
