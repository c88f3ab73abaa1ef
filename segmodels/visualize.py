"""Colour masks and overlay them on images (uint8 numpy arrays); matplotlib set up for the figures segmodels logs."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

MATPLOTLIB_DIR = "matplotlib"  # in the segmodels home: matplotlib's config and font cache when MPLCONFIGDIR is unset


def colorize(mask: np.ndarray, colors: Sequence[Sequence[int]], ignore_color: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """Map a class-id mask [H,W] to an RGB uint8 image [H,W,3]; ids without a colour get ``ignore_color``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D [H,W], got shape {mask.shape}")
    palette = np.tile(np.asarray(ignore_color, dtype=np.uint8), (256, 1))
    palette[: len(colors)] = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    return palette[np.clip(mask, 0, 255).astype(np.int64)]


def overlay(image: np.ndarray, mask: np.ndarray, colors: Sequence[Sequence[int]], alpha: float = 0.5) -> np.ndarray:
    """Blend the colourised mask over an RGB (or grey) uint8 image of the same height and width."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.shape[:2] != np.asarray(mask).shape:
        raise ValueError(f"image size {image.shape[:2]} does not match mask size {np.asarray(mask).shape}")
    blended = (1 - alpha) * image[..., :3].astype(np.float32) + alpha * colorize(mask, colors).astype(np.float32)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend, with its config and font cache in ``<segmodels home>/matplotlib``
    unless ``MPLCONFIGDIR`` names another folder. Without it matplotlib rebuilds its font cache (a 5-30 s scan
    that logs "building the font cache" and "generated new fontManager") in every process whose ``~`` is new
    (a sandbox, a container) or not writable (then a temporary folder per process); the home persists."""
    if "MPLCONFIGDIR" not in os.environ:
        from segmodels.home import segmodels_home

        os.environ["MPLCONFIGDIR"] = str(segmodels_home() / MATPLOTLIB_DIR)
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt
