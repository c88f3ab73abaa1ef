"""A training run killed (SIGKILL) after a checkpoint resumes and ends with the uninterrupted run's metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
SCRIPT = """
import json, os, signal, sys
from pathlib import Path
from segmodels.config import load_config
from segmodels.training import Callback, train

conf_dir, data, work, kill_after = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])

class KillAfter(Callback):
    def on_epoch_end(self, state, metrics):
        if state.epoch == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

overrides = ["trainer.epochs=4", "trainer.batch_size=4", "trainer.num_workers=1", "trainer.progress_bar=false",
             "transforms.image_size=32", "model.decoder_channels=[16,16,16,8,8]", "optimizer.lr=0.01"]
cfg = load_config("train", overrides, config_dir=Path(conf_dir))
result = train(cfg, data, work, callbacks=[KillAfter()])
print("RESULT" + json.dumps({"history": result.history, "best_epoch": result.best_epoch}))
"""
DETERMINISTIC = ("train_loss", "val_loss", "val_miou", "val_dice", "val_pixel_accuracy", "lr")


@pytest.fixture(scope="module")
def tiny_data(tiny_demo_dataset) -> Path:
    return tiny_demo_dataset(num_images=16, seed=2)


def run_training(tmp_path: Path, data: Path, work: Path, kill_after: int) -> subprocess.CompletedProcess:
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(script), str(CONF_DIR), str(data), str(work), str(kill_after)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def result_of(process: subprocess.CompletedProcess) -> dict:
    assert process.returncode == 0, process.stderr[-3000:]
    line = next(line for line in process.stdout.splitlines() if line.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


@pytest.mark.slow  # a training child killed and rerun: ~20 s
def test_killed_run_resumes_to_same_final_metrics(tiny_data, tmp_path):
    uninterrupted = result_of(run_training(tmp_path, tiny_data, tmp_path / "straight", kill_after=-1))

    killed = run_training(tmp_path, tiny_data, tmp_path / "resumed", kill_after=1)
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / "resumed" / "checkpoints" / "last.pt").is_file()
    resumed_process = run_training(tmp_path, tiny_data, tmp_path / "resumed", kill_after=-1)
    assert "resumed from" in resumed_process.stdout + resumed_process.stderr
    resumed = result_of(resumed_process)

    assert len(resumed["history"]) == len(uninterrupted["history"]) == 4
    for straight, again in zip(uninterrupted["history"], resumed["history"]):
        for key in DETERMINISTIC:
            assert again[key] == pytest.approx(straight[key], rel=1e-6, abs=1e-9), key
    assert resumed["best_epoch"] == uninterrupted["best_epoch"]
