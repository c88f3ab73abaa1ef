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

from segmodels.data import load_dataset_info
from segmodels.metrics import ConfusionMatrix
from segmodels.pipeline import StepError
from segmodels.pipeline.refs import pin_data_ref
from segmodels.tracking import lineage
from segmodels.versioning import connect
from segmodels.visualize import overlay

log = logging.getLogger(__name__)


def split_images(data_root: Path, split: str) -> list[Path]:
    """The images of ``split``, or of every split when the data set has no such split."""
    images = sorted((data_root / "images" / split).glob("*"))
    if images:
        return images
    images = sorted(p for p in (data_root / "images").glob("*/*") if p.is_file())
    if not images:
        raise StepError(f"no images under {data_root / 'images'}")
    log.info("no split %r in the data set: predicting all %d images", split, len(images))
    return images


def run(cfg: DictConfig) -> Path:
    """Predict every image of ``cfg.split`` and return the output folder."""
    lakefs = connect()
    data = pin_data_ref(lakefs, cfg.data_ref, cfg.lakefs.repo, cfg.lakefs.data_branch, cfg.lakefs.data_prefix)
    with lineage.step_run("infer", cfg):
        mlflow.log_param("data_commit", data.ref)
        mlflow.set_tags({lineage.TAG_LAKEFS_REPO: data.repo, lineage.TAG_DATA_COMMIT: data.ref,
                         lineage.TAG_DATA_URI: str(data)})
        model = mlflow.pyfunc.load_model(cfg.model_uri)
        data_root = lakefs.download_prefix(data.repo, data.ref, data.path)
        info = load_dataset_info(data_root)
        out = Path(cfg.output_dir).resolve()
        (out / "masks").mkdir(parents=True, exist_ok=True)
        (out / "overlays").mkdir(parents=True, exist_ok=True)

        total = ConfusionMatrix(info.num_classes, ignore_index=info.ignore_index)
        rows = []
        for image_path in split_images(data_root, cfg.split):
            image = np.asarray(Image.open(image_path).convert("RGB"))
            mask = np.asarray(model.predict(image[None])[0], dtype=np.uint8)
            Image.fromarray(mask).save(out / "masks" / f"{image_path.stem}.png")
            Image.fromarray(overlay(image, mask, info.colors, alpha=cfg.overlay_alpha)).save(
                out / "overlays" / f"{image_path.stem}.png")
            row = {"image": image_path.relative_to(data_root).as_posix()}
            truth_path = data_root / "masks" / image_path.parent.name / f"{image_path.stem}.png"
            if truth_path.is_file():
                truth = torch.from_numpy(np.asarray(Image.open(truth_path), dtype=np.int64))
                one = ConfusionMatrix(info.num_classes, ignore_index=info.ignore_index)
                one.update(torch.from_numpy(mask.astype(np.int64)), truth)
                total.update(torch.from_numpy(mask.astype(np.int64)), truth)
                row.update({key: one.compute()[key] for key in ("miou", "pixel_accuracy")})
            rows.append(row)

        with open(out / "metrics.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=sorted({key for row in rows for key in row}, key=str))
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
