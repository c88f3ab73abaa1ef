"""Data set statistics gathered while samples stream through: class pixel frequencies and image sizes.

Per split, `DatasetStats` counts for every class id (fixed 256-entry arrays, so memory does not grow with the
data): its pixels, the images it appears in, and the total pixels of those images. `class_stats` turns them into
the `class_stats` section of `dataset.yaml`, which `ClassStats.from_dict` reads back (see
`segmodels.data.balance` for the class weights computed from it):

    class_stats:
      train:
        pixels: [...]          # per class id 0..num_classes-1: pixels labelled with the class
        image_pixels: [...]    # per class id: all pixels (ignored ones included) of the images the class appears in
        images: [...]          # per class id: images the class appears in
        ignored_pixels: N      # pixels labelled ignore_index (in no class count)
      val: {...}
      test: {...}              # every split always present (zeros when empty), so equal data gives equal bytes
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from segmodels.data.errors import DataValidationError
from segmodels.data.layout import SPLITS

CLASS_STATS_KEY = "class_stats"


def _ids() -> np.ndarray:
    return np.zeros(256, dtype=np.int64)


@dataclass
class _SplitCounts:
    """Per class id (0..255) accumulators of one split."""

    pixels: np.ndarray = field(default_factory=_ids)
    image_pixels: np.ndarray = field(default_factory=_ids)
    images: np.ndarray = field(default_factory=_ids)


@dataclass(frozen=True)
class ClassStats:
    """Class statistics of one split as `dataset.yaml` holds them (tuples indexed by class id 0..num_classes-1)."""

    pixels: tuple[int, ...]
    image_pixels: tuple[int, ...]
    images: tuple[int, ...]
    ignored_pixels: int

    def to_dict(self) -> dict:
        return {
            "pixels": list(self.pixels),
            "image_pixels": list(self.image_pixels),
            "images": list(self.images),
            "ignored_pixels": self.ignored_pixels,
        }

    @classmethod
    def from_dict(cls, document, num_classes: int, where: str) -> ClassStats:
        """Parse one split's mapping; DataValidationError naming `where` when a key is missing or mis-sized."""
        if not isinstance(document, Mapping):
            raise DataValidationError(f"{where}: not a mapping")
        columns = {}
        for key in ("pixels", "image_pixels", "images"):
            values = document.get(key)
            if not isinstance(values, list) or len(values) != num_classes:
                raise DataValidationError(f"{where}.{key}: expected a list of {num_classes} counts (one per class id)")
            try:
                columns[key] = tuple(int(v) for v in values)
            except (TypeError, ValueError):
                raise DataValidationError(f"{where}.{key}: expected integer counts") from None
        try:
            ignored = int(document.get("ignored_pixels", 0))
        except (TypeError, ValueError):
            raise DataValidationError(f"{where}.ignored_pixels: expected an integer count") from None
        return cls(ignored_pixels=ignored, **columns)


@dataclass
class DatasetStats:
    """Fixed-size accumulators (per class id, per split and per distinct image size), so memory does not grow with
    the data."""

    sizes: Counter = field(default_factory=Counter)
    split_images: Counter = field(default_factory=Counter)
    by_split: dict[str, _SplitCounts] = field(default_factory=dict)  # at most one entry per split name

    def add(self, split: str, width: int, height: int, pixels_per_id: dict[int, int]) -> None:
        self.sizes[(int(width), int(height))] += 1
        self.split_images[split] += 1
        counts = self.by_split.setdefault(split, _SplitCounts())
        image_pixels = sum(int(count) for count in pixels_per_id.values())  # the mask's size: the image's
        for class_id, count in pixels_per_id.items():
            class_id, count = int(class_id), int(count)
            counts.pixels[class_id] += count
            counts.image_pixels[class_id] += image_pixels
            counts.images[class_id] += 1

    @property
    def num_images(self) -> int:
        return sum(self.split_images.values())

    @property
    def pixels(self) -> np.ndarray:
        """Pixels per class id, all splits together."""
        return sum((counts.pixels for counts in self.by_split.values()), _ids())

    @property
    def images_with_class(self) -> np.ndarray:
        """Images holding each class id, all splits together."""
        return sum((counts.images for counts in self.by_split.values()), _ids())

    def class_stats(self, num_classes: int, ignore_index: int) -> dict[str, dict]:
        """The `class_stats` section of `dataset.yaml` (see the module doc): per split, lists per class id
        0..num_classes-1 and the ignored pixel count. A class id equal to ignore_index counts as ignored only."""
        document = {}
        for split in SPLITS:
            counts = self.by_split.get(split) or _SplitCounts()
            columns = {
                key: [int(v) for v in getattr(counts, key)[:num_classes]]
                for key in ("pixels", "image_pixels", "images")
            }
            if ignore_index < num_classes:
                for values in columns.values():
                    values[ignore_index] = 0
            document[split] = ClassStats(
                pixels=tuple(columns["pixels"]),
                image_pixels=tuple(columns["image_pixels"]),
                images=tuple(columns["images"]),
                ignored_pixels=int(counts.pixels[ignore_index]),
            ).to_dict()
        return document

    def class_table(self, class_names: list[str], ignore_index: int) -> dict[str, list]:
        """Columns: class_id, class_name, pixels, pixel_fraction, images (ignored pixels as a last row)."""
        pixels, images = self.pixels, self.images_with_class
        total = int(pixels.sum()) or 1
        ids = list(range(len(class_names))) + ([ignore_index] if pixels[ignore_index] else [])
        return {
            "class_id": ids,
            "class_name": [class_names[i] if i < len(class_names) else "ignore" for i in ids],
            "pixels": [int(pixels[i]) for i in ids],
            "pixel_fraction": [float(pixels[i]) / total for i in ids],
            "images": [int(images[i]) for i in ids],
        }

    def size_table(self) -> dict[str, list]:
        """Columns: width, height, images (one row per distinct image size)."""
        rows = sorted(self.sizes.items())
        return {
            "width": [w for (w, _), _ in rows],
            "height": [h for (_, h), _ in rows],
            "images": [n for _, n in rows],
        }

    def summary(self) -> dict:
        """Small JSON-friendly digest of the statistics."""
        widths = [w for w, _ in self.sizes]
        heights = [h for _, h in self.sizes]
        return {
            "images": self.num_images,
            "splits": dict(self.split_images),
            "distinct_sizes": len(self.sizes),
            "min_size": [min(widths), min(heights)] if widths else None,
            "max_size": [max(widths), max(heights)] if widths else None,
        }
