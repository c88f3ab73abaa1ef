"""The ``infer`` step: a registered (or logged) model and data pinned to a lakeFS commit in;
predicted class-id masks, colour overlays and per-image metrics out. With ``source`` instead of a data set, any
folder of plain images (or an http(s) archive, s3:// prefix or lakefs:// ref of one) in: a mask and an overlay
per image at its size, keeping its subfolders, and ``index.csv`` (image -> mask, overlay, size); no metrics.

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
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.utils.models import _parse_model_uri
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig
from PIL import Image

from segmodels.data import Layout, load_dataset_info
from segmodels.data.classes import voc_color
from segmodels.data.formats.base import IMAGE_SUFFIXES, ReadLimits
from segmodels.data.images import ImageListing, list_images, read_rgb
from segmodels.data.prepare import ON_ERROR, read_limits_of
from segmodels.data.sources import redact, resolve_source
from segmodels.dataset_store import using_dataset
from segmodels.home import segmodels_home
from segmodels.inference import InferenceOptions, InvalidInput, predict_files
from segmodels.metrics import ConfusionMatrix
from segmodels.pipeline import StepError
from segmodels.pipeline.interactive import INSTEAD, choose, timestamp
from segmodels.pipeline.refs import pin_data_ref
from segmodels.progress import Progress
from segmodels.tracking import lineage
from segmodels.tracking.lineage import short_commit
from segmodels.tracking.models import load_segmentation_model, model_lineage, pinned_model_uri, registered_versions
from segmodels.tracking.stores import warn_if_other_store
from segmodels.tracking.training import log_class_report
from segmodels.training.engine import class_iou_key
from segmodels.versioning import LakeFS, LakeFSUri, connect
from segmodels.visualize import overlay

log = logging.getLogger(__name__)

PREDICTED_MASKS_DIR = "masks"  # in output_dir: predicted class-id masks, one PNG per image
OVERLAYS_DIR = "overlays"  # in output_dir: the masks' colours blended over the images
METRICS_FILE = "metrics.csv"  # in output_dir: one row per image (its mIoU and pixel accuracy when scored)
INDEX_FILE = "index.csv"  # in output_dir, for a source of plain images: image -> mask, overlay, width, height
REFUSED_FILE = "refused.csv"  # in output_dir with on_error=skip: the source's files left out, and why
SOURCE_FOLDER = "infer"  # in the segmodels home: scratch folders of downloaded sources, lists of refused files
SHOWN_REFUSED = 3  # refused files an error message names before pointing to the full list
SOURCE_TAG = "segmodels.source"  # on the run: the source of plain images (a lakefs:// one pinned to its commit)
DEFAULT_OUTPUT_FOLDER = "predictions"  # in the segmodels home: one folder per infer run when output_dir is empty
MARKER_FILE = lineage.PREDICTIONS_MARKER_FILE
COMMIT_METADATA = {
    lineage.TAG_MODEL_NAME: "registered_model",
    lineage.TAG_MODEL_VERSION: "model_version",
    lineage.TAG_MODEL_COMMIT: "model_commit",
}  # model lineage tag -> predictions commit metadata key
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
    name = model_uri[len("models:/") :].split("/")[0].split("@")[0] if model_uri.startswith("models:/") else ""
    if not name:
        raise StepError(
            f"interactive=true lists the versions of a registered model, and model_uri={model_uri!r} "
            "names none; pass model_uri=models:/<name>"
        )
    versions = registered_versions(client, name)[:VERSIONS_SHOWN]
    aliases = client.get_registered_model(name).aliases if versions else {}
    rows = [
        (
            version.version,
            " ".join(f"@{alias}" for alias, number in aliases.items() if str(number) == str(version.version)),
            " ".join(f"{key}={value}" for key, value in version.tags.items() if "." not in key),
            short_commit(version.tags.get(lineage.TAG_DATA_COMMIT)),
            timestamp(version.creation_timestamp),
        )
        for version in versions
    ]
    picked = choose(
        f"versions of registered model {name!r}, newest first",
        ("version", "aliases", "metric", "data commit", "registered"),
        rows,
        INSTEAD["infer"],
    )
    return f"models:/{name}/{versions[picked].version}"


# -- the model ---------------------------------------------------------------------------------------------------


def check_registered(client: MlflowClient, model_uri: str) -> None:
    """Refuse (StepError) a ``models:/<name>...`` URI of a registered model that does not exist, saying how to get
    one: register the newest train run's model or pass it as ``runs:/<id>/model``, or train one first."""
    if not model_uri.startswith("models:/"):
        return
    try:
        parsed = _parse_model_uri(model_uri)
    except MlflowException:
        return  # model_lineage names the malformed URI
    if parsed.name is None or client.search_registered_models(f"name = '{parsed.name}'"):
        return
    newest = newest_model_run(client)
    if newest is None:
        hint = (
            "train and register one first (mlflow run . -e main), or pass -P model_uri=<a model folder, "
            "runs:/<train run id>/model or lakefs:// URI>"
        )
    else:
        register = f"mlflow run . -e register -P run_id={newest} -P model_name={parsed.name}"
        register += f" -P alias={parsed.alias}" if parsed.alias else ""
        hint = f"register the newest train run's model first ({register}) or pass -P model_uri=runs:/{newest}/model"
        if parsed.version is not None or parsed.stage is not None:
            hint = f"pass -P model_uri=runs:/{newest}/model (the newest train run's model)"
    raise StepError(f"model_uri={model_uri}: no registered model {parsed.name!r} in the tracking store; {hint}")


