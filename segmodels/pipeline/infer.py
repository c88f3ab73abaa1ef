"""The ``infer`` step: a registered (or logged) model and data pinned to a lakeFS commit in;
predicted class-id masks, colour overlays and per-image metrics out.

The data set must have the model's classes (else nothing is predicted). ``output_dir`` is built in a staging
folder beside it and replaces it whole at the end, so no mask of an earlier run stays beside the new ones; only
a folder that is absent, empty or an earlier infer's output (it holds :data:`MARKER_FILE`) is replaced. With
``commit_predictions=true`` the outputs are also committed to lakeFS in one atomic commit."""

from __future__ import annotations

import csv
import logging
import math
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import mlflow
import numpy as np
import torch
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig
from PIL import Image

from segmodels.data import Layout, load_dataset_info
from segmodels.dataset_store import fetch_dataset
from segmodels.home import segmodels_home
from segmodels.inference import predict_files
from segmodels.metrics import ConfusionMatrix
from segmodels.pipeline import StepError
from segmodels.pipeline.interactive import INSTEAD, choose, timestamp
from segmodels.pipeline.refs import pin_data_ref
from segmodels.tracking import lineage
from segmodels.tracking.lineage import short_commit
from segmodels.tracking.training import log_class_report
from segmodels.training.engine import class_iou_key
from segmodels.tracking.models import (load_segmentation_model, model_lineage, pinned_model_uri,
                                       registered_versions)
from segmodels.tracking.stores import warn_if_other_store
from segmodels.versioning import LakeFS, LakeFSUri, connect
from segmodels.visualize import overlay

log = logging.getLogger(__name__)

PREDICTED_MASKS_DIR = "masks"  # in output_dir: predicted class-id masks, one PNG per image
OVERLAYS_DIR = "overlays"  # in output_dir: the masks' colours blended over the images
METRICS_FILE = "metrics.csv"  # in output_dir: one row per image (its mIoU and pixel accuracy when scored)
DEFAULT_OUTPUT_FOLDER = "predictions"  # in the segmodels home: one folder per infer run when output_dir is empty
MARKER_FILE = lineage.PREDICTIONS_MARKER_FILE
COMMIT_METADATA = {lineage.TAG_MODEL_NAME: "registered_model", lineage.TAG_MODEL_VERSION: "model_version",
                   lineage.TAG_MODEL_COMMIT: "model_commit"}  # model lineage tag -> predictions commit metadata key
SHOWN_CLASS_NAMES = 6  # class names an error message lists before "..."
VERSIONS_SHOWN = 20  # rows of the interactive table


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


def chosen_model_uri(client: MlflowClient, model_uri: str) -> str:
    """``models:/<name>/<version>`` of the version the user picks from a table of the registered model that
    ``model_uri`` names (``interactive=true``)."""
    name = model_uri[len("models:/"):].split("/")[0].split("@")[0] if model_uri.startswith("models:/") else ""
    if not name:
        raise StepError(f"interactive=true lists the versions of a registered model, and model_uri={model_uri!r} "
                        "names none; pass model_uri=models:/<name>")
    versions = registered_versions(client, name)[:VERSIONS_SHOWN]
    aliases = client.get_registered_model(name).aliases if versions else {}
    rows = [(version.version,
             " ".join(f"@{alias}" for alias, number in aliases.items() if str(number) == str(version.version)),
             " ".join(f"{key}={value}" for key, value in version.tags.items() if "." not in key),
             short_commit(version.tags.get(lineage.TAG_DATA_COMMIT)), timestamp(version.creation_timestamp))
            for version in versions]
    picked = choose(f"versions of registered model {name!r}, newest first",
                    ("version", "aliases", "metric", "data commit", "registered"), rows, INSTEAD["infer"])
    return f"models:/{name}/{versions[picked].version}"


# -- classes -----------------------------------------------------------------------------------------------------


def check_classes(model_uri: str, spec, data_uri: str, info) -> None:
    """Refuse (StepError) a data set whose number of classes, or class names where both sides name them,
    differ from the model's: its scores would mean nothing."""
    model_names = list(spec.class_names)
    data_names = {c.id: c.name for c in info.classes}
    same_names = all(data_names.get(i, name) == name for i, name in enumerate(model_names))
    if spec.num_classes == info.num_classes and same_names:
        return
    differs = ""
    if spec.num_classes == info.num_classes:
        first = next(i for i, name in enumerate(model_names) if data_names.get(i, name) != name)
        differs = f" (class {first} is {model_names[first]!r} in the model, {data_names[first]!r} in the data)"
    raise StepError(f"model_uri={model_uri} predicts {describe_classes(spec.num_classes, model_names)} but the "
                    f"data set at {data_uri} has {describe_classes(info.num_classes, info.class_names)}{differs}; "
                    f"pass a data_ref of data with the model's classes")


