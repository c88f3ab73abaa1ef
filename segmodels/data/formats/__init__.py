"""Annotation format readers (importing this package registers them), detection and reader creation."""

from pathlib import Path

from segmodels.data.errors import DataValidationError
from segmodels.data.formats import coco, folder, labelme, voc  # noqa: F401  (registers the readers)
from segmodels.data.formats.base import (
    FORMATS,
    Sample,
    SourceReader,
    accepted_options,
    decode_mask_image,
    register_format,
)

# Formats tried by `format: auto`, most specific layout first: a VOC devkit or a COCO export may also hold
# image and mask folders, so `folder` comes last.
DETECTION_ORDER = ("voc", "coco", "labelme", "folder")


def list_formats() -> list[str]:
    """Registered format names: the detected ones in detection order, then any others (named explicitly only)."""
    return [*DETECTION_ORDER, *(name for name in FORMATS if name not in DETECTION_ORDER)]


def detect_format(root: Path, **options) -> str:
    """Name of the first format in `DETECTION_ORDER` that accepts `options` and whose layout `root` matches."""
    for name in DETECTION_ORDER:
        reader = FORMATS.get(name)
        if set(options) <= accepted_options(reader) and reader.detect(Path(root), **options):
            return name
    raise DataValidationError(
        f"{root}: cannot detect the annotation format (looked for {', '.join(DETECTION_ORDER)}); name it with format=<name>"
    )


def create_reader(root: Path, format: str, **options) -> SourceReader:
    """Reader for `root` of `format` (`auto`: detected); unknown formats or options raise DataValidationError."""
    name = detect_format(root, **options) if format == "auto" else format
    try:
        reader = FORMATS.get(name)
    except ValueError as error:
        raise DataValidationError(str(error)) from None
    accepted = accepted_options(reader)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise DataValidationError(f"unknown option(s) {unknown} for format {name!r}; accepted: {sorted(accepted)}")
    return reader(Path(root), **options)


__all__ = [
    "DETECTION_ORDER",
    "FORMATS",
    "Sample",
    "SourceReader",
    "create_reader",
    "decode_mask_image",
    "detect_format",
    "list_formats",
    "register_format",
]