def newest_model_run(client: MlflowClient) -> str | None:
    """The id of the newest finished train run, of any experiment, that made a model (tagged with its lakeFS URI;
    register runs carry that tag too, and are not what register takes)."""
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    query = (
        f"tags.`{lineage.TAG_STEP}` = 'train' AND tags.`{lineage.TAG_MODEL_URI}` LIKE 'lakefs://%' "
        "AND attributes.status = 'FINISHED'"
    )
    runs = (
        client.search_runs(experiments, query, order_by=["attributes.start_time DESC"], max_results=1)
        if experiments
        else []
    )
    return runs[0].info.run_id if runs else None


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
    raise StepError(
        f"model_uri={model_uri} predicts {describe_classes(spec.num_classes, model_names)} but the "
        f"data set at {data_uri} has {describe_classes(info.num_classes, info.class_names)}{differs}; "
        f"pass a data_ref of data with the model's classes, or a model_uri of a model of the data's "
        f"classes"
    )


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
        raise StepError(
            f"output_dir={out} is not a folder; pass an output_dir that is absent, empty or an earlier infer's output"
        )
    if (out / MARKER_FILE).is_file() or not any(out.iterdir()):
        return
    raise StepError(
        f"output_dir={out} holds files not written by infer (no {MARKER_FILE}) and would be replaced "
        f"whole; pass an absent or empty folder, or delete it"
    )


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


def predict_images(
    model,
    spec,
    paths: list[Path],
    layout: Layout,
    out: Path,
    info,
    batch_size: int,
    alpha: float,
    options: InferenceOptions,
) -> tuple[list[dict], ConfusionMatrix]:
    """Predict, write and score every image of ``paths`` into ``out``; the per-image rows and the total."""
    total = ConfusionMatrix(info.num_classes, ignore_index=info.ignore_index)
    rows = []
    with Progress("infer", len(paths), "images") as progress:
        for path, image, mask in predict_files(model, spec, paths, batch_size, options=options):
            write_outputs(out, path.stem, image, mask, info.colors, alpha)
            rows.append(score(path, mask, layout, info, total))
            progress.update(1)
    return rows, total


def predict_source(
    model,
    spec,
    listing: ImageListing,
    limits: ReadLimits,
    out: Path,
    batch_size: int,
    alpha: float,
    options: InferenceOptions,
) -> list[dict]:
    """Predict and write every image of a source's ``listing`` into ``out`` (its subfolders kept); the rows of
    ``index.csv``."""
    colors = spec.colors or [voc_color(class_id) for class_id in range(spec.num_classes)]
    by_path = {image.path: image for image in listing.images}
    rows = []
    with Progress("infer", len(listing.images), "images") as progress:
        for path, image, mask in predict_files(
            model, spec, list(by_path), batch_size, read=lambda path: read_rgb(path, limits), options=options
        ):
            found = by_path[path]
            mask_file, overlay_file = write_outputs(out, found.output_name, image, mask, colors, alpha)
            rows.append(
                {
                    "image": found.relative,
                    "mask": mask_file,
                    "overlay": overlay_file,
                    "width": found.width,
                    "height": found.height,
                }
            )
            progress.update(1)
    return rows


