"""The data set's fingerprint: what a training plan needs to know of it (nnU-Net's idea, for 2D images).

Written into ``dataset.yaml`` under ``fingerprint`` at ingest (:func:`dataset_fingerprint`) and read by
:mod:`segmodels.planning`:

    fingerprint:
      version: 1
      images: {train: 24, val: 3, test: 3}
      size: {median: [h, w], p10: [h, w], p90: [h, w], aspect: w/h median}  # all images
      channels: grey | rgb                   # grey when every sampled image has R == G == B
      intensity: {mean: [r, g, b], std: [r, g, b], sampled: n}            # train split, pixels in [0, 1]
      classes:                               # per class id, train split
        - {share: 0.22, images: 24, object_px: 310.0, objects_per_image: 3.5}
      binary_masks: true
      orientation_free: false                # declared at ingest (data.orientation_free)

Sizes come from the statistics of every image; intensity and object sizes from a fixed, seeded sample of at most
``SAMPLE`` train images (bounded work whatever the data set's size). ``object_px`` is the equivalent diameter
(``2 * sqrt(area / pi)``, native pixels) of the connected component a typical pixel of the class lies in (the
area-weighted median, so that specks of label noise do not make a class look tiny).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from segmodels.data.formats.base import open_image
from segmodels.data.layout import SPLITS, Layout
from segmodels.data.stats import DatasetStats

FINGERPRINT_KEY = "fingerprint"
VERSION = 1
SAMPLE = 48  # train images decoded for intensity and object statistics
MAX_SIDE = 1024  # larger masks are sub-sampled before the connected components (diameters scaled back)


def size_summary(stats: DatasetStats) -> dict:
    """Median, 10th and 90th percentile of the image heights and widths, and the median aspect (w / h)."""
    heights, widths = [], []
    for (width, height), count in stats.sizes.items():
        heights += [height] * count
        widths += [width] * count
    if not heights:
        return {}
    h, w = np.asarray(heights), np.asarray(widths)
    percentiles = {
        name: [int(np.percentile(h, q)), int(np.percentile(w, q))]
        for name, q in (("median", 50), ("p10", 10), ("p90", 90))
    }
    return {**percentiles, "aspect": round(float(np.median(w / h)), 3)}


def _component_diameters(mask: np.ndarray, num_classes: int) -> dict[int, list[float]]:
    """Equivalent diameters (native pixels) of the connected components of each class in ``mask``."""
    from scipy import ndimage

    step = max(1, -(-max(mask.shape) // MAX_SIDE))
    small = mask[::step, ::step]
    diameters: dict[int, list[float]] = {}
    for class_id in np.unique(small):
        if class_id >= num_classes:
            continue
        labels, count = ndimage.label(small == class_id)
        if count:
            areas = np.bincount(labels.ravel())[1:] * step * step
            diameters[int(class_id)] = [float(d) for d in 2 * np.sqrt(areas / np.pi)]
    return diameters


def pixel_weighted_median(diameters: list[float]) -> float:
    """The diameter of the component holding the median pixel (components weighted by their area)."""
    ordered = np.sort(np.asarray(diameters, dtype=np.float64))
    cumulative = np.cumsum(ordered * ordered)  # area is proportional to the diameter squared
    return float(ordered[np.searchsorted(cumulative, cumulative[-1] / 2)])


def sampled_statistics(layout: Layout, images: list[Path], num_classes: int, seed: int = 0) -> dict:
    """Channel kind, per-channel intensity mean/std and per-class object sizes of a seeded sample of ``images``
    (the train split's, each with its mask in ``layout``)."""
    sums, squares, pixels, grey = np.zeros(3), np.zeros(3), 0, True
    diameters: dict[int, list[float]] = {}
    per_image: dict[int, int] = {}
    images = sorted(images)
    sample = sorted(random.Random(seed).sample(images, min(SAMPLE, len(images))))
    for image_path in sample:
        with open_image(image_path.read_bytes()) as image:  # the ingest's pixel limit (data.max_image_pixels)
            rgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
        grey = grey and bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]))
        flat = rgb.reshape(-1, 3)
        sums += flat.sum(axis=0)
        squares += (flat * flat).sum(axis=0)
        pixels += flat.shape[0]
        with open_image(layout.mask_for(image_path).read_bytes(), "mask") as mask_image:
            mask = np.asarray(mask_image)
        for class_id, found in _component_diameters(mask, num_classes).items():
            diameters.setdefault(class_id, []).extend(found)
            per_image[class_id] = per_image.get(class_id, 0) + 1
    mean = sums / max(pixels, 1)
    std = np.sqrt(np.maximum(squares / max(pixels, 1) - mean * mean, 0.0))
    objects = {
        class_id: {
            "object_px": round(pixel_weighted_median(found), 1),
            "objects_per_image": round(len(found) / per_image[class_id], 2),
        }
        for class_id, found in diameters.items()
    }
    return {
        "channels": "grey" if grey else "rgb",
        "intensity": {
            "mean": [round(float(v), 4) for v in mean],
            "std": [round(float(max(v, 1e-3)), 4) for v in std],
            "sampled": len(sample),
        },
        "objects": objects,
    }


def dataset_fingerprint(
    layout: Layout,
    train_images: list[Path],
    stats: DatasetStats,
    num_classes: int,
    ignore_index: int,
    binary_masks: bool,
    orientation_free: bool,
) -> dict:
    """The ``fingerprint`` section of ``dataset.yaml`` (see the module doc) of a layout being written."""
    sampled = sampled_statistics(layout, train_images, num_classes)
    train = stats.by_split.get("train")
    pixels = train.pixels[:num_classes].astype(np.float64) if train else np.zeros(num_classes)
    if ignore_index < num_classes:
        pixels[ignore_index] = 0
    total = pixels.sum() or 1.0
    classes = []
    for class_id in range(num_classes):
        entry = {
            "share": round(float(pixels[class_id] / total), 5),
            "images": int(train.images[class_id]) if train and class_id != ignore_index else 0,
        }
        entry.update(sampled["objects"].get(class_id, {"object_px": None, "objects_per_image": 0.0}))
        classes.append(entry)
    return {
        "version": VERSION,
        "images": {split: int(stats.split_images.get(split, 0)) for split in SPLITS},
        "size": size_summary(stats),
        "channels": sampled["channels"],
        "intensity": sampled["intensity"],
        "classes": classes,
        "binary_masks": bool(binary_masks),
        "orientation_free": bool(orientation_free),
    }
