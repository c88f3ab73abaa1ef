"""MLflow logging for the training engine, as a callback: per-epoch metrics and learning rate, sample
prediction overlays, the best epoch's per-class IoU table and confusion-matrix figure (the model itself goes to
lakeFS: see the train step)."""
from __future__ import annotations

import os
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from torch import nn

from segmodels.models import ModelSpec
from segmodels.tracking import lineage
from segmodels.training import Callback, TrainResult, TrainState
from segmodels.training.engine import class_iou_key
from segmodels.visualize import overlay


def enable_system_metrics(sampling_interval: float = 5.0) -> None:
    """Log CPU/memory/GPU system metrics for runs started from now on in this process, every
    ``sampling_interval`` seconds unless MLflow's ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` says otherwise."""
    if not os.environ.get("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"):
        mlflow.set_system_metrics_sampling_interval(sampling_interval)
    mlflow.enable_system_metrics_logging()


def confusion_figure(matrix: np.ndarray, class_names: list[str]):
    """A matplotlib figure of the row-normalised confusion matrix (rows: target, columns: prediction)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix, dtype=np.float64)
    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.6 * len(class_names) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    image = axes.imshow(normalised, vmin=0, vmax=1, cmap="Blues")
    axes.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    axes.set_yticks(range(len(class_names)), class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("target")
    for (row, col), value in np.ndenumerate(normalised):
        axes.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=8,
                  color="white" if value > 0.5 else "black")
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    return figure


def sample_predictions(model: nn.Module, spec: ModelSpec, data_root: Path,
                       count: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(image HxWx3 uint8, target mask, predicted mask)`` for the first ``count`` validation images."""
    from segmodels.data import SegmentationDataset
    from segmodels.inference import predict

    raw = SegmentationDataset(data_root, "val")
    samples = [raw[i] for i in range(min(count, len(raw)))]
    images = [image.permute(1, 2, 0).numpy() for image, _ in samples]
    predictions = predict(model, spec, images)
    return [(image, mask.numpy(), pred) for image, (_, mask), pred in zip(images, samples, predictions)]


def sample_panel(samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]], colors: list[list[int]]) -> np.ndarray:
    """One image of rows (image | target overlay | prediction overlay), one row per sample."""
    rows = [np.concatenate([image, overlay(image, target, colors), overlay(image, pred, colors)], axis=1)
            for image, target, pred in samples]
    width = max(row.shape[1] for row in rows)
    rows = [np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0))) for row in rows]
    return np.concatenate(rows, axis=0)


class MLflowTrainingLogger(Callback):
    """Training callback logging into the active MLflow run (main process only).

    At the start: a resumed run's earlier epochs (tag ``segmodels.resumed_after_epoch``), the class weights ``loss.class_weights=auto`` resolved to (param
    ``loss.class_weights_resolved`` and ``class_weights.json``). Per epoch: every numeric metric (step = epoch, ``lr`` included) and, every ``image_every`` epochs, one
    image of ``num_samples`` validation samples (image | target overlay | prediction overlay) as
    ``val_predictions`` via ``mlflow.log_image``. At the end: ``best_*`` metrics, the per-class IoU table
    ``per_class_iou.json`` and ``confusion_matrix.png`` of the best epoch.
    """

    def __init__(self, num_samples: int = 4, image_every: int = 1):
        self.num_samples, self.image_every = num_samples, image_every

    def on_fit_start(self, state: TrainState) -> None:
        if state.resumed_from is not None:  # the epochs a killed step trained, so this run has the whole curve
            mlflow.set_tag(lineage.TAG_RESUMED_AFTER_EPOCH, str(state.epoch))
            for epoch, metrics in enumerate(state.history):
                mlflow.log_metrics({k: float(v) for k, v in metrics.items() if k != "epoch"}, step=epoch)
        if state.class_weights is not None:
            weights = {name: round(w, 6) for name, w in zip(state.spec.class_names, state.class_weights)}
            mlflow.log_param("loss.class_weights_resolved", ", ".join(f"{w:.4g}" for w in weights.values()))
            mlflow.log_dict({"method": "median_frequency", "split": "train", "weights": weights},
                            "class_weights.json")

    def on_epoch_end(self, state: TrainState, metrics: dict) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if k != "epoch"}, step=state.epoch)
        if self.num_samples and self.image_every and state.epoch % self.image_every == 0:
            samples = sample_predictions(state.model, state.spec, state.data_root, self.num_samples)
            mlflow.log_image(sample_panel(samples, state.spec.colors), key="val_predictions", step=state.epoch)

    def on_fit_end(self, state: TrainState, result: TrainResult) -> None:
        mlflow.log_metrics({f"best_{k}": float(v) for k, v in result.best_metrics.items()})
        names = state.spec.class_names
        ious = [result.best_metrics.get(class_iou_key(n)) for n in names]
        matrix = state.best_confusion.numpy() if state.best_confusion is not None else None
        log_class_report(names, ious, matrix)


def log_class_report(class_names: list[str], ious: list, matrix: np.ndarray | None) -> None:
    """Log into the active run the per-class IoU table ``per_class_iou.json`` and, when given, the confusion
    matrix (rows: target, columns: prediction) as ``confusion_matrix.csv`` (pixel counts) and ``.png``
    (row-normalised)."""
    mlflow.log_table(pd.DataFrame({"class_id": range(len(class_names)), "class": class_names, "iou": ious}),
                     artifact_file="per_class_iou.json")
    if matrix is None:
        return
    import matplotlib.pyplot as plt

    counts = pd.DataFrame(np.asarray(matrix, dtype=np.int64), index=class_names, columns=class_names)
    mlflow.log_text(counts.to_csv(index_label="target \\ predicted"), "confusion_matrix.csv")
    figure = confusion_figure(matrix, class_names)
    mlflow.log_figure(figure, "confusion_matrix.png")
    plt.close(figure)