def write_outputs(out: Path, name: str, image: np.ndarray, mask: np.ndarray, colors, alpha: float) -> tuple[str, str]:
    """Write the mask and overlay of one image as ``masks/<name>.png`` and ``overlays/<name>.png`` in ``out``
    (``name`` may hold subfolders); their paths in ``out``."""
    written = []
    for folder, pixels in ((PREDICTED_MASKS_DIR, mask), (OVERLAYS_DIR, overlay(image, mask, colors, alpha=alpha))):
        relative = f"{folder}/{name}.png"
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(out / relative)
        written.append(relative)
    return written[0], written[1]


def score(path: Path, mask: np.ndarray, layout: Layout, info, total: ConfusionMatrix) -> dict:
    """The metrics row of one predicted image: scored (and added to ``total``) when ground truth exists."""
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
    mlflow.log_metrics(
        {class_iou_key(name, prefix=""): iou for name, iou in zip(class_names, ious) if not math.isnan(iou)}
    )
    log_class_report(list(class_names), ious, total.matrix.cpu().numpy())
    log.info(
        "mIoU %.4f at full resolution; per class: %s",
        summary["miou"],
        ", ".join(f"{name} {iou:.3f}" for name, iou in zip(class_names, ious)),
    )


def write_rows(path: Path, rows: list[dict]) -> Path:
    """A CSV of ``rows`` (``metrics.csv``, ``index.csv``): one per image, columns in first-seen order."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
        writer.writeheader()
        writer.writerows(rows)
    return path


# -- a source of plain images -------------------------------------------------------------------------------------


@contextmanager
def source_images(lakefs: LakeFS, cfg: DictConfig) -> Iterator[tuple[ImageListing, ReadLimits]]:
    """The readable images of ``cfg.source`` and the limits to read them under (confined to it); a downloaded
    or extracted source lives in a scratch folder of the segmodels home until the block ends. Refused files fail
    the step in one line (``on_error=fail``) or are left out with a warning (``skip``)."""
    scratch_root = segmodels_home() / SOURCE_FOLDER
    scratch_root.mkdir(parents=True, exist_ok=True)
    limits = read_limits_of(cfg.data)
    with tempfile.TemporaryDirectory(dir=scratch_root, prefix="source-") as scratch:
        root = resolve_source(
            cfg.source,
            Path(scratch),
            lakefs=lakefs,
            s3_endpoint_url=cfg.data.s3_endpoint_url,
            max_member_bytes=limits.max_file_bytes,
        )
        listing = list_images(root, limits)
        check_listing(redact(cfg.source), listing, cfg.on_error, scratch_root)
        yield listing, ReadLimits(root, limits.max_file_bytes, limits.max_image_pixels, limits.follow_external_symlinks)


def check_listing(source: str, listing: ImageListing, on_error: str, report_folder: Path) -> None:
    """Refuse (StepError, one line) a source without a readable image, or with refused files under
    ``on_error=fail``: the first few named, all of them in a CSV in ``report_folder`` that the line names."""
    report = listing.report
    if on_error not in ON_ERROR:
        raise StepError(f"on_error={on_error}: expected one of {', '.join(ON_ERROR)}")
    if not report and listing.images:
        return
    full_list = ""
    if report:
        path = report_folder / f"refused-{uuid.uuid4().hex[:12]}.csv"
        path.write_text(report.to_csv())
        shown = "; ".join(str(issue) for issue in report.issues[:SHOWN_REFUSED])
        more = f"; ... {len(report) - SHOWN_REFUSED} more" if len(report) > SHOWN_REFUSED else ""
        full_list = f" ({shown}{more}; full list in {path})"
    if not listing.images:
        raise StepError(f"source={source}: no readable image ({', '.join(IMAGE_SUFFIXES)}) found{full_list}")
    if on_error == "fail":
        raise StepError(
            f"source={source}: {len(report)} of {report.checked} image file(s) refused{full_list}; "
            f"-P on_error=skip predicts the {len(listing.images)} others"
        )
    log.warning("source=%s: left out %d of %d image file(s)%s", source, len(report), report.checked, full_list)


def pinned_source(lakefs: LakeFS, source: str) -> str:
    """``source`` as recorded: a lakefs:// ref pinned to its commit id, anything else with credentials masked."""
    if not source.startswith("lakefs://"):
        return redact(source)
    uri = LakeFSUri.parse(source)
    return str(LakeFSUri(uri.repo, lakefs.resolve_commit(uri.repo, uri.ref), uri.path))


