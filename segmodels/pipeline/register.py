"""The ``register`` step: gate a train run's model on a metric, register it, set an alias, and tag
the version with the lakeFS data and model commits it came from."""

from __future__ import annotations

import logging

import mlflow
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from segmodels.pipeline import StepError
from segmodels.tracking import lineage

log = logging.getLogger(__name__)


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


def run(cfg: DictConfig) -> str:
    """Register the train run's model; return the new model version. Refuses (StepError) when the
    metric is missing or does not pass the threshold."""
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
        version = mlflow.register_model(model_uri, cfg.model_name, tags=version_tags)
        client.set_registered_model_alias(cfg.model_name, cfg.alias, version.version)
        mlflow.set_tags({lineage.TAG_MODEL_NAME: cfg.model_name, lineage.TAG_MODEL_VERSION: version.version,
                         **{key: value for key, value in version_tags.items() if key.startswith("lakefs.")}})
        log.info("registered %s version %s (%s=%.4f) as @%s", cfg.model_name, version.version,
                 cfg.metric, value, cfg.alias)
        return version.version
