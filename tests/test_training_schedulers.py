"""Learning-rate schedules with warm-up, stepped per optimizer step."""

from __future__ import annotations

import pytest
import torch

from segmodels.training.schedulers import constant, cosine_with_warmup, one_cycle


def lrs(factory, steps=100, **kwargs):
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = factory(optimizer, total_steps=steps, steps_per_epoch=10, **kwargs)
    values = []
    for _ in range(steps):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


def test_cosine_warms_up_then_decays_to_floor():
    values = lrs(cosine_with_warmup, warmup_epochs=1, min_lr_ratio=0.01)
    assert values[0] < 0.1 and values[:10] == sorted(values[:10])
    assert max(values) == pytest.approx(1.0, abs=0.01)
    assert values[10:] == sorted(values[10:], reverse=True)
    assert values[-1] == pytest.approx(0.01, abs=0.01)


def test_one_cycle_peaks_at_warmup_end():
    values = lrs(one_cycle, warmup_epochs=2, pct_start=0.3, div_factor=25.0, final_div_factor=1e4)
    assert values.index(max(values)) == 20 and max(values) == pytest.approx(1.0)
    assert values[0] == pytest.approx(1 / 25) and values[-1] < 1e-3


def test_constant():
    assert set(lrs(constant, steps=5)) == {1.0}
