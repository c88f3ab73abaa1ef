"""Image/mask folder pairs: `<images_dir>/[split/]name.ext` with `<masks_dir>/[split/]<mask_name>.png`, or one
folder pair per split (`{split}` in both names, e.g. SegNet's CamVid `train/` + `trainannot/`).

With `images_dir`/`masks_dir` unset (null), the folders are found by their usual names directly under the root
(`IMAGE_FOLDERS`, `MASK_FOLDERS`, any case), else SegNet's per-split pairs (`SPLIT_FOLDERS`).
"""

from __future__ import annotations

import os
import shlex
from collections import Counter
from pathlib import Path

from segmodels.data.classes import ClassSpec, find_class_file
from segmodels.data.errors import DataValidationError, Issue
from segmodels.data.formats.base import (
    Sample,
    SourceReader,
    decode_mask_image,
    load_class_file,
    read_file,
    register_format,
)
from segmodels.data.layout import SPLITS

IMAGE_FOLDERS = ("images", "image", "img", "imgs", "JPEGImages")
MASK_FOLDERS = ("masks", "mask", "labels", "label", "annotations", "SegmentationClass", "ground_truth", "gt")
SPLIT = "{split}"
SPLIT_FOLDERS = ("{split}", "{split}annot")  # SegNet (CamVid): train/ + trainannot/, val/ + valannot/, ...
LOOKED_FOR = f"{'|'.join(IMAGE_FOLDERS)} with {'|'.join(MASK_FOLDERS)}, or <split>/ with <split>annot/"
NESTED_DEPTH = 4  # levels below the root searched for an image/mask folder pair whose file stems match
NESTED_MAX_FOLDERS = 2000  # folders looked at, at most, in that search
IMAGE_WORDS = ("image", "img", "photo", "picture", "frame", "input", "raw")
MASK_WORDS = ("mask", "label", "annot", "gt", "ground", "truth", "seg", "target")


@register_format
class FolderReader(SourceReader):
    """Pairs every image with the mask of the same relative path; its split is the split of its folder pair
    (`{split}` names) or a first folder named train/val/test."""

    name = "folder"

    def __init__(
        self,
        root: Path,
        images_dir: str | None,
        masks_dir: str | None,
        image_suffixes: tuple[str, ...],
        mask_suffix: str,
        mask_name: str,
    ):
        super().__init__(root)
        self.images_dir, self.masks_dir = resolve_folders(self.root, images_dir, masks_dir)
        self.image_suffixes = tuple(suffix.lower() for suffix in image_suffixes)
        self.mask_suffix = mask_suffix
        self.mask_name = mask_name
        self._orphans: list[Issue] = []

    @classmethod
    def detect(cls, root: Path, images_dir: str | None = None, masks_dir: str | None = None, **_) -> bool:
        try:
            folders = folder_pairs(Path(root), *resolve_folders(Path(root), images_dir, masks_dir))
        except DataValidationError:
            return False
        return any(images.is_dir() and masks.is_dir() for _, images, masks in folders)

    def classes(self) -> list[ClassSpec] | None:
        path = find_class_file(self.root)
        return load_class_file(path, self.root) if path else None

    def samples(self) -> list[Sample]:
        folders = [
            (split, images, masks)
            for split, images, masks in folder_pairs(self.root, self.images_dir, self.masks_dir)
            if images.is_dir() or masks.is_dir()
        ]
        if not any(images.is_dir() for _, images, _ in folders):
            where = f" for any of {'|'.join(SPLITS)}" if SPLIT in self.images_dir else ""
            raise DataValidationError(
                f"{self.root}: images folder {self.images_dir!r} not found{where}{_present(self.root)}"
            )
        samples, masks, expected_masks = [], set(), set()
        for split, images_dir, masks_dir in folders:
            masks.update(walk_files(masks_dir, (self.mask_suffix,)))
            samples += self._pairs(split, images_dir, masks_dir, masks, expected_masks)
        self._orphans = [Issue(str(mask), "extra mask: no image matches it") for mask in sorted(masks - expected_masks)]
        return samples

    def _pairs(
        self, split: str | None, images_dir: Path, masks_dir: Path, masks: set[Path], expected_masks: set[Path]
    ) -> list[Sample]:
        samples = []
        for image in walk_files(images_dir, self.image_suffixes):
            relative = image.relative_to(images_dir)
            mask = masks_dir / relative.parent / (self.mask_name.format(stem=image.stem) + self.mask_suffix)
            expected_masks.add(mask)
            folders = list(relative.parent.parts)
            image_split = split or (folders.pop(0) if folders and folders[0] in SPLITS else None)
            samples.append(
                Sample(
                    name="__".join([*folders, image.stem]),
                    image_ref=str(image),
                    mask_ref=str(mask) if mask in masks else None,
                    image_bytes=read_file(image, self.root),
                    annotation_bytes=read_file(mask, self.root),
                    decode_mask=decode_mask_image,
                    split=image_split,
                    files=(image, mask),
                )
            )
        return samples

    def orphans(self) -> list[Issue]:
        return self._orphans


