"""The ``main`` step: run ingest, train, register and infer as child MLflow runs of one parent run,
handing each step the lakeFS refs and run ids the previous one published."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import mlflow
from mlflow.entities import Run
from mlflow.exceptions import ExecutionException, MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from segmodels.config import flatten_config, load_config
from segmodels.pipeline import StepError
from segmodels.pipeline.cache import (
    cache_key,
    code_version,
    find_reusable,
    forced_steps,
    record_reuse,
    source_fingerprint,
)
from segmodels.pipeline.params import CHAIN, LAUNCHER_PARAMS, step_overrides
from segmodels.pipeline.register import CHALLENGER, CHAMPION, TAG_MODEL_ALIAS, TAG_REGISTER_REASON
from segmodels.pipeline.report import log_report
from segmodels.redaction import redact_text
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
    if venv_config.is_file() and any(
        line.split("=")[0].strip() == "uv" for line in venv_config.read_text().splitlines()
    ):
        return "uv"
    return "virtualenv"


def check_env_manager_tools(env_manager: str) -> None:
    """Refuse (StepError, one line) an env manager whose tools MLflow 3 needs to make the steps' environments are
    missing, before anything runs: uv (``uv venv``, ``uv pip``); virtualenv, pyenv (it installs conda.yaml's
    Python, then ``python -m venv``); conda, conda (``$MLFLOW_CONDA_HOME/bin``, ``$CONDA_EXE``'s folder or PATH,
    and ``$MLFLOW_CONDA_CREATE_ENV_CMD`` when set)."""
    import shutil

    from mlflow.environment_variables import MLFLOW_CONDA_CREATE_ENV_CMD
    from mlflow.utils.conda import get_conda_bin_executable

    if env_manager == "uv":
        needed = {"uv": (shutil.which("uv"), "MLflow makes each step's environment with uv venv and uv pip")}
    elif env_manager == "virtualenv":
        found = shutil.which("pyenv") or shutil.which("/databricks/.pyenv/bin/pyenv")  # as MLflow looks
        needed = {"pyenv": (found, "MLflow installs conda.yaml's Python with pyenv, then makes a venv of it")}
    elif env_manager == "conda":
        tools = dict.fromkeys(get_conda_bin_executable(name) for name in ("conda", MLFLOW_CONDA_CREATE_ENV_CMD.get()))
        needed = {
            tool: (
                shutil.which(tool),
                "MLflow makes each step's environment from conda.yaml with it; "
                "MLFLOW_CONDA_HOME or CONDA_EXE name another conda",
            )
            for tool in tools
        }
    else:
        return
    for tool, (found, why) in needed.items():
        if not found:
            where = "on PATH" if os.sep not in tool else "at that path"
            raise StepError(
                f"env_manager={env_manager} needs {tool} {where} ({why}); install it, or pass "
                f"env_manager=local to run the steps in this environment"
            )


def export_lakefs_settings() -> None:
    """Make every child step talk to the same lakeFS: the configured one, else the embedded
    server (started once here) exported through lakectl's environment variables."""
    if LakeFSSettings.from_environment() is not None:
        return
    settings = ensure_embedded_server()
    os.environ.update(
        {
            "LAKECTL_SERVER_ENDPOINT_URL": settings.endpoint,
            "LAKECTL_CREDENTIALS_ACCESS_KEY_ID": settings.access_key_id,
            "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY": settings.secret_access_key,
        }
    )


@dataclass
class StepOutcome:
    """What one step of the chain did, for the run report."""

    step: str
    run: Run
    reused_from: str | None
    seconds: float


