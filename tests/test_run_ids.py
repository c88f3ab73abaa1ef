"""Run ids as report.md prints them (the first 8 hex digits) are accepted wherever a user pastes a run id:
``segmodels lineage``, ``register -P run_id=``/``parent_run_id=``; an ambiguous prefix is one line listing the
matches. A real sqlite MLflow store; two runs sharing a prefix are made by renaming one run's id in every table."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from segmodels.pipeline import run_step_cli
from segmodels.tracking import lineage
from segmodels.tracking.run_ids import RunIdError, find_run, resolve_run

PREFIX = "5eed5eed"


def rename_run(db: Path, run_id: str, new_id: str) -> None:
    """Give a run another id in every table of the store that names runs."""
    with sqlite3.connect(db) as connection:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            columns = [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]
            for column in {"run_uuid", "run_id", "source_run_id"} & set(columns):
                connection.execute(f"UPDATE {table} SET {column} = ? WHERE {column} = ?", (new_id, run_id))


def train_run(metric: float) -> str:
    with mlflow.start_run() as run:
        mlflow.set_tags(
            {
                lineage.TAG_STEP: "train",
                lineage.TAG_MODEL_URI: f"lakefs://r/{'m' * 64}/models/x",
                lineage.TAG_DATA_COMMIT: "d" * 64,
            }
        )
        mlflow.log_metric("best_val_miou", metric)
    return run.info.run_id


@pytest.fixture
def store(tmp_path, new_sqlite_store):
    """Two train runs whose ids share the prefix PREFIX, and a third one."""
    db = tmp_path / "mlflow.db"
    mlflow.set_tracking_uri(new_sqlite_store(db))
    mlflow.set_experiment("run-ids")
    twins = [PREFIX + tail * 24 for tail in "ab"]
    for twin in twins:
        rename_run(db, train_run(0.5), twin)
    return db, twins, train_run(0.6)


def test_a_unique_prefix_finds_the_run_and_an_unknown_one_finds_none(store):
    _, twins, single = store
    client = MlflowClient()
    assert find_run(client, single[:8]).info.run_id == single
    assert find_run(client, twins[0][:9]).info.run_id == twins[0]
    assert find_run(client, "0" * 8) is None and find_run(client, single[:7]) is None  # too short: no search
    with pytest.raises(RunIdError, match="run_id=0000000: no MLflow run has this id \\(a prefix needs 8"):
        resolve_run(client, "0" * 7)


def test_an_ambiguous_prefix_is_one_line_listing_the_matches(store, capsys):
    _, twins, _ = store
    with pytest.raises(SystemExit) as exited:
        run_step_cli("register", ["--run_id", PREFIX, "--model_name", "seg"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"segmodels register: error: run_id={PREFIX}: run id prefix ")
    assert twins[0] in err and twins[1] in err and "ambiguous" in err


def test_register_and_lineage_take_the_8_digits_report_md_shows(store, tmp_path):
    db, _, single = store
    run_step_cli("register", ["--run_id", single[:8], "--model_name", "seg"])
    [version] = MlflowClient().search_model_versions("name = 'seg'")
    assert version.run_id == single
    shown = subprocess.run(
        [sys.executable, "-m", "segmodels.cli", "lineage", single[:8]],
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert shown.returncode == 0, shown.stderr
    assert f"train run        {single}" in shown.stdout and "seg/1" in shown.stdout
