"""The ``register`` step: gate a train run's model on a metric, register it, and tag the version with
the lakeFS data and model commits it came from.

Gate 1: the metric must pass ``threshold``, or nothing is registered (StepError). Gate 2: the model takes
``@alias`` (champion) only when there is none yet, or it beats the champion's metric on the same lakeFS
data commit, or ``force=true``; the version that held ``@alias`` then gets ``@previous_alias``. Otherwise
it is registered as ``@challenger_alias`` and the champion stays."""

from __future__ import annotations

import logging

import mlflow
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from segmodels.pipeline import StepError
from segmodels.tracking import lineage

log = logging.getLogger(__name__)

TAG_REGISTER_OUTCOME = "segmodels.register_outcome"  # champion | challenger
CHAMPION, CHALLENGER = "champion", "challenger"


def newest_train_run(client: MlflowClient, experiment_id: str) -> Run:
    """The most recently started finished train run of an experiment."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{lineage.TAG_STEP}` = 'train' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise StepError(f"no finished train run in experiment {experiment_id}; pass run_id=<id>")
    return runs[0]


def passes_gate(value: float, threshold: float, greater_is_better: bool) -> bool:
    """Whether a metric value clears the threshold in the metric's direction."""
    return value >= threshold if greater_is_better else value <= threshold


def beats(value: float, other: float, greater_is_better: bool) -> bool:
    """Whether a metric value is strictly better than another in the metric's direction."""
    return value > other if greater_is_better else value < other


def alias_holder(client: MlflowClient, model_name: str, alias: str) -> ModelVersion | None:
    """The version of a registered model under an alias; None when the model or the alias does not exist."""
    try:
        model = client.get_registered_model(model_name)
    except mlflow.exceptions.MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    if alias not in model.aliases:
        return None
    return client.get_model_version(model_name, str(model.aliases[alias]))


def short(commit: str | None) -> str:
    return commit[:12] if commit else "(none)"


def decide(cfg: DictConfig, value: float, data_commit: str | None,
           champion: ModelVersion | None) -> tuple[str, str]:
    """Gate 2: the outcome (CHAMPION or CHALLENGER) and why, for a candidate that passed the threshold."""
    if champion is None:
        return CHAMPION, f"{cfg.metric} {value:.4f}, no @{cfg.alias} before"
    champion_commit = champion.tags.get(lineage.TAG_DATA_COMMIT)
    raw = champion.tags.get(cfg.metric)
    try:
        champion_value = float(raw) if raw is not None else None
    except ValueError:
        champion_value = None
    against = f"@{cfg.alias} version {champion.version}"
    if champion_value is not None:
        against += f" ({champion_value:.4f})"
    if not data_commit or champion_commit != data_commit:
        won, unless = False, ", so they are not compared"
        why = (f"{against} was validated on data commit {short(champion_commit)}, this model on data commit "
               f"{short(data_commit)}")
    elif champion_value is None:
        won, unless = False, ""
        why = f"{against} has no {cfg.metric} tag to compare with"
    else:
        won, unless = beats(value, champion_value, cfg.greater_is_better), ""
        why = (f"{cfg.metric} {value:.4f} {'beats' if won else 'does not beat'} {against} "
               f"on data commit {short(data_commit)}")
    if won:
        return CHAMPION, why
    if cfg.force:
        return CHAMPION, f"force=true; {why}"
    return CHALLENGER, f"{why}{unless}; -P force=true promotes it anyway"


def run(cfg: DictConfig) -> str:
    """Register the train run's model; return the new model version. Refuses (StepError) when the
    metric is missing or does not pass the threshold; moves ``@alias`` only past gate 2 (see the module)."""
    client = MlflowClient()
    with lineage.step_run("register", cfg) as active:
        if cfg.run_id:
            try:
                train_run = client.get_run(cfg.run_id)
            except mlflow.exceptions.MlflowException:
                raise StepError(f"run_id={cfg.run_id!r}: no such MLflow run") from None
        else:
            train_run = newest_train_run(client, active.info.experiment_id)
        tags = train_run.data.tags
        model_uri = tags.get(lineage.TAG_MLFLOW_MODEL_URI)
        if not model_uri:
            raise StepError(f"run {train_run.info.run_id} has no model (tag {lineage.TAG_MLFLOW_MODEL_URI}); "
                            "is it a finished train run?")
        metrics = train_run.data.metrics
        if cfg.metric not in metrics:
            raise StepError(f"metric={cfg.metric!r} not on run {train_run.info.run_id}; "
                            f"it has: {', '.join(sorted(metrics)) or 'no metrics'}")
        value = metrics[cfg.metric]
        threshold = float(cfg.threshold)
        mlflow.set_tag(lineage.TAG_TRAIN_RUN, train_run.info.run_id)
        mlflow.log_metric(f"candidate_{cfg.metric}", value)
        if not passes_gate(value, threshold, cfg.greater_is_better):
            relation = "<" if cfg.greater_is_better else ">"
            raise StepError(f"model of run {train_run.info.run_id} not registered: "
                            f"{cfg.metric}={value:.4f} {relation} threshold {threshold}")

        version_tags = {key: tags[key] for key in lineage.LINEAGE_TAGS if key in tags}
        version_tags[lineage.TAG_TRAIN_RUN] = train_run.info.run_id
        version_tags[cfg.metric] = str(value)
        champion = alias_holder(client, cfg.model_name, cfg.alias)
        outcome, why = decide(cfg, value, tags.get(lineage.TAG_DATA_COMMIT), champion)
        version = mlflow.register_model(model_uri, cfg.model_name, tags=version_tags)
        if outcome == CHAMPION:
            if champion is not None:
                client.set_registered_model_alias(cfg.model_name, cfg.previous_alias, champion.version)
                why += f"; version {champion.version} is now @{cfg.previous_alias}"
            client.set_registered_model_alias(cfg.model_name, cfg.alias, version.version)
            alias = cfg.alias
        else:
            client.set_registered_model_alias(cfg.model_name, cfg.challenger_alias, version.version)
            alias = cfg.challenger_alias
        mlflow.set_tags({lineage.TAG_MODEL_NAME: cfg.model_name, lineage.TAG_MODEL_VERSION: version.version,
                         TAG_REGISTER_OUTCOME: outcome,
                         **{key: value for key, value in version_tags.items() if key.startswith("lakefs.")}})
        log.info("%s version %s registered as @%s: %s", cfg.model_name, version.version, alias, why)
        return version.version