def describe_classes(count: int, names: Sequence[str]) -> str:
    """``4 classes (background, circle, ...)``, the names cut after a few."""
    text = f"{count} class{'es' if count != 1 else ''}"
    if names:
        shown = ", ".join(names[:SHOWN_CLASS_NAMES]) + (", ..." if len(names) > SHOWN_CLASS_NAMES else "")
        text += f" ({shown})"
    return text


# -- the output folder -------------------------------------------------------------------------------------------


def given_output_dir(output_dir: str) -> Path | None:
    """``output_dir`` as an absolute path (a relative one is taken from the working directory, the project
    folder under ``mlflow run``); None when empty: the default, :func:`default_output_dir`."""
    return Path(output_dir).expanduser().resolve() if output_dir else None


def default_output_dir(run_id: str) -> Path:
    """``<segmodels home>/predictions/<infer run id>``: outside the project folder, which for ``mlflow run
    <git url>`` is a temporary checkout, and new for every run (as the lakeFS copy of ``commit_predictions``)."""
    return segmodels_home() / DEFAULT_OUTPUT_FOLDER / run_id


def check_output_dir(out: Path) -> None:
    """Refuse (StepError) to replace ``out`` unless it is absent, an empty folder or an earlier infer's output."""
    if not out.exists():
        return
    if not out.is_dir():
        raise StepError(f"output_dir={out} is not a folder; pass an output_dir that is absent, empty or an "
                        f"earlier infer's output")
    if (out / MARKER_FILE).is_file() or not any(out.iterdir()):
        return
    raise StepError(f"output_dir={out} holds files not written by infer (no {MARKER_FILE}) and would be replaced "
                    f"whole; pass an absent or empty folder, or delete it")


@contextmanager
def staged_output(out: Path, run_id: str) -> Iterator[Path]:
    """A fresh staging folder beside ``out`` to write into; on success it gets the marker and replaces ``out``,
    on failure it is removed and ``out`` stays as it was."""
    check_output_dir(out)
    staging = out.parent / f".{out.name}.staging-{uuid.uuid4().hex[:12]}"
    try:
        staging.mkdir(parents=True)  # mode from the umask, as output_dir's would be
    except OSError as error:
        raise StepError(f"output_dir={out}: cannot create a folder in {out.parent} ({error.strerror})") from None
    try:
        (staging / PREDICTED_MASKS_DIR).mkdir()
        (staging / OVERLAYS_DIR).mkdir()
        yield staging
        (staging / MARKER_FILE).write_text(run_id + "\n")
        replace_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def replace_folder(new: Path, out: Path) -> None:
    """Put folder ``new`` at ``out`` (same parent): the old ``out`` is renamed away, ``new`` renamed in (each an
    atomic rename), then the old one deleted; should the second rename fail, the old one is put back."""
    check_output_dir(out)  # again: it may have changed while predicting
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:12]}"
        os.rename(out, old)
    try:
        os.rename(new, out)
    except BaseException:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
        if old.exists():
            log.warning("could not delete the previous output, renamed to %s", old)


# -- predictions -------------------------------------------------------------------------------------------------


def predict_images(model, spec, paths: list[Path], layout: Layout, out: Path, info, batch_size: int,
                   alpha: float) -> tuple[list[dict], ConfusionMatrix]:
    """Predict, write and score every image of ``paths`` into ``out``; the per-image rows and the total."""
    total = ConfusionMatrix(info.num_classes, ignore_index=info.ignore_index)
    rows = []
    for path, image, mask in predict_files(model, spec, paths, batch_size):
        rows.append(write_prediction(path, image, mask, layout, out, info, alpha, total))
    return rows, total


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


