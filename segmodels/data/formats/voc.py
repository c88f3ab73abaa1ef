"""Pascal VOC: `JPEGImages/`, palette PNGs in `SegmentationClass/` (255 = ignore), splits in
`ImageSets/Segmentation/*.txt`."""

from __future__ import annotations

import os
from pathlib import Path

from segmodels.data.classes import ClassSpec, find_class_file, parse_classes
from segmodels.data.errors import DataValidationError, Issue
from segmodels.data.formats.base import (
    IMAGE_SUFFIXES,
    Sample,
    SourceReader,
    decode_mask_image,
    load_class_file,
    read_file,
    read_source_file,
    register_format,
)
from segmodels.data.layout import SPLITS

VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def is_plain_name(name: str) -> bool:
    """A list entry that names a file of JPEGImages/ itself: no folder, no `..`, nothing hidden."""
    return bool(name) and not any(char in name for char in "/\\\0") and not name.startswith(".")


def find_voc_root(root: Path, depth: int = 2) -> Path | None:
    """The folder holding JPEGImages/ and SegmentationClass/: root itself or one below it (VOCdevkit/VOC2012)."""
    if (root / "JPEGImages").is_dir() and (root / "SegmentationClass").is_dir():
        return root
    if depth and root.is_dir():
        for child in sorted(p for p in root.iterdir() if p.is_dir()):
            found = find_voc_root(child, depth - 1)
            if found:
                return found
    return None


@register_format
class VOCReader(SourceReader):
    """Samples are the names in the split lists (train/val/test) when present, else every class mask."""

    name = "voc"

    def __init__(self, root: Path, masks_dir: str, splits_dir: str):
        super().__init__(find_voc_root(Path(root)) or Path(root))
        self.masks_dir = self.root / masks_dir
        self.splits_dir = self.root / splits_dir
        self._orphans: list[Issue] = []

    @classmethod
    def detect(cls, root: Path, **_) -> bool:
        return find_voc_root(root) is not None

    def classes(self) -> list[ClassSpec]:
        path = find_class_file(self.root)
        return load_class_file(path, self.root) if path else parse_classes(VOC_CLASSES)

    def ignore_values(self) -> tuple[int, ...]:
        return (255,)

    def samples(self) -> list[Sample]:
        self._orphans = []
        listed = self._listed_splits()
        masks = {p.stem: p for p in sorted(self.masks_dir.glob("*.png"))}
        images = {}
        for path in sorted((self.root / "JPEGImages").iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                images.setdefault(path.stem, path)
        names = listed if listed else {stem: None for stem in masks}
        self._orphans += [
            Issue(str(path), "extra mask: no image matches it") for stem, path in masks.items() if stem not in images
        ]
        samples = []
        for stem, split in sorted(names.items()):
            image = images.get(stem, self.root / "JPEGImages" / f"{stem}.jpg")
            mask = masks.get(stem)
            samples.append(
                Sample(
                    name=stem,
                    image_ref=str(image),
                    mask_ref=str(mask) if mask else None,
                    image_bytes=read_file(image, self.root),
                    annotation_bytes=read_file(mask, self.root) if mask else bytes,
                    decode_mask=decode_mask_image,
                    split=split,
                    files=(image, mask) if mask else (),
                )
            )
        return samples

    def _listed_splits(self) -> dict[str, str]:
        """name -> split from ImageSets/Segmentation/{train,val,test}.txt (trainval is their union, so unused)."""
        listed = {}
        for split in SPLITS:
            path = self.splits_dir / f"{split}.txt"
            if not os.path.lexists(path):
                continue
            try:
                text = read_source_file(path, self.root).decode(
                    "utf-8", "surrogateescape"
                )  # names as the file system's
            except OSError as error:
                raise DataValidationError(f"{path}: unreadable split list ({error.strerror or error})") from None
            for number, line in enumerate(text.split("\n"), 1):
                if not line.strip():
                    continue
                name = line.split()[0]
                if not is_plain_name(name):
                    self._orphans.append(Issue(f"{path}:{number}", f"list entry {name!r} is not a plain image name"))
                    continue
                listed.setdefault(name, split)
        return listed

    def orphans(self) -> list[Issue]:
        return self._orphans
