"""Data-parallel training under torchrun: 2 CPU processes with the gloo backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from segmodels.models import load_package

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
SCRIPT = """
import json, os, sys
from pathlib import Path
import torch
from segmodels.config import load_config
from segmodels.training import Callback, train

conf_dir, data, work = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
overrides = ["trainer.epochs=2", "trainer.batch_size=2", "trainer.num_workers=0", "trainer.progress_bar=false",
             "transforms.image_size=32", "model.decoder_channels=[16,16,16,8,8]"]
cfg = load_config("train", overrides, config_dir=Path(conf_dir))

class Record(Callback):  # main process only
    def on_fit_start(self, state):
        (work / f"record_on_rank{state.dist.rank}").touch()

    def on_epoch_end(self, state, metrics):
        (work / f"epoch{state.epoch}.json").write_text(json.dumps(
            {"pixels": int(state.confusion.matrix.sum()), "world_size": state.dist.world_size}))

class SaveWeights(Callback):
    every_rank = True

    def on_fit_end(self, state, result):
        torch.save(state.model.state_dict(), work / f"rank{state.dist.rank}.pt")

train(cfg, data, work, [Record(), SaveWeights()])
"""


@pytest.fixture(scope="module")
def tiny_data(tiny_demo_dataset) -> Path:
    return tiny_demo_dataset(num_images=14, seed=3)


@pytest.mark.slow  # torchrun and two processes: ~13 s
def test_torchrun_two_gloo_processes_train_in_sync(tiny_data, tmp_path):
    script = tmp_path / "ddp_script.py"
    script.write_text(SCRIPT)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(script),
            str(CONF_DIR),
            str(tiny_data),
            str(work),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert process.returncode == 0, process.stderr[-4000:]
    rank0, rank1 = (torch.load(work / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for key in rank0:  # parameters are all-reduced; BN buffers follow rank 0 (broadcast at each forward)
        if "running_" not in key and "num_batches" not in key:
            torch.testing.assert_close(rank0[key], rank1[key], msg=key)
    val_images = len(list((tiny_data / "images" / "val").iterdir()))
    record = json.loads((work / "epoch1.json").read_text())
    assert record == {"pixels": val_images * 32 * 32, "world_size": 2}
    assert not (work / "epoch2.json").exists()
    assert sorted(p.name for p in work.glob("record_on_rank*")) == ["record_on_rank0"]
    model, _ = load_package(work / "final")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, rank0[key])
