"""Image+mask transforms on ``torchvision.transforms.v2``: the mask is a ``tv_tensors.Mask`` so geometric
transforms move it with the image (nearest interpolation) and photometric ones leave it alone.

Geometry respects the data: random crops keep the aspect ratio of ``image_size`` (up to ``ratio`` jitter), and
evaluation resizes each image to fit ``image_size`` without distortion, pads it, and keeps the mask at the
image's own resolution, where metrics are computed (:func:`logits_at_size` maps the logits back)."""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from omegaconf import ListConfig
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from segmodels.config import ConfigError


def image_size_of(cfg) -> tuple[int, int]:
    """``cfg.image_size`` (an int or [height, width]) as ``(height, width)``; anything else is a ConfigError."""
    size = cfg.image_size
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size, size
    if (
        isinstance(size, (list, tuple, ListConfig))
        and len(size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        return size[0], size[1]
    shown = list(size) if isinstance(size, ListConfig) else size
    raise ConfigError(f"transforms.image_size={shown!r}: expected a positive int or [height, width]")


def fit_within(height: int, width: int, box: Sequence[int]) -> tuple[int, int]:
    """The size of a ``height`` x ``width`` image scaled, keeping its aspect ratio, to fit the ``box``
    ``(height, width)`` and touch two of its sides."""
    scale = min(box[0] / height, box[1] / width)
    return max(1, min(box[0], round(height * scale))), max(1, min(box[1], round(width * scale)))


def letterbox(image: torch.Tensor, box: Sequence[int]) -> torch.Tensor:
    """``image`` [..., C, H, W] resized to :func:`fit_within` ``box`` and zero-padded bottom and right to ``box``."""
    height, width = fit_within(image.shape[-2], image.shape[-1], box)
    if (height, width) != tuple(image.shape[-2:]):
        image = TF.resize(image, [height, width], antialias=True)
    return F.pad(image, (0, box[1] - width, 0, box[0] - height))


def logits_at_size(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Logits [..., C, h, w] of :func:`letterbox`-ed images of one original size as logits [..., C, *size]: the
    padding is cropped off and the rest resized bilinearly."""
    height, width = fit_within(size[0], size[1], logits.shape[-2:])
    logits = logits[..., :height, :width]
    if (height, width) != tuple(size):
        batch = logits.reshape(-1, *logits.shape[-3:]).float()
        resized = F.interpolate(batch, size=tuple(size), mode="bilinear", align_corners=False)
        logits = resized.reshape(*logits.shape[:-2], *size)
    return logits


FULL_SIZE_LOGITS_BYTES = 256 << 20  # float32 logits resized back to their images' size at once, at most


def same_size_slices(sizes: Sequence[Sequence[int]], channels: int) -> Iterator[tuple[tuple[int, int], list[int]]]:
    """``(size, indexes)`` of the images of each size, in slices whose ``channels`` float32 logits at that size
    fit in ``FULL_SIZE_LOGITS_BYTES``: what :func:`logits_at_size` may resize back in one call."""
    by_size: dict[tuple[int, int], list[int]] = {}
    for index, size in enumerate(sizes):
        by_size.setdefault((int(size[0]), int(size[1])), []).append(index)
    for size, indexes in by_size.items():
        per_slice = max(1, FULL_SIZE_LOGITS_BYTES // (4 * channels * size[0] * size[1]))
        for start in range(0, len(indexes), per_slice):
            yield size, indexes[start : start + per_slice]


TTA_FLIPS = {"false": ((),), "hflip": ((), (-1,)), "flips": ((), (-1,), (-2,), (-2, -1))}  # dims flipped per pass


def tta_flips(tta, key: str = "tta") -> tuple[tuple[int, ...], ...]:
    """The flips that test-time augmentation ``tta`` averages over (``false``/``none``: the image alone, ``hflip``:
    it and its mirror, ``flips``: every combination of horizontal and vertical flips); otherwise a ValueError
    naming the setting ``key``."""
    name = "false" if tta is None or tta is False else str(tta).strip().lower()
    name = "false" if name in ("none", "off", "") else name
    if name not in TTA_FLIPS:
        raise ValueError(f"{key}={str(tta)[:80]!r}: expected one of {', '.join(TTA_FLIPS)}")
    return TTA_FLIPS[name]


class FlipAveraged(nn.Module):
    """``model`` under test-time flip averaging: the softmax of each flipped pass, flipped back and averaged,
    returned as log-probabilities (valid logits: the loss and the arg-max take them as they take the model's)."""

    def __init__(self, model: nn.Module, flips: Sequence[Sequence[int]]):
        super().__init__()
        self.model, self.flips = model, [tuple(dims) for dims in flips]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        total = None
        for dims in self.flips:
            logits = self.model(images.flip(dims) if dims else images)
            probabilities = torch.softmax(logits.float(), dim=1)
            probabilities = probabilities.flip(dims) if dims else probabilities
            total = probabilities if total is None else total + probabilities
        return (total / len(self.flips)).clamp_min(torch.finfo(torch.float32).tiny).log()


def with_tta(model: nn.Module, tta) -> nn.Module:
    """``model`` itself without test-time augmentation, else :class:`FlipAveraged` over :func:`tta_flips` ``tta``."""
    flips = tta_flips(tta)
    return model if len(flips) == 1 else FlipAveraged(model, flips)


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


def model_input(
    images: torch.Tensor, mean: Sequence[float], std: Sequence[float], box: Sequence[int] | None = None
) -> torch.Tensor:
    """uint8 images [..., 3, H, W] as the model takes them: float, normalised with ``mean`` / ``std`` and, with a
    ``box``, :func:`letterbox`-ed into it (the padding is then the mean colour). Validation and ``predict`` both
    prepare images with it."""
    images = TF.normalize(TF.to_dtype(images, torch.float32, scale=True), list(mean), list(std))
    return letterbox(images, box) if box is not None else images


class ModelInput(v2.Transform):
    """:func:`model_input` for the image only: the mask keeps its resolution (full resolution for evaluation)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], box: Sequence[int] | None):
        super().__init__()
        self.mean, self.std = list(mean), list(std)
        self.box = tuple(box) if box is not None else None

    def transform(self, inpt, params: dict):
        if isinstance(inpt, tv_tensors.Image):
            return tv_tensors.wrap(
                model_input(inpt.as_subclass(torch.Tensor), self.mean, self.std, self.box), like=inpt
            )
        return inpt


def _train_augmentations(cfg, size: tuple[int, int], ignore_index: int) -> list:
    if cfg.scale is None:
        steps: list = [v2.Resize(size, antialias=True)]
    else:  # crop aspect ratios relative to the output's, so content is not stretched beyond the jitter
        aspect = size[1] / size[0]
        ratio = (cfg.ratio[0] * aspect, cfg.ratio[1] * aspect)
        steps = [v2.RandomResizedCrop(size, scale=tuple(cfg.scale), ratio=ratio, antialias=True)]
    if cfg.hflip:
        steps.append(v2.RandomHorizontalFlip(cfg.hflip))
    if cfg.vflip:
        steps.append(v2.RandomVerticalFlip(cfg.vflip))
    if cfg.rot90:
        steps.append(RandomRot90(cfg.rot90))
    if cfg.rotation:
        steps.append(v2.RandomRotation(cfg.rotation, fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}))
    if cfg.color_jitter:
        steps.append(
            v2.ColorJitter(brightness=cfg.color_jitter, contrast=cfg.color_jitter, saturation=cfg.color_jitter)
        )
    return steps


def build_transforms(cfg, train: bool, mean: Sequence[float], std: Sequence[float], ignore_index: int) -> v2.Compose:
    """Train preset (random resized crop to ``cfg.image_size``, flips, rotations, colour jitter as ``cfg.train``
    says) or eval preset (the image letterboxed into ``cfg.image_size``, the mask left at full resolution), then
    float conversion and normalisation with the encoder's ``mean`` / ``std`` (so letterbox padding is the mean
    colour). ``cfg`` is the ``transforms`` config (:class:`segmodels.schemas.TransformsConfig`); pixels a rotation
    moves in from outside the image get ``ignore_index`` in the mask.

    The result is called as ``transforms(image, mask)`` with ``tv_tensors.Image`` uint8 [3,H,W] and
    ``tv_tensors.Mask`` int64 [H,W]; it returns a float32 image and the int64 mask.
    """
    size = image_size_of(cfg)
    steps = _train_augmentations(cfg.train, size, ignore_index) if train else []
    return v2.Compose([*steps, ModelInput(mean, std, None if train else size)])
