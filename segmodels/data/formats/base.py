"""Source readers: the interface every annotation format implements, and the registry of formats by name."""

from __future__ import annotations

import contextvars
import inspect
import io
import os
import re
import stat
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from segmodels.data.classes import ClassSpec, read_class_file
from segmodels.data.errors import DataValidationError, Issue
from segmodels.registry import Registry

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MAX_FILE_BYTES = 512 << 20  # data.max_file_bytes when not configured
CHUNK = 1 << 20


# -- what a reader may read ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadLimits:
    """What reading a source may touch: regular files below `root` (None: the reader's own root) of at most
    `max_file_bytes` each, images of at most `max_image_pixels` (None: no limit); symlinks that leave `root` only
    with `follow_external_symlinks`. `prepare_dataset` sets them from the data options (`data.max_file_bytes`,
    `data.max_image_pixels`, `data.follow_external_symlinks`) while it reads a source: see :func:`read_limits`."""

    root: Path | None = None
    max_file_bytes: int = MAX_FILE_BYTES
    max_image_pixels: int | None = Image.MAX_IMAGE_PIXELS
    follow_external_symlinks: bool = False


_LIMITS: contextvars.ContextVar[ReadLimits] = contextvars.ContextVar("segmodels_read_limits", default=ReadLimits())


def current_limits() -> ReadLimits:
    """The limits reading is under now (the defaults outside :func:`read_limits`)."""
    return _LIMITS.get()


@contextmanager
def read_limits(limits: ReadLimits) -> Iterator[ReadLimits]:
    """Read under `limits` inside the block (readers, loaders and mask decoders all consult them)."""
    token = _LIMITS.set(limits)
    try:
        yield limits
    finally:
        _LIMITS.reset(token)


class SourceFileError(OSError):
    """A file of the source refused before or while reading it (not a regular file, outside the source, too
    large); the message says why, the caller names the file."""


class ImageTooLarge(ValueError):
    """An image or mask (or the size an annotation declares) above `data.max_image_pixels`, refused before its
    pixels are allocated."""


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _too_large(size: int | None, limit: int) -> SourceFileError:
    if size is None:
        return SourceFileError(f"file larger than data.max_file_bytes={limit} (reading stopped there)")
    return SourceFileError(f"file of {size} bytes, above data.max_file_bytes={limit}")


def source_path(path: Path, root: Path | None = None) -> Path:
    """`path` with its symlinks resolved, once known to be a regular file of at most `max_file_bytes` inside the
    source root (the current limits' root, else `root`, else anywhere); SourceFileError (an OSError) says why
    not, FileNotFoundError when it is absent. Nothing is opened (a FIFO is never waited on)."""
    limits = current_limits()
    return _checked(Path(path), limits.root if limits.root is not None else root, limits)


def _checked(path: Path, base: Path | None, limits: ReadLimits) -> Path:
    """`path` resolved, checked to be a regular file within `base` (None: anywhere) of at most max_file_bytes."""
    resolved = Path(os.path.realpath(path))
    if base is not None and not resolved.is_relative_to(os.path.realpath(base)):
        named = Path(os.path.normpath(os.path.abspath(path)))
        if not named.is_relative_to(os.path.normpath(os.path.abspath(base))):
            raise SourceFileError(f"{path} is outside the source root {base}")
        if not limits.follow_external_symlinks:
            raise SourceFileError(
                f"symlink to {resolved}, outside the source root (data.follow_external_symlinks=true follows it)"
            )
    status = os.stat(resolved)
    if not stat.S_ISREG(status.st_mode):
        raise SourceFileError(f"not a regular file ({_file_kind(status.st_mode)})")
    if status.st_size > limits.max_file_bytes:
        raise _too_large(status.st_size, limits.max_file_bytes)
    return resolved


