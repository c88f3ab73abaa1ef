"""Segmentation metrics from one confusion matrix accumulated on the device."""

from __future__ import annotations

import torch
import torch.distributed as dist


class ConfusionMatrix:
    """``num_classes`` x ``num_classes`` confusion matrix (rows: target, columns: prediction).

    ``update`` takes predictions as class ids [N,H,W] or logits [N,C,H,W]; pixels whose target is
    ``ignore_index`` (or outside ``[0, num_classes)``) are not counted.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255, device: torch.device | str | None = None):
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        self.matrix.zero_()

    @torch.no_grad()
    def update(self, preds: torch.Tensor, targets: torch.Tensor) -> None:
        if preds.dim() == targets.dim() + 1:
            preds = preds.argmax(dim=1)
        if preds.shape != targets.shape:
            raise ValueError(
                f"prediction shape {tuple(preds.shape)} does not match target shape {tuple(targets.shape)}"
            )
        preds = preds.to(self.matrix.device).flatten().long()
        targets = targets.to(self.matrix.device).flatten().long()
        valid = (targets >= 0) & (targets < self.num_classes)
        if self.ignore_index is not None:
            valid &= targets != self.ignore_index
        # Uncounted pixels go to one extra bin: no boolean indexing, so no host sync on CUDA (bincount and masked
        # selection both wait for the device) and 2-3x faster on CPU.
        cells = self.num_classes**2
        index = torch.where(valid, targets * self.num_classes + preds.clamp(0, self.num_classes - 1), cells)
        counts = torch.zeros(cells + 1, dtype=torch.int64, device=index.device)
        counts.scatter_add_(0, index, torch.ones_like(index))
        self.matrix += counts[:cells].view(self.num_classes, -1)

    def all_reduce(self) -> None:
        """Sum the matrix over the processes of an initialised ``torch.distributed`` group."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix)

    def compute(self) -> dict:
        """Metrics: ``miou``, ``iou_per_class``, ``dice`` (mean F1), ``dice_per_class``, ``pixel_accuracy``,
        ``mean_accuracy`` and ``accuracy_per_class``. Means are over classes that occur in target or
        prediction (a class absent from both has IoU NaN in the per-class lists)."""
        m = self.matrix.double()
        tp = m.diag()
        support = m.sum(1)
        predicted = m.sum(0)
        union = support + predicted - tp
        iou = tp / union
        dice = 2 * tp / (support + predicted)
        accuracy = tp / support
        present = union > 0
        total = m.sum()
        return {
            "miou": float(iou[present].mean()) if present.any() else float("nan"),
            "iou_per_class": iou.tolist(),
            "dice": float(dice[present].mean()) if present.any() else float("nan"),
            "dice_per_class": dice.tolist(),
            "pixel_accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
            "mean_accuracy": float(accuracy[support > 0].mean()) if (support > 0).any() else float("nan"),
            "accuracy_per_class": accuracy.tolist(),
        }
