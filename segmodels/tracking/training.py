"""MLflow logging for the training engine, as a callback: per-epoch metrics and learning rate, learning curves,
labelled sample predictions, the best epoch's per-class IoU table and confusion-matrix figure (the model itself
goes to lakeFS: see the train step)."""

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
from segmodels.visualize import overlay, pyplot


def enable_system_metrics(sampling_interval: float = 5.0) -> None:
    """Log CPU/memory/GPU system metrics for runs started from now on in this process, every
    ``sampling_interval`` seconds unless MLflow's ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` says otherwise."""
    if not os.environ.get("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"):
        mlflow.set_system_metrics_sampling_interval(sampling_interval)
    mlflow.enable_system_metrics_logging()


def confusion_figure(matrix: np.ndarray, class_names: list[str]):
    """A matplotlib figure of the row-normalised confusion matrix (rows: target, columns: prediction)."""
    plt = pyplot()
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
        axes.text(
            col, row, f"{value:.2f}", ha="center", va="center", fontsize=8, color="white" if value > 0.5 else "black"
        )
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    return figure


LEARNING_CURVES_FILE = "learning_curves.png"
SAMPLES_KEY = "val_predictions"  # mlflow.log_image key of the sample grids: images/val_predictions%step%...png
CURVES = (("loss", "train_loss", "val_loss"), ("mIoU", "train_miou", "val_miou"))  # panel, train and val metric


def learning_curves_figure(history: list[dict]):
    """Two panels, loss and mIoU, each with the train and val curve over epochs (1-based); a metric missing
    from an epoch (an older run's history) is left out of that epoch."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    figure, panels = plt.subplots(1, len(CURVES), figsize=(10, 3.8))
    for axes, (title, *keys) in zip(panels, CURVES):
        for key in keys:
            points = [(int(h["epoch"]) + 1, float(h[key])) for h in history if key in h]
            if points:
                axes.plot(*zip(*points), marker="o", markersize=3, label=key.split("_")[0])
        axes.set_title(title)
        axes.set_xlabel("epoch")
        axes.set_xlim(0.5, len(history) + 0.5)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        axes.grid(alpha=0.3)
        if axes.get_lines():
            axes.legend()
    figure.tight_layout()
    return figure


def sample_predictions(
    model: nn.Module, spec: ModelSpec, data_root: Path, count: int, files=None
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(image HxWx3 uint8, target mask, predicted mask)`` for the first ``count`` validation images (read through
    ``files`` when the data set is streamed)."""
    from segmodels.data import SegmentationDataset
    from segmodels.inference import predict

    raw = SegmentationDataset(data_root, "val", files=files)
    samples = [raw[i] for i in range(min(count, len(raw)))]
    images = [image.permute(1, 2, 0).numpy() for image, _ in samples]
    predictions = predict(model, spec, images)
    return [(image, mask.numpy(), pred) for image, (_, mask), pred in zip(images, samples, predictions)]


SAMPLE_COLUMNS = ("image", "truth", "prediction")
THUMBNAIL_INCHES = 2.2  # each cell of the sample grid, at 100 dpi: the figure stays small whatever the images


def sample_figure(
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]], class_names: list[str], colors: list[list[int]]
):
    """A grid of thumbnails, one row per sample: image | truth overlay | prediction overlay, with column titles
    and a legend of each class's colour."""
    from matplotlib.patches import Patch

    plt = pyplot()
    figure, grid = plt.subplots(
        len(samples),
        len(SAMPLE_COLUMNS),
        squeeze=False,
        dpi=100,
        figsize=(THUMBNAIL_INCHES * len(SAMPLE_COLUMNS), THUMBNAIL_INCHES * len(samples) + 0.4),
    )
    for row, (image, target, pred) in zip(grid, samples):
        for axes, shown in zip(row, (image, overlay(image, target, colors), overlay(image, pred, colors))):
            axes.imshow(shown)
            axes.set_axis_off()
    for axes, title in zip(grid[0], SAMPLE_COLUMNS):
        axes.set_title(title)
    swatches = [
        Patch(facecolor=np.asarray(color) / 255, edgecolor="black", label=name)
        for name, color in zip(class_names, colors)
    ]
    figure.legend(handles=swatches, loc="lower center", ncol=min(len(swatches), 6), fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.4 / figure.get_figheight(), 1, 1))
    return figure


