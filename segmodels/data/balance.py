"""Class weights from the class statistics of `dataset.yaml` (pure functions: no data is read).

Weights come from one split's statistics, by default train's, so that val and test never shape training.
"""

from __future__ import annotations

import statistics

from segmodels.data.errors import DataValidationError
from segmodels.data.info import DatasetInfo
from segmodels.data.stats import ClassStats


def split_class_stats(info: DatasetInfo, split: str = "train") -> ClassStats:
    """The class statistics of `split`; DataValidationError (one line) when dataset.yaml has none."""
    by_split = info.class_stats
    if by_split is None:
        raise DataValidationError(
            f"data set {info.name!r}: dataset.yaml has no class statistics (`class_stats`; it was ingested by an older "
            "segmodels): re-ingest it to compute class weights"
        )
    if split not in by_split:
        raise DataValidationError(f"data set {info.name!r}: dataset.yaml has no class statistics for split {split!r}")
    return by_split[split]


def median_frequency_weights(info: DatasetInfo, split: str = "train") -> list[float]:
    """Median frequency balancing (Eigen & Fergus 2015, as in SegNet): one weight per class id 0..num_classes-1.

    freq(c) = pixels of class c / all pixels of the images in which c appears; weight(c) = median(freq) / freq(c),
    the median taken over the classes present in `split`. A class absent from the split (cannot be learnt from it)
    gets the neutral weight 1.0, the weight of a class at the median frequency; no weight is inf or nan.
    DataValidationError when the split has no labelled pixel at all, or dataset.yaml has no class statistics.
    """
    counts = split_class_stats(info, split)
    frequencies = [
        pixels / image_pixels if pixels > 0 and image_pixels > 0 else None
        for pixels, image_pixels in zip(counts.pixels, counts.image_pixels)
    ]
    present = [f for f in frequencies if f is not None]
    if not present:
        raise DataValidationError(
            f"data set {info.name!r}: split {split!r} has no labelled pixels to weight classes by"
        )
    median = statistics.median(present)
    return [median / f if f is not None else 1.0 for f in frequencies]
