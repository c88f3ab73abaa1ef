"""The register step against a real sqlite MLflow store: the gates, the aliases and the lineage tags."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from segmodels.config import load_config
from segmodels.pipeline import StepError, register
from segmodels.tracking import lineage


@pytest.fixture
def tracking(tmp_path, new_sqlite_store):
    mlflow.set_tracking_uri(new_sqlite_store(tmp_path / "mlflow.db"))
    mlflow.set_experiment(
        experiment_id=mlflow.create_experiment("register", artifact_location=(tmp_path / "artifacts").as_uri())
    )
    return MlflowClient()


def make_train_run(miou: float, data_commit: str = "c" * 64, parent_run_id: str | None = None) -> str:
    """A finished run shaped like a train run: lineage tags naming its model in lakeFS and a metric."""
    with mlflow.start_run(parent_run_id=parent_run_id, nested=parent_run_id is not None) as run:
        mlflow.set_tags(
            {
                lineage.TAG_STEP: "train",
                lineage.TAG_LAKEFS_REPO: "repo",
                lineage.TAG_DATA_COMMIT: data_commit,
                lineage.TAG_DATA_URI: f"lakefs://repo/{data_commit}/data",
                lineage.TAG_MODEL_COMMIT: "m" * 64,
                lineage.TAG_MODEL_URI: f"lakefs://repo/{'m' * 64}/models/{run.info.run_id}",
                lineage.TAG_GIT_COMMIT: "g" * 40,
            }
        )
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
    # the version points at the model's one copy in lakeFS, pinned to its commit, and at the train run
    assert by_alias.source == f"lakefs://repo/{'m' * 64}/models/{run_id}" and by_alias.run_id == run_id


def test_refuses_a_model_below_the_threshold(tracking):
    run_id = make_train_run(0.42)
    with pytest.raises(StepError, match=r"best_val_miou=0.4200 < threshold 0.9"):
        register.run(load_config("register", [f"run_id={run_id}", "threshold=0.9", "model_name=seg"]))
    assert tracking.search_model_versions("name='seg'") == []


def test_defaults_to_the_best_finished_train_run_of_the_experiment(tracking):
    best = make_train_run(0.9)
    make_train_run(0.85)
    with mlflow.start_run():  # a run that is not a train run, with a higher metric
        mlflow.log_metric("best_val_miou", 0.99)
    register.run(load_config("register", ["model_name=seg"]))
    assert tracking.get_model_version_by_alias("seg", "champion").tags[lineage.TAG_TRAIN_RUN] == best


def test_parent_run_id_picks_the_best_train_run_among_its_children(tracking):
    with mlflow.start_run() as parent:
        pass
    make_train_run(0.99)  # better, but not a child
    make_train_run(0.7, parent_run_id=parent.info.run_id)
    best_child = make_train_run(0.8, parent_run_id=parent.info.run_id)
    register.run(load_config("register", ["model_name=seg", f"parent_run_id={parent.info.run_id}"]))
    assert tracking.get_model_version_by_alias("seg", "champion").tags[lineage.TAG_TRAIN_RUN] == best_child
    with pytest.raises(StepError, match="no finished train run in children of run"):
        register.run(load_config("register", ["model_name=seg", f"parent_run_id={best_child}"]))


def test_a_run_is_registered_once(tracking, caplog):
    run_id = make_train_run(0.9)
    version = register_run(run_id)
    caplog.set_level(logging.INFO, logger=register.__name__)
    assert register_run(run_id) == version
    assert len(tracking.search_model_versions("name='seg'")) == 1
    assert outcome_of_last_register_run(tracking) == "unchanged"
    assert register_lines(caplog) == [
        f"seg version {version} registered as @champion: run {run_id} is already this version; nothing changed"
    ]


def test_unknown_metric_names_what_the_run_has(tracking):
    run_id = make_train_run(0.9)
    with pytest.raises(StepError, match="metric='val_f1' not on run .*best_val_miou"):
        register.run(load_config("register", [f"run_id={run_id}", "metric=val_f1"]))


def test_lower_is_better_metrics_gate_the_other_way():
    assert register.passes_gate(0.1, 0.2, greater_is_better=False)
    assert not register.passes_gate(0.3, 0.2, greater_is_better=False)
    assert register.passes_gate(0.2, 0.2, greater_is_better=True)


def register_run(run_id: str, *overrides: str) -> str:
    return register.run(load_config("register", [f"run_id={run_id}", "model_name=seg", *overrides]))


def outcome_of_last_register_run(client: MlflowClient) -> str:
    experiment = mlflow.get_experiment_by_name("register")
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{lineage.TAG_STEP}` = 'register'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].data.tags[lineage.TAG_REGISTER_OUTCOME]


def register_lines(caplog) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == register.__name__ and "registered as" in record.getMessage()
    ]


def test_first_model_becomes_champion(tracking, caplog):
    caplog.set_level(logging.INFO, logger=register.__name__)
    version = register_run(make_train_run(0.9))
    assert tracking.get_model_version_by_alias("seg", "champion").version == version
    assert outcome_of_last_register_run(tracking) == "champion"
    assert register_lines(caplog) == [f"seg version {version} registered as @champion: no @champion before"]


def test_weaker_model_becomes_challenger_and_champion_stays(tracking, caplog):
    champion = register_run(make_train_run(0.94))
    caplog.set_level(logging.INFO, logger=register.__name__)
    weaker = register_run(make_train_run(0.321))
    assert weaker != champion
    assert tracking.get_model_version_by_alias("seg", "champion").version == champion
    assert tracking.get_model_version_by_alias("seg", "challenger").version == weaker
    assert "previous" not in tracking.get_registered_model("seg").aliases
    assert outcome_of_last_register_run(tracking) == "challenger"
    assert register_lines(caplog) == [
        f"seg version {weaker} registered as @challenger: best_val_miou on data commit {'c' * 12}: 0.3210 does not "
        f"beat @champion version {champion} (0.9400); -P force=true promotes it anyway"
    ]


def test_equal_model_does_not_take_champion(tracking):
    champion = register_run(make_train_run(0.9))
    register_run(make_train_run(0.9))
    assert tracking.get_model_version_by_alias("seg", "champion").version == champion
    assert outcome_of_last_register_run(tracking) == "challenger"


def test_stronger_model_takes_champion_and_previous_gets_previous(tracking, caplog):
    first = register_run(make_train_run(0.9))
    caplog.set_level(logging.INFO, logger=register.__name__)
    second = register_run(make_train_run(0.95))
    assert tracking.get_model_version_by_alias("seg", "champion").version == second
    assert tracking.get_model_version_by_alias("seg", "previous").version == first
    assert outcome_of_last_register_run(tracking) == "champion"
    assert register_lines(caplog) == [
        f"seg version {second} registered as @champion: best_val_miou on data commit {'c' * 12}: 0.9500 beats "
        f"@champion version {first} (0.9000); version {first} is now @previous"
    ]
    register_tags = tracking.search_runs(
        [mlflow.get_experiment_by_name("register").experiment_id],
        filter_string=f"tags.`{lineage.TAG_STEP}` = 'register'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )[0].data.tags
    assert register_tags[lineage.TAG_MODEL_NAME] == "seg"
    assert register_tags[lineage.TAG_MODEL_VERSION] == str(second)


def test_lower_is_better_champion_is_beaten_by_a_lower_value(tracking):
    register_run(make_train_run(0.5), "greater_is_better=false", "threshold=1.0")
    register_run(make_train_run(0.6), "greater_is_better=false", "threshold=1.0")
    assert outcome_of_last_register_run(tracking) == "challenger"
    lower = register_run(make_train_run(0.4), "greater_is_better=false", "threshold=1.0")
    assert tracking.get_model_version_by_alias("seg", "champion").version == lower


def test_force_promotes_a_weaker_model(tracking, caplog):
    first = register_run(make_train_run(0.94))
    caplog.set_level(logging.INFO, logger=register.__name__)
    forced = register_run(make_train_run(0.32), "force=true")
    assert tracking.get_model_version_by_alias("seg", "champion").version == forced
    assert tracking.get_model_version_by_alias("seg", "previous").version == first
    assert outcome_of_last_register_run(tracking) == "champion"
    [line] = register_lines(caplog)
    assert line.startswith(
        f"seg version {forced} registered as @champion: force=true; best_val_miou on data "
        f"commit {'c' * 12}: 0.3200 does not beat @champion version {first} (0.9400)"
    )


def test_force_does_not_skip_the_threshold(tracking):
    register_run(make_train_run(0.94))
    with pytest.raises(StepError, match=r"best_val_miou=0.3200 < threshold 0.5"):
        register_run(make_train_run(0.32), "force=true", "threshold=0.5")
    assert len(tracking.search_model_versions("name='seg'")) == 1


def test_register_defaults_come_from_conf():
    cfg = load_config("register")
    assert cfg.force is False
    assert cfg.alias == "champion" and cfg.challenger_alias == "challenger" and cfg.previous_alias == "previous"


PROJECT = Path(__file__).resolve().parents[1]


def step_env(tmp_path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    env.update({"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "MLFLOW_EXPERIMENT_NAME": "register"})
    return env


@pytest.mark.slow  # the step in a child on a terminal (about 8 s); tests/test_interactive.py drives the picker fast
def test_interactive_register_reads_the_choice_from_a_terminal(tracking, tmp_path, pty_process):
    runs = {miou: make_train_run(miou) for miou in (0.7, 0.9, 0.8)}
    child = pty_process(
        [sys.executable, "steps/register.py", "--interactive", "true", "--model_name", "seg"],
        cwd=PROJECT,
        env=step_env(tmp_path),
        timeout=120,
    )
    child.expect("Choose 1-3 (q to quit): ")
    table = child.output
    # best first, each row with its run id, metric, data commit and start time
    assert table.index(runs[0.9]) < table.index(runs[0.8]) < table.index(runs[0.7])
    assert re.search(rf"2\s+{runs[0.8]}\s+0\.8000\s+{'c' * 12}\s+\d{{4}}-\d\d-\d\d", table), table
    child.send("2\n")
    assert child.finish() == 0, child.output
    assert tracking.get_model_version_by_alias("seg", "champion").tags[lineage.TAG_TRAIN_RUN] == runs[0.8]


def test_interactive_register_without_a_terminal_fails_at_once_with_one_line(tracking, tmp_path):
    make_train_run(0.9)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "steps/register.py", "--interactive", "true"],
        cwd=PROJECT,
        env=step_env(tmp_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "segmodels register: error: interactive=true needs a terminal to read a choice from; pass run_id=<id> instead"
    ]
    assert elapsed < 5, f"took {elapsed:.1f} s (the process itself, interpreter start included)"
    assert tracking.search_model_versions("name='segmodels'") == []


def test_forcing_a_registered_challenger_promotes_that_version_and_clears_challenger(tracking):
    first = register_run(make_train_run(0.94))
    weaker_run = make_train_run(0.32)
    weaker = register_run(weaker_run)
    assert tracking.get_model_version_by_alias("seg", "challenger").version == weaker
    assert register_run(weaker_run, "force=true") == weaker  # the same version, not a new one
    aliases = tracking.get_registered_model("seg").aliases
    assert aliases == {"champion": int(weaker), "previous": int(first)} or {k: str(v) for k, v in aliases.items()} == {
        "champion": weaker,
        "previous": first,
    }
    assert len(tracking.search_model_versions("name='seg'")) == 2
