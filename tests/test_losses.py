"""Losses: registry, ignore_index, class weights, and values against direct formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segmodels.losses import create_loss, list_losses


@pytest.fixture
def batch():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 7, requires_grad=True)
    target = torch.randint(0, 3, (2, 5, 7))
    target[0, 0] = 255
    return logits, target


def test_registry():
    assert {"ce", "dice", "focal", "combo"} <= set(list_losses())
    with pytest.raises(ValueError, match="unknown loss 'x'"):
        create_loss("x")


def test_ce_with_weights_and_ignore(batch):
    logits, target = batch
    loss = create_loss("ce", class_weights=[1.0, 2.0, 0.5], ignore_index=255)(logits, target)
    expected = F.cross_entropy(logits, target, weight=torch.tensor([1.0, 2.0, 0.5]), ignore_index=255)
    torch.testing.assert_close(loss, expected)


def test_focal_with_gamma_zero_is_ce_and_ignores(batch):
    logits, target = batch
    torch.testing.assert_close(
        create_loss("focal", gamma=0.0)(logits, target), F.cross_entropy(logits, target, ignore_index=255)
    )
    assert create_loss("focal", gamma=2.0)(logits, target) < F.cross_entropy(logits, target, ignore_index=255)


def test_dice_is_zero_for_perfect_prediction_and_ignores_pixels(batch):
    _, target = batch
    safe = target.clamp(max=2)
    perfect = F.one_hot(safe, 3).permute(0, 3, 1, 2).float() * 100
    perfect[0, :, 0] = torch.tensor([0.0, 0.0, 100.0])[:, None]  # wrong only on ignored pixels
    assert create_loss("dice", smooth=0.0)(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    assert create_loss("dice")(-perfect, target).item() > 0.9


def test_combo_is_weighted_sum_and_backpropagates(batch):
    logits, target = batch
    combo = create_loss("combo", losses=[{"name": "ce", "weight": 1.0}, {"name": "dice", "weight": 0.5}])
    expected = create_loss("ce")(logits, target) + 0.5 * create_loss("dice")(logits, target)
    loss = combo(logits, target)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError, match="no 'name'"):
        create_loss("combo", losses=[{"weight": 1.0}])
