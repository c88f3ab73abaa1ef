"""COCO JSON (instances): polygons and RLE per object, painted into one semantic mask per image."""

from __future__ import annotations

import json
import os
import stat
from collections import Counter
from pathlib import Path

import numpy as np

from segmodels.data.classes import ClassSpec, voc_color
from segmodels.data.errors import DataValidationError, Issue
from segmodels.data.formats.base import (
    Sample,
    SourceReader,
    check_pixels,
    read_file,
    read_head,
    read_source_file,
    refused_file,
    register_format,
)
from segmodels.data.layout import SPLITS
from segmodels.data.shapes import (
    POLYGON_RASTERIZERS,
    AnnotationError,
    SegmentationRasterizer,
    is_integer,
    json_type,
    short,
    whole_number,
)

BACKGROUND_NAMES = ("_background_", "background", "__background__")
COCO_KEYS = ("images", "annotations", "categories")
# Bounds on the work one image's annotations make (each is drawn within its box, in work that follows its size):
MAX_ANNOTATIONS_PER_IMAGE = 100_000  # an image with more is refused, reported by its file and image id
MAX_PAINTED_LAYERS = 256  # the annotations' boxes may cover the image this many times over, then it is refused


def is_coco_file(path: Path) -> bool:
    """A regular JSON file whose top level has images, annotations and categories (reads only the start of big
    files); FIFOs, devices and files outside the source are never opened."""
    head = read_head(path, 1 << 16)
    if head is None:
        return False
    text = head.decode("utf-8", "replace")
    if all(f'"{key}"' in text for key in COCO_KEYS):
        return True
    if len(head) == 1 << 16:  # keys may come later in a large file
        try:
            document = json.loads(read_source_file(path))
        except (OSError, ValueError, RecursionError):
            return False
        return isinstance(document, dict) and all(key in document for key in COCO_KEYS)
    return False


def coco_candidates(root: Path) -> list[Path]:
    return sorted(root.glob("*.json")) + sorted(root.glob("annotations/*.json"))


def find_coco_files(root: Path) -> list[Path]:
    return [path for path in coco_candidates(root) if is_coco_file(path)]


