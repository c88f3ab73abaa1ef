"""ConfusionMatrix metrics against an independent per-class set computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from segmodels.metrics import ConfusionMatrix


def reference_scores(preds: np.ndarray, targets: np.ndarray, num_classes: int, ignore_index: int) -> dict:
    """IoU / Dice per class from boolean pixel sets, means over classes present in target or prediction."""
    valid = targets != ignore_index
    p, t = preds[valid], targets[valid]
    ious, dices = [], []
    for c in range(num_classes):
        inter = np.sum((p == c) & (t == c))
        union = np.sum((p == c) | (t == c))
        total = np.sum(p == c) + np.sum(t == c)
        ious.append(inter / union if union else math.nan)
        dices.append(2 * inter / total if total else math.nan)
    return {
        "iou_per_class": ious,
        "miou": np.nanmean(ious),
        "dice": np.nanmean(dices),
        "pixel_accuracy": np.mean(p == t),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_with_ignore_index_over_batches(seed):
    rng = np.random.default_rng(seed)
    num_classes, ignore = 5, 255
    targets = rng.integers(0, num_classes, size=(6, 17, 23))
    targets[rng.random(targets.shape) < 0.1] = ignore
    targets[targets == 4] = 3  # class 4 never in targets; predicted sometimes
    preds = np.where(rng.random(targets.shape) < 0.7, targets, rng.integers(0, num_classes, size=targets.shape))
    preds[preds == ignore] = 0
    cm = ConfusionMatrix(num_classes, ignore_index=ignore)
    for i in range(0, 6, 2):  # accumulate over batches
        cm.update(torch.from_numpy(preds[i : i + 2]), torch.from_numpy(targets[i : i + 2]))
    got, expected = cm.compute(), reference_scores(preds, targets, num_classes, ignore)
    assert got["miou"] == pytest.approx(expected["miou"])
    assert got["dice"] == pytest.approx(expected["dice"])
    assert got["pixel_accuracy"] == pytest.approx(expected["pixel_accuracy"])
    np.testing.assert_allclose(got["iou_per_class"], expected["iou_per_class"])


def test_logits_input_absent_classes_and_reset():
    cm = ConfusionMatrix(3, ignore_index=255)
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 1] = 1.0  # predicts class 1 everywhere
    cm.update(logits, torch.tensor([[[1, 1], [0, 255]]]))
    scores = cm.compute()
    assert scores["iou_per_class"][0] == 0.0 and scores["iou_per_class"][1] == pytest.approx(2 / 3)
    assert math.isnan(scores["iou_per_class"][2])
    assert scores["miou"] == pytest.approx(1 / 3) and scores["pixel_accuracy"] == pytest.approx(2 / 3)
    cm.reset()
    assert int(cm.matrix.sum()) == 0
    with pytest.raises(ValueError, match="does not match"):
        cm.update(torch.zeros(1, 2, 2), torch.zeros(1, 3, 3))
