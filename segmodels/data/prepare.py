"""Read, validate and normalise a source into the layout every other part of segmodels reads."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from omegaconf import OmegaConf
from PIL import Image

from segmodels.data.binary import BinaryMasks, NotBinary, sniff_binary
from segmodels.data.classes import ClassSpec, parse_classes, voc_color
from segmodels.data.errors import DataValidationError, Issue, ValidationReport, printable
from segmodels.data.fingerprint import FINGERPRINT_KEY, dataset_fingerprint
from segmodels.data.formats import Sample, create_reader
from segmodels.data.formats.base import (
    MAX_FILE_BYTES,
    ImageTooLarge,
    ReadLimits,
    SourceFileError,
    describe,
    load_class_file,
    open_image,
    read_limits,
)
from segmodels.data.info import DatasetInfo
from segmodels.data.layout import SPLITS, Layout
from segmodels.data.masks import MaskEncoder, encode_png, resize_nearest
from segmodels.data.shapes import AnnotationError
from segmodels.data.sources import fetch_limits, redact, resolve_source
from segmodels.data.splits import assign_splits
from segmodels.data.stats import CLASS_STATS_KEY, DatasetStats
from segmodels.data.writer import LayoutWriter
from segmodels.progress import track
from segmodels.schemas import DataConfig

log = logging.getLogger(__name__)

ON_ERROR = ("fail", "skip")
IMAGE_EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp", "GIF": ".gif"}
NAME_BYTES = 250  # a sample's name in the layout at most (file names: 255 bytes, with an extension of 5 at most)
FIXES = {"size mismatch": "-P data.resize_masks=true resizes the masks to their image (nearest)"}  # per Issue.kind


@dataclass
class PreparedDataset:
    """A normalised data set on local disk, its description, the validation report and its statistics."""

    root: Path
    info: DatasetInfo
    report: ValidationReport
    stats: DatasetStats
    reused: int = 0  # samples taken unchanged from a previous preparation
    resized: int = 0  # masks resized to their image (data.resize_masks)
    binary: BinaryMasks | None = None  # {0, 255} or {0, 1} masks read as background/foreground


class SampleError(Exception):
    """A sample is refused; the message is the reason and `file` the file it concerns."""

    def __init__(self, file: str, reason: str):
        super().__init__(reason)
        self.file = file


def prepare_dataset(
    source,
    out_dir,
    data: DataConfig,
    *,
    on_error: str,
    split_seed: int,
    cache_file: Path | None = None,
    lakefs=None,
    report_file: Path | None = None,
) -> PreparedDataset:
    """Read `source` (folder, archive, http(s)/s3/lakefs URI) and write the normalised layout into `out_dir`.

    `data` holds the options of `conf/data/` (a `DataConfig`, or the composed `cfg.data` node): format, classes,
    split fractions, ignore index, mask value mapping, format-specific `options`. Every sample is validated
    (readable image, mask present, equal sizes, declared class ids, unique name); with on_error="fail" a
    DataValidationError lists every bad file, with "skip" the good ones are kept and the report returned. Samples
    without a split in the source get one by `split_seed`. Images are copied byte for byte and masks re-encoded
    deterministically, one sample in memory at a time. `cache_file` makes re-preparation incremental (unchanged
    samples are not decoded again); `lakefs` is the client that reads a lakefs:// source; `report_file` receives
    the full list of bad files as CSV (messages show the first few and name it).

    With no classes and no mask value mapping given, masks holding only {0, 255} (or {0, 1}) become a
    background/foreground data set (:mod:`segmodels.data.binary`). A data set with more than
    `data.max_ignored_share` of its pixels ignored, or fewer than two classes with pixels in its train split, is
    refused whatever `on_error` says.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error={on_error!r}: expected one of {ON_ERROR}")
    ignore_index = int(data.ignore_index)
    if not 0 <= ignore_index <= 255:
        raise ValueError(f"ignore_index={ignore_index}: masks are 8-bit, expected 0..255")
    classes, mask_values, options = plain(data.classes), plain(data.mask_values), plain(data.options)
    ignore_classes = list(data.ignore_classes)
    resize_masks = bool(data.resize_masks)
    limits = read_limits_of(data)
    fresh_output = not Path(out_dir).exists()
    with tempfile.TemporaryDirectory(prefix="segmodels-source-") as scratch, ExitStack() as reading:
        reading.push(lambda failed, *_: _discard_output(out_dir) if failed and fresh_output else None)
        root = resolve_source(
            source,
            Path(scratch),
            lakefs=lakefs,
            s3_endpoint_url=data.s3_endpoint_url,
            limits=fetch_limits(data, limits.max_file_bytes),
        )
        reading.enter_context(read_limits(dataclasses.replace(limits, root=root)))  # every read below: inside root
        shown = _shown_as_source(source, Path(scratch), root)
        reading.push(lambda failed, error, _: _rename_error(error, shown))
        reader = create_reader(root, data.format, **options)
        declared = _declared_classes(reader, classes, data.classes_file, root)
        value_map = _value_map(reader, declared, ignore_classes, ignore_index, mask_values)
        if declared is not None:
            declared = [spec for spec in declared if spec.name not in set(ignore_classes)]
        listing = ValidationReport()
        samples = _unique_samples(reader, listing)
        splits = _splits(samples, data.source_splits, split_seed, data.val_fraction, data.test_fraction)
        binary = sniff_binary(samples) if declared is None and not value_map else None
        settings = {
            "format": reader.name,
            "ignore_index": ignore_index,
            "resize_masks": resize_masks,
            "options": options,
            "limits": [limits.max_file_bytes, limits.max_image_pixels, limits.follow_external_symlinks],
        }
        while True:  # twice at most: binary masks assumed from the first masks, then a mask shows other values
            known, mapping = (binary.classes, {**value_map, **binary.value_map}) if binary else (declared, value_map)
            digest = _settings_digest(
                {
                    **settings,
                    "classes": [s.to_dict() for s in known or ()],
                    "value_map": sorted(mapping.items()),
                    "binary": binary and binary.values,
                }
            )
            writer = LayoutWriter(Layout(out_dir), cache_file, digest)
            try:
                report, stats, resized = _write_samples(
                    samples,
                    splits,
                    writer,
                    MaskEncoder(known, ignore_index, mapping),
                    binary,
                    resize_masks,
                    on_error,
                    listing,
                )
            except NotBinary as surprise:
                log.info("%s: reading the mask values as class ids", surprise)
                binary = None
                continue
            except BaseException:
                writer.save_cache()
                raise
            break
        try:
            _rename_report(report, shown)
            full_list = _write_report_file(report, report_file)
            if report and on_error == "fail":
                raise DataValidationError(refusal_summary(redact(source), report), report, full_list)
            if not stats.num_images:
                raise DataValidationError(
                    f"{redact(source)}: empty data set (no valid image/mask pair found)", report, full_list
                )
            if binary:
                log.info(binary.describe())
            info = _dataset_info(
                data.name or _default_name(source, root), known, ignore_index, stats, reader.name, binary, resized
            )
            check_usable(redact(source), stats, info, float(data.max_ignored_share))
            info.extra[FINGERPRINT_KEY] = dataset_fingerprint(
                writer.layout,
                [writer.layout.root / f.path for f in writer.files if (f.split, f.kind) == ("train", "image")],
                stats,
                info.num_classes,
                ignore_index,
                binary is not None or info.num_classes == 2,
                bool(data.orientation_free),
            )
            writer.finish(info)
        finally:
            writer.save_cache()
    if report:
        log.warning("skipped %s", report.to_text(full_list))
    return PreparedDataset(Path(out_dir), info, report, stats, reused=writer.reused, resized=resized, binary=binary)


