"""Data set statistics gathered while samples stream through: class pixel frequencies and image sizes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np


@dataclass
class DatasetStats:
    """Fixed-size accumulators (per class id and per distinct image size), so memory does not grow with the data."""

    pixels: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.int64))
    images_with_class: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.int64))
    sizes: Counter = field(default_factory=Counter)
    split_images: Counter = field(default_factory=Counter)

    def add(self, split: str, width: int, height: int, pixels_per_id: dict[int, int]) -> None:
        self.sizes[(int(width), int(height))] += 1
        self.split_images[split] += 1
        for class_id, count in pixels_per_id.items():
            self.pixels[int(class_id)] += int(count)
            self.images_with_class[int(class_id)] += 1

    @property
    def num_images(self) -> int:
        return sum(self.split_images.values())

    def class_table(self, class_names: list[str], ignore_index: int) -> dict[str, list]:
        """Columns: class_id, class_name, pixels, pixel_fraction, images (ignored pixels as a last row)."""
        total = int(self.pixels.sum()) or 1
        ids = list(range(len(class_names))) + ([ignore_index] if self.pixels[ignore_index] else [])
        return {
            "class_id": ids,
            "class_name": [class_names[i] if i < len(class_names) else "ignore" for i in ids],
            "pixels": [int(self.pixels[i]) for i in ids],
            "pixel_fraction": [float(self.pixels[i]) / total for i in ids],
            "images": [int(self.images_with_class[i]) for i in ids],
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