def image_problem(image) -> str | None:
    """Why an entry of `images` cannot be a sample (None when it can)."""
    if not isinstance(image, dict):
        return f"image entry is a {json_type(image)}, expected an object"
    if "id" not in image:
        return "image entry without `id`"
    if not is_integer(image["id"]):
        return f"image id {short(image['id'])} is not an integer"
    file_name = image.get("file_name")
    if not isinstance(file_name, str) or not file_name.strip() or "\0" in file_name:
        return f"image id {image['id']}: file_name {short(file_name)} is not a file name"
    for key in ("width", "height"):
        if whole_number(image.get(key)) is None:
            return f"image id {image['id']}: {key} {short(image.get(key))} is not a positive whole number"
    return None


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
        self._refused: list[Issue] = []
        if annotations is None:
            candidates = coco_candidates(self.root)
            self._refused = [issue for issue in map(refused_file, candidates) if issue]
            self.files = [path for path in candidates if is_coco_file(path)]
        else:
            self.files = [self.root / name for name in ([annotations] if isinstance(annotations, str) else annotations)]
        if not self.files:
            raise DataValidationError(
                f"{self.root}: no COCO annotation file (*.json or annotations/*.json with "
                "images, annotations, categories)"
            )
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
            for index, category in enumerate(self._read(path)["categories"]):
                if not isinstance(category, dict):
                    raise DataValidationError(
                        f"{path}: categories[{index}] is a {json_type(category)}, expected an object"
                    )
                if not is_integer(category.get("id")):
                    raise DataValidationError(
                        f"{path}: categories[{index}] has no integer `id` ({short(category.get('id'))})"
                    )
                name = category.get("name")
                if not isinstance(name, str) or not name:
                    raise DataValidationError(f"{path}: category id {category['id']} has no `name` ({short(name)})")
                known = categories.setdefault(category["id"], name)
                if known != name:
                    raise DataValidationError(
                        f"{path}: category id {category['id']} is {name!r} here, {known!r} elsewhere"
                    )
        background = [cid for cid, name in categories.items() if name in BACKGROUND_NAMES]
        names = ["_background_" if not background else categories[background[0]]]
        self._class_of = {background[0]: 0} if background else {}
        for cid in sorted(c for c in categories if c not in background):
            self._class_of[cid] = len(names)
            names.append(categories[cid])
        self._classes = [ClassSpec(i, name, voc_color(i)) for i, name in enumerate(names)]

    def _read(self, path: Path) -> dict:
        try:
            document = json.loads(read_source_file(path, self.root))
        except (OSError, ValueError) as error:
            detail = error.strerror if isinstance(error, OSError) and error.strerror else error
            raise DataValidationError(f"{path}: unreadable COCO annotation file ({detail})") from None
        except RecursionError:
            raise DataValidationError(f"{path}: unreadable COCO annotation file (JSON nested too deeply)") from None
        if not isinstance(document, dict) or any(key not in document for key in COCO_KEYS):
            raise DataValidationError(f"{path}: not a COCO annotation file (needs {', '.join(COCO_KEYS)})")
        for key in COCO_KEYS:
            if not isinstance(document[key], list):
                raise DataValidationError(f"{path}: `{key}` is a {json_type(document[key])}, expected a list")
        return document

    def samples(self) -> list[Sample]:
        self.classes()
        samples, self._orphans = [], list(self._refused)
        for path in self.files:
            document = self._read(path)
            ids = Counter(
                image["id"] for image in document["images"] if isinstance(image, dict) and is_integer(image.get("id"))
            )
            duplicated = {image_id for image_id, count in ids.items() if count > 1}
            images, refused_ids = {}, set()
            for index, image in enumerate(document["images"]):
                problem = image_problem(image)
                if problem is None and image["id"] in duplicated:
                    problem = f"image id {image['id']} appears more than once"
                if problem:
                    self._orphans.append(Issue(f"{path}#images[{index}]", problem))
                    if isinstance(image, dict) and is_integer(image.get("id")):
                        refused_ids.add(image["id"])
                    continue
                images[image["id"]] = image
            by_image: dict[int, list] = {image_id: [] for image_id in images}
            for index, annotation in enumerate(document["annotations"]):
                where = (
                    f"{path}#annotation={short(annotation.get('id'))}"
                    if isinstance(annotation, dict)
                    else f"{path}#annotations[{index}]"
                )
                image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
                if not isinstance(annotation, dict):
                    self._orphans.append(Issue(where, f"annotation is a {json_type(annotation)}, expected an object"))
                elif not is_integer(image_id):
                    self._orphans.append(Issue(where, f"image_id {short(image_id)} is not an integer"))
                elif image_id in by_image:
                    by_image[image_id].append(annotation)
                elif image_id not in refused_ids:  # an image refused above is reported once, not per annotation
                    self._orphans.append(Issue(where, f"annotation of unknown image id {image_id}"))
            for image_id, image in images.items():
                if len(by_image[image_id]) > MAX_ANNOTATIONS_PER_IMAGE:
                    self._orphans.append(
                        Issue(
                            f"{path}#image_id={image_id}",
                            f"{len(by_image[image_id])} annotations, "
                            f"more than the {MAX_ANNOTATIONS_PER_IMAGE} one image may have",
                        )
                    )
                    continue
                samples.append(self._sample(path, image, by_image[image_id]))
        return samples

    def _sample(self, path: Path, image: dict, annotations: list) -> Sample:
        file_name = image["file_name"]
        image_path = self._image_path(path, file_name)
        entry = {
            "width": whole_number(image["width"]),
            "height": whole_number(image["height"]),
            "annotations": annotations,
        }
        encoded = json.dumps(entry, sort_keys=True).encode()
        return Sample(
            name=Path(file_name).stem,
            image_ref=str(image_path),
            mask_ref=f"{path}#image_id={image['id']}",
            image_bytes=read_file(image_path, self.root),
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
            if _present(folder / file_name):  # a stat, nothing opened: reading checks the file (regular, inside)
                return folder / file_name
        return folders[0] / file_name

    def _paint(self, encoded: bytes) -> np.ndarray:
        """Semantic mask (int16, -1 = ignore): objects painted in annotation order, later ones on top."""
        entry = json.loads(encoded)
        height, width = entry["height"], entry["width"]
        check_pixels(width, height, "image entry's width x height")
        mask = np.zeros((height, width), dtype=np.int16)
        rasterizer, painted = SegmentationRasterizer(height, width, self.polygons), 0
        for annotation in entry["annotations"]:
            name = f"annotation {short(annotation.get('id'))}"
            category = annotation.get("category_id")
            if not is_integer(category):
                raise AnnotationError(f"{name}: category_id {short(category)} is not an integer")
            if category not in self._class_of:
                raise AnnotationError(f"{name}: category id {category} is not in categories")
            if "segmentation" not in annotation:
                raise AnnotationError(f"{name}: no segmentation")
            try:
                patch = rasterizer.patch(annotation["segmentation"])
            except AnnotationError as error:
                raise AnnotationError(f"{name}: {error}") from None
            painted += patch.pixels.size
            if painted > MAX_PAINTED_LAYERS * height * width:
                raise AnnotationError(
                    f"{name}: the annotations' boxes so far cover the {width}x{height} image more "
                    f"than {MAX_PAINTED_LAYERS} times over (refused as a flood)"
                )
            ignore = self.crowd_as_ignore and annotation.get("iscrowd")
            patch.paint(mask, -1 if ignore else self._class_of[category])
        return mask

    def orphans(self) -> list[Issue]:
        return self._orphans


def _present(path: Path) -> bool:
    """Whether something other than a folder is at path (a FIFO there is found, and then refused by name)."""
    try:
        return not stat.S_ISDIR(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False