def log_scores(total: ConfusionMatrix, class_names: list[str]) -> None:
    """Log the scores of the labelled images at their full resolution: ``miou``, ``pixel_accuracy``,
    ``mean_accuracy``, ``dice``, one ``iou_<class>`` per class, the per-class table and the confusion matrix."""
    summary = total.compute()
    ious = summary["iou_per_class"]
    mlflow.log_metrics({key: summary[key] for key in ("miou", "pixel_accuracy", "mean_accuracy", "dice")})
    mlflow.log_metrics({class_iou_key(name, prefix=""): iou for name, iou in zip(class_names, ious)
                        if not math.isnan(iou)})
    log_class_report(list(class_names), ious, total.matrix.cpu().numpy())
    log.info("mIoU %.4f at full resolution; per class: %s", summary["miou"],
             ", ".join(f"{name} {iou:.3f}" for name, iou in zip(class_names, ious)))


def write_metrics(out: Path, rows: list[dict]) -> Path:
    """``metrics.csv``: one row per image."""
    path = out / METRICS_FILE
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
        writer.writeheader()
        writer.writerows(rows)
    return path


def commit_predictions(lakefs: LakeFS, folder: Path, data: LakeFSUri, branch: str, prefix: str, run_id: str,
                       metadata: dict[str, str]) -> LakeFSUri:
    """Commit ``folder`` (masks, overlays, metrics) to ``<branch>/<prefix>/<run_id>`` of the data's repository in
    one atomic commit (``branch`` created from the data commit when new); returns the pinned URI."""
    path = f"{prefix.strip('/')}/{run_id}".strip("/")
    message = f"infer {run_id}: predictions of {metadata['model_uri']} on {data}"
    return lakefs.commit_directory(data.repo, branch, folder, path, message, metadata=metadata, source_ref=data.ref)


# -- the step ----------------------------------------------------------------------------------------------------


def run(cfg: DictConfig) -> Path:
    """Predict every image of ``cfg.split`` and return the output folder."""
    given = given_output_dir(cfg.output_dir)
    if given is not None:
        check_output_dir(given)  # before anything runs; checked again when it is replaced
    lakefs = connect()
    data = pin_data_ref(lakefs, cfg.data_ref, cfg.lakefs.repo, cfg.lakefs.data_branch, cfg.lakefs.data_prefix)
    warn_if_other_store(lakefs, data.repo, cfg.lakefs.model_branch, cfg.lakefs.data_branch)
    with lineage.step_run("infer", cfg) as active:
        run_id = active.info.run_id
        out = given or default_output_dir(run_id)
        log.info("predictions go to %s", out)
        mlflow.log_param("data_commit", data.ref)
        mlflow.set_tags({lineage.TAG_LAKEFS_REPO: data.repo, lineage.TAG_DATA_COMMIT: data.ref,
                         lineage.TAG_DATA_URI: str(data)})
        client = MlflowClient()
        model_uri = chosen_model_uri(client, cfg.model_uri) if cfg.interactive else cfg.model_uri
        model_tags = model_lineage(model_uri, client)
        mlflow.set_tags({lineage.TAG_INPUT_MODEL_URI: model_uri, **model_tags})
        model, spec = load_segmentation_model(pinned_model_uri(model_uri, model_tags))
        layout = Layout(fetch_dataset(lakefs, data))
        info = load_dataset_info(layout.root)
        check_classes(model_uri, spec, str(data), info)
        paths = split_images(layout, cfg.split)

        with staged_output(out, run_id) as staging:
            rows, total = predict_images(model, spec, paths, layout, staging, info, cfg.batch_size,
                                         cfg.overlay_alpha)
            mlflow.log_artifact(str(write_metrics(staging, rows)))
            mlflow.log_metric("num_images", len(rows))
            if any("miou" in row for row in rows):
                log_scores(total, info.class_names)
            if cfg.commit_predictions:
                commit, _ = lineage.git_commit()
                metadata = {"model_uri": model_uri, "data_commit": data.ref, "data_uri": str(data),
                            "split": cfg.split, "mlflow_run_id": run_id, "git_commit": commit or "unknown",
                            lineage.TRACKING_STORE_KEY: lineage.tracking_store(),
                            **{COMMIT_METADATA[key]: value for key, value in model_tags.items()}}
                uri = commit_predictions(lakefs, staging, data, cfg.lakefs.predictions_branch,
                                         cfg.lakefs.predictions_prefix, run_id, metadata)
                mlflow.set_tag(lineage.TAG_PREDICTIONS_URI, str(uri))
                log.info("predictions committed to %s", uri)
        mlflow.set_tag("segmodels.output_dir", str(out))
        log.info("wrote %d masks and overlays to %s", len(rows), out)
        return out
