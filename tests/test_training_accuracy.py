"""The default configuration on the demo data set (generated with its defaults, then prepared) reaches the
accuracy goal: validation mIoU >= 0.90 within the default epochs (seeded)."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from segmodels.data import generate_demo_dataset, prepare_dataset
from segmodels.training import train

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


@pytest.mark.slow
def test_default_config_reaches_goal_on_demo(tmp_path):
    source = generate_demo_dataset(tmp_path / "source")
    data = prepare_dataset(source, tmp_path / "data").root
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose("train", overrides=["trainer.progress_bar=false"])
    result = train(cfg, data, tmp_path / "work")
    assert result.best_metrics["val_miou"] >= 0.90, result.best_metrics
