"""Image/mask folder pairs: `<images_dir>/[split/]name.ext` with `<masks_dir>/[split/]<mask_name>.png`."""

from __future__ import annotations

import os
from pathlib import Path

from segmodels.data.classes import ClassSpec, find_class_file, read_class_file
from segmodels.data.errors import Issue
from segmodels.data.formats.base import (
    Sample,
    SourceReader,
    decode_mask_image,
    read_file,
    register_format,
)
from segmodels.data.layout import SPLITS


@register_format
class FolderReader(SourceReader):
    """Pairs every image with the mask of the same relative path; a first folder named train/val/test is its split."""

    name = "folder"

    def __init__(
        self,
        root: Path,
        images_dir: str,
        masks_dir: str,
        image_suffixes: tuple[str, ...],
        mask_suffix: str,
        mask_name: str,
    ):
        super().__init__(root)
        self.images_dir = self.root / images_dir
        self.masks_dir = self.root / masks_dir
        self.image_suffixes = tuple(suffix.lower() for suffix in image_suffixes)
        self.mask_suffix = mask_suffix
        self.mask_name = mask_name
        self._orphans: list[Issue] = []

    @classmethod
    def detect(cls, root: Path, images_dir: str, masks_dir: str, **_) -> bool:
        return (root / images_dir).is_dir() and (root / masks_dir).is_dir()

    def classes(self) -> list[ClassSpec] | None:
        path = find_class_file(self.root)
        return read_class_file(path) if path else None

    def samples(self) -> list[Sample]:
        if not self.images_dir.is_dir():
            raise FileNotFoundError(f"{self.images_dir}: images folder not found")
        masks = set(walk_files(self.masks_dir, (self.mask_suffix,)))
        samples, expected_masks = [], set()
        for image in walk_files(self.images_dir, self.image_suffixes):
            relative = image.relative_to(self.images_dir)
            mask = self.masks_dir / relative.parent / (self.mask_name.format(stem=image.stem) + self.mask_suffix)
            expected_masks.add(mask)
            folders = list(relative.parent.parts)
            split = folders.pop(0) if folders and folders[0] in SPLITS else None
            samples.append(
                Sample(
                    name="__".join([*folders, image.stem]),
                    image_ref=str(image),
                    mask_ref=str(mask) if mask in masks else None,
                    image_bytes=read_file(image),
                    annotation_bytes=read_file(mask),
                    decode_mask=decode_mask_image,
                    split=split,
                    files=(image, mask),
                )
            )
        self._orphans = [Issue(str(mask), "extra mask: no image matches it") for mask in sorted(masks - expected_masks)]
        return samples

    def orphans(self) -> list[Issue]:
        return self._orphans


def walk_files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Files below folder whose suffix (any case) is one of suffixes, hidden ones left out, sorted; one directory
    walk without a stat per file."""
    found = []
    for directory, subdirectories, files in os.walk(folder):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        found += [Path(directory, name) for name in files if not name.startswith(".") and name.lower().endswith(suffixes)]
    return sorted(found)
