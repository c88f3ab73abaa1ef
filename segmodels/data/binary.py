"""Binary masks recognised by their values: masks holding only {0, 255} (or only {0, 1}), with no classes given,
are a background/foreground data set, read as the ``binary`` preset (``conf/data/binary.yaml``) reads them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from omegaconf import OmegaConf

from segmodels.config import load_config
from segmodels.data.classes import ClassSpec, parse_classes

log = logging.getLogger(__name__)

BINARY_VALUES = ((0, 255), (0, 1))  # raw mask values of a binary data set, foreground last
SNIFFED_MASKS = 8  # masks looked at, at most, to find one with foreground pixels


class NotBinary(Exception):
    """A mask holds values other than the binary pair its first masks showed."""

    def __init__(self, file: str, values: list[int]):
        super().__init__(f"{file} holds mask values {values}")


@dataclass(frozen=True)
class BinaryMasks:
    """The raw values of a binary data set and how they become classes."""

    values: tuple[int, int]

    @property
    def classes(self) -> list[ClassSpec]:
        return parse_classes(_preset()["classes"])

    @property
    def value_map(self) -> dict[int, int]:
        """Raw value -> class id: the preset's mapping (255 -> 1), which leaves {0, 1} masks as they are."""
        return {int(k): int(v) for k, v in _preset()["mask_values"].items()}

    def check(self, file: str, raw: np.ndarray) -> None:
        """NotBinary when `raw` holds a value outside this pair (or is a colour mask)."""
        values = mask_values(raw)
        if values is None or not set(values) <= set(self.values):
            raise NotBinary(file, values if values is not None else ["colour"])

    def to_dict(self) -> dict:
        """What `dataset.yaml` records about the decision."""
        names = [spec.name for spec in self.classes]
        return {"raw_values": list(self.values), "classes": dict(zip(self.values, names)), "as": "data=binary"}

    def describe(self) -> str:
        background, foreground = self.values
        names = [spec.name for spec in self.classes]
        return (
            f"masks hold only the values {{{background}, {foreground}}} and no classes are given: ingesting two "
            f'classes, {names[0]} ({background}) and {names[1]} ({foreground}), as -P overrides="data=binary" does '
            "(give data.classes or data.mask_values to read the values otherwise)"
        )


@lru_cache(maxsize=1)
def _preset() -> dict:
    data = load_config("ingest", ["data=binary"]).data
    return {"classes": OmegaConf.to_container(data.classes), "mask_values": OmegaConf.to_container(data.mask_values)}


def mask_values(raw: np.ndarray) -> list[int] | None:
    """The distinct values of a grey mask (None for a colour mask)."""
    if raw.ndim != 2:
        return None
    if raw.dtype == np.uint8:
        return np.flatnonzero(np.bincount(raw.ravel(), minlength=256)).tolist()
    return np.unique(raw).astype(np.int64).tolist()


def sniff_binary(samples) -> BinaryMasks | None:
    """BinaryMasks when the first masks with foreground pixels (at most :data:`SNIFFED_MASKS` looked at) hold only
    one binary pair of values; None otherwise. Masks that cannot be read are passed over (validation names them)."""
    for sample in samples[:SNIFFED_MASKS]:
        if sample.mask_ref is None:
            continue
        try:
            values = mask_values(np.asarray(sample.decode_mask(sample.annotation_bytes())))
        except Exception:  # a bad mask is reported when the sample is processed
            continue
        if values is None:
            return None
        if values == [0]:
            continue
        return next(
            (BinaryMasks(pair) for pair in BINARY_VALUES if set(values) <= set(pair) and pair[1] in values), None
        )
    return None
