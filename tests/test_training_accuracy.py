"""The default configuration on the demo data set (generated with its defaults, then prepared) reaches the
accuracy goal: validation mIoU >= 0.90 within the default epochs (seeded)."""
from __future__ import annotations

import pytest

from segmodels.config import load_config
from segmodels.data import generate_demo_dataset, prepare_dataset
from segmodels.training import train


@pytest.mark.slow
def test_default_config_reaches_goal_on_demo(tmp_path):
    source = generate_demo_dataset(tmp_path / "source")
    ingest = load_config("ingest")
    data = prepare_dataset(source, tmp_path / "data", ingest.data, on_error=ingest.on_error,
                           split_seed=ingest.split_seed).root
    cfg = load_config("train", ["trainer.progress_bar=false"])
    result = train(cfg, data, tmp_path / "work")
    assert result.best_metrics["val_miou"] >= 0.90, result.best_metrics
