"""The MLflow training callback: per-epoch metrics and lr, overlays, per-class IoU table, confusion figure, model."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from segmodels.config import load_config
from segmodels.tracking.training import (
    LEARNING_CURVES_FILE,
    MLflowTrainingLogger,
    confusion_figure,
    learning_curves_figure,
    sample_figure,
)
from segmodels.training import train


@pytest.fixture(scope="module")
def tiny_data(tiny_demo_dataset) -> Path:
    return tiny_demo_dataset(num_images=12, seed=4)


def test_logger_records_epochs_images_and_tables_but_no_model(tiny_data, tmp_path):
    cfg = load_config(
        "train",
        [
            "trainer.epochs=2",
            "trainer.batch_size=4",
            "trainer.num_workers=0",
            "trainer.progress_bar=false",
            "transforms.image_size=32",
            "model.decoder_channels=[16,16,16,8,8]",
        ],
    )
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
    train_miou = client.get_metric_history(run.info.run_id, "train_miou")
    assert [m.step for m in train_miou] == [0, 1] and all(0 < m.value <= 1 for m in train_miou)
    assert [m.value for m in train_miou] == pytest.approx([h["train_miou"] for h in result.history])
    assert client.get_run(run.info.run_id).data.metrics["best_val_miou"] == pytest.approx(
        result.best_metrics["val_miou"]
    )
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"per_class_iou.json", "confusion_matrix.png", LEARNING_CURVES_FILE} <= artifacts
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    assert any("val_predictions" in p and p.endswith(".png") for p in images), images
    assert "model" not in artifacts and not client.search_logged_models([run.info.experiment_id]), (
        "the logger must not put a model into MLflow's store (the train step commits it to lakeFS)"
    )


def test_confusion_figure_has_one_cell_label_per_entry():
    figure = confusion_figure(np.array([[5, 1], [0, 4]]), ["a", "b"])
    assert len(figure.axes[0].texts) == 4


def test_learning_curves_plot_train_and_val_loss_and_miou_over_one_based_epochs():
    history = [
        {"epoch": 0, "train_loss": 1.0, "val_loss": 1.2, "train_miou": 0.2, "val_miou": 0.1},
        {"epoch": 1, "train_loss": 0.8, "val_loss": 1.1, "train_miou": 0.3, "val_miou": 0.25},
    ]
    loss, miou = learning_curves_figure(history).axes
    assert (loss.get_title(), miou.get_title()) == ("loss", "mIoU")
    for axes, train_values, val_values in ((loss, [1.0, 0.8], [1.2, 1.1]), (miou, [0.2, 0.3], [0.1, 0.25])):
        lines = {line.get_label(): line for line in axes.get_lines()}
        assert sorted(lines) == ["train", "val"]
        assert list(lines["train"].get_xdata()) == [1, 2] and list(lines["train"].get_ydata()) == train_values
        assert list(lines["val"].get_ydata()) == val_values
    one_epoch = learning_curves_figure(history[:1])
    one_epoch.canvas.draw()
    low, high = one_epoch.axes[0].get_xlim()
    assert [tick for tick in one_epoch.axes[0].get_xticks() if low <= tick <= high] == [1], "whole epochs only"


def test_sample_figure_labels_columns_and_classes():
    image = np.full((20, 30, 3), 128, np.uint8)
    mask = np.zeros((20, 30), np.int64)
    mask[5:, :] = 1
    figure = sample_figure(
        [(image, mask, mask), (image, mask, 1 - mask)], ["background", "road"], [[0, 0, 0], [255, 0, 0]]
    )
    assert [axes.get_title() for axes in figure.axes[:3]] == ["image", "truth", "prediction"]
    assert len(figure.axes) == 6
    legend = figure.legends[0]
    assert [text.get_text() for text in legend.get_texts()] == ["background", "road"]
    assert [tuple(patch.get_facecolor()[:3]) for patch in legend.get_patches()] == [(0, 0, 0), (1, 0, 0)]
