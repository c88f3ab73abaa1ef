"""Rasterising annotation shapes (labelme's drawing rules, and COCO polygons/RLE) into boolean masks."""

from __future__ import annotations

import base64
import io
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COORDINATE_RANGE = 4  # coordinates lie within +-4x the image's larger side (else garbage, refused)
MAX_OUTLINE_LENGTH = 64  # a COCO annotation's polygons, a labelme polygon or line: at most this many times the
# image's height + width long


class AnnotationError(ValueError):
    """An annotation that cannot be turned into a mask; the message says which shape and why."""


# -- checking what an annotation file holds -------------------------------------------------------------------------


def json_type(value) -> str:
    """The JSON name of a parsed value's type, for messages: "JSON string", "JSON array", ... ."""
    if value is None:
        return "JSON null"
    if isinstance(value, bool):
        return "JSON boolean"
    if isinstance(value, (int, float)):
        return "JSON number"
    return "JSON " + {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def short(value, limit: int = 60) -> str:
    """repr of value, cut to `limit` characters (a message never prints a whole hostile structure)."""
    if isinstance(value, (list, dict)) and len(value) > limit:
        return f"<{json_type(value)} of {len(value)} items>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_integer(value) -> bool:
    """A JSON integer (not a boolean)."""
    return isinstance(value, int) and not isinstance(value, bool)


def whole_number(value) -> int | None:
    """value as an int when it is a positive whole JSON number (28 or 28.0), else None."""
    if is_integer(value):
        return value if value > 0 else None
    if isinstance(value, float) and value.is_integer() and value > 0:
        return int(value)
    return None


def coordinate_limit(height: int, width: int) -> float:
    """The largest magnitude a coordinate of an image of that size may have."""
    return float(COORDINATE_RANGE * max(height, width, 16))


def coordinate(value, limit: float, where: str) -> float:
    """value as a finite float within +-limit; AnnotationError naming `where` and the value otherwise (NaN,
    infinity, huge or non-numeric coordinates would paint arbitrary masks or make drawing run away)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise AnnotationError(f"{where}: coordinate {short(value)} is not a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise AnnotationError(f"{where}: coordinate {short(value)} is not a finite number")
    if abs(number) > limit:
        raise AnnotationError(f"{where}: coordinate {short(value)} is far outside the image (beyond +-{limit:g})")
    return number


def labelme_points(shape: dict, height: int, width: int) -> list[tuple[float, float]]:
    """The [x, y] points of a labelme shape, each checked (:func:`coordinate`)."""
    raw = shape.get("points")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise AnnotationError(
            f"shape {short(shape.get('label'))}: points is a {json_type(raw)}, expected a list of [x, y] pairs"
        )
    limit = coordinate_limit(height, width)
    points = []
    for index, point in enumerate(raw):
        if not isinstance(point, list) or len(point) != 2:
            raise AnnotationError(
                f"shape {short(shape.get('label'))}: point {index} is not an [x, y] pair: {short(point)}"
            )
        where = f"shape {short(shape.get('label'))} point {index}"
        points.append((coordinate(point[0], limit, where), coordinate(point[1], limit, where)))
    return points


@dataclass(frozen=True)
class Patch:
    """The pixels one shape sets: boolean `pixels` with their top-left corner at (`top`, `left`) of the image."""

    top: int
    left: int
    pixels: np.ndarray

    def paint(self, mask: np.ndarray, value) -> None:
        """Set `value` in `mask` where the patch's pixels are set (a later patch paints over an earlier one)."""
        rows, columns = self.pixels.shape
        mask[self.top : self.top + rows, self.left : self.left + columns][self.pixels] = value


EMPTY_PATCH = Patch(0, 0, np.zeros((0, 0), dtype=bool))


def runs_patch(counts, height: int) -> Patch:
    """The pixels a COCO RLE sets (run lengths in column-major order, from a run of 0s; counts checked), built
    over the columns its runs of 1s touch and cut to their rows: the work follows the runs, not the image."""
    counts = np.asarray(counts, dtype=np.int64)
    ones = np.flatnonzero(counts[1::2]) * 2 + 1  # the non-empty runs of 1s
    if not ones.size:
        return EMPTY_PATCH
    first, last = int(ones[0]), int(ones[-1])
    start = int(counts[:first].sum())
    end = start + int(counts[first : last + 1].sum())
    left, right = start // height, (end - 1) // height + 1
    band = np.zeros((right - left) * height, dtype=bool)
    lead = start - left * height
    band[lead : lead + end - start] = np.repeat(np.arange(first, last + 1) % 2 == 1, counts[first : last + 1])
    pixels = band.reshape(right - left, height).T
    rows = np.flatnonzero(pixels.any(axis=1))
    return Patch(int(rows[0]), left, pixels[rows[0] : rows[-1] + 1])


class ShapeCanvas:
    """A blank mode-L canvas the size of the image that shapes are drawn on at image coordinates (PIL finds edges
    in float32 from them: a shifted shape may round otherwise), read and cleared only within the drawn box."""

    def __init__(self, height: int, width: int):
        self.height, self.width = height, width
        self._image: Image.Image | None = None  # made at the first shape that touches the image

    def patch(self, bounds: tuple[float, float, float, float], draw: Callable[[ImageDraw.ImageDraw], None]) -> Patch:
        """The pixels `draw` sets, given that it draws within `bounds` (left, top, right, bottom, in image
        coordinates; read one pixel wider for PIL's rounding)."""
        left, top, right, bottom = bounds
        box = (
            max(math.floor(left) - 1, 0),
            max(math.floor(top) - 1, 0),
            min(math.ceil(right) + 2, self.width),
            min(math.ceil(bottom) + 2, self.height),
        )
        if box[0] >= box[2] or box[1] >= box[3]:
            return EMPTY_PATCH  # wholly outside the image
        if self._image is None:
            self._image = Image.new("L", (self.width, self.height), 0)
        draw(ImageDraw.Draw(self._image))
        pixels = np.asarray(self._image.crop(box), dtype=bool)
        self._image.paste(0, box)
        return Patch(box[1], box[0], pixels)


LINE_WIDTH = 10  # labelme draws lines and linestrips this wide
POINT_RADIUS = 5  # and points as discs of this radius

ShapeDrawer = Callable[[ShapeCanvas, list, dict], Patch]
SHAPE_DRAWERS: dict[str, ShapeDrawer] = {}


def shape_drawer(*names: str):
    """Register a drawer for labelme shape types (drawn with fill=1 on a :class:`ShapeCanvas`, as labelme does)."""

    def register(function: ShapeDrawer) -> ShapeDrawer:
        for name in names:
            SHAPE_DRAWERS[name] = function
        return function

    return register


def points_box(xy, reach: float = 0) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the points, widened by `reach` on each side."""
    xs, ys = [x for x, _ in xy], [y for _, y in xy]
    return min(xs) - reach, min(ys) - reach, max(xs) + reach, max(ys) + reach


@shape_drawer("polygon")
def _polygon(canvas, xy, shape):
    if len(xy) < 3:
        raise AnnotationError(f"polygon {short(shape.get('label'))} has {len(xy)} point(s), needs 3")
    return canvas.patch(points_box(xy), lambda draw: draw.polygon(xy=xy, outline=1, fill=1))


@shape_drawer("rectangle")
def _rectangle(canvas, xy, shape):
    box = points_box(_two_points(xy, shape))
    return canvas.patch(box, lambda draw: draw.rectangle(box, outline=1, fill=1))


@shape_drawer("circle")
def _circle(canvas, xy, shape):
    (cx, cy), (px, py) = _two_points(xy, shape)
    d = math.hypot(cx - px, cy - py)
    box = (cx - d, cy - d, cx + d, cy + d)
    return canvas.patch(box, lambda draw: draw.ellipse(box, outline=1, fill=1))


@shape_drawer("line", "linestrip")
def _line(canvas, xy, shape):
    return canvas.patch(points_box(xy, LINE_WIDTH / 2), lambda draw: draw.line(xy=xy, fill=1, width=LINE_WIDTH))


@shape_drawer("point")
def _point(canvas, xy, shape):
    box = points_box(xy[:1], POINT_RADIUS)
    return canvas.patch(box, lambda draw: draw.ellipse(box, outline=1, fill=1))


def _two_points(xy, shape):
    if len(xy) != 2:
        raise AnnotationError(
            f"{short(shape.get('shape_type'))} {short(shape.get('label'))} has {len(xy)} point(s), needs 2"
        )
    return xy


def labelme_outline_length(shape_type: str, points: list[tuple[float, float]]) -> float:
    """How far PIL walks drawing a labelme polygon (closed) or line (open), each edge by its larger extent; 0 for
    the other shapes (their work is bounded by their box)."""
    if shape_type not in ("polygon", "line", "linestrip"):
        return 0.0
    path = np.asarray(points + points[:1] if shape_type == "polygon" else points, dtype=float)
    return float(np.abs(np.diff(path, axis=0)).max(axis=1, initial=0).sum())


def labelme_shape_patch(shape: dict, canvas: ShapeCanvas) -> Patch:
    """The pixels one labelme shape sets, pixel for pixel as labelme's own exporters draw it on the whole image,
    drawn within the shape's box; AnnotationError says why a shape cannot be drawn (or is refused as a flood)."""
    height, width = canvas.height, canvas.width
    shape_type = shape.get("shape_type") or "polygon"
    if not isinstance(shape_type, str):
        raise AnnotationError(f"shape {short(shape.get('label'))}: shape_type {short(shape_type)} is not a string")
    points = labelme_points(shape, height, width)
    if shape_type == "mask":
        return _embedded_mask(shape, points, height, width)
    if shape_type not in SHAPE_DRAWERS:
        raise AnnotationError(f"shape {short(shape.get('label'))}: unknown shape_type {short(shape_type)}")
    if not points:
        raise AnnotationError(f"shape {short(shape.get('label'))} has no points")
    length = labelme_outline_length(shape_type, points)
    if length > MAX_OUTLINE_LENGTH * (height + width):
        raise AnnotationError(
            f"{shape_type} {short(shape.get('label'))} is {length:.0f} pixels long, more than "
            f"{MAX_OUTLINE_LENGTH} times the {width}x{height} image's height + width "
            "(refused as a flood)"
        )
    return SHAPE_DRAWERS[shape_type](canvas, points, shape)


def _embedded_mask(shape: dict, points, height: int, width: int) -> Patch:
    """labelme 5 `mask` shapes: a base64 PNG of the box between the two points (cut to the image)."""
    (x0, y0), _ = _two_points(points, shape)
    encoded = shape.get("mask")
    if not isinstance(encoded, str) or not encoded:
        raise AnnotationError(f"mask shape {short(shape.get('label'))} has no `mask` (a base64 PNG)")
    try:
        data = base64.b64decode(encoded)
    except ValueError as error:
        raise AnnotationError(f"mask shape {short(shape.get('label'))}: `mask` is not valid base64 ({error})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            patch = Image.open(io.BytesIO(data))
        with patch:
            if patch.width * patch.height > height * width:  # checked before decoding: never larger than the image
                raise AnnotationError(
                    f"mask shape {short(shape.get('label'))}: patch of {patch.width}x{patch.height} is larger than the "
                    f"{width}x{height} image"
                )
            values = np.asarray(patch).astype(bool)
    except AnnotationError:
        raise
    except Exception as error:  # not an image, truncated, a decompression bomb
        detail = str(error).split(" <_io.BytesIO")[0]
        raise AnnotationError(
            f"mask shape {short(shape.get('label'))}: unreadable `mask` ({error.__class__.__name__}: {detail})"
        ) from None
    if values.ndim == 3:
        values = values.any(axis=2)
    x0, y0 = int(x0), int(y0)
    top, left = max(y0, 0), max(x0, 0)  # a patch starting left of or above the image is cut, not wrapped around
    rows = max(min(y0 + values.shape[0], height) - top, 0)
    columns = max(min(x0 + values.shape[1], width) - left, 0)
    return Patch(top, left, values[top - y0 : top - y0 + rows, left - x0 : left - x0 + columns])


def outline_length(coordinates: list[float]) -> float:
    """The length of a closed polygon [x0, y0, x1, y1, ...] counted as pycocotools walks it: each edge by its
    larger extent (its work and memory grow with it: 5 points a pixel)."""
    points = np.asarray(coordinates, dtype=float).reshape(-1, 2)
    return float(np.abs(points - np.roll(points, 1, axis=0)).max(axis=1).sum())


class SegmentationRasterizer:
    """Patches (:class:`Patch`) of one image's COCO segmentations: polygon lists, uncompressed RLE or compressed
    RLE, pixel for pixel as drawing each on the whole image would set them, in work that follows the shape.

    Everything is checked before pycocotools sees it (its C decoder trusts sizes and counts): finite coordinates
    near the image, RLE sizes equal to the image entry's, counts that cover exactly its pixels. `polygons` names the
    rule polygons are drawn by (:data:`POLYGON_RASTERIZERS`).
    """

    def __init__(self, height: int, width: int, polygons: str = "pycocotools"):
        self.height, self.width = height, width
        self.draw_polygons = POLYGON_RASTERIZERS[polygons]
        self._canvas = ShapeCanvas(height, width)  # PIL's, reused: kept blank between polygons

    def patch(self, segmentation) -> Patch:
        """The pixels `segmentation` sets; AnnotationError saying why when it is no valid COCO segmentation."""
        height, width = self.height, self.width
        if isinstance(segmentation, list):
            limit = coordinate_limit(height, width)
            outlines = []
            for index, polygon in enumerate(segmentation):
                if not isinstance(polygon, list):
                    raise AnnotationError(f"polygon {index} is a {json_type(polygon)}, expected a list of coordinates")
                if len(polygon) % 2:
                    raise AnnotationError(f"polygon {index} has {len(polygon)} coordinates, expected x, y pairs")
                coordinates = [coordinate(value, limit, f"polygon {index}") for value in polygon]
                if len(coordinates) >= 6:
                    outlines.append(coordinates)
            if not outlines:
                raise AnnotationError("polygon segmentation with fewer than 3 points")
            length = sum(map(outline_length, outlines))
            if length > MAX_OUTLINE_LENGTH * (height + width):
                raise AnnotationError(
                    f"polygons {length:.0f} pixels long, more than {MAX_OUTLINE_LENGTH} times the "
                    f"{width}x{height} image's height + width (refused as a flood)"
                )
            return self.draw_polygons(self, outlines)
        if not isinstance(segmentation, dict) or "counts" not in segmentation:
            raise AnnotationError(f"unrecognised segmentation (a {json_type(segmentation)}; expected polygons or RLE)")
        size = segmentation.get("size")
        if not (isinstance(size, list) and len(size) == 2 and all(whole_number(v) is not None for v in size)):
            raise AnnotationError(f"RLE size {short(size)} is not [height, width]")
        rle_height, rle_width = (int(v) for v in size)
        if (rle_height, rle_width) != (height, width):
            raise AnnotationError(f"RLE size {rle_width}x{rle_height} differs from the image entry {width}x{height}")
        counts = segmentation["counts"]
        if isinstance(counts, (str, bytes)):
            try:
                counts = rle_string_counts(counts.encode("ascii") if isinstance(counts, str) else bytes(counts))
            except UnicodeEncodeError:
                raise AnnotationError("RLE counts string holds non-ASCII characters") from None
        elif not isinstance(counts, list):
            raise AnnotationError(f"RLE counts is a {json_type(counts)}, expected a list or a string")
        check_rle_counts(counts, height, width)
        return runs_patch(counts, height)

    def _pycocotools(self, outlines: list) -> Patch:
        """COCO's annToMask: each polygon to an RLE (work along its outline), their union, its runs."""
        from pycocotools import mask as mask_utils

        rle = mask_utils.merge(mask_utils.frPyObjects(outlines, self.height, self.width))
        return runs_patch(rle_string_counts(rle["counts"]), self.height)

    def _pil(self, outlines: list) -> Patch:
        """labelme's rule: PIL's polygon fill and outline, drawn within the vertices' box (:class:`ShapeCanvas`)."""
        xs = [x for outline in outlines for x in outline[::2]]
        ys = [y for outline in outlines for y in outline[1::2]]

        def draw(canvas: ImageDraw.ImageDraw) -> None:
            for outline in outlines:
                canvas.polygon(xy=list(zip(outline[::2], outline[1::2])), outline=1, fill=1)

        return self._canvas.patch((min(xs), min(ys), max(xs), max(ys)), draw)


POLYGON_RASTERIZERS: dict[str, Callable[[SegmentationRasterizer, list], Patch]] = {
    "pycocotools": SegmentationRasterizer._pycocotools,  # COCO's own annToMask semantics
    "pil": SegmentationRasterizer._pil,  # labelme's rule: its COCO exports match its VOC exports pixel for pixel
}


def check_rle_counts(counts: list, height: int, width: int) -> None:
    """AnnotationError unless counts are non-negative integers covering exactly height x width pixels."""
    for value in counts:
        if not is_integer(value) or value < 0:
            raise AnnotationError(f"RLE counts hold {short(value)}, not a run length")
    total = sum(counts)
    if total != height * width:
        raise AnnotationError(f"RLE counts cover {total} pixels, the {width}x{height} image has {height * width}")


def rle_string_counts(encoded: bytes) -> list[int]:
    """The run lengths of a compressed COCO RLE string, decoded as pycocotools' rleFrString does, checked on the
    way (characters '0'..'o', no number cut off, no negative or oversized run)."""
    counts: list[int] = []
    position = 0
    while position < len(encoded):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(encoded):
                raise AnnotationError("RLE counts string ends inside a number")
            char = encoded[position] - 48
            if not 0 <= char < 64:
                raise AnnotationError(f"RLE counts string holds {chr(encoded[position])!r}, not a COCO RLE character")
            if shift > 25:  # 6 characters at most: what pycocotools decodes without overflowing an int
                raise AnnotationError("RLE counts string holds a run too long to be real")
            value |= (char & 0x1F) << shift
            more = bool(char & 0x20)
            position += 1
            shift += 5
            if not more and char & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        if not 0 <= value < 1 << 32:
            raise AnnotationError(f"RLE counts string decodes to a run length of {value}")
        counts.append(value)
    return counts
