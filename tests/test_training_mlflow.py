"""The MLflow training callback: per-epoch metrics and lr, overlays, per-class IoU table, confusion figure, model."""
from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from segmodels.config import load_config
from segmodels.tracking.training import MLflowTrainingLogger, confusion_figure
from segmodels.training import train



@pytest.fixture(scope="module")
def tiny_data(tiny_demo_dataset) -> Path:
    return tiny_demo_dataset(num_images=12, seed=4)


def test_logger_records_epochs_images_and_tables_but_no_model(tiny_data, tmp_path):
    cfg = load_config("train", ["trainer.epochs=2", "trainer.batch_size=4", "trainer.num_workers=0",
                                "trainer.progress_bar=false", "transforms.image_size=32",
                                "model.decoder_channels=[16,16,16,8,8]"])
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("train-callback")
    logger = MLflowTrainingLogger(num_samples=2)
    with mlflow.start_run() as run:
        result = train(cfg, tiny_data, tmp_path / "work", callbacks=[logger])
    client = MlflowClient()
    miou = client.get_metric_history(run.info.run_id, "val_miou")
    assert [m.step for m in miou] == [0, 1]
    assert [m.value for m in miou] == pytest.approx([h["val_miou"] for h in result.history])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "lr")] == [0, 1]
    assert client.get_run(run.info.run_id).data.metrics["best_val_miou"] == pytest.approx(
        result.best_metrics["val_miou"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"per_class_iou.json", "confusion_matrix.png"} <= artifacts
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    assert any("val_predictions" in p and p.endswith(".png") for p in images), images
    assert "model" not in artifacts and not client.search_logged_models([run.info.experiment_id]), \
        "the logger must not put a model into MLflow's store (the train step commits it to lakeFS)"


def test_confusion_figure_has_one_cell_label_per_entry():
    figure = confusion_figure(np.array([[5, 1], [0, 4]]), ["a", "b"])
    assert len(figure.axes[0].texts) == 4
