"""One tracking store per lakeFS repository: every lakeFS commit of a step names the MLflow store that recorded
it, and a step starting on a new, empty store while the repository's commits name another one says so in one
line, with a fix that works typed as printed. Real sqlite stores, the embedded lakeFS, the real steps."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from segmodels.config import load_config
from segmodels.data.demo import generate_demo_dataset
from segmodels.model_store import publish_model
from segmodels.pipeline import StepError, infer, ingest, register, train
from segmodels.tracking import lineage, stores

TRAIN = [
    "trainer.epochs=1",
    "trainer.batch_size=8",
    "trainer.num_workers=0",
    "trainer.progress_bar=false",
    "transforms.image_size=32",
    "model.decoder_channels=[16,16,16,8,8]",
]


@pytest.fixture
def use_store(new_sqlite_store):
    """Make a new sqlite store at a path the current one; its URI."""

    def use(path: Path) -> str:
        uri = new_sqlite_store(path)
        mlflow.set_tracking_uri(uri)
        return uri

    return use


def test_a_relative_sqlite_or_file_store_is_recorded_as_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri("sqlite:///mlflow.db")
    assert lineage.tracking_store() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri("mlruns")
    assert lineage.tracking_store() == (tmp_path / "mlruns").as_uri()


def test_a_stores_credentials_are_never_recorded():
    mlflow.set_tracking_uri("https://alice:s3cret@mlflow.example.com/?token=abc123")
    recorded = lineage.tracking_store()
    assert recorded.startswith("https://mlflow.example.com/")
    assert "s3cret" not in recorded and "alice" not in recorded and "abc123" not in recorded


def publish_dummy_model(lakefs, repo: str, tmp_path: Path, run_id: str) -> None:
    folder = tmp_path / f"model-{run_id}"
    folder.mkdir()
    (folder / "MLmodel").write_text("flavors: {}\n")
    lakefs.ensure_repository(repo, default_branch="main")
    publish_model(
        lakefs,
        folder,
        repo,
        "models",
        "models",
        run_id,
        metadata={lineage.TRACKING_STORE_KEY: lineage.tracking_store()},
    )


def segmodels_run(step: str = "train") -> str:
    with mlflow.start_run(experiment_id=MlflowClient().create_experiment(f"e-{os.urandom(4).hex()}")) as run:
        mlflow.set_tag(lineage.TAG_STEP, step)
    return run.info.run_id


def test_a_new_store_beside_a_repository_recorded_elsewhere_says_which_store_and_how_to_use_it(
    lakefs, repo_name, tmp_path, use_store
):
    first = use_store(tmp_path / "first" / "mlflow.db")
    publish_dummy_model(lakefs, repo_name, tmp_path, segmodels_run())
    assert stores.warn_if_other_store(lakefs, repo_name, "models", "main") is None  # the same store

    use_store(tmp_path / "second" / "mlflow.db")
    line = stores.warn_if_other_store(lakefs, repo_name, "models", "main")
    assert line == (
        f"this MLflow store (sqlite:///{tmp_path / 'second' / 'mlflow.db'}) is new, but "
        f"lakefs://{repo_name} holds models recorded in {first}; to use it: "
        f"export MLFLOW_TRACKING_URI={first}"
    )

    fix = line.split("to use it: ", 1)[1]  # typed as printed, the store named holds the run
    shown = subprocess.run(
        [
            "bash",
            "-c",
            f"{fix} && {sys.executable} -c 'import mlflow; from mlflow.tracking "
            f"import MlflowClient; print(len(MlflowClient().search_experiments()))'",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"},
    )
    assert int(shown.stdout.split()[-1]) >= 2  # the Default experiment and the one holding the run


def test_no_warning_once_the_store_holds_segmodels_runs_or_models(lakefs, repo_name, tmp_path, use_store):
    use_store(tmp_path / "first" / "mlflow.db")
    publish_dummy_model(lakefs, repo_name, tmp_path, segmodels_run())
    use_store(tmp_path / "second" / "mlflow.db")
    segmodels_run("ingest")
    assert stores.warn_if_other_store(lakefs, repo_name, "models", "main") is None
    use_store(tmp_path / "third" / "mlflow.db")
    MlflowClient().create_registered_model("seg")
    assert stores.warn_if_other_store(lakefs, repo_name, "models", "main") is None


def test_a_repository_without_recorded_stores_gives_no_warning(lakefs, repo_name, tmp_path, use_store):
    use_store(tmp_path / "mlflow.db")
    lakefs.ensure_repository(repo_name, default_branch="main")
    assert stores.warn_if_other_store(lakefs, repo_name, "models", "main") is None


@pytest.fixture
def lakectl_env(lakefs_settings, monkeypatch):
    monkeypatch.setenv("LAKECTL_SERVER_ENDPOINT_URL", lakefs_settings.endpoint)
    monkeypatch.setenv("LAKECTL_CREDENTIALS_ACCESS_KEY_ID", lakefs_settings.access_key_id)
    monkeypatch.setenv("LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY", lakefs_settings.secret_access_key)


def test_register_on_a_new_store_finding_no_train_run_names_the_store_the_repository_was_recorded_in(
    lakectl_env, lakefs, repo_name, tmp_path, caplog, use_store
):
    first = use_store(tmp_path / "first" / "mlflow.db")
    publish_dummy_model(lakefs, repo_name, tmp_path, segmodels_run())
    use_store(tmp_path / "second" / "mlflow.db")
    caplog.set_level(logging.WARNING, logger=stores.__name__)
    with pytest.raises(StepError, match="no finished train run"):
        register.run(load_config("register", [f"lakefs.repo={repo_name}", "model_name=seg"]))
    [line] = [r.getMessage() for r in caplog.records if r.name == stores.__name__]
    assert line.endswith(f"holds models recorded in {first}; to use it: export MLFLOW_TRACKING_URI={first}")


@pytest.mark.slow
def test_every_step_commit_records_its_store_and_a_train_step_on_a_new_store_warns(
    lakectl_env, lakefs, repo_name, tmp_path, caplog, use_store
):
    first = use_store(tmp_path / "project" / "mlflow.db")
    source = generate_demo_dataset(tmp_path / "source", num_images=16, image_size=32, seed=3)
    data_commit = ingest.run(load_config("ingest", [f"source={source}", f"lakefs.repo={repo_name}"]))
    run_id = train.run(load_config("train", [f"data_ref={data_commit}", f"lakefs.repo={repo_name}", *TRAIN]))
    infer.run(
        load_config(
            "infer",
            [
                f"model_uri=runs:/{run_id}",
                f"data_ref={data_commit}",
                "split=val",
                f"lakefs.repo={repo_name}",
                "commit_predictions=true",
                f"output_dir={tmp_path / 'predictions'}",
            ],
        )
    )
    for branch in ("main", "predictions"):
        assert lakefs.get_commit(repo_name, branch).metadata[lineage.TRACKING_STORE_KEY] == first
    model_commit = lakefs.get_commit(repo_name, "models").metadata
    assert model_commit[lineage.TRACKING_STORE_KEY] == first and model_commit["best_epoch"] == "1"
    [trained] = MlflowClient().search_runs(["0"], f"tags.`{lineage.TAG_STEP}` = 'train'")
    assert trained.data.metrics["best_epoch"] == 1.0  # one epoch: the log's "epoch 1/1"
    assert "best_lr" not in trained.data.metrics and "best_epoch_time_s" not in trained.data.metrics

    caplog.set_level(logging.WARNING, logger=stores.__name__)
    use_store(tmp_path / "elsewhere" / "mlflow.db")  # `mlflow run` started from another folder
    train.run(load_config("train", [f"data_ref={data_commit}", f"lakefs.repo={repo_name}", *TRAIN]))
    [line] = [r.getMessage() for r in caplog.records if r.name == stores.__name__]
    assert f"holds models recorded in {first}; to use it: export MLFLOW_TRACKING_URI={first}" in line
    assert lakefs.get_commit(repo_name, "models").metadata[lineage.TRACKING_STORE_KEY] != first


def test_best_metrics_count_the_best_epoch_from_one_and_keep_only_what_describes_the_model():
    epoch = {
        "epoch": 2,
        "train_loss": 0.4,
        "train_miou": 0.8,
        "lr": 0.001,
        "train_images_per_s": 310.0,
        "epoch_time_s": 2.5,
        "val_loss": 0.5,
        "val_miou": 0.7,
        "val_iou_cell": 0.6,
    }
    assert [key for key in epoch if lineage.is_best_metric(f"best_{key}")] == [
        "epoch",
        "train_loss",
        "train_miou",
        "val_loss",
        "val_miou",
        "val_iou_cell",
    ]  # what lineage shows
    assert lineage.best_metrics(epoch, best_epoch=2) == {
        "best_epoch": 3.0,
        "best_train_loss": 0.4,
        "best_train_miou": 0.8,
        "best_val_loss": 0.5,
        "best_val_miou": 0.7,
        "best_val_iou_cell": 0.6,
    }