def _open_regular(path: Path) -> int:
    """A descriptor of regular file `path` (already resolved), opened without blocking on a FIFO swapped in."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    descriptor = os.open(path, flags)
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        raise SourceFileError(f"not a regular file ({_file_kind(mode)})")
    return descriptor


def read_source_file(path: Path, root: Path | None = None) -> bytes:
    """The bytes of source file `path` (checked as :func:`source_path` does); reading stops after
    `max_file_bytes` + 1 bytes and refuses the file, whatever size it claims."""
    limit = current_limits().max_file_bytes
    descriptor = _open_regular(source_path(path, root))
    try:
        chunks, total = [], 0
        while True:
            chunk = os.read(descriptor, min(CHUNK, limit + 1 - total))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise _too_large(None, limit)
    finally:
        os.close(descriptor)


def read_head(path: Path, size: int) -> bytes | None:
    """The first `size` bytes of `path`, or None when it is not a readable regular file (for detection: a FIFO,
    a device or a file outside the source is never opened)."""
    try:
        descriptor = _open_regular(source_path(path))
    except OSError:
        return None
    try:
        return os.read(descriptor, size)
    except OSError:
        return None
    finally:
        os.close(descriptor)


def refused_file(path: Path, root: Path | None = None) -> Issue | None:
    """An issue naming `path` when it exists but would be refused (:func:`source_path`: not a regular file, outside
    the source, too large), else None; for files found while listing a source, so that none goes unmentioned."""
    try:
        source_path(path, root)
    except SourceFileError as error:
        return Issue(str(path), f"refused: {error}")
    except (OSError, ValueError):
        return None
    return None


def load_class_file(path: Path, within: Path | None = None) -> list[ClassSpec]:
    """`read_class_file`, with the file checked first (a regular file of at most `max_file_bytes`, resolving inside
    `within` when given: a class file found in the source may not point out of it) and any failure to parse it a
    DataValidationError naming the file."""
    try:
        _checked(Path(path), within, current_limits())
    except FileNotFoundError:
        raise DataValidationError(f"{path}: class file not found") from None
    except OSError as error:
        raise DataValidationError(f"{path}: class file refused ({error.strerror or error})") from None
    try:
        return read_class_file(path)
    except DataValidationError as error:
        if str(path) in error.summary:
            raise
        raise DataValidationError(f"{path}: {error.summary}") from None
    except Exception as error:  # malformed YAML, undecodable text, ids that are not numbers, ...
        raise DataValidationError(f"{path}: unreadable class file ({describe(error)})") from None


# -- images ---------------------------------------------------------------------------------------------------------


def describe(error: BaseException) -> str:
    """A decoder's error as `ErrorClass: message` on one line, without Pillow's `<_io.BytesIO object at 0x...>`
    (the caller names the file)."""
    detail = re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(error)).strip()
    detail = " ".join(detail.split())
    return f"{error.__class__.__name__}: {detail}" if detail else error.__class__.__name__


def check_pixels(width: int, height: int, what: str = "image") -> None:
    """ImageTooLarge when width x height is above the current `max_image_pixels`."""
    limit = current_limits().max_image_pixels
    if limit is not None and width * height > limit:
        raise ImageTooLarge(
            f"{what} of {width}x{height} = {width * height} pixels, above data.max_image_pixels={limit} "
            "(refused before decoding)"
        )


_PILLOW_LIMIT_LOCK = threading.Lock()


@contextmanager
def open_image(data: bytes, what: str = "image") -> Iterator[Image.Image]:
    """The image encoded in `data`, opened lazily: its header only, its size checked (:func:`check_pixels`) before
    any pixel is decoded; `.load()` it inside the block."""
    with _PILLOW_LIMIT_LOCK:  # two threads swapping at once could leave Pillow's limit off for good
        pillow_limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # the limit is data.max_image_pixels, checked below (Pillow's may be lower)
        try:
            image = Image.open(io.BytesIO(data))
        finally:
            Image.MAX_IMAGE_PIXELS = pillow_limit
    with image:
        check_pixels(image.width, image.height, what)
        yield image


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
    """Raw values of a mask image: palette indices, grey values, 16-bit values, or [H,W,3] colours (its size
    checked against `max_image_pixels` before it is decoded)."""
    with open_image(data, "mask") as mask:
        mask.load()
        if mask.mode in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
            return np.asarray(mask)
        if mask.mode == "1":
            return np.asarray(mask, dtype=np.uint8)
        if mask.mode == "LA":
            return np.asarray(mask.getchannel("L"))
        return np.asarray(mask.convert("RGB"))


def read_file(path: Path, root: Path | None = None) -> Callable[[], bytes]:
    """A loader returning the bytes of path, read as :func:`read_source_file` reads (regular files inside the
    source root, at most `max_file_bytes`)."""
    return lambda: read_source_file(Path(path), root)