def commit_predictions(
    lakefs: LakeFS,
    folder: Path,
    repo: str,
    source_ref: str,
    settings: DictConfig,
    run_id: str,
    metadata: dict[str, str],
) -> LakeFSUri:
    """Commit ``folder`` (masks, overlays, metrics or index) to ``<predictions_branch>/<predictions_prefix>/<run_id>``
    (of the ``lakefs`` config ``settings``) in ``repo`` in one atomic commit (the branch created from
    ``source_ref`` when new); tag the run with the pinned URI, which is returned."""
    path = f"{settings.predictions_prefix.strip('/')}/{run_id}".strip("/")
    inputs = metadata.get("data_uri") or metadata["source"]
    message = f"infer {run_id}: predictions of {metadata['model_uri']} on {inputs}"
    uri = lakefs.commit_directory(
        repo, settings.predictions_branch, folder, path, message, metadata=metadata, source_ref=source_ref
    )
    mlflow.set_tag(lineage.TAG_PREDICTIONS_URI, str(uri))
    log.info("predictions committed to %s", uri)
    return uri


def commit_metadata(model_uri: str, model_tags: dict[str, str], run_id: str, inputs: dict[str, str]) -> dict[str, str]:
    """The lakeFS commit metadata of predictions: the model, the ``inputs`` they were made from, the run and code."""
    commit, _ = lineage.git_commit()
    return {
        "model_uri": model_uri,
        **inputs,
        "mlflow_run_id": run_id,
        "git_commit": commit or "unknown",
        lineage.TRACKING_STORE_KEY: lineage.tracking_store(),
        **{COMMIT_METADATA[key]: value for key, value in model_tags.items()},
    }


# -- the step ----------------------------------------------------------------------------------------------------


def run(cfg: DictConfig) -> Path:
    """Predict every image of ``cfg.split`` of the data set, or of ``cfg.source``; return the output folder."""
    if cfg.source and cfg.data_ref:
        raise StepError(
            f"source={redact(cfg.source)} and data_ref={cfg.data_ref} both given; pass source to "
            f"predict plain images, or data_ref to predict a data set's split, not both"
        )
    inference_options(cfg)  # before anything runs
    given = given_output_dir(cfg.output_dir)
    if given is not None:
        check_output_dir(given)  # before anything runs; checked again when it is replaced
    lakefs = connect()
    if cfg.source:
        with source_images(lakefs, cfg) as (listing, limits):
            return infer_source(cfg, lakefs, given, listing, limits)
    return infer_data_set(cfg, lakefs, given)


def inference_options(cfg: DictConfig) -> InferenceOptions:
    """``cfg.inference`` as :class:`InferenceOptions`; a value it refuses is a StepError naming the key."""
    try:
        return InferenceOptions.of(cfg.inference)
    except InvalidInput as error:
        raise StepError(f"inference.{error}") from None


def open_model(cfg: DictConfig) -> tuple[str, dict[str, str], object, object]:
    """The model URI used (picked from a table with ``interactive``), its lineage tags (set on the run), the torch
    model and its spec."""
    client = MlflowClient()
    model_uri = chosen_model_uri(client, cfg.model_uri) if cfg.interactive else cfg.model_uri
    check_registered(client, model_uri)
    model_tags = model_lineage(model_uri, client)
    mlflow.set_tags({lineage.TAG_INPUT_MODEL_URI: model_uri, **model_tags})
    model, spec = load_segmentation_model(pinned_model_uri(model_uri, model_tags))
    return model_uri, model_tags, model, spec


