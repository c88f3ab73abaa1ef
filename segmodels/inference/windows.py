"""Sliding-window inference at an image's native resolution: overlapping windows of the model's training size,
their logits blended with a Gaussian weight map (as nnU-Net and MONAI's ``sliding_window_inference`` do).

Memory is bounded whatever the image size: windows go through the model ``batch_size`` at a time, and the
blended logits are kept for one band of window rows only (about two window heights by the image's width); the
rows no later window touches are handed on and dropped."""

from __future__ import annotations

import math
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from segmodels.transforms import model_input

GAUSSIAN_SIGMA = 1 / 8  # of the window's side, nnU-Net's choice
MIN_WEIGHT = 1e-3  # the weight of a window's corners, so that a pixel only one window covers is still defined


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """Start offsets of windows of ``window`` pixels covering ``length`` with neighbours overlapping by at least
    ``overlap`` of a window, spread evenly from 0 to ``length - window`` (``[0]`` when one window covers it)."""
    if length <= window:
        return [0]
    stride = max(1, int(window * (1 - overlap)))
    count = math.ceil((length - window) / stride) + 1
    return [round(index * (length - window) / (count - 1)) for index in range(count)]


def blend_weights(height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """A [height, width] Gaussian weight map, 1 at the centre and :data:`MIN_WEIGHT` at the least."""
    axes = []
    for size in (height, width):
        offsets = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
        axes.append(torch.exp(-0.5 * (offsets / (GAUSSIAN_SIGMA * size)) ** 2))
    return torch.outer(axes[0], axes[1]).clamp_min(MIN_WEIGHT)


def sliding_window_logits(
    forward: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    window: Sequence[int],
    overlap: float,
    batch_size: int,
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(top, logits)`` bands of the blended float32 logits [C, rows, W] of the uint8 image [3, H, W], top to
    bottom, covering its H rows once (a band is a view of a buffer the next band reuses: copy what you keep).
    Each window is cut from the image, prepared by :func:`~segmodels.transforms.model_input` (an image smaller
    than the window is padded with the mean colour) and run through ``forward``, ``batch_size`` windows at a
    time."""
    height, width = image.shape[-2:]
    window = (int(window[0]), int(window[1]))
    rows, cols = window_starts(height, window[0], overlap), window_starts(width, window[1], overlap)
    band_rows = min(window[0], height)
    # the rows from `top` that windows still add to: a band of windows and the step to the next band at most
    held = band_rows + max([low - high for high, low in zip(rows, rows[1:])], default=0)
    scores = norm = weights = None
    top = 0
    for index, row in enumerate(rows):
        spots = [(row, col) for col in cols]
        for start in range(0, len(spots), batch_size):
            chunk = spots[start : start + batch_size]
            crops = torch.stack([image[:, y : y + band_rows, x : x + window[1]] for y, x in chunk])
            prepared = model_input(crops, mean, std)
            prepared = F.pad(prepared, (0, window[1] - prepared.shape[-1], 0, window[0] - prepared.shape[-2]))
            logits = forward(prepared).float()[..., :band_rows, : min(window[1], width)]
            if scores is None:
                weights = blend_weights(*window, device=logits.device)[:band_rows, : logits.shape[-1]]
                scores = logits.new_zeros((logits.shape[1], held, width))
                norm = logits.new_zeros((held, width))
            for (y, x), logit in zip(chunk, logits):
                scores[:, y - top : y - top + band_rows, x : x + logit.shape[-1]].add_(logit * weights)
                norm[y - top : y - top + band_rows, x : x + logit.shape[-1]].add_(weights)
        done = rows[index + 1] if index + 1 < len(rows) else height
        finished = done - top
        yield top, scores[:, :finished].div_(norm[:finished])
        kept = held - finished  # move the rows still open to the front of the buffer, zero the rest
        scores[:, :kept] = scores[:, finished:].clone()
        norm[:kept] = norm[finished:].clone()
        scores[:, kept:] = 0
        norm[kept:] = 0
        top = done


def sliding_window_labels(
    forward: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    window: Sequence[int],
    overlap: float,
    batch_size: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """The class-id mask [H, W] (on the host, of ``dtype``) of the arg-max of :func:`sliding_window_logits`."""
    labels = torch.empty(tuple(image.shape[-2:]), dtype=dtype)
    for top, logits in sliding_window_logits(forward, image, mean, std, window, overlap, batch_size):
        labels[top : top + logits.shape[1]] = logits.max(dim=0).indices.to(dtype).cpu()  # argmax(0): 2.7x slower
    return labels
