"""Plain images under a folder (no masks, not a data set), listed and read with ingest's hostile-input rules:
regular files inside the folder only (no FIFO, device or symlink out of it), at most ``data.max_file_bytes``
each, at most ``data.max_image_pixels`` checked before any pixel is decoded, hidden files and folders skipped."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from segmodels.data.errors import ValidationReport
from segmodels.data.formats.base import (
    IMAGE_SUFFIXES,
    ImageTooLarge,
    ReadLimits,
    SourceFileError,
    describe,
    open_image,
    read_limits,
    read_source_file,
)
from segmodels.data.formats.folder import walk_files


@dataclass(frozen=True)
class ImageFile:
    """One readable image: its path, its path below the root (``/``-separated) and its size."""

    path: Path
    relative: str
    width: int
    height: int

    @property
    def output_name(self) -> str:
        """The relative path without its suffix: where its mask and overlay go (``a/b/x.jpg`` -> ``a/b/x``)."""
        return str(PurePosixPath(self.relative).with_suffix(""))


@dataclass
class ImageListing:
    """The readable images of a folder, sorted by relative path, and the refused files with their reasons."""

    images: list[ImageFile]
    report: ValidationReport


def list_images(root: Path, limits: ReadLimits) -> ImageListing:
    """Every image file (:data:`IMAGE_SUFFIXES`, any case) below ``root``, each read and decoded once under
    ``limits`` (confined to ``root``) so that a refused or unreadable file is reported here, before anything is
    predicted; two images whose masks would have the same name (``x.jpg`` and ``x.png``) are both refused."""
    root = Path(root)
    report, images, by_name = ValidationReport(), [], {}
    with read_limits(ReadLimits(root, limits.max_file_bytes, limits.max_image_pixels, limits.follow_external_symlinks)):
        for path in walk_files(root, IMAGE_SUFFIXES):
            relative = path.relative_to(root).as_posix()
            report.checked += 1
            try:
                width, height = _decoded_size(path)
            except (OSError, ValueError) as error:
                report.add(relative, _reason(error))
                continue
            image = ImageFile(path, relative, width, height)
            by_name.setdefault(image.output_name, []).append(image)
    for name, same in by_name.items():
        if len(same) == 1:
            images.append(same[0])
            continue
        for image in same:
            others = ", ".join(other.relative for other in same if other is not image)
            report.add(image.relative, f"duplicate name: its mask {name}.png would also be that of {others}")
    report.accepted = len(images)
    report.issues.sort(key=lambda issue: issue.file)
    return ImageListing(sorted(images, key=lambda image: image.relative), report)


def read_rgb(path: Path, limits: ReadLimits) -> np.ndarray:
    """The RGB pixels of image file ``path``, read under ``limits`` (whose root confines it)."""
    with read_limits(limits), open_image(read_source_file(path)) as image:
        return np.asarray(image.convert("RGB"))


def _decoded_size(path: Path) -> tuple[int, int]:
    with open_image(read_source_file(path)) as image:
        image.load()
        return image.size


def _reason(error: BaseException) -> str:
    if isinstance(error, (ImageTooLarge, SourceFileError)):
        return f"refused: {error}"
    return f"unreadable image ({describe(error)})"