class Chain:
    """Runs entry points of one project as children of the active run, reusing a step's newest finished run when
    its cache key (:mod:`segmodels.pipeline.cache`) matches and the step is not forced."""

    def __init__(self, project_dir: Path, env_manager: str, parent: Run, forced: set[str], reuse_dirty: bool):
        self.project_dir = project_dir
        self.env_manager = env_manager
        self.parent = parent
        self.forced = forced
        self.client = MlflowClient()
        self.code = code_version(project_dir)
        self.no_reuse = self.code.reuse_blocker(reuse_dirty)
        if self.no_reuse:
            log.info("no step is reused: %s", self.no_reuse)
        self.outcomes: list[StepOutcome] = []

    def key(self, entry_point: str, params: Mapping[str, str]) -> str:
        """The cache key of running ``entry_point`` with ``params`` now."""
        step_params = {k: v for k, v in params.items() if k not in LAUNCHER_PARAMS.get(entry_point, ())}
        argv = [arg for name, value in step_params.items() for arg in (f"--{name}", value)]
        cfg = load_config(entry_point, step_overrides(entry_point, argv))
        inputs = {}
        if entry_point == "ingest":
            inputs["source"] = source_fingerprint(str(cfg.source)) or f"unknown:{uuid.uuid4().hex}"
        return cache_key(entry_point, params, lineage.config_sha256(cfg), self.code, inputs)

    def reusable(self, entry_point: str, key: str) -> Run | None:
        """The run to reuse for ``key``, when the step may be reused and that run's outputs still stand."""
        if self.no_reuse or entry_point in self.forced:
            return None
        found = find_reusable(self.client, self.parent.info.experiment_id, key)
        if found is None or not outputs_still_stand(self.client, entry_point, found):
            return None
        return found

    def run_step(self, entry_point: str, params: Mapping[str, str]) -> dict[str, str]:
        """Run (or reuse) ``entry_point`` and return its run's tags (where steps publish outputs)."""
        started = time.monotonic()
        key = self.key(entry_point, params)
        found = self.reusable(entry_point, key)
        if found is not None:
            run = record_reuse(self.client, self.parent.info.run_id, self.parent.info.experiment_id, found, key)
            reused_from = run.data.tags[lineage.TAG_REUSED_RUN]
            log.info("%s: reusing run %s (inputs, code and config unchanged)", entry_point, reused_from)
        else:
            log.info("running %s with %s", entry_point, params)
            try:
                submitted = mlflow.projects.run(
                    str(self.project_dir),
                    entry_point=entry_point,
                    parameters=secrets_through_environment(params),
                    env_manager=self.env_manager,
                    synchronous=True,
                )
            except ExecutionException as exc:
                raise StepError(f"step {entry_point} failed: {' '.join(str(exc).split())}") from None
            self.client.set_tag(submitted.run_id, lineage.TAG_CACHE_KEY, key)
            run, reused_from = self.client.get_run(submitted.run_id), None
        self.outcomes.append(StepOutcome(entry_point, run, reused_from, time.monotonic() - started))
        summarise_on_parent(entry_point, run)
        return {**run.data.tags, "run_id": reused_from or run.info.run_id}  # the run that did the work


def summarise_on_parent(step: str, run: Run) -> None:
    """Put on the parent (active) run what ``step`` decided, as soon as it is known, so chains sort and compare
    in the MLflow UI: params ``data_commit`` (ingest), ``model_name``, ``model_version``, ``model_alias``
    (register); metrics ``best_val_miou`` (train) and ``<split>_miou`` (infer; ``test_miou`` by default)."""
    tags, metrics = run.data.tags, run.data.metrics
    if step == "ingest":
        mlflow.log_param("data_commit", tags[lineage.TAG_DATA_COMMIT])
    elif step == "train" and "best_val_miou" in metrics:
        mlflow.log_metric("best_val_miou", metrics["best_val_miou"])
    elif step == "register":
        mlflow.log_params(
            {
                "model_name": tags[lineage.TAG_MODEL_NAME],
                "model_version": tags[lineage.TAG_MODEL_VERSION],
                **({"model_alias": tags[TAG_MODEL_ALIAS]} if TAG_MODEL_ALIAS in tags else {}),
            }
        )
    elif step == "infer" and "miou" in metrics:
        mlflow.log_metric(f"{run.data.params.get('split', 'test')}_miou", metrics["miou"])


