"""Progress where the user looks: plain lines with rate and ETA when output is a pipe (as under `mlflow run`)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from segmodels.progress import Progress, duration, interval_seconds, track

PROJECT = Path(__file__).resolve().parents[1]


def test_lines_on_a_pipe_carry_count_rate_and_eta_even_while_no_unit_finishes(caplog, monkeypatch):
    monkeypatch.setenv("SEGMODELS_PROGRESS_SECONDS", "0.05")
    caplog.set_level(logging.INFO, logger="segmodels.progress")
    finished = threading.Event()
    with Progress("copying", total=4, unit="file") as progress:
        progress.update()
        finished.wait(0.5)  # a unit that takes ten intervals: the timer reports meanwhile
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) >= 3, lines
    assert re.fullmatch(r"copying: 1/4 file \(25%\), [\d.e+-]+ file/s, \d+s elapsed, ETA \d+s", lines[0]), lines[0]
    assert lines[-1].startswith("copying: 1/4 file (25%)")


def test_short_work_prints_nothing_and_disabled_progress_prints_nothing(caplog, monkeypatch):
    monkeypatch.setenv("SEGMODELS_PROGRESS_SECONDS", "30")
    caplog.set_level(logging.INFO, logger="segmodels.progress")
    assert list(track(range(3), "quick")) == [0, 1, 2]
    with Progress("hidden", total=2, enabled=False, interval=0.01) as progress:
        progress.update(2)
    assert caplog.records == []


@pytest.mark.parametrize("value, expected", [("", 30.0), ("2.5", 2.5), ("soon", 30.0), ("-1", 30.0), ("inf", 30.0)])
def test_interval_from_the_environment(value, expected, monkeypatch):
    monkeypatch.setenv("SEGMODELS_PROGRESS_SECONDS", value)
    assert interval_seconds() == expected


def test_durations_read_as_a_person_writes_them():
    assert [duration(s) for s in (4.4, 65, 3725)] == ["4s", "1m05s", "1h02m"]


TRAIN_ON_A_PIPE = """
import logging, sys
from segmodels.config import load_config
from segmodels.training import train
logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
cfg = load_config("train", ["trainer.epochs=2", "trainer.batch_size=2", "trainer.num_workers=0", "trainer.device=cpu",
                            "transforms.image_size=32", "model.encoder_name=resnet18"])
train(cfg, sys.argv[1], sys.argv[2])
"""


@pytest.mark.slow  # trains in a child (7-12 s, most of it importing torch and mlflow); the pipe tests above stay fast
def test_a_training_epoch_longer_than_the_interval_reports_progress_on_a_pipe(tiny_demo_dataset, tmp_path):
    """stdout and stderr are pipes, as under `mlflow run`: the epoch's train and validation passes print lines
    with their batch counts (an interval of 10 ms is shorter than any epoch of 6 batches of 32 px)."""
    data = tiny_demo_dataset(num_images=16, seed=3)
    env = {**os.environ, "SEGMODELS_PROGRESS_SECONDS": "0.01"}
    completed = subprocess.run(
        [sys.executable, "-c", TRAIN_ON_A_PIPE, str(data), str(tmp_path / "work")],
        cwd=PROJECT,
        env=env,
        capture_output=True,  # stdout and stderr are pipes
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    output = completed.stdout + completed.stderr
    assert re.search(r"segmodels\.progress epoch 1/2 train: \d+/6 batch \(\d+%\), [\d.e+-]+ batch/s", output), output[
        -3000:
    ]
    assert "segmodels.progress epoch 2/2 train:" in output, output[-3000:]
    assert "\r" not in output  # no bar redrawn into a pipe


def test_uploads_and_downloads_report_their_files_and_megabytes(lakefs, repo_name, tmp_path, caplog, monkeypatch):
    folder = tmp_path / "data"
    folder.mkdir()
    for index in range(3):
        (folder / f"{index}.bin").write_bytes(os.urandom(200_000))
    lakefs.ensure_repository(repo_name)
    lakefs.upload_directory(repo_name, "main", folder, "data")
    lakefs.commit(repo_name, "main", "three files")
    monkeypatch.setenv("SEGMODELS_PROGRESS_SECONDS", "1e-6")  # shorter than any transfer
    caplog.set_level(logging.INFO, logger="segmodels.progress")
    lakefs.upload_directory(repo_name, "main", folder, "data")  # unchanged: checked, not sent, and still counted
    lakefs.download_prefix(repo_name, "main", "data")
    lines = [record.getMessage() for record in caplog.records]
    assert any(line.startswith(f"upload to lakefs://{repo_name}/main/data/: 3/3 file (100%)") for line in lines), lines
    assert any(
        re.match(rf"download lakefs://{repo_name}/\w{{12}}/data/: 0\.6/0\.6 MB \(100%\), [\d.e+-]+ MB/s", line)
        for line in lines
    ), lines


STEP_OUTPUT = """
import logging
from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR
from segmodels.pipeline import configure_output
configure_output("ingest")
logging.getLogger("matplotlib.font_manager").info("generated new fontManager")
logging.getLogger("segmodels.data.card").info("data set 'x': 3 images")
logging.getLogger("somelibrary").warning("a warning stays")
print("artifact bars:", MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.get())
"""


def test_a_piped_step_shows_its_own_lines_and_no_other_librarys_info_or_transfer_bars():
    """Under `mlflow run` (pipes): segmodels' INFO lines show, matplotlib's font-cache note and MLflow's `\\r` bars
    do not; warnings of any library still do."""
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"}
    completed = subprocess.run(
        [sys.executable, "-c", STEP_OUTPUT], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr
    assert "segmodels ingest INFO data set 'x': 3 images" in completed.stderr
    assert "segmodels ingest WARNING a warning stays" in completed.stderr
    assert "fontManager" not in completed.stderr
    assert completed.stdout.strip() == "artifact bars: False"
