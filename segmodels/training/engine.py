"""One epoch of training and one pass of evaluation, as plain functions (in the spirit of torchvision's
``references/segmentation``): mixed precision, channels_last, gradient accumulation, gradient clipping and
DDP ``no_sync``. What travels together is grouped: :class:`TrainStep` (what an optimizer step uses) and
:class:`Placement` (where and how batches run). Both return a dict of metrics; neither knows about configs,
checkpoints or MLflow."""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader

from segmodels.metrics import ConfusionMatrix
from segmodels.progress import Progress, track
from segmodels.transforms import logits_at_size, same_size_slices

from .distributed import all_reduce_sum
from .precision import MixedPrecision


@dataclass(frozen=True)
class Placement:
    """Where and how batches run: the ``device``, mixed precision (``amp``) and whether images go channels_last."""

    device: torch.device
    amp: MixedPrecision
    channels_last: bool = False

    def batch(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``images`` and ``masks`` on the device, the images in their memory format."""
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        images = images.to(self.device, non_blocking=True, memory_format=memory_format)
        return images, masks.to(self.device, non_blocking=True)

    def autocast(self):
        """The autocast context on the device."""
        return self.amp.autocast(self.device)


@dataclass(frozen=True)
class TrainStep:
    """What an optimizer step uses: the ``model`` that trains (DDP-wrapped under torchrun), its ``criterion``,
    ``optimizer``, per-step ``scheduler`` and gradient ``scaler``. Gradients of ``accumulate_grad_batches``
    batches add up before a step; ``grad_clip_norm`` None (or 0) clips nothing."""

    model: nn.Module
    criterion: nn.Module
    optimizer: Optimizer
    scheduler: LRScheduler
    scaler: torch.amp.GradScaler
    accumulate_grad_batches: int = 1
    grad_clip_norm: float | None = None


def class_iou_key(class_name: str, prefix: str = "val_") -> str:
    """Metric name of a class's IoU, ``val_iou_<class>`` by default (characters MLflow rejects become ``_``)."""
    return f"{prefix}iou_" + re.sub(r"[^0-9A-Za-z_\-. /]", "_", class_name)


def _sum_over_processes(loss_sum: torch.Tensor, images: int) -> tuple[float, float]:
    """``(loss sum, image count)``, each summed over the processes."""
    sums = all_reduce_sum(
        torch.stack([loss_sum, torch.tensor(float(images), device=loss_sum.device, dtype=loss_sum.dtype)])
    )
    return float(sums[0]), float(sums[1])


def train_one_epoch(
    step: TrainStep,
    loader: DataLoader,
    placement: Placement,
    *,
    confusion: ConfusionMatrix,
    progress_label: str | None = None,
    frozen: nn.Module | None = None,
) -> dict:
    """One pass over ``loader`` on ``placement``; the optimizer and the per-step scheduler of ``step`` step once
    per ``step.accumulate_grad_batches`` batches (and after the last batch). A DDP-wrapped ``step.model``
    synchronises gradients on optimizer steps only. ``progress_label`` names the progress report (a bar on a
    terminal, lines on a pipe: :mod:`segmodels.progress`); None hides it. ``frozen`` (a submodule, e.g. a
    pretrained encoder) is neither updated nor changes its BatchNorm statistics this epoch. ``confusion`` is reset,
    then counts the training batches' predictions (the argmax of the logits the loss saw: no second pass, so the
    model changes during the count).

    Returns ``train_loss`` (mean over images and processes), ``train_miou`` (from ``confusion``, summed over
    processes), ``lr`` (at the epoch's start), ``train_images_per_s`` (all processes) and ``train_time_s``.
    """
    model, criterion, optimizer, scaler = step.model, step.criterion, step.optimizer, step.scaler
    accumulate = step.accumulate_grad_batches
    model.train()
    if frozen is not None:
        frozen.eval()
    confusion.reset()
    loss_sum = torch.zeros((), device=placement.device, dtype=torch.float64)
    seen = 0
    lr = optimizer.param_groups[0]["lr"]
    num_batches = len(loader)
    with Progress(progress_label or "", num_batches, "batch", enabled=progress_label is not None) as progress:
        start = time.perf_counter()
        for index, (images, masks) in enumerate(loader):
            images, masks = placement.batch(images, masks)
            update = (index + 1) % accumulate == 0 or index + 1 == num_batches
            defer_sync = not update and isinstance(model, DistributedDataParallel)
            with model.no_sync() if defer_sync else contextlib.nullcontext():
                with placement.autocast():
                    logits = model(images)
                    loss = criterion(logits, masks)
                confusion.update(logits.detach().argmax(dim=1), masks)
                del logits  # not held through the next batch's forward
                if index % accumulate == 0:  # here, not after the step: the new gradients then reuse
                    optimizer.zero_grad(set_to_none=True)  # the freed ones' memory (2-3x fewer page faults on CPU)
                scaler.scale(loss / accumulate).backward()
            if update:
                if step.grad_clip_norm:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), step.grad_clip_norm)
                scaler.step(optimizer)
                scaler.update()
                step.scheduler.step()
            loss_sum += loss.detach() * images.shape[0]
            seen += images.shape[0]
            progress.update()
        if placement.device.type == "cuda":
            torch.cuda.synchronize(placement.device)
        elapsed = time.perf_counter() - start
    total_loss, total_images = _sum_over_processes(loss_sum, seen)
    confusion.all_reduce()
    return {
        "train_loss": total_loss / total_images,
        "train_miou": confusion.compute()["miou"],
        "lr": lr,
        "train_images_per_s": total_images / elapsed,
        "train_time_s": elapsed,
    }


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    criterion: nn.Module,
    loader: DataLoader,
    placement: Placement,
    *,
    confusion: ConfusionMatrix,
    class_names: Sequence[str],
    progress_label: str | None = None,
) -> dict:
    """Loss and confusion-matrix metrics of ``model`` over ``loader`` on ``placement``, at each image's own
    resolution (summed over processes).

    ``loader`` yields ``(images, masks, sizes)`` as :func:`~segmodels.training.builder.collate_full_resolution`
    makes them: letterboxed images, full-resolution masks padded to the batch's largest and each mask's size.
    The logits of each image are cropped and resized back to its mask (:func:`segmodels.transforms.logits_at_size`,
    the images of one size together) before the loss and the confusion matrix see them. ``confusion`` is reset,
    then holds this pass's matrix. Returns ``val_loss``, ``val_miou``, ``val_dice``, ``val_pixel_accuracy``,
    ``val_mean_accuracy`` and one ``val_iou_<class>`` per class. ``progress_label`` names the progress report, as
    in :func:`train_one_epoch`."""
    model.eval()
    confusion.reset()
    loss_sum = torch.zeros((), device=placement.device, dtype=torch.float64)
    seen = 0
    for images, masks, sizes in track(loader, progress_label or "", unit="batch", enabled=progress_label is not None):
        images, masks = placement.batch(images, masks)
        with placement.autocast():
            logits = model(images)
        if all(tuple(size) == tuple(logits.shape[-2:]) for size in sizes.tolist()):  # one pass for the batch
            loss_sum += criterion(logits, masks).double() * images.shape[0]
            confusion.update(logits.argmax(dim=1), masks)
        else:  # the images of each size together
            for (height, width), indexes in same_size_slices(sizes.tolist(), logits.shape[1]):
                logit = logits_at_size(logits[indexes], (height, width))
                mask = masks[indexes, :height, :width]
                loss_sum += criterion(logit, mask).double() * len(indexes)
                confusion.update(logit.argmax(dim=1), mask)
        seen += images.shape[0]
    confusion.all_reduce()
    total_loss, total_images = _sum_over_processes(loss_sum, seen)
    scores = confusion.compute()
    metrics = {
        "val_loss": total_loss / total_images,
        "val_miou": scores["miou"],
        "val_dice": scores["dice"],
        "val_pixel_accuracy": scores["pixel_accuracy"],
        "val_mean_accuracy": scores["mean_accuracy"],
    }
    for name, iou in zip(class_names, scores["iou_per_class"]):
        metrics[class_iou_key(name)] = iou
    return metrics
