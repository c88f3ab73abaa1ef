"""labelme JSON: polygons, rectangles, circles, lines, points and masks, labels mapped to class ids."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

from segmodels.data.classes import ClassSpec, find_class_file, parse_classes, read_class_file
from segmodels.data.errors import DataValidationError
from segmodels.data.formats.base import Sample, SourceReader, register_format
from segmodels.data.layout import SPLITS
from segmodels.data.shapes import AnnotationError, labelme_shape_mask

IGNORE_LABEL = "__ignore__"
BACKGROUND_LABEL = "_background_"


def is_labelme_file(path: Path) -> bool:
    """A JSON file whose start shows labelme's keys (`shapes` and `imagePath`)."""
    try:
        with open(path, encoding="utf-8") as handle:
            head = handle.read(1 << 14)
    except OSError:
        return False
    return '"shapes"' in head and ('"imagePath"' in head or '"imageData"' in head)


@register_format
class LabelmeReader(SourceReader):
    """One JSON per image (below root, recursively); class ids from a labels file (labelme's labels.txt) or the labels seen.

    Labels follow labelme's convention: `__ignore__` marks ignored pixels, `_background_` is class 0.
    """

    name = "labelme"

    def __init__(self, root: Path, labels_file: str | None):
        super().__init__(root)
        self.labels_file = self.root / labels_file if labels_file else find_class_file(self.root, self.root.parent)
        self.files = [p for p in sorted(self.root.rglob("*.json")) if is_labelme_file(p)]
        self._classes: list[ClassSpec] | None = None

    @classmethod
    def detect(cls, root: Path, **_) -> bool:
        return any(is_labelme_file(p) for p in sorted(root.glob("*.json")) + sorted(root.glob("*/*.json")))

    def classes(self) -> list[ClassSpec]:
        if self._classes is None:
            if self.labels_file:
                self._classes = read_class_file(self.labels_file)
            else:
                self._classes = parse_classes([BACKGROUND_LABEL, *sorted(self._labels_seen() - {BACKGROUND_LABEL, IGNORE_LABEL})])
        return self._classes

    def ignore_values(self) -> tuple[int, ...]:
        return (-1,)

    def _labels_seen(self) -> set[str]:
        labels = set()
        for path in self.files:
            try:
                labels |= {str(shape.get("label")) for shape in json.loads(path.read_text()).get("shapes", [])}
            except (OSError, ValueError):
                continue  # reported when the sample is read
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
                    annotation_bytes=path.read_bytes,
                    decode_mask=lambda data, path=path: self._paint(data, class_of),
                    split=split,
                )
            )
        return samples

    @staticmethod
    def _image_bytes(path: Path) -> bytes:
        """The embedded `imageData` when present, else the file `imagePath` names beside the JSON."""
        try:
            document = json.loads(path.read_text())
        except ValueError as error:
            raise OSError(f"invalid JSON ({error})") from None
        if document.get("imageData"):
            return base64.b64decode(document["imageData"])
        if not document.get("imagePath"):
            raise OSError("neither imageData nor imagePath given")
        image = path.parent / document["imagePath"]
        if not image.is_file():
            raise OSError(f"imagePath {document['imagePath']!r} not found and no imageData")
        return image.read_bytes()

    @staticmethod
    def _paint(data: bytes, class_of: dict[str, int]) -> np.ndarray:
        """Semantic mask (int16, -1 = ignore), shapes painted in file order as labelme's exporters do."""
        document = json.loads(data)
        height, width = document.get("imageHeight"), document.get("imageWidth")
        if not height or not width:
            raise AnnotationError("no imageHeight/imageWidth")
        mask = np.zeros((int(height), int(width)), dtype=np.int16)
        for shape in document.get("shapes", []):
            label = str(shape.get("label"))
            if label not in class_of:
                raise AnnotationError(f"label {label!r} is not a declared class")
            mask[labelme_shape_mask(shape, int(height), int(width))] = class_of[label]
        return mask
