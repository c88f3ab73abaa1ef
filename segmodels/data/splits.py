"""Deterministic, seeded train/val/test assignment that moves few files when samples are added."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def split_counts(total: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(val, test) sizes: rounded fractions, at least one each when asked for and enough samples remain for train."""
    for fraction in (val_fraction, test_fraction):
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"split fraction {fraction} outside [0, 1)")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction = {val_fraction + test_fraction} leaves nothing to train on")
    counts = []
    remaining = total - 1  # keep at least one training sample
    for fraction in (val_fraction, test_fraction):
        count = round(total * fraction)
        if fraction > 0 and count == 0:
            count = 1
        count = max(0, min(count, remaining))
        remaining -= count
        counts.append(count)
    return counts[0], counts[1]


def assign_splits(
    names: Iterable[str], seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.1
) -> dict[str, str]:
    """Split by rank of a seeded hash of each name: independent of listing order, and adding a sample moves O(1) others.

    A name may hold undecodable bytes of a file name (surrogate escapes): it is hashed as those bytes.
    """
    ordered = sorted(set(names), key=lambda name: _name_hash(seed, name))
    n_val, n_test = split_counts(len(ordered), val_fraction, test_fraction)
    splits = {}
    for rank, name in enumerate(ordered):
        splits[name] = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
    return splits


def _name_hash(seed: int, name: str) -> bytes:
    """sha256 of seed and name; a valid name hashes as its UTF-8, a file name's undecodable bytes as themselves
    (any other lone surrogate, e.g. from a JSON escape, as its code point)."""
    text = f"{seed}\0{name}"
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        data = text.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).digest()
