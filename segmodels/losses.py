"""Segmentation losses (cross-entropy, Dice, Focal, weighted combinations) behind a registry."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segmodels.registry import Registry

LOSSES: Registry[Callable[..., nn.Module]] = Registry("loss")
register_loss = LOSSES.register
list_losses = LOSSES.names


def create_loss(name: str, **kwargs) -> nn.Module:
    """Build the registered loss ``name``; every loss maps (logits [N,C,H,W], target [N,H,W]) to a scalar."""
    return LOSSES.get(name)(**kwargs)


@register_loss("ce")
class CrossEntropyLoss(nn.CrossEntropyLoss):
    """Pixel-wise cross-entropy with optional class weights, ``ignore_index`` and label smoothing."""

    def __init__(
        self, class_weights: Sequence[float] | None = None, ignore_index: int = 255, label_smoothing: float = 0.0
    ):
        weight = torch.tensor(list(class_weights), dtype=torch.float32) if class_weights is not None else None
        super().__init__(weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing)


def _valid_one_hot(logits: torch.Tensor, target: torch.Tensor, ignore_index: int):
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target))
    one_hot = F.one_hot(safe, logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
    return one_hot * valid.unsqueeze(1), valid.unsqueeze(1).to(logits.dtype)


@register_loss("dice")
class DiceLoss(nn.Module):
    """Soft multi-class Dice loss on softmax probabilities, averaged over the classes present in the batch
    (or all classes with ``only_present=False``); ignored pixels do not count."""

    def __init__(self, ignore_index: int = 255, smooth: float = 1.0, only_present: bool = True):
        super().__init__()
        self.ignore_index, self.smooth, self.only_present = ignore_index, smooth, only_present

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs = logits.float().softmax(dim=1)
        one_hot, valid = _valid_one_hot(probs, target, self.ignore_index)
        probs = probs * valid
        dims = (0, 2, 3)
        intersection = (probs * one_hot).sum(dims)
        cardinality = probs.sum(dims) + one_hot.sum(dims)
        dice = (2 * intersection + self.smooth) / (cardinality + self.smooth)
        if self.only_present:
            present = one_hot.sum(dims) > 0
            if present.any():
                return 1 - dice[present].mean()
        return 1 - dice.mean()


@register_loss("focal")
class FocalLoss(nn.Module):
    """Multi-class focal loss (Lin et al. 2017): ``-alpha_c (1 - p_t)^gamma log p_t`` averaged over valid pixels."""

    def __init__(self, gamma: float = 2.0, class_weights: Sequence[float] | None = None, ignore_index: int = 255):
        super().__init__()
        self.gamma, self.ignore_index = gamma, ignore_index
        weight = torch.tensor(list(class_weights), dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.cross_entropy(logits.float(), target, reduction="none", ignore_index=self.ignore_index)
        valid = target != self.ignore_index
        focal = (1 - torch.exp(-log_p)) ** self.gamma * log_p
        if self.weight is not None:
            focal = focal * self.weight[torch.where(valid, target, torch.zeros_like(target))]
        return focal[valid].sum() / valid.sum().clamp(min=1)


@register_loss("combo")
class WeightedSumLoss(nn.Module):
    """Weighted sum of registered losses, e.g. ``losses=[{"name": "ce", "weight": 1.0}, {"name": "dice",
    "weight": 0.5}]``; ``ignore_index`` is passed to every member that does not set its own."""

    def __init__(self, losses: Sequence[dict], ignore_index: int = 255):
        super().__init__()
        if not losses:
            raise ValueError("combo loss needs at least one member loss")
        self.weights: list[float] = []
        members = []
        for entry in losses:
            entry = dict(entry)
            if "name" not in entry:
                raise ValueError(f"combo loss member {entry!r} has no 'name'")
            self.weights.append(float(entry.pop("weight", 1.0)))
            entry.setdefault("ignore_index", ignore_index)
            members.append(create_loss(entry.pop("name"), **entry))
        self.members = nn.ModuleList(members)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(w * loss(logits, target) for w, loss in zip(self.weights, self.members))
