"""COCO JSON (instances): polygons and RLE per object, painted into one semantic mask per image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from segmodels.data.classes import ClassSpec, voc_color
from segmodels.data.errors import DataValidationError, Issue
from segmodels.data.formats.base import Sample, SourceReader, read_file, register_format
from segmodels.data.layout import SPLITS
from segmodels.data.shapes import POLYGON_RASTERIZERS, AnnotationError, coco_segmentation_mask

BACKGROUND_NAMES = ("_background_", "background", "__background__")
COCO_KEYS = ("images", "annotations", "categories")


def is_coco_file(path: Path) -> bool:
    """A JSON file whose top level has images, annotations and categories (reads only the start of big files)."""
    try:
        with open(path, encoding="utf-8") as handle:
            head = handle.read(1 << 16)
    except OSError:
        return False
    if all(f'"{key}"' in head for key in COCO_KEYS):
        return True
    if path.stat().st_size > 1 << 16:  # keys may come later in a large file
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        return isinstance(document, dict) and all(key in document for key in COCO_KEYS)
    return False


def find_coco_files(root: Path) -> list[Path]:
    candidates = sorted(root.glob("*.json")) + sorted(root.glob("annotations/*.json"))
    return [path for path in candidates if is_coco_file(path)]


def split_of(path: Path) -> str | None:
    """train/val/test when the annotation file's name says so (instances_val2017.json -> val)."""
    stem = path.stem.lower()
    matches = [split for split in SPLITS if split in stem]
    return matches[0] if len(matches) == 1 else None


@register_format
class COCOReader(SourceReader):
    """Class ids: a category named background (or `_background_`) is 0, the others follow in category-id order."""

    name = "coco"

    def __init__(
        self,
        root: Path,
        annotations: list[str] | str | None,
        images_dir: str | None,
        crowd_as_ignore: bool,
        polygons: str,
    ):
        super().__init__(root)
        if polygons not in POLYGON_RASTERIZERS:
            raise DataValidationError(f"polygons={polygons!r}: expected one of {sorted(POLYGON_RASTERIZERS)}")
        self.polygons = polygons
        if annotations is None:
            self.files = find_coco_files(self.root)
        else:
            self.files = [self.root / name for name in ([annotations] if isinstance(annotations, str) else annotations)]
        if not self.files:
            raise DataValidationError(f"{self.root}: no COCO annotation file (*.json or annotations/*.json with images, annotations, categories)")
        self.images_dir = self.root / images_dir if images_dir else None
        self.crowd_as_ignore = crowd_as_ignore
        self._orphans: list[Issue] = []
        self._classes: list[ClassSpec] = []
        self._class_of: dict[int, int] = {}

    @classmethod
    def detect(cls, root: Path, **_) -> bool:
        return bool(find_coco_files(root))

    def classes(self) -> list[ClassSpec]:
        if not self._classes:
            self._load_categories()
        return self._classes

    def ignore_values(self) -> tuple[int, ...]:
        return (-1,)

    def _load_categories(self) -> None:
        categories: dict[int, str] = {}
        for path in self.files:
            for category in self._read(path)["categories"]:
                known = categories.setdefault(int(category["id"]), str(category["name"]))
                if known != category["name"]:
                    raise DataValidationError(f"{path}: category id {category['id']} is {category['name']!r} here, {known!r} elsewhere")
        background = [cid for cid, name in categories.items() if name in BACKGROUND_NAMES]
        names = ["_background_" if not background else categories[background[0]]]
        self._class_of = {background[0]: 0} if background else {}
        for cid in sorted(c for c in categories if c not in background):
            self._class_of[cid] = len(names)
            names.append(categories[cid])
        self._classes = [ClassSpec(i, name, voc_color(i)) for i, name in enumerate(names)]

    @staticmethod
    def _read(path: Path) -> dict:
        try:
            document = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise DataValidationError(f"{path}: unreadable COCO annotation file ({error})") from None
        if not isinstance(document, dict) or any(key not in document for key in COCO_KEYS):
            raise DataValidationError(f"{path}: not a COCO annotation file (needs {', '.join(COCO_KEYS)})")
        return document

    def samples(self) -> list[Sample]:
        self.classes()
        samples, self._orphans = [], []
        for path in self.files:
            document = self._read(path)
            by_image: dict[int, list] = {int(image["id"]): [] for image in document["images"]}
            for annotation in document["annotations"]:
                if int(annotation["image_id"]) in by_image:
                    by_image[int(annotation["image_id"])].append(annotation)
                else:
                    self._orphans.append(Issue(f"{path}#annotation={annotation.get('id')}", f"annotation of unknown image id {annotation['image_id']}"))
            for image in document["images"]:
                samples.append(self._sample(path, image, by_image[int(image["id"])]))
        return samples

    def _sample(self, path: Path, image: dict, annotations: list) -> Sample:
        file_name = str(image["file_name"])
        image_path = self._image_path(path, file_name)
        entry = {"width": image["width"], "height": image["height"], "annotations": annotations}
        encoded = json.dumps(entry, sort_keys=True).encode()
        return Sample(
            name=Path(file_name).stem,
            image_ref=str(image_path),
            mask_ref=f"{path}#image_id={image['id']}",
            image_bytes=read_file(image_path),
            annotation_bytes=lambda: encoded,
            decode_mask=self._paint,
            split=split_of(path),
            files=(image_path, path),
        )

    def _image_path(self, annotation_file: Path, file_name: str) -> Path:
        folders = [self.images_dir] if self.images_dir else []
        folders += [annotation_file.parent, self.root, self.root / "images"]
        tail = annotation_file.stem.split("_")[-1]  # instances_val2017 -> val2017
        folders += [self.root / tail, self.root / "images" / tail]
        for folder in folders:
            if (folder / file_name).is_file():
                return folder / file_name
        return folders[0] / file_name

    def _paint(self, encoded: bytes) -> np.ndarray:
        """Semantic mask (int16, -1 = ignore): objects painted in annotation order, later ones on top."""
        entry = json.loads(encoded)
        height, width = int(entry["height"]), int(entry["width"])
        mask = np.zeros((height, width), dtype=np.int16)
        for annotation in entry["annotations"]:
            category = int(annotation["category_id"])
            if category not in self._class_of:
                raise AnnotationError(f"annotation {annotation.get('id')}: category id {category} is not in categories")
            try:
                region = coco_segmentation_mask(annotation["segmentation"], height, width, self.polygons)
            except AnnotationError as error:
                raise AnnotationError(f"annotation {annotation.get('id')}: {error}") from None
            ignore = self.crowd_as_ignore and annotation.get("iscrowd")
            mask[region] = -1 if ignore else self._class_of[category]
        return mask

    def orphans(self) -> list[Issue]:
        return self._orphans
