"""labelme JSON: polygons, rectangles, circles, lines, points and masks, labels mapped to class ids."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np

from segmodels.data.classes import ClassSpec, find_class_file, parse_classes
from segmodels.data.errors import DataValidationError, Issue
from segmodels.data.formats.base import (
    Sample,
    SourceFileError,
    SourceReader,
    check_pixels,
    load_class_file,
    read_head,
    read_source_file,
    refused_file,
    register_format,
)
from segmodels.data.layout import SPLITS
from segmodels.data.shapes import (
    AnnotationError,
    ShapeCanvas,
    json_type,
    labelme_shape_patch,
    short,
    whole_number,
)

IGNORE_LABEL = "__ignore__"
BACKGROUND_LABEL = "_background_"
# Bounds on the work one file's shapes make (each is drawn within its box, in work that follows its size):
MAX_SHAPES_PER_FILE = 100_000  # a file with more is refused
MAX_PAINTED_LAYERS = 256  # the shapes' boxes may cover the image this many times over, then the file is refused
# labelme writes `shapes` before `imagePath`, each shape starting with its label: a file with many shapes shows
# only these in its first bytes
LABELME_SHAPES_START = re.compile(r'"shapes"\s*:\s*\[\s*\{\s*"label"\s*:')


def is_labelme_file(path: Path) -> bool:
    """A regular JSON file whose start shows labelme's keys (`shapes`, and `imagePath`, `imageData` or a shape's
    `label`); FIFOs, devices and files outside the source are never opened."""
    head = read_head(path, 1 << 14)
    if head is None:
        return False
    text = head.decode("utf-8", "replace")
    return LABELME_SHAPES_START.search(text) is not None or (
        '"shapes"' in text and ('"imagePath"' in text or '"imageData"' in text)
    )


def load_document(data: bytes) -> dict:
    """The labelme document in `data` with its structure checked (an object whose `shapes` is a list of objects);
    AnnotationError says what is wrong."""
    try:
        document = json.loads(data)
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise AnnotationError(f"invalid JSON ({error})") from None
    except RecursionError:
        raise AnnotationError("invalid JSON (nested too deeply)") from None
    if not isinstance(document, dict):
        raise AnnotationError(f"not a labelme document: a {json_type(document)}, expected an object")
    shapes = document.get("shapes")
    if shapes is None:
        document["shapes"] = []
    elif not isinstance(shapes, list):
        raise AnnotationError(f"`shapes` is a {json_type(shapes)}, expected a list of shapes")
    else:
        for index, shape in enumerate(shapes):
            if not isinstance(shape, dict):
                raise AnnotationError(f"shapes[{index}] is a {json_type(shape)} ({short(shape)}), expected an object")
    return document


def declared_size(document: dict) -> tuple[int, int]:
    """(height, width) the document declares, checked to be positive whole numbers within `max_image_pixels`
    before any mask is allocated."""
    height, width = document.get("imageHeight"), document.get("imageWidth")
    if not height or not width:
        raise AnnotationError("no imageHeight/imageWidth")
    for key, value in (("imageHeight", height), ("imageWidth", width)):
        if whole_number(value) is None:
            raise AnnotationError(f"{key} {short(value)} is not a positive whole number")
    height, width = whole_number(height), whole_number(width)
    check_pixels(width, height, "declared imageWidth x imageHeight")
    return height, width


@register_format
class LabelmeReader(SourceReader):
    """One JSON per image (below root, recursively); class ids from a labels file (labelme's labels.txt) or the
    labels seen.

    Labels follow labelme's convention: `__ignore__` marks ignored pixels, `_background_` is class 0.
    """

    name = "labelme"

    def __init__(self, root: Path, labels_file: str | None):
        super().__init__(root)
        self.labels_file = self.root / labels_file if labels_file else find_class_file(self.root, self.root.parent)
        self._labels_found = not labels_file
        candidates = sorted(self.root.rglob("*.json"))
        self._refused: list[Issue] = [issue for issue in map(refused_file, candidates) if issue]
        self.files = [p for p in candidates if is_labelme_file(p)]
        self._classes: list[ClassSpec] | None = None

    @classmethod
    def detect(cls, root: Path, **_) -> bool:
        return any(is_labelme_file(p) for p in sorted(root.glob("*.json")) + sorted(root.glob("*/*.json")))

    def classes(self) -> list[ClassSpec]:
        if self._classes is None:
            if self.labels_file:
                # found beside or above the JSONs: it must not leave the folder it was found in (the labels_file
                # option names its file itself)
                folder = self.labels_file.parent if self._labels_found else None
                self._classes = load_class_file(self.labels_file, folder)
            else:
                seen = sorted(self._labels_seen() - {BACKGROUND_LABEL, IGNORE_LABEL})
                self._classes = parse_classes([BACKGROUND_LABEL, *seen])
        return self._classes

    def ignore_values(self) -> tuple[int, ...]:
        return (-1,)

    def orphans(self) -> list[Issue]:
        return self._refused

    def _labels_seen(self) -> set[str]:
        labels = set()
        for path in self.files:
            try:
                document = load_document(read_source_file(path, self.root))
            except (OSError, AnnotationError):
                continue  # reported when the sample is read
            labels |= {shape["label"] for shape in document["shapes"] if isinstance(shape.get("label"), str)}
        return labels

    def samples(self) -> list[Sample]:
        if not self.files:
            raise DataValidationError(f"{self.root}: no labelme JSON files")
        class_of = {spec.name: spec.id for spec in self.classes()}
        class_of[IGNORE_LABEL] = -1
        samples = []
        for path in self.files:
            folders = list(path.relative_to(self.root).parent.parts)
            split = folders.pop(0) if folders and folders[0] in SPLITS else None
            samples.append(
                Sample(
                    name="__".join([*folders, path.stem]),
                    image_ref=f"{path} (image)",
                    mask_ref=str(path),
                    image_bytes=lambda path=path: self._image_bytes(path),
                    annotation_bytes=lambda path=path: read_source_file(path, self.root),
                    decode_mask=lambda data, path=path: self._paint(data, class_of),
                    split=split,
                )
            )
        return samples

    def _image_bytes(self, path: Path) -> bytes:
        """The embedded `imageData` when present, else the file `imagePath` names (relative to the JSON, inside
        the source)."""
        document = load_document(read_source_file(path, self.root))
        image_data = document.get("imageData")
        if image_data:
            if not isinstance(image_data, str):
                raise AnnotationError(f"imageData is a {json_type(image_data)}, expected a base64 string")
            try:
                return base64.b64decode(image_data)
            except ValueError as error:
                raise AnnotationError(f"imageData is not valid base64 ({error})") from None
        image_path = document.get("imagePath")
        if not image_path:
            raise OSError("neither imageData nor imagePath given")
        if not isinstance(image_path, str) or "\0" in image_path:
            raise AnnotationError(f"imagePath {short(image_path)} is not a file name")
        try:
            return read_source_file(path.parent / image_path, self.root)
        except FileNotFoundError:
            raise OSError(f"imagePath {image_path!r} not found and no imageData") from None
        except SourceFileError as error:
            raise SourceFileError(f"imagePath {image_path!r}: {error}") from None

    @staticmethod
    def _paint(data: bytes, class_of: dict[str, int]) -> np.ndarray:
        """Semantic mask (int16, -1 = ignore), shapes painted in file order as labelme's exporters do."""
        document = load_document(data)
        height, width = declared_size(document)
        if len(document["shapes"]) > MAX_SHAPES_PER_FILE:
            raise AnnotationError(
                f"{len(document['shapes'])} shapes, more than the {MAX_SHAPES_PER_FILE} one file may have"
            )
        mask = np.zeros((height, width), dtype=np.int16)
        canvas, painted = ShapeCanvas(height, width), 0
        for index, shape in enumerate(document["shapes"]):
            label = shape.get("label")
            if not isinstance(label, str):
                raise AnnotationError(f"shapes[{index}]: label {short(label)} is not a string")
            if label not in class_of:
                raise AnnotationError(f"label {label!r} is not a declared class")
            try:
                patch = labelme_shape_patch(shape, canvas)
            except AnnotationError as error:
                raise AnnotationError(f"shapes[{index}]: {error}") from None
            painted += patch.pixels.size
            if painted > MAX_PAINTED_LAYERS * height * width:
                raise AnnotationError(
                    f"shapes[{index}]: the shapes' boxes so far cover the {width}x{height} image "
                    f"more than {MAX_PAINTED_LAYERS} times over (refused as a flood)"
                )
            patch.paint(mask, class_of[label])
        return mask
