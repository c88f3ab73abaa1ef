"""Thumbnails made on demand and cached by object checksum under the segmodels home: a picture is read from
lakeFS and scaled once, whatever ref or page shows it; the classes a mask holds are cached beside it."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from segmodels.home import segmodels_home
from segmodels.visualize import colorize

CACHE_DIR = "ui-thumbnails"  # in the segmodels home
THUMB_PX = 240  # longest side of a grid thumbnail
FULL = 0  # size meaning: the object's own size


def cache_root(home: Path | None = None) -> Path:
    return segmodels_home(home) / CACHE_DIR


class ThumbnailCache:
    """Files keyed by (checksum, kind, size[, palette]); ``read`` fetches an object's bytes on a miss only."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _cached(self, key: str, make: Callable[[], bytes]) -> Path:
        path = self.root / key[:2] / key
        if path.is_file():
            return path
        data = make()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key}.")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
        return path

    def image(self, checksum: str, size: int, read: Callable[[], bytes]) -> Path:
        """The image scaled to ``size`` on its longest side (FULL: as stored), as JPEG."""
        return self._cached(
            f"{_safe(checksum)}-image-{size}.jpg",
            lambda: _jpeg(_scaled(Image.open(io.BytesIO(read())).convert("RGB"), size, Image.Resampling.BILINEAR)),
        )

    def mask(self, checksum: str, size: int, colors: Sequence[Sequence[int]], read: Callable[[], bytes]) -> Path:
        """The class-id mask in its class colours, scaled to ``size`` (nearest), as PNG."""
        palette = hashlib.sha1(json.dumps([list(c) for c in colors]).encode()).hexdigest()[:12]

        def make() -> bytes:
            mask = Image.open(io.BytesIO(read()))
            coloured = Image.fromarray(
                colorize(
                    np.asarray(_scaled(mask, size, Image.Resampling.NEAREST)), colors, ignore_color=(255, 255, 255)
                )
            )
            out = io.BytesIO()
            coloured.save(out, format="PNG", optimize=False)
            return out.getvalue()

        return self._cached(f"{_safe(checksum)}-mask-{size}-{palette}.png", make)

    def classes_present(self, checksum: str, read: Callable[[], bytes]) -> set[int]:
        """The class ids a mask holds (at full resolution)."""

        def make() -> bytes:
            ids = np.unique(np.asarray(Image.open(io.BytesIO(read()))))
            return json.dumps([int(i) for i in ids]).encode()

        return set(json.loads(self._cached(f"{_safe(checksum)}-classes.json", make).read_text()))


def _safe(checksum: str) -> str:
    """A checksum as a file name (lakeFS' are hex; anything else is hashed)."""
    text = str(checksum).lower()
    return text if text and all(c in "0123456789abcdef" for c in text) else hashlib.sha1(text.encode()).hexdigest()


def _scaled(picture: Image.Image, size: int, resample) -> Image.Image:
    if size == FULL or max(picture.size) <= size:
        return picture
    scale = size / max(picture.size)
    return picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))), resample)


def _jpeg(picture: Image.Image) -> bytes:
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=85)
    return out.getvalue()
