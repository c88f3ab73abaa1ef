"""Per-step learning-rate schedules with warm-up. Every factory has the signature
``(optimizer, total_steps, steps_per_epoch, *, **options)`` so config picks one with ``_target_``; the options'
values live in ``conf/scheduler/``."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR


def _warmup_steps(warmup_epochs: float, steps_per_epoch: int, total_steps: int) -> int:
    return max(0, min(int(round(warmup_epochs * steps_per_epoch)), total_steps - 1))


def cosine_with_warmup(
    optimizer: Optimizer, total_steps: int, steps_per_epoch: int, *, warmup_epochs: float, min_lr_ratio: float
) -> LRScheduler:
    """Linear warm-up from ~0 to the optimizer's lr over ``warmup_epochs``, then cosine decay to
    ``min_lr_ratio`` x lr at ``total_steps``."""
    warmup = _warmup_steps(warmup_epochs, steps_per_epoch, total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min((step - warmup) / max(1, total_steps - warmup), 1.0)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def one_cycle(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    *,
    warmup_epochs: float | None,
    pct_start: float,
    div_factor: float,
    final_div_factor: float,
) -> LRScheduler:
    """One-cycle policy (Smith 2018) peaking at the optimizer's lr; the warm-up phase lasts ``warmup_epochs``
    when given, else ``pct_start`` of the run."""
    if warmup_epochs is not None:
        pct_start = (_warmup_steps(warmup_epochs, steps_per_epoch, total_steps) + 1) / total_steps  # peak there
    return OneCycleLR(
        optimizer,
        max_lr=[group["lr"] for group in optimizer.param_groups],
        total_steps=total_steps,
        pct_start=min(pct_start, 0.99),
        div_factor=div_factor,
        final_div_factor=final_div_factor,
    )


def constant(optimizer: Optimizer, total_steps: int, steps_per_epoch: int) -> LRScheduler:
    """Keep the optimizer's lr."""
    return LambdaLR(optimizer, lambda step: 1.0)
