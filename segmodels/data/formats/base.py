"""Source readers: the interface every annotation format implements, and the registry of formats by name."""

from __future__ import annotations

import inspect
import io
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from segmodels.data.classes import ClassSpec
from segmodels.data.errors import Issue
from segmodels.registry import Registry

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Sample:
    """One image and its annotation in a source, read lazily so that samples stream one at a time.

    `annotation_bytes` returns the raw annotation (a mask file, or a canonical encoding of shapes) and is
    what change detection hashes; `decode_mask` turns those bytes into a raw mask array ([H,W] values, or
    [H,W,3] colours). `mask_ref` is None when the source has no mask for the image. `files`, when given, must
    list every file the sample's bytes come from: unchanged sizes and times then mean an unchanged sample.
    """

    name: str
    image_ref: str
    mask_ref: str | None
    image_bytes: Callable[[], bytes]
    annotation_bytes: Callable[[], bytes]
    decode_mask: Callable[[bytes], np.ndarray]
    split: str | None = None
    files: tuple[Path, ...] = ()  # every local file the sample is read from, when known (lets re-reads be skipped)


class SourceReader(ABC):
    """Reads one annotation format below `root`; options come from `conf/data/<format>.yaml`."""

    name: ClassVar[str]

    def __init__(self, root: Path):
        self.root = Path(root)

    @classmethod
    @abstractmethod
    def detect(cls, root: Path, **options) -> bool:
        """True when `root` (read with these options) looks like this format."""

    @abstractmethod
    def samples(self) -> list[Sample]:
        """Every image of the source with lazy loaders (no pixel data read yet)."""

    def classes(self) -> list[ClassSpec] | None:
        """Classes the source declares itself, or None."""
        return None

    def ignore_values(self) -> tuple[int, ...]:
        """Raw mask values that mean "ignore this pixel" in this format's convention."""
        return ()

    def orphans(self) -> list[Issue]:
        """Annotation files with no image (extra masks), found while listing samples."""
        return []


FORMATS: Registry[type[SourceReader]] = Registry("data format")


def register_format(reader: type[SourceReader]) -> type[SourceReader]:
    """Class decorator adding a reader to `FORMATS` under `reader.name` (a name taken twice raises ValueError)."""
    return FORMATS.register(reader.name)(reader)


def accepted_options(reader: type[SourceReader]) -> set[str]:
    """The format-specific options a reader takes: its constructor's keyword arguments."""
    return set(inspect.signature(reader.__init__).parameters) - {"self", "root"}


def decode_mask_image(data: bytes) -> np.ndarray:
    """Raw values of a mask image: palette indices, grey values, 16-bit values, or [H,W,3] colours."""
    with Image.open(io.BytesIO(data)) as mask:
        mask.load()
        if mask.mode in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
            return np.asarray(mask)
        if mask.mode == "1":
            return np.asarray(mask, dtype=np.uint8)
        if mask.mode == "LA":
            return np.asarray(mask.getchannel("L"))
        return np.asarray(mask.convert("RGB"))


def read_file(path: Path) -> Callable[[], bytes]:
    """A loader returning the bytes of path."""
    return Path(path).read_bytes