def register_decision(tags: Mapping[str, str]) -> str:
    """What register made of the model, from its run's tags: ``model models:/<name>/<v> became @champion (why)``,
    ``... is @challenger (why); -P register.force=true promotes it`` or ``... is still @champion (why)``; a reused
    register run says which run decided."""
    model_uri = f"models:/{tags[lineage.TAG_MODEL_NAME]}/{tags[lineage.TAG_MODEL_VERSION]}"
    alias, why = tags.get(TAG_MODEL_ALIAS), tags.get(TAG_REGISTER_REASON)
    outcome, reused_from = tags.get(lineage.TAG_REGISTER_OUTCOME), tags.get(lineage.TAG_REUSED_RUN)
    if not alias:  # a register run from before these tags
        return f"model {model_uri} ({outcome or 'registered'})"
    verb = (
        "became"
        if outcome == CHAMPION and not reused_from
        else "is"
        if outcome in (CHAMPION, CHALLENGER)
        else "is still"
    )
    decided = f"register run {reused_from[:8]} decided: " if reused_from else ""
    hint = "; -P register.force=true promotes it" if outcome == CHALLENGER else ""
    return f"model {model_uri} {verb} @{alias} ({decided}{why}){hint}"


def secrets_through_environment(params: Mapping[str, str]) -> dict[str, str]:
    """``params`` with each value that holds a credential (a URL's user info, a signed query: see
    :mod:`segmodels.redaction`) moved into an environment variable the child inherits and replaced by its Hydra
    reference ``${oc.env:SEGMODELS_PARAM_<NAME>}``: MLflow records a child's parameters as given, before the
    step's own redaction can run."""
    passed = {}
    for name, value in params.items():
        if redact_text(value) == value:
            passed[name] = value
            continue
        variable = "SEGMODELS_PARAM_" + re.sub(r"\W", "_", name).upper()
        os.environ[variable] = value
        passed[name] = f"${{oc.env:{variable}}}"
    return passed


def outputs_still_stand(client: MlflowClient, entry_point: str, run: Run) -> bool:
    """Whether what a finished run made is still there: register's model version, infer's output folder."""
    tags = run.data.tags
    if entry_point == "register":
        try:
            client.get_model_version(tags[lineage.TAG_MODEL_NAME], tags[lineage.TAG_MODEL_VERSION])
        except (KeyError, MlflowException):
            return False
    if entry_point == "infer":
        marker = Path(tags.get("segmodels.output_dir", "")) / lineage.PREDICTIONS_MARKER_FILE
        origin = tags.get(lineage.TAG_REUSED_RUN, run.info.run_id)
        return marker.is_file() and marker.read_text().strip() == origin
    return True


def run(cfg: DictConfig) -> None:
    """Run the whole chain under one parent run, reusing unchanged steps; log the run report on the parent."""
    env_manager = detect_env_manager() if cfg.env_manager == "auto" else cfg.env_manager
    if env_manager not in ENV_MANAGERS:
        raise StepError(f"env_manager={cfg.env_manager!r}: expected auto or one of {', '.join(ENV_MANAGERS)}")
    check_env_manager_tools(env_manager)
    forced = forced_steps(cfg.force, CHAIN)
    export_lakefs_settings()
    given = {step: flatten_config(cfg.steps[step]) for step in CHAIN}
    with lineage.step_run("main", cfg) as parent:
        chain = Chain(Path.cwd(), env_manager, parent, forced, cfg.reuse_dirty)
        try:
            ingested = chain.run_step("ingest", given["ingest"])
            data_uri = ingested[lineage.TAG_DATA_URI]
            trained = chain.run_step("train", {**given["train"], "data_ref": data_uri})
            registered = chain.run_step("register", {**given["register"], "run_id": trained["run_id"]})
            model_uri = f"models:/{registered[lineage.TAG_MODEL_NAME]}/{registered[lineage.TAG_MODEL_VERSION]}"
            inferred = chain.run_step("infer", {**given["infer"], "model_uri": model_uri, "data_ref": data_uri})
        finally:
            log_report(chain.outcomes, parent)
        mlflow.set_tags(
            {
                lineage.TAG_DATA_URI: data_uri,
                lineage.TAG_MODEL_URI: trained[lineage.TAG_MODEL_URI],
                lineage.TAG_TRAIN_RUN: trained["run_id"],
                lineage.TAG_MODEL_NAME: registered[lineage.TAG_MODEL_NAME],
                lineage.TAG_MODEL_VERSION: registered[lineage.TAG_MODEL_VERSION],
            }
        )
        reused = [outcome.step for outcome in chain.outcomes if outcome.reused_from]
        log.info(
            "chain done: data %s, predictions in %s; reused: %s",
            data_uri,
            inferred.get("segmodels.output_dir"),
            ", ".join(reused) or "none",
        )
        log.info("%s", register_decision(registered))
