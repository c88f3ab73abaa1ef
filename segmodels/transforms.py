"""Image+mask transforms on ``torchvision.transforms.v2``: the mask is a ``tv_tensors.Mask`` so geometric
transforms move it with the image (nearest interpolation) and photometric ones leave it alone."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2


def image_size_of(cfg: Mapping) -> tuple[int, int]:
    """``cfg.image_size`` (an int or [height, width]) as ``(height, width)``."""
    size = cfg["image_size"]
    if isinstance(size, int):
        return size, size
    size = list(size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"transforms.image_size must be an int or [height, width], got {size!r}")
    return size[0], size[1]


class RandomRot90(v2.Transform):
    """Rotate image and mask together by a random multiple of 90 degrees (exact, no interpolation)."""

    def __init__(self, p: float = 0.5):
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


def _train_augmentations(cfg: Mapping, size: tuple[int, int]) -> list:
    scale = cfg.get("scale")
    if scale is None:
        steps: list = [v2.Resize(size, antialias=True)]
    else:
        steps = [v2.RandomResizedCrop(size, scale=tuple(scale), ratio=tuple(cfg.get("ratio", (3 / 4, 4 / 3))),
                                      antialias=True)]
    if cfg.get("hflip", 0.5):
        steps.append(v2.RandomHorizontalFlip(cfg.get("hflip", 0.5)))
    if cfg.get("vflip", 0.0):
        steps.append(v2.RandomVerticalFlip(cfg["vflip"]))
    if cfg.get("rot90", 0.0):
        steps.append(RandomRot90(cfg["rot90"]))
    if cfg.get("rotation", 0):
        steps.append(v2.RandomRotation(cfg["rotation"], fill={tv_tensors.Image: 0, tv_tensors.Mask: cfg.get(
            "ignore_index", 255)}))
    jitter = cfg.get("color_jitter", 0.0)
    if jitter:
        steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
    return steps


def build_transforms(cfg: Mapping, train: bool, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """Train preset (random resized crop, flips, colour jitter as configured) or eval preset (resize to
    ``image_size``), then float conversion and normalisation with the encoder's ``mean`` / ``std``.

    The result is called as ``transforms(image, mask)`` with ``tv_tensors.Image`` uint8 [3,H,W] and
    ``tv_tensors.Mask`` int64 [H,W]; it returns a float32 image and the int64 mask.
    """
    size = image_size_of(cfg)
    steps = _train_augmentations(cfg.get("train", {}) or {}, size) if train else [v2.Resize(size, antialias=True)]
    steps += [
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ]
    return v2.Compose(steps)