def resolve_folders(root: Path, images_dir: str | None, masks_dir: str | None) -> tuple[str, str]:
    """The images and masks folder names below root: those given, else found by their usual names (a null one
    alone is looked up among `IMAGE_FOLDERS` / `MASK_FOLDERS`). Raises DataValidationError naming what it looked
    for when nothing fits."""
    if images_dir and masks_dir:
        if (SPLIT in images_dir) != (SPLIT in masks_dir):
            raise DataValidationError(
                f"data.options.images_dir={images_dir!r}, masks_dir={masks_dir!r}: name {SPLIT} in both or in neither"
            )
        return images_dir, masks_dir
    if images_dir or masks_dir:
        given = images_dir or masks_dir
        if SPLIT in given:
            raise DataValidationError(f"data.options {given!r} names {SPLIT}: set both images_dir and masks_dir")
        candidates = MASK_FOLDERS if images_dir else IMAGE_FOLDERS
        found = find_folder(root, candidates)
        if found is None:
            missing = "masks_dir" if images_dir else "images_dir"
            raise DataValidationError(
                f"{root}: no {missing.split('_')[0]} folder found beside {given!r} (looked for {'|'.join(candidates)}; "
                f"set data.options.{missing}){_present(root)}"
            )
        return (images_dir, found) if images_dir else (found, masks_dir)
    images, masks = find_folder(root, IMAGE_FOLDERS), find_folder(root, MASK_FOLDERS)
    if images and masks:
        return images, masks
    if any((root / split).is_dir() and (root / SPLIT_FOLDERS[1].format(split=split)).is_dir() for split in SPLITS):
        return SPLIT_FOLDERS
    raise DataValidationError(
        f"{root}: no image/mask folder pair found (looked for {LOOKED_FOR}; set data.options.images_dir and masks_dir)"
        f"{_present(root)}"
    )


def folder_pairs(root: Path, images_dir: str, masks_dir: str) -> list[tuple[str | None, Path, Path]]:
    """(split, images folder, masks folder): one per split for `{split}` names, else one without a split."""
    if SPLIT in images_dir:
        return [
            (split, root / images_dir.format(split=split), root / masks_dir.format(split=split)) for split in SPLITS
        ]
    return [(None, root / images_dir, root / masks_dir)]


def find_folder(root: Path, names: tuple[str, ...]) -> str | None:
    """The folder directly under root named like the first of `names` present (any case), or None."""
    by_name = {}
    for folder in _folders(root):
        by_name.setdefault(folder.lower(), folder)
    return next((by_name[name.lower()] for name in names if name.lower() in by_name), None)


def _folders(root: Path) -> list[str]:
    try:
        return sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    except OSError:
        return []


