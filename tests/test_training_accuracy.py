"""The demo data set (generated with its defaults, then prepared) reaches the accuracy goal, validation mIoU
>= 0.90 (seeded), with the demo recipe and with the plain defaults the README's ``mlflow run . -e main`` uses."""

from __future__ import annotations

import pytest

from segmodels.config import load_config
from segmodels.data import generate_demo_dataset, prepare_dataset
from segmodels.training import train


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["demo", "none"])
def test_demo_reaches_the_goal(tmp_path, recipe):
    source = generate_demo_dataset(tmp_path / "source")
    ingest = load_config("ingest", [f"experiment={recipe}"])
    data = prepare_dataset(
        source, tmp_path / "data", ingest.data, on_error=ingest.on_error, split_seed=ingest.split_seed
    ).root
    cfg = load_config("train", [f"experiment={recipe}", "trainer.progress_bar=false"])
    result = train(cfg, data, tmp_path / "work")
    assert result.best_metrics["val_miou"] >= 0.90, result.best_metrics
