"""The ``infer`` step: a registered (or logged) model and data pinned to a lakeFS commit in;
predicted class-id masks, colour overlays and per-image metrics out."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import mlflow
import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image

from segmodels.data import Layout, load_dataset_info
from segmodels.dataset_store import fetch_dataset
from segmodels.inference import predict
from segmodels.inference.pyfunc import SegmentationPyfunc
from segmodels.metrics import ConfusionMatrix
from segmodels.pipeline import StepError
from segmodels.pipeline.refs import pin_data_ref
from segmodels.tracking import lineage
from segmodels.versioning import connect
from segmodels.visualize import overlay

log = logging.getLogger(__name__)

PREDICTED_MASKS_DIR = "masks"  # in output_dir: predicted class-id masks, one PNG per image
OVERLAYS_DIR = "overlays"  # in output_dir: the masks' colours blended over the images


def split_images(layout: Layout, split: str) -> list[Path]:
    """The images of ``split``, or of every split when the data set has no such split."""
    images = layout.images(split)
    if images:
        return images
    images = layout.images()
    if not images:
        raise StepError(f"no images in the data set at {layout.root}")
    log.info("no split %r in the data set: predicting all %d images", split, len(images))
    return images


def load_segmentation_model(model_uri: str):
    """The torch model and its package spec behind an MLflow model URI of a segmodels pyfunc model."""
    wrapper = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
    if not isinstance(wrapper, SegmentationPyfunc):
        raise StepError(f"model_uri={model_uri!r} is not a segmodels segmentation model")
    return wrapper.model, wrapper.spec


def run(cfg: DictConfig) -> Path:
    """Predict every image of ``cfg.split`` and return the output folder."""
    lakefs = connect()
    data = pin_data_ref(lakefs, cfg.data_ref, cfg.lakefs.repo, cfg.lakefs.data_branch, cfg.lakefs.data_prefix)
    with lineage.step_run("infer", cfg):
        mlflow.log_param("data_commit", data.ref)
        mlflow.set_tags({lineage.TAG_LAKEFS_REPO: data.repo, lineage.TAG_DATA_COMMIT: data.ref,
                         lineage.TAG_DATA_URI: str(data)})
        model, spec = load_segmentation_model(cfg.model_uri)
        layout = Layout(fetch_dataset(lakefs, data))
        info = load_dataset_info(layout.root)
        out = Path(cfg.output_dir).resolve()
        (out / PREDICTED_MASKS_DIR).mkdir(parents=True, exist_ok=True)
        (out / OVERLAYS_DIR).mkdir(parents=True, exist_ok=True)

        total = ConfusionMatrix(info.num_classes, ignore_index=info.ignore_index)
        rows = []
        paths = split_images(layout, cfg.split)
        for start in range(0, len(paths), cfg.batch_size):
            batch = paths[start:start + cfg.batch_size]
            images = [np.asarray(Image.open(path).convert("RGB")) for path in batch]
            for path, image, mask in zip(batch, images, predict(model, spec, images, batch_size=cfg.batch_size)):
                rows.append(write_prediction(path, image, mask, layout, out, info, cfg.overlay_alpha, total))

        with open(out / "metrics.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
            writer.writeheader()
            writer.writerows(rows)
        mlflow.log_artifact(str(out / "metrics.csv"))
        mlflow.log_metric("num_images", len(rows))
        if any("miou" in row for row in rows):
            summary = total.compute()
            mlflow.log_metrics({"miou": summary["miou"], "pixel_accuracy": summary["pixel_accuracy"]})
            log.info("mIoU %.4f on %d images", summary["miou"], len(rows))
        mlflow.set_tag("segmodels.output_dir", str(out))
        log.info("wrote %d masks and overlays to %s", len(rows), out)
        return out


def write_prediction(path: Path, image: np.ndarray, mask: np.ndarray, layout: Layout, out: Path, info,
                     alpha: float, total: ConfusionMatrix) -> dict:
    """Write one image's mask and overlay; score it (and add it to ``total``) when ground truth exists."""
    Image.fromarray(mask).save(out / PREDICTED_MASKS_DIR / f"{path.stem}.png")
    Image.fromarray(overlay(image, mask, info.colors, alpha=alpha)).save(out / OVERLAYS_DIR / f"{path.stem}.png")
    row = {"image": layout.relative(path)}
    truth_path = layout.mask_for(path)
    if truth_path.is_file():
        truth = torch.from_numpy(np.asarray(Image.open(truth_path), dtype=np.int64))
        predicted = torch.from_numpy(mask.astype(np.int64))
        one = ConfusionMatrix(info.num_classes, ignore_index=info.ignore_index)
        one.update(predicted, truth)
        total.update(predicted, truth)
        scores = one.compute()
        row.update({"miou": scores["miou"], "pixel_accuracy": scores["pixel_accuracy"]})
    return row
