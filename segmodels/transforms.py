"""Image+mask transforms on ``torchvision.transforms.v2``: the mask is a ``tv_tensors.Mask`` so geometric
transforms move it with the image (nearest interpolation) and photometric ones leave it alone."""
from __future__ import annotations

from typing import Sequence

import torch
from omegaconf import ListConfig
from torchvision import tv_tensors
from torchvision.transforms import v2

from segmodels.config import ConfigError


def image_size_of(cfg) -> tuple[int, int]:
    """``cfg.image_size`` (an int or [height, width]) as ``(height, width)``; anything else is a ConfigError."""
    size = cfg.image_size
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size, size
    if isinstance(size, (list, tuple, ListConfig)) and len(size) == 2 and all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        return size[0], size[1]
    shown = list(size) if isinstance(size, ListConfig) else size
    raise ConfigError(f"transforms.image_size={shown!r}: expected a positive int or [height, width]")


class RandomRot90(v2.Transform):
    """Rotate image and mask together by a random multiple of 90 degrees (exact, no interpolation)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def make_params(self, flat_inputs: list) -> dict:
        turns = int(torch.randint(1, 4, ())) if float(torch.rand(())) < self.p else 0
        return {"turns": turns}

    def transform(self, inpt, params: dict):
        if not params["turns"] or not isinstance(inpt, (tv_tensors.Image, tv_tensors.Mask)):
            return inpt
        turns = params["turns"] if inpt.shape[-1] == inpt.shape[-2] else 2  # keep non-square sizes
        return tv_tensors.wrap(torch.rot90(inpt, turns, dims=(-2, -1)), like=inpt)


def _train_augmentations(cfg, size: tuple[int, int], ignore_index: int) -> list:
    if cfg.scale is None:
        steps: list = [v2.Resize(size, antialias=True)]
    else:
        steps = [v2.RandomResizedCrop(size, scale=tuple(cfg.scale), ratio=tuple(cfg.ratio), antialias=True)]
    if cfg.hflip:
        steps.append(v2.RandomHorizontalFlip(cfg.hflip))
    if cfg.vflip:
        steps.append(v2.RandomVerticalFlip(cfg.vflip))
    if cfg.rot90:
        steps.append(RandomRot90(cfg.rot90))
    if cfg.rotation:
        steps.append(v2.RandomRotation(cfg.rotation, fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}))
    if cfg.color_jitter:
        steps.append(v2.ColorJitter(brightness=cfg.color_jitter, contrast=cfg.color_jitter,
                                    saturation=cfg.color_jitter))
    return steps


def build_transforms(cfg, train: bool, mean: Sequence[float], std: Sequence[float], ignore_index: int) -> v2.Compose:
    """Train preset (random resized crop, flips, rotations, colour jitter as ``cfg.train`` says) or eval preset
    (resize to ``cfg.image_size``), then float conversion and normalisation with the encoder's ``mean`` / ``std``.
    ``cfg`` is the ``transforms`` config (:class:`segmodels.schemas.TransformsConfig`); pixels a rotation moves
    in from outside the image get ``ignore_index`` in the mask.

    The result is called as ``transforms(image, mask)`` with ``tv_tensors.Image`` uint8 [3,H,W] and
    ``tv_tensors.Mask`` int64 [H,W]; it returns a float32 image and the int64 mask.
    """
    size = image_size_of(cfg)
    steps = _train_augmentations(cfg.train, size, ignore_index) if train else [v2.Resize(size, antialias=True)]
    steps += [
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ]
    return v2.Compose(steps)