def figure_pixels(figure) -> np.ndarray:
    """The rendered figure as an RGB uint8 array (for ``mlflow.log_image``, which keeps a step per image)."""
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


class MLflowTrainingLogger(Callback):
    """Training callback logging into the active MLflow run (main process only).

    At the start: a resumed run's earlier epochs (tag ``segmodels.resumed_after_epoch``), the class weights
    ``loss.class_weights=auto`` resolved to (param ``loss.class_weights_resolved`` and ``class_weights.json``).
    Per epoch: every numeric metric (step = epoch, ``lr`` included), ``learning_curves.png`` redrawn with the
    epochs so far (so a running or killed run has it) and, every ``image_every`` epochs, the grid of
    ``num_samples`` validation samples (:func:`sample_figure`) as the image ``val_predictions`` of that step.
    At the end: ``best_*`` metrics, the per-class IoU table ``per_class_iou.json`` and ``confusion_matrix.png``
    of the best epoch.
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
            mlflow.log_dict({"method": "median_frequency", "split": "train", "weights": weights}, "class_weights.json")

    def on_epoch_end(self, state: TrainState, metrics: dict) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if k != "epoch"}, step=state.epoch)
        log_closed_figure(learning_curves_figure(state.history), LEARNING_CURVES_FILE)
        if self.num_samples and self.image_every and state.epoch % self.image_every == 0:
            files = state.val_loader.dataset.files
            samples = sample_predictions(state.model, state.spec, state.data_root, self.num_samples, files)
            figure = sample_figure(samples, state.spec.class_names, state.spec.colors)
            mlflow.log_image(figure_pixels(figure), key=SAMPLES_KEY, step=state.epoch)
            pyplot().close(figure)

    def on_fit_end(self, state: TrainState, result: TrainResult) -> None:
        mlflow.log_metrics(lineage.best_metrics(result.best_metrics, result.best_epoch))
        names = state.spec.class_names
        ious = [result.best_metrics.get(class_iou_key(n)) for n in names]
        matrix = state.best_confusion.numpy() if state.best_confusion is not None else None
        log_class_report(names, ious, matrix)


def latest_sample_grid(client, run_id: str) -> str | None:
    """The artifact path of a train run's last logged sample grid (``images/val_predictions+step+<n>+...png``,
    the highest step), or None when it logged none."""
    grids = {}
    for artifact in client.list_artifacts(run_id, "images"):
        name = Path(artifact.path).name
        if name.startswith(f"{SAMPLES_KEY}+step+") and name.endswith(".png"):
            grids[int(name.split("+")[2])] = artifact.path
    return grids[max(grids)] if grids else None


def log_closed_figure(figure, artifact_file: str) -> None:
    """Log a figure into the active run as ``artifact_file`` and free it."""
    mlflow.log_figure(figure, artifact_file)
    pyplot().close(figure)


def log_class_report(class_names: list[str], ious: list, matrix: np.ndarray | None) -> None:
    """Log into the active run the per-class IoU table ``per_class_iou.json`` and, when given, the confusion
    matrix (rows: target, columns: prediction) as ``confusion_matrix.csv`` (pixel counts) and ``.png``
    (row-normalised)."""
    mlflow.log_table(
        pd.DataFrame({"class_id": range(len(class_names)), "class": class_names, "iou": ious}),
        artifact_file="per_class_iou.json",
    )
    if matrix is None:
        return
    counts = pd.DataFrame(np.asarray(matrix, dtype=np.int64), index=class_names, columns=class_names)
    mlflow.log_text(counts.to_csv(index_label="target \\ predicted"), "confusion_matrix.csv")
    log_closed_figure(confusion_figure(matrix, class_names), "confusion_matrix.png")
