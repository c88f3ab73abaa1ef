"""Annotation format readers (importing this package registers them), detection and reader creation.

A reader's options have no defaults in code: ``conf/data/<format>.yaml`` holds them (:func:`preset_options`),
and the options given (``data.options``) override them.
"""

import logging
from functools import cache
from pathlib import Path

from omegaconf import OmegaConf

from segmodels.config import default_config_dir, load_config
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

log = logging.getLogger(__name__)


def list_formats() -> list[str]:
    """Registered format names: the detected ones in detection order, then any others (named explicitly only)."""
    return [*DETECTION_ORDER, *(name for name in FORMATS if name not in DETECTION_ORDER)]


@cache
def _preset_options(name: str) -> tuple:
    if not (default_config_dir() / "data" / f"{name}.yaml").is_file():
        return ()
    return tuple(OmegaConf.to_container(load_config("ingest", [f"data={name}"]).data.options, resolve=True).items())


def preset_options(name: str) -> dict:
    """The options of format `name` as its preset ``conf/data/<name>.yaml`` sets them (none without a preset)."""
    return dict(_preset_options(name))


def detect_format(root: Path, **options) -> str:
    """Name of the first format in `DETECTION_ORDER` that accepts `options` and whose layout `root` matches
    when read with its preset's options and `options` over them; `folder` when an image/mask folder pair lies
    a few levels down (:func:`folder.nested_pairs`)."""
    for name in DETECTION_ORDER:
        reader = FORMATS.get(name)
        if set(options) <= accepted_options(reader) and reader.detect(Path(root), **preset_options(name), **options):
            return name
    if not _folders_given(options) and _nested_pairs(root, options):
        return "folder"
    raise DataValidationError(
        f"{root}: cannot detect the annotation format (looked for {', '.join(DETECTION_ORDER)}; "
        f"folder: {folder.LOOKED_FOR}, "
        f"or folders up to {folder.NESTED_DEPTH} levels down whose file stems match); name it with -P format=<name>"
        f" ({', '.join(list_formats())})"
    )


def create_reader(root: Path, format: str, **options) -> SourceReader:
    """Reader for `root` of `format` (`auto`: detected), with its preset's options and `options` over them;
    unknown formats or options raise DataValidationError. A `folder` source whose image/mask folders are neither
    given nor at the top is read from the one best pair found a few levels down (several: a DataValidationError
    listing each with the parameters that pick it)."""
    name = detect_format(root, **options) if format == "auto" else format
    try:
        reader = FORMATS.get(name)
    except ValueError as error:
        raise DataValidationError(str(error)) from None
    accepted = accepted_options(reader)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise DataValidationError(f"unknown option(s) {unknown} for format {name!r}; accepted: {sorted(accepted)}")
    options = {**preset_options(name), **options}
    if name == folder.FolderReader.name and not _folders_given(options) and not reader.detect(Path(root), **options):
        options.update(_nested_pair(Path(root), options))
    return reader(Path(root), **options)


def _folders_given(options) -> bool:
    return bool(options.get("images_dir") or options.get("masks_dir"))


def _nested_pairs(root: Path, options) -> list[tuple[str, str]]:
    options = {**preset_options("folder"), **options}
    return folder.nested_pairs(Path(root), options["image_suffixes"], options["mask_suffix"], options["mask_name"])


def _nested_pair(root: Path, options) -> dict:
    """images_dir and masks_dir of the one best folder pair below root; DataValidationError naming every candidate
    (or what was looked for) otherwise."""
    pairs = _nested_pairs(root, options)
    if len(pairs) == 1:
        images_dir, masks_dir = pairs[0]
        log.info(
            "reading images from %s/ and masks from %s/ (found below %s; %s picks them explicitly)",
            images_dir,
            masks_dir,
            root,
            folder.pair_params(images_dir, masks_dir),
        )
        return {"images_dir": images_dir, "masks_dir": masks_dir}
    if not pairs:
        folder.resolve_folders(root, None, None)  # raises, naming what it looked for and what is there
    listed = "; ".join(f"{images}/ + {masks}/: {folder.pair_params(images, masks)}" for images, masks in pairs)
    raise DataValidationError(f"{root}: {len(pairs)} image/mask folder pairs fit equally well, pick one: {listed}")


__all__ = [
    "DETECTION_ORDER",
    "FORMATS",
    "Sample",
    "SourceReader",
    "create_reader",
    "decode_mask_image",
    "detect_format",
    "list_formats",
    "preset_options",
    "register_format",
]
