"""The model lifecycle through the real steps in-process, the embedded lakeFS and a sqlite MLflow store: each
model stored once, in lakeFS; every model URI loads from there; the champion gate across data commits."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from segmodels.config import load_config
from segmodels.data.demo import generate_demo_dataset
from segmodels.pipeline import ingest, register, train
from segmodels.tracking import lineage
from segmodels.tracking.models import load_segmentation_model

pytestmark = pytest.mark.slow
TRAIN = [
    "trainer.epochs=1",
    "trainer.batch_size=8",
    "trainer.num_workers=0",
    "trainer.progress_bar=false",
    "transforms.image_size=32",
    "model.decoder_channels=[16,16,16,8,8]",
]


@pytest.fixture
def sandbox(lakefs_settings, repo_name, tmp_path, monkeypatch):
    """lakectl settings naming the session's embedded server, and a sqlite store whose artifact root is known."""
    monkeypatch.setenv("LAKECTL_SERVER_ENDPOINT_URL", lakefs_settings.endpoint)
    monkeypatch.setenv("LAKECTL_CREDENTIALS_ACCESS_KEY_ID", lakefs_settings.access_key_id)
    monkeypatch.setenv("LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY", lakefs_settings.secret_access_key)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    artifacts = tmp_path / "artifacts"
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("lifecycle", artifact_location=artifacts.as_uri()))
    return artifacts


def ingest_demo(tmp_path: Path, repo: str, seed: int, extra_class: bool = False) -> str:
    source = generate_demo_dataset(tmp_path / f"source-{seed}", num_images=24, image_size=32, seed=seed)
    if extra_class:  # the same images, described with one more class: a model of other classes
        document = yaml.safe_load((source / "dataset.yaml").read_text())
        document["classes"].append({"id": len(document["classes"]), "name": "extra", "color": [9, 9, 9]})
        (source / "dataset.yaml").write_text(yaml.safe_dump(document))
    ingest.run(load_config("ingest", [f"source={source}", f"lakefs.repo={repo}"]))
    return (
        MlflowClient()
        .search_runs(
            [mlflow.get_experiment_by_name("lifecycle").experiment_id],
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )[0]
        .data.tags[lineage.TAG_DATA_URI]
    )


def train_on(data_uri: str, repo: str) -> str:
    return train.run(load_config("train", [f"data_ref={data_uri}", f"lakefs.repo={repo}", *TRAIN]))


def register_line(caplog) -> str:
    [line] = [
        r.getMessage() for r in caplog.records if r.name == register.__name__ and "registered as" in r.getMessage()
    ]
    return line


def test_a_model_is_stored_once_in_lakefs_and_every_uri_loads_it_from_there(sandbox, lakefs, repo_name, tmp_path):
    run_id = train_on(ingest_demo(tmp_path, repo_name, seed=1), repo_name)
    register.run(load_config("register", [f"run_id={run_id}", "model_name=seg"]))
    client = MlflowClient()
    tags = client.get_run(run_id).data.tags
    model_uri, model_commit = tags[lineage.TAG_MODEL_URI], tags[lineage.TAG_MODEL_COMMIT]
    assert model_uri == f"lakefs://{repo_name}/{model_commit}/models/{run_id}"

    # the complete MLflow model is in lakeFS at the model commit, and nothing of it in MLflow's artifact store
    stored = {obj.path for obj in lakefs.list_objects(repo_name, model_commit, f"models/{run_id}/")}
    for name in ("MLmodel", "pyfunc_model.py", "requirements.txt", "python_env.yaml", "code/segmodels/__init__.py"):
        assert f"models/{run_id}/{name}" in stored, name
    assert {path.rsplit("/", 1)[-1] for path in stored if "/artifacts/" in path} == {"model.pt", "model.yaml"}
    mlflow_files = [path for path in sandbox.rglob("*") if path.is_file()]
    assert not [path for path in mlflow_files if path.name in ("model.pt", "pyfunc_model.py")]
    assert sum(path.stat().st_size for path in mlflow_files) < 1_000_000, "weights in MLflow's artifact store"
    assert any(path.name == "per_class_iou.json" for path in mlflow_files), "small things stay in MLflow"

    # the logged model and the registered version point at the pinned lakeFS copy
    logged = client.get_logged_model(tags[lineage.TAG_LOGGED_MODEL_ID])
    assert logged.source_run_id == run_id and logged.tags[lineage.TAG_MODEL_URI] == model_uri
    version = client.get_model_version_by_alias("seg", "champion")
    assert version.source == model_uri and version.run_id == run_id
    assert client.get_model_version_download_uri("seg", version.version) == model_uri

    shutil.rmtree(sandbox)  # MLflow's artifact store is gone: the model still loads, from lakeFS
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    masks = mlflow.pyfunc.load_model("models:/seg@champion").predict(image)
    assert masks[0].shape == (50, 70)
    for uri in (f"models:/seg/{version.version}", f"runs:/{run_id}/model", model_uri, f"models:/{logged.model_id}"):
        model, spec = load_segmentation_model(uri)
        assert spec.num_classes == 4 and spec.class_names[0] == "background", uri


def test_a_champion_validated_on_other_data_is_compared_on_the_candidates_validation_split(
    sandbox, repo_name, tmp_path, caplog
):
    client = MlflowClient()
    first = train_on(ingest_demo(tmp_path, repo_name, seed=1), repo_name)
    champion = register.run(load_config("register", [f"run_id={first}", "model_name=seg"]))
    second = train_on(ingest_demo(tmp_path, repo_name, seed=2), repo_name)
    assert (
        client.get_run(second).data.tags[lineage.TAG_DATA_COMMIT]
        != client.get_run(first).data.tags[lineage.TAG_DATA_COMMIT]
    )

    caplog.set_level(logging.INFO, logger=register.__name__)
    candidate = register.run(load_config("register", [f"run_id={second}", "model_name=seg"]))
    register_run = client.search_runs(
        [mlflow.get_experiment_by_name("lifecycle").experiment_id],
        f"tags.`{lineage.TAG_STEP}` = 'register'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )[0]
    scores = register_run.data.metrics
    won = scores["reevaluated_candidate_val_miou"] > scores["reevaluated_champion_val_miou"]
    holder = client.get_model_version_by_alias("seg", "champion").version
    assert holder == (candidate if won else champion)
    line = register_line(caplog)
    assert "val mIoU of both on the candidate's data commit" in line
    assert line.startswith(f"seg version {candidate} registered as @{'champion' if won else 'challenger'}: ")


def test_a_champion_of_other_classes_is_not_compared_and_stays(sandbox, repo_name, tmp_path, caplog):
    client = MlflowClient()
    champion = register.run(
        load_config(
            "register", [f"run_id={train_on(ingest_demo(tmp_path, repo_name, seed=1), repo_name)}", "model_name=seg"]
        )
    )
    other = train_on(ingest_demo(tmp_path, repo_name, seed=1, extra_class=True), repo_name)
    caplog.set_level(logging.INFO, logger=register.__name__)
    candidate = register.run(load_config("register", [f"run_id={other}", "model_name=seg"]))
    assert client.get_model_version_by_alias("seg", "champion").version == champion
    assert client.get_model_version_by_alias("seg", "challenger").version == candidate
    line = register_line(caplog)
    assert f"not compared with @champion version {champion}: it predicts classes" in line
    assert line.endswith("-P force=true promotes it anyway")