def infer_data_set(cfg: DictConfig, lakefs: LakeFS, given: Path | None) -> Path:
    """Predict (and score) the split of the data set ``cfg.data_ref`` names."""
    data = pin_data_ref(lakefs, cfg.data_ref, cfg.lakefs.repo, cfg.lakefs.data_branch, cfg.lakefs.data_prefix)
    warn_if_other_store(lakefs, data.repo, cfg.lakefs.model_branch, cfg.lakefs.data_branch)
    with lineage.step_run("infer", cfg) as active, using_dataset(lakefs, data) as data_root:  # locked while read
        run_id = active.info.run_id
        mlflow.log_param("data_commit", data.ref)
        mlflow.set_tags(
            {lineage.TAG_LAKEFS_REPO: data.repo, lineage.TAG_DATA_COMMIT: data.ref, lineage.TAG_DATA_URI: str(data)}
        )
        model_uri, model_tags, model, spec = open_model(cfg)
        layout = Layout(data_root)
        info = load_dataset_info(layout.root)
        check_classes(model_uri, spec, str(data), info)
        paths = split_images(layout, cfg.split)
        out = given or default_output_dir(run_id)
        log.info("predictions go to %s", out)
        with staged_output(out, run_id) as staging:
            rows, total = predict_images(
                model, spec, paths, layout, staging, info, cfg.batch_size, cfg.overlay_alpha, inference_options(cfg)
            )
            mlflow.log_artifact(str(write_rows(staging / METRICS_FILE, rows)))
            mlflow.log_metric("num_images", len(rows))
            if any("miou" in row for row in rows):
                log_scores(total, info.class_names)
            if cfg.commit_predictions:
                metadata = commit_metadata(
                    model_uri, model_tags, run_id, {"data_commit": data.ref, "data_uri": str(data), "split": cfg.split}
                )
                commit_predictions(lakefs, staging, data.repo, data.ref, cfg.lakefs, run_id, metadata)
        mlflow.set_tag("segmodels.output_dir", str(out))
        log.info("wrote %d masks and overlays to %s", len(rows), out)
        return out


def infer_source(
    cfg: DictConfig, lakefs: LakeFS, given: Path | None, listing: ImageListing, limits: ReadLimits
) -> Path:
    """Predict every readable image of ``cfg.source`` (no ground truth: no metrics)."""
    source = pinned_source(lakefs, cfg.source)
    with lineage.step_run("infer", cfg) as active:
        run_id = active.info.run_id
        mlflow.set_tag(SOURCE_TAG, source)
        model_uri, model_tags, model, spec = open_model(cfg)
        out = given or default_output_dir(run_id)
        log.info("predictions of %d images go to %s", len(listing.images), out)
        with staged_output(out, run_id) as staging:
            rows = predict_source(
                model, spec, listing, limits, staging, cfg.batch_size, cfg.overlay_alpha, inference_options(cfg)
            )
            mlflow.log_artifact(str(write_rows(staging / INDEX_FILE, rows)))
            if listing.report:
                mlflow.log_artifact(str(write_refused(staging / REFUSED_FILE, listing)))
            mlflow.log_metrics({"num_images": len(rows), "num_refused_files": len(listing.report)})
            if cfg.commit_predictions:
                repo, source_ref = predictions_repo(lakefs, source, cfg)
                metadata = commit_metadata(model_uri, model_tags, run_id, {"source": source})
                commit_predictions(lakefs, staging, repo, source_ref, cfg.lakefs, run_id, metadata)
        mlflow.set_tag("segmodels.output_dir", str(out))
        log.info("wrote %d masks and overlays to %s", len(rows), out)
        return out


def write_refused(path: Path, listing: ImageListing) -> Path:
    """``refused.csv``: the source's files left out (``on_error=skip``) and why."""
    path.write_text(listing.report.to_csv())
    return path


def predictions_repo(lakefs: LakeFS, source: str, cfg: DictConfig) -> tuple[str, str]:
    """Where predictions of a source are committed: a lakefs:// source's repository, branching from its commit;
    else ``lakefs.repo`` (created when new), branching from ``lakefs.data_branch``."""
    if source.startswith("lakefs://"):
        uri = LakeFSUri.parse(source)
        return uri.repo, uri.ref
    lakefs.ensure_repository(cfg.lakefs.repo, default_branch=cfg.lakefs.data_branch)
    return cfg.lakefs.repo, cfg.lakefs.data_branch
