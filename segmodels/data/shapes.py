"""Rasterising annotation shapes (labelme's drawing rules, and COCO polygons/RLE) into boolean masks."""

from __future__ import annotations

import base64
import io
import math
import warnings
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw



class AnnotationError(ValueError):
    """An annotation that cannot be turned into a mask; the message says which shape and why."""


ShapeDrawer = Callable[[ImageDraw.ImageDraw, list, dict], None]
SHAPE_DRAWERS: dict[str, ShapeDrawer] = {}


def shape_drawer(*names: str):
    """Register a drawer for labelme shape types (drawn with fill=1 on a mode-L canvas, as labelme does)."""

    def register(function: ShapeDrawer) -> ShapeDrawer:
        for name in names:
            SHAPE_DRAWERS[name] = function
        return function

    return register


@shape_drawer("polygon")
def _polygon(draw, xy, shape):
    if len(xy) < 3:
        raise AnnotationError(f"polygon {shape.get('label')!r} has {len(xy)} point(s), needs 3")
    draw.polygon(xy=xy, outline=1, fill=1)


@shape_drawer("rectangle")
def _rectangle(draw, xy, shape):
    (x0, y0), (x1, y1) = _two_points(xy, shape)
    draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=1, fill=1)


@shape_drawer("circle")
def _circle(draw, xy, shape):
    (cx, cy), (px, py) = _two_points(xy, shape)
    d = math.hypot(cx - px, cy - py)
    draw.ellipse([cx - d, cy - d, cx + d, cy + d], outline=1, fill=1)


@shape_drawer("line", "linestrip")
def _line(draw, xy, shape):
    draw.line(xy=xy, fill=1, width=10)


@shape_drawer("point")
def _point(draw, xy, shape):
    cx, cy = xy[0]
    draw.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], outline=1, fill=1)


def _two_points(xy, shape):
    if len(xy) != 2:
        raise AnnotationError(f"{shape.get('shape_type')} {shape.get('label')!r} has {len(xy)} point(s), needs 2")
    return xy


def labelme_shape_mask(shape: dict, height: int, width: int) -> np.ndarray:
    """Boolean [H,W] mask of one labelme shape, pixel for pixel as labelme's own exporters draw it."""
    shape_type = shape.get("shape_type") or "polygon"
    points = [tuple(float(c) for c in point) for point in shape.get("points") or []]
    if shape_type == "mask":
        return _embedded_mask(shape, points, height, width)
    if shape_type not in SHAPE_DRAWERS:
        raise AnnotationError(f"shape {shape.get('label')!r}: unknown shape_type {shape_type!r}")
    if not points:
        raise AnnotationError(f"shape {shape.get('label')!r} has no points")
    canvas = Image.new("L", (width, height), 0)
    SHAPE_DRAWERS[shape_type](ImageDraw.Draw(canvas), points, shape)
    return np.asarray(canvas, dtype=bool)


def _embedded_mask(shape: dict, points, height: int, width: int) -> np.ndarray:
    """labelme 5 `mask` shapes: a base64 PNG of the box between the two points."""
    (x0, y0), _ = _two_points(points, shape)
    with Image.open(io.BytesIO(base64.b64decode(shape["mask"]))) as patch:
        values = np.asarray(patch).astype(bool)
    mask = np.zeros((height, width), dtype=bool)
    x0, y0 = int(x0), int(y0)
    region = mask[y0 : y0 + values.shape[0], x0 : x0 + values.shape[1]]
    region[...] = values[: region.shape[0], : region.shape[1]]
    return mask


def _polygons_pycocotools(polygons: list, height: int, width: int) -> np.ndarray:
    from pycocotools import mask as mask_utils

    return _decode_rle(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width)))


def _decode_rle(rle) -> np.ndarray:
    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():  # pycocotools' numpy 2 copy-keyword deprecation, not ours to fix
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def _polygons_pil(polygons: list, height: int, width: int) -> np.ndarray:
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in polygons:
        draw.polygon(xy=list(zip(polygon[::2], polygon[1::2])), outline=1, fill=1)
    return np.asarray(canvas, dtype=bool)


POLYGON_RASTERIZERS: dict[str, Callable[[list, int, int], np.ndarray]] = {
    "pycocotools": _polygons_pycocotools,  # COCO's own annToMask semantics
    "pil": _polygons_pil,  # labelme's drawing rule: its COCO exports match its VOC exports pixel for pixel
}


def coco_segmentation_mask(segmentation, height: int, width: int, polygons: str = "pycocotools") -> np.ndarray:
    """Boolean [H,W] mask of a COCO segmentation: polygon list, uncompressed RLE or compressed RLE (pycocotools)."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        outlines = [p for p in segmentation if len(p) >= 6]
        if not outlines:
            raise AnnotationError("polygon segmentation with fewer than 3 points")
        return POLYGON_RASTERIZERS[polygons](outlines, height, width)
    if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, *segmentation["size"])
    elif isinstance(segmentation, dict) and "counts" in segmentation:
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode()
    else:
        raise AnnotationError(f"unrecognised segmentation {type(segmentation).__name__}")
    decoded = _decode_rle(rle)
    if decoded.shape[:2] != (height, width):
        raise AnnotationError(f"RLE size {decoded.shape[1]}x{decoded.shape[0]} differs from the image entry {width}x{height}")
    return decoded