def _present(root: Path, at_most: int = 10) -> str:
    folders = _folders(root)
    if not folders:
        return "; it holds no folders"
    more = f", ... ({len(folders)} in all)" if len(folders) > at_most else ""
    return f"; folders there: {', '.join(folders[:at_most])}{more}"


def walk_files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Files below folder whose suffix (any case) is one of suffixes, hidden ones left out, sorted; one directory
    walk without a stat per file."""
    found = []
    for directory, subdirectories, files in os.walk(folder):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        found += [
            Path(directory, name) for name in files if not name.startswith(".") and name.lower().endswith(suffixes)
        ]
    return sorted(found)


def nested_pairs(root: Path, image_suffixes, mask_suffix: str, mask_name: str) -> list[tuple[str, str]]:
    """The best (images folder, masks folder) pairs, relative to root, up to :data:`NESTED_DEPTH` levels below it:
    folders whose image stems mostly have a mask (by `mask_name` + `mask_suffix`) in another folder; ranked by how
    their names read (images-like, masks-like), then by how close the two folders are. Empty when none matches."""
    suffixes = tuple(suffix.lower() for suffix in image_suffixes)
    images: dict[str, set[str]] = {}
    folders_with_mask: dict[str, list[str]] = {}  # mask stem -> folders holding it
    for index, (directory, subdirectories, files) in enumerate(os.walk(root)):
        relative = Path(directory).relative_to(root).as_posix()
        depth = 0 if relative == "." else relative.count("/") + 1
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith(".")) if depth < NESTED_DEPTH else []
        if depth == 0 or index > NESTED_MAX_FOLDERS:
            continue
        visible = [name for name in files if not name.startswith(".")]
        stems = {Path(name).stem for name in visible if name.lower().endswith(suffixes)}
        if stems:
            images[relative] = stems
        for name in visible:
            if name.endswith(mask_suffix):
                folders_with_mask.setdefault(name[: -len(mask_suffix)], []).append(relative)
    ranked = []
    for images_dir, stems in images.items():
        hits = Counter(folder for stem in stems for folder in folders_with_mask.get(mask_name.format(stem=stem), ()))
        for masks_dir, matched in hits.items():
            if masks_dir != images_dir and matched * 2 > len(stems):
                rank = (_name_score(images_dir, masks_dir), -_distance(images_dir, masks_dir))
                ranked.append((rank, matched, images_dir, masks_dir))
    best = max((rank for rank, *_ in ranked), default=None)
    return [(i, m) for rank, _, i, m in sorted(ranked, key=lambda r: (-r[1], r[2], r[3])) if rank == best]


def _distance(images_dir: str, masks_dir: str) -> int:
    """Steps from one folder to the other (2 for siblings): a pair of one data set beats a pair across two."""
    first, second = Path(images_dir).parts, Path(masks_dir).parts
    common = next((i for i, (a, b) in enumerate(zip(first, second)) if a != b), min(len(first), len(second)))
    return len(first) + len(second) - 2 * common


def _name_score(images_dir: str, masks_dir: str) -> int:
    """How much two folder names read as (images, masks): +1 for each that reads as its role, -1 when the images
    folder reads as masks."""
    image_name, mask_name = Path(images_dir).name.lower(), Path(masks_dir).name.lower()
    image_like = image_name in (n.lower() for n in IMAGE_FOLDERS) or any(w in image_name for w in IMAGE_WORDS)
    mask_like = mask_name in (n.lower() for n in MASK_FOLDERS) or any(w in mask_name for w in MASK_WORDS)
    images_read_as_masks = any(w in image_name for w in MASK_WORDS)
    return int(image_like) + int(mask_like) - int(images_read_as_masks)


def pair_params(images_dir: str, masks_dir: str) -> str:
    """The ``mlflow run`` parameters that read this folder pair, as a user types them."""
    return " ".join(
        f"-P {shlex.quote(f'{key}={value}')}"
        for key, value in (
            ("format", "folder"),
            ("data.options.images_dir", images_dir),
            ("data.options.masks_dir", masks_dir),
        )
    )