def _settings_digest(settings: dict) -> str:
    """sha256 of the settings a prepared sample depends on (the incremental cache is valid for equal settings)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _write_samples(samples, splits, writer, encoder, binary, resize_masks, on_error, listing):
    """Validate every sample and write the good ones: (report, statistics, masks resized)."""
    report = ValidationReport(list(listing.issues))
    stats, resized = DatasetStats(), 0
    for sample in track(samples, "ingest: reading samples", unit="sample"):
        report.checked += 1
        try:
            entry = _process(
                sample,
                splits[sample.name],
                writer,
                encoder,
                resize_masks,
                binary,
                writing=not report or on_error == "skip",
            )
        except SampleError as error:
            report.add(error.file, str(error))
            continue
        report.accepted += 1
        if entry:
            stats.add(entry["split"], entry["width"], entry["height"], {int(k): v for k, v in entry["pixels"].items()})
            resized += bool(entry.get("resized"))
    return report, stats, resized


def refusal_summary(source: str, report: ValidationReport) -> str:
    """The one line of a refused source: how many files, of which reasons, the first one, and the fixes."""
    kinds = report.kinds().most_common()
    reasons = ", ".join(f"{count} {kind}" for kind, count in kinds)
    fixes = [FIXES[kind] for kind, _ in kinds if kind in FIXES] + ["-P on_error=skip keeps the good files"]
    return (
        f"{source}: {len(report)} bad file(s) in {report.checked} sample(s), data set refused ({reasons}; first: "
        f"{report.issues[0]}); {'; '.join(fixes)}"
    )


def _write_report_file(report: ValidationReport, report_file: Path | None) -> Path | None:
    """Write the full list of bad files as CSV to `report_file` (removed when there are none); the path or None."""
    if report_file is None:
        return None
    report_file = Path(report_file)
    if not report:
        report_file.unlink(missing_ok=True)
        return None
    report_file.parent.mkdir(parents=True, exist_ok=True)
    report_file.write_text(report.to_csv())
    return report_file


def check_usable(source: str, stats: DatasetStats, info: DatasetInfo, max_ignored_share: float) -> None:
    """Refuse, in one line with the numbers, a data set a model cannot learn from: more than `max_ignored_share`
    of its pixels ignored, or fewer than two classes with pixels in its train split."""
    ignore = info.ignore_index
    total = int(stats.pixels.sum())
    ignored = int(stats.pixels[ignore])
    if total and ignored / total > max_ignored_share:
        allowed = math.ceil(ignored / total * 100) / 100
        raise DataValidationError(
            f"{source}: {ignored / total:.1%} of the pixels ({ignored:,} of {total:,}) are ignore_index {ignore}, "
            f"above data.max_ignored_share={max_ignored_share:g}: map that mask value to a class "
            f"(data.mask_values, data.classes) or accept it with -P data.max_ignored_share={allowed:g}"
        )
    train = stats.by_split.get("train")
    pixels = train.pixels if train is not None else np.zeros(256, dtype=np.int64)
    present = [i for i in np.flatnonzero(pixels) if i != ignore]
    if len(present) < 2:
        shares = (
            ", ".join(f"{info.class_names[i] if i < info.num_classes else i}: {int(pixels[i]):,} px" for i in present)
            or "none"
        )
        raise DataValidationError(
            f"{source}: the train split has pixels of {len(present)} class(es) ({shares}; "
            f"{int(pixels[ignore]):,} px ignored): a segmentation model needs at least 2; check data.classes and "
            "data.mask_values"
        )


def read_limits_of(data) -> ReadLimits:
    """The read limits the data options set: `max_file_bytes`, `max_image_pixels` (null: Pillow's
    `Image.MAX_IMAGE_PIXELS`) and `follow_external_symlinks`."""
    max_bytes = _option(data, "max_file_bytes", MAX_FILE_BYTES)
    max_pixels = _option(data, "max_image_pixels", None)
    for key, value in (("max_file_bytes", max_bytes), ("max_image_pixels", max_pixels)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise DataValidationError(f"data.{key}={value!r}: expected a positive whole number")
    return ReadLimits(
        root=None,
        max_file_bytes=int(max_bytes if max_bytes is not None else MAX_FILE_BYTES),
        max_image_pixels=int(max_pixels) if max_pixels is not None else Image.MAX_IMAGE_PIXELS,
        follow_external_symlinks=bool(_option(data, "follow_external_symlinks", False)),
    )


def _option(data, key: str, default):
    try:
        value = data[key] if isinstance(data, dict) else getattr(data, key)
    except (AttributeError, KeyError):
        return default
    return default if value is None and default is not None else value


def _shown_as_source(source, scratch: Path, root: Path):
    """text -> text naming the files of a downloaded or extracted source by the source as given (credentials
    redacted: `https://host/data.zip/images/a.png`), not by the temporary folder they were read from; None for a
    source read where it is."""
    if not Path(root).is_relative_to(scratch) or Path(root) == scratch:
        return None
    temporary = str(scratch / Path(root).relative_to(scratch).parts[0])  # the extraction or download folder
    label = redact(source).rstrip("/")
    return lambda text: text.replace(temporary, label)


def _rename_report(report: ValidationReport, shown) -> None:
    if shown:
        report.issues[:] = [Issue(shown(issue.file), shown(issue.reason)) for issue in report.issues]


def _rename_error(error, shown) -> None:
    """Re-raise a DataValidationError about a temporary copy of the source naming the source instead."""
    if shown and isinstance(error, DataValidationError):
        _rename_report(error.report, shown)
        raise DataValidationError(shown(error.summary), error.report, error.report_file) from None


def _discard_output(out_dir) -> None:
    """Remove an output folder this preparation created: a refused source leaves no half-written layout."""
    shutil.rmtree(out_dir, ignore_errors=True)


def _declared_classes(reader, classes, classes_file, root: Path) -> list[ClassSpec] | None:
    """Classes given in config, else in a named class file, else declared by the source itself (or None)."""
    if classes is not None:
        return parse_classes(classes)
    if classes_file:
        path = Path(classes_file)
        return load_class_file(path if path.is_absolute() else root / path)  # named by the config: read where it says
    return reader.classes()


def _value_map(reader, declared, ignore_classes, ignore_index, mask_values) -> dict[int, int]:
    """Raw value -> class id: the format's ignore values, classes named ignored, then the user's mask_values."""
    value_map = {int(v): int(ignore_index) for v in reader.ignore_values()}
    by_name = {spec.name: spec.id for spec in declared or ()}
    for class_name in ignore_classes:
        if class_name not in by_name:
            raise DataValidationError(f"ignore_classes names {class_name!r}, which is not a declared class")
        value_map[by_name[class_name]] = int(ignore_index)
    value_map.update({int(k): int(v) for k, v in (mask_values or {}).items()})  # null: no mapping
    return value_map


def _unique_samples(reader, report: ValidationReport) -> list[Sample]:
    """The reader's samples minus duplicated names (each duplicate reported), plus its orphan masks reported.

    Names become printable (a file name's undecodable bytes as \\xNN): they name files of the layout, manifest rows
    and lakeFS objects. A name that is not a plain file name (a folder, `..`) is refused.
    """
    try:
        listed = reader.samples()
    except DataValidationError:
        raise
    except Exception as error:  # a reader's failure on garbage is the source's fault: one line, no traceback
        raise DataValidationError(f"{reader.root}: cannot list samples ({describe(error)})") from None
    for issue in reader.orphans():
        report.add(issue.file, issue.reason)
    samples = []
    for sample in listed:
        name = file_name(printable(sample.name))
        if not name or name in (".", "..") or "/" in name:
            report.add(sample.image_ref, f"sample name {name!r} is not a plain file name")
            continue
        samples.append(sample if name == sample.name else dataclasses.replace(sample, name=name))
    counts = Counter(sample.name for sample in samples)
    by_name: dict[str, list[str]] = {}
    for sample in samples:
        by_name.setdefault(sample.name, []).append(sample.image_ref)
    for sample in samples:
        if counts[sample.name] > 1:
            others = [ref for ref in by_name[sample.name] if ref != sample.image_ref]
            report.add(sample.image_ref, f"duplicate name {sample.name!r} (also {', '.join(others)})")
    return [sample for sample in samples if counts[sample.name] == 1]


def file_name(name: str) -> str:
    """`name` when it fits a layout file name (:data:`NAME_BYTES` in UTF-8, room left for the extension), else
    its start and a hash of it all (``start~1a2b3c4d5e6f``): any name a file system accepts can be ingested."""
    encoded = name.encode()
    if len(encoded) <= NAME_BYTES:
        return name
    start = encoded[: NAME_BYTES - 13].decode("utf-8", "ignore")
    return f"{start}~{hashlib.sha256(encoded).hexdigest()[:12]}"


def _splits(samples, source_splits, seed, val_fraction, test_fraction) -> dict[str, str]:
    """Source splits kept where given (and wanted); the rest assigned by seeded hash rank.

    A source that names a single split only (e.g. one `instances_val2017.json`) is split by seed as a whole:
    keeping it would leave nothing to train or validate on.
    """
    given = {s.split for s in samples if s.split in SPLITS}
    if source_splits and given and ("train" not in given or len(given) < 2):
        log.info("source names only split(s) %s: splitting it by seed instead", sorted(given))
        source_splits = False
    kept = {s.name: s.split for s in samples if source_splits and s.split in SPLITS}
    assigned = assign_splits([s.name for s in samples if s.name not in kept], seed, val_fraction, test_fraction)
    return {**assigned, **kept}


def _process(
    sample: Sample,
    split: str,
    writer: LayoutWriter,
    encoder: MaskEncoder,
    resize_masks: bool,
    binary: BinaryMasks | None,
    writing: bool,
) -> dict:
    """Validate one sample and (when writing) put it into the layout; raises SampleError naming the bad file."""
    if sample.mask_ref is None:
        raise SampleError(sample.image_ref, "missing mask: no annotation for this image")
    signature = file_signature(sample.files)
    cached = writer.reuse(sample.name, split, signature=signature) if writing and signature else None
    if cached:
        return cached
    image_bytes = _load(sample.image_bytes, sample.image_ref, "image")
    annotation = _load(sample.annotation_bytes, sample.mask_ref, "mask")
    fingerprint = hashlib.sha256(hashlib.sha256(image_bytes).digest() + hashlib.sha256(annotation).digest()).hexdigest()
    cached = writer.reuse(sample.name, split, fingerprint=fingerprint, signature=signature) if writing else None
    if cached:
        return cached
    width, height, extension = _check_image(sample.image_ref, image_bytes)
    try:
        raw = sample.decode_mask(annotation)
    except AnnotationError as error:
        raise SampleError(sample.mask_ref, f"bad annotation: {error}") from None
    except ImageTooLarge as error:
        raise SampleError(sample.mask_ref, str(error)) from None
    except Exception as error:  # any decoder failure is a bad annotation file, reported not raised
        raise SampleError(sample.mask_ref, f"unreadable mask ({describe(error)})") from None
    if binary:
        binary.check(sample.mask_ref, raw)
    if raw.shape[:2] != (height, width) and not resize_masks:
        raise SampleError(sample.mask_ref, f"size mismatch: image {width}x{height}, mask {raw.shape[1]}x{raw.shape[0]}")
    mask, bad_values = encoder.encode(raw)
    if bad_values:
        raise SampleError(sample.mask_ref, f"class ids outside the declared classes: {bad_values[:10]}")
    resized = mask.shape != (height, width)
    if resized:
        mask = resize_nearest(mask, (width, height))
    if not writing:
        return {}
    counts = np.bincount(mask.ravel(), minlength=256)
    details = {
        "fingerprint": fingerprint,
        "signature": signature,
        "width": width,
        "height": height,
        "pixels": {str(i): int(counts[i]) for i in np.flatnonzero(counts)},
        "resized": resized,
    }
    return writer.write(sample.name, split, extension, image_bytes, encode_png(mask), details)


def plain(value):
    """A config value as plain Python (lists, dicts): OmegaConf nodes converted, anything else as is."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def file_signature(files: tuple[Path, ...]) -> list | None:
    """[[path, size, mtime_ns], ...] of a sample's source files, or None when it has none or one is missing."""
    signature = []
    for path in files:
        try:
            status = os.stat(path)
        except OSError:
            return None
        signature.append([str(path), status.st_size, status.st_mtime_ns])
    return signature or None


def _load(load, file: str, what: str) -> bytes:
    """The bytes a sample's loader returns; SampleError naming `file` and why when it fails."""
    try:
        return load()
    except SourceFileError as error:  # a FIFO, a device, a file outside the source, too many bytes
        raise SampleError(file, f"{what} refused: {error}") from None
    except OSError as error:
        raise SampleError(file, f"unreadable {what} ({error.strerror or error})") from None
    except AnnotationError as error:
        raise SampleError(file, f"bad annotation: {error}") from None
    except Exception as error:  # a reader's failure on garbage: reported, not raised
        raise SampleError(file, f"unreadable {what} ({describe(error)})") from None


def _check_image(file: str, data: bytes) -> tuple[int, int, str]:
    """(width, height, file extension) of a fully decodable image of at most `max_image_pixels` (its size is
    checked from the header, before decoding); SampleError otherwise."""
    try:
        with open_image(data, "image") as image:
            image.load()
            if image.mode not in ("RGB", "L", "P", "RGBA", "LA", "I;16", "I", "CMYK", "YCbCr", "1", "PA"):
                raise SampleError(file, f"unsupported image mode {image.mode}")
            suffix = Path(file).suffix.lower()
            extension = IMAGE_EXTENSIONS.get(image.format) or (suffix if 1 < len(suffix) <= 5 else ".img")
            return image.width, image.height, extension
    except SampleError:
        raise
    except ImageTooLarge as error:
        raise SampleError(file, str(error)) from None
    except Exception as error:  # PIL raises many types for corrupt data
        raise SampleError(file, f"corrupt or unreadable image ({describe(error)})") from None


def _dataset_info(
    name: str,
    declared,
    ignore_index: int,
    stats: DatasetStats,
    format_name: str,
    binary: BinaryMasks | None,
    resized: int,
) -> DatasetInfo:
    if declared is None:  # inferred from the ids present in the masks
        pixels = stats.pixels
        present = [i for i in range(255) if pixels[i] and i != ignore_index]
        declared = [ClassSpec(i, f"class_{i}", voc_color(i)) for i in range(max(present, default=0) + 1)]
    num_classes = max(spec.id for spec in declared) + 1
    return DatasetInfo(
        name=name,
        classes=tuple(declared),
        ignore_index=int(ignore_index),
        splits={split: stats.split_images.get(split, 0) for split in SPLITS},
        extra={
            "source_format": format_name,
            "masks_resized": resized,
            **({"binary_masks": binary.to_dict()} if binary else {}),
            CLASS_STATS_KEY: stats.class_stats(num_classes, int(ignore_index)),
        },
    )


def _default_name(source, root: Path) -> str:
    """The data set's name when config gives none: the source's last path part (a URL's path, never its query)."""
    text = str(source)
    path = urlsplit(text).path if "://" in text else text
    return Path(path.rstrip("/")).name.split(".")[0] or root.name
