"""Mapping raw mask values (grey values, palette indices, colours) to class ids, and encoding masks byte-stably."""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np
from PIL import Image

from segmodels.data.classes import ClassSpec


def color_code(color) -> int:
    r, g, b = (int(c) for c in color)
    return (r << 16) | (g << 8) | b


class MaskEncoder:
    """Turns raw masks into uint8 class-id masks and names the values that are not declared classes.

    `value_map` maps raw values to class ids (or to `ignore_index`); other values pass through unchanged.
    Colour masks ([H,W,3]) are matched against the class colours. With `classes=None` every id 0..254 is accepted
    (classes are then inferred from the data).
    """

    def __init__(
        self, classes: list[ClassSpec] | None, ignore_index: int = 255, value_map: Mapping[int, int] | None = None
    ):
        self.ignore_index = int(ignore_index)
        self.value_map = {int(k): int(v) for k, v in (value_map or {}).items()}
        allowed_ids = [spec.id for spec in classes] if classes is not None else range(255)
        self.allowed = np.zeros(256, dtype=bool)
        self.allowed[list(allowed_ids)] = True
        self.allowed[self.ignore_index] = True
        self.color_map = {color_code(spec.color): spec.id for spec in classes or ()}
        self.uint8_lut = np.array([self.value_map.get(v, v) for v in range(256)], dtype=np.int64)

    def encode(self, raw: np.ndarray) -> tuple[np.ndarray, list]:
        """(class-id mask uint8 [H,W], sorted raw values that are not declared classes)."""
        if raw.ndim == 3:
            return self._encode_colors(raw)
        if raw.dtype == np.uint8:
            mapped = self.uint8_lut[raw]
            present = np.flatnonzero(np.bincount(raw.ravel(), minlength=256))
            bad = [int(v) for v in present if not self._is_allowed(self.uint8_lut[v])]
            return np.where(self._allowed_array(mapped), mapped, self.ignore_index).astype(np.uint8), bad
        values, inverse = np.unique(raw, return_inverse=True)
        targets = np.array([self.value_map.get(int(v), int(v)) for v in values], dtype=np.int64)
        bad = [int(v) for v, t in zip(values, targets) if not self._is_allowed(t)]
        targets = np.where(self._allowed_array(targets), targets, self.ignore_index)
        return targets[inverse.reshape(raw.shape)].astype(np.uint8), bad

    def _encode_colors(self, raw: np.ndarray) -> tuple[np.ndarray, list]:
        codes = (raw[..., 0].astype(np.int64) << 16) | (raw[..., 1].astype(np.int64) << 8) | raw[..., 2]
        values, inverse = np.unique(codes, return_inverse=True)
        targets = np.array([self.color_map.get(int(v), -1) for v in values], dtype=np.int64)
        bad = [f"colour ({v >> 16},{(v >> 8) & 255},{v & 255})" for v, t in zip(values.tolist(), targets) if t < 0]
        targets = np.where(targets >= 0, targets, self.ignore_index)
        return targets[inverse.reshape(codes.shape)].astype(np.uint8), bad

    def _is_allowed(self, class_id) -> bool:
        return 0 <= class_id <= 255 and bool(self.allowed[class_id])

    def _allowed_array(self, ids: np.ndarray) -> np.ndarray:
        inside = (ids >= 0) & (ids <= 255)
        return inside & self.allowed[np.clip(ids, 0, 255)]


def encode_png(mask: np.ndarray) -> bytes:
    """8-bit single-channel PNG of a class-id mask, with fixed settings and no metadata (equal masks, equal bytes)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8)).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def resize_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a class-id mask to (width, height)."""
    return np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
