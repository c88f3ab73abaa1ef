"""The register step against a real sqlite MLflow store: the gate, the alias and the lineage tags."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from segmodels.config import load_config
from segmodels.pipeline import StepError
from segmodels.pipeline import register
from segmodels.tracking import lineage


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


@pytest.fixture
def tracking(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment(experiment_id=mlflow.create_experiment(
        "register", artifact_location=(tmp_path / "artifacts").as_uri()))
    return MlflowClient()


def make_train_run(miou: float) -> str:
    """A finished run shaped like a train run: a logged model, lineage tags and a metric."""
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=Echo())
        mlflow.set_tags({lineage.TAG_STEP: "train", lineage.TAG_MLFLOW_MODEL_URI: info.model_uri,
                         lineage.TAG_LAKEFS_REPO: "repo", lineage.TAG_DATA_COMMIT: "c" * 64,
                         lineage.TAG_DATA_URI: f"lakefs://repo/{'c' * 64}/data",
                         lineage.TAG_MODEL_COMMIT: "m" * 64,
                         lineage.TAG_MODEL_URI: f"lakefs://repo/{'m' * 64}/models/{run.info.run_id}",
                         lineage.TAG_GIT_COMMIT: "g" * 40})
        mlflow.log_metric("best_val_miou", miou)
    return run.info.run_id


def test_registers_passing_model_with_alias_and_lineage_tags(tracking):
    run_id = make_train_run(0.93)
    version = register.run(load_config("register", [f"run_id={run_id}", "threshold=0.9", "model_name=seg"]))
    by_alias = tracking.get_model_version_by_alias("seg", "champion")
    assert by_alias.version == version
    assert by_alias.tags[lineage.TAG_DATA_COMMIT] == "c" * 64
    assert by_alias.tags[lineage.TAG_MODEL_URI].startswith("lakefs://repo/")
    assert by_alias.tags[lineage.TAG_TRAIN_RUN] == run_id
    assert by_alias.tags[lineage.TAG_GIT_COMMIT] == "g" * 40


def test_refuses_a_model_below_the_threshold(tracking):
    run_id = make_train_run(0.42)
    with pytest.raises(StepError, match=r"best_val_miou=0.4200 < threshold 0.9"):
        register.run(load_config("register", [f"run_id={run_id}", "threshold=0.9", "model_name=seg"]))
    assert tracking.search_model_versions("name='seg'") == []


def test_defaults_to_the_newest_finished_train_run(tracking):
    make_train_run(0.8)
    newest = make_train_run(0.85)
    register.run(load_config("register", ["model_name=seg"]))
    assert tracking.get_model_version_by_alias("seg", "champion").tags[lineage.TAG_TRAIN_RUN] == newest


def test_unknown_metric_names_what_the_run_has(tracking):
    run_id = make_train_run(0.9)
    with pytest.raises(StepError, match="metric='val_f1' not on run .*best_val_miou"):
        register.run(load_config("register", [f"run_id={run_id}", "metric=val_f1"]))


def test_lower_is_better_metrics_gate_the_other_way():
    assert register.passes_gate(0.1, 0.2, greater_is_better=False)
    assert not register.passes_gate(0.3, 0.2, greater_is_better=False)
    assert register.passes_gate(0.2, 0.2, greater_is_better=True)
