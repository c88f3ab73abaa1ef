"""The run report of a main run (``report.md``, ``report.html``) and what main puts on its parent run, built from
real runs in a sqlite MLflow store."""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from segmodels.pipeline.main import StepOutcome, register_decision
from segmodels.pipeline.register import TAG_MODEL_ALIAS, TAG_REGISTER_REASON
from segmodels.pipeline.report import html_page, log_report, markdown, report_rows, tracking_server_url
from segmodels.tracking import lineage
from segmodels.tracking.training import LEARNING_CURVES_FILE, SAMPLES_KEY, learning_curves_figure

SECRET = "s3cr3t-pw"


@pytest.fixture
def chain_runs(tmp_path, new_sqlite_store):
    """A finished train run (learning curves, two sample grids) and register run, as StepOutcomes."""
    mlflow.set_tracking_uri(new_sqlite_store(tmp_path / "mlflow.db"))
    mlflow.set_experiment("report")
    with mlflow.start_run(tags={lineage.TAG_STEP: "train"}) as train:
        mlflow.log_metric("best_val_miou", 0.41)
        mlflow.log_figure(
            learning_curves_figure([{"epoch": 0, "train_loss": 1.0, "val_loss": 1.1}]), LEARNING_CURVES_FILE
        )
        for step, value in ((0, 10), (1, 200)):
            mlflow.log_image(np.full((8, 8, 3), value, np.uint8), key=SAMPLES_KEY, step=step)
    with mlflow.start_run(
        tags={
            lineage.TAG_STEP: "register",
            lineage.TAG_MODEL_NAME: "segmodels",
            lineage.TAG_MODEL_VERSION: "3",
            lineage.TAG_REGISTER_OUTCOME: "challenger",
            TAG_MODEL_ALIAS: "challenger",
        }
    ) as register:
        pass
    client = MlflowClient()
    return [
        StepOutcome("train", client.get_run(train.info.run_id), None, 2.0),
        StepOutcome("register", client.get_run(register.info.run_id), None, 1.0),
    ]


def test_runs_link_to_the_tracking_server_without_its_credentials(chain_runs):
    mlflow.set_tracking_uri(f"http://admin:{SECRET}@mlflow.example:5000/")
    rows = report_rows(chain_runs)
    pages = markdown(rows, "t", []), html_page(rows, "t", {})
    train = chain_runs[0].run.info
    link = f"http://mlflow.example:5000/#/experiments/{train.experiment_id}/runs/{train.run_id}"
    for page in pages:
        assert link in page
        assert SECRET not in page and "admin" not in page


def test_the_server_url_keeps_no_user_info_and_masks_secret_query_parameters():
    mlflow.set_tracking_uri(f"https://ghp_token123@mlflow.example/prefix/?token={SECRET}")
    assert tracking_server_url() == "https://mlflow.example/prefix?token=***"
    mlflow.set_tracking_uri("sqlite:///x.db")
    assert tracking_server_url() is None


def test_report_on_a_local_store_names_runs_and_shows_the_train_figures(chain_runs, tmp_path):
    client = MlflowClient()
    with mlflow.start_run() as parent:
        log_report(chain_runs, parent)
    folder = Path(client.download_artifacts(parent.info.run_id, "", str(tmp_path / "parent")))
    report, page = (folder / "report.md").read_text(), (folder / "report.html").read_text()
    for outcome in chain_runs:
        assert outcome.run.info.run_id in report and outcome.run.info.run_id in page
    assert "#/experiments" not in report + page, "a local store has no page to link to"
    assert "segmodels v3 (@challenger)" in report
    assert f"]({LEARNING_CURVES_FILE})" in report and "](sample_predictions.png)" in report
    assert (folder / LEARNING_CURVES_FILE).is_file()
    assert np.asarray(Image.open(folder / "sample_predictions.png"))[0, 0, 0] == 200, "the last epoch's grid"
    images = re.findall(r'<img [^>]*src="data:image/png;base64,[A-Za-z0-9+/=]+"', page)
    assert len(images) == 2 and "http" not in page.split("<body>")[1]


@pytest.mark.parametrize(
    "outcome, alias, reused, expected",
    [
        ("champion", "champion", None, "model models:/segmodels/3 became @champion (no @champion before)"),
        (
            "challenger",
            "challenger",
            None,
            "model models:/segmodels/3 is @challenger (no @champion before); -P register.force=true promotes it",
        ),
        (
            "champion",
            "champion",
            "abcdef0123",
            "model models:/segmodels/3 is @champion (register run abcdef01 decided: no @champion before)",
        ),
        ("unchanged", "champion", None, "model models:/segmodels/3 is still @champion (no @champion before)"),
    ],
)
def test_mains_last_line_says_what_register_made_of_the_model(outcome, alias, reused, expected):
    tags = {
        lineage.TAG_MODEL_NAME: "segmodels",
        lineage.TAG_MODEL_VERSION: "3",
        lineage.TAG_REGISTER_OUTCOME: outcome,
        TAG_MODEL_ALIAS: alias,
        TAG_REGISTER_REASON: "no @champion before",
        **({lineage.TAG_REUSED_RUN: reused} if reused else {}),
    }
    assert register_decision(tags) == expected
