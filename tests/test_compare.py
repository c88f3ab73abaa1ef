"""``segmodels compare A B`` on a real chain (the steps run in-process against the session's embedded lakeFS and a
sqlite MLflow store): two train runs that differ in lr and in one mask of the data set."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from segmodels.cli import main
from segmodels.data import generate_demo_dataset
from segmodels.pipeline import run_step_cli
from segmodels.tracking import lineage
from segmodels.versioning import settings as versioning_settings

PROJECT = Path(__file__).resolve().parents[1]
EXPERIMENT = "compare"
pytestmark = pytest.mark.slow  # a module fixture trains twice (about 30 s on 2 loaded cores)
TRAIN = ["--epochs", "1", "--image_size", "[32,32]", "--batch_size", "8", "trainer.num_workers=0"]


class LocalChain:
    """Steps run in-process, as ``segmodels step <name>`` runs them, in a sandbox: own sqlite store and home, the
    session's embedded lakeFS (one repository per chain)."""

    def __init__(self, root: Path, lakefs_server):
        self.root = root
        self.repo = f"ui-{uuid.uuid4().hex[:10]}"
        self.env = {
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
            "MLFLOW_EXPERIMENT_NAME": EXPERIMENT,
            "SEGMODELS_HOME": str(root / "home"),
            versioning_settings.ENV_ENDPOINT: lakefs_server.endpoint,
            versioning_settings.ENV_ACCESS_KEY_ID: lakefs_server.access_key_id,
            versioning_settings.ENV_SECRET_ACCESS_KEY: lakefs_server.secret_access_key,
        }

    def enter(self, monkeypatch) -> None:
        """Point this process at the chain's store, home and server (conftest resets them after each test)."""
        for key, value in self.env.items():
            monkeypatch.setenv(key, value)
        mlflow.set_tracking_uri(self.env["MLFLOW_TRACKING_URI"])

    def step(self, name: str, *args: str) -> None:
        with pytest.MonkeyPatch.context() as patch:
            self.enter(patch)
            mlflow.set_experiment(EXPERIMENT)
            run_step_cli(name, list(args))

    def newest(self, step: str) -> mlflow.entities.Run:
        mlflow.set_tracking_uri(self.env["MLFLOW_TRACKING_URI"])
        client = MlflowClient()
        experiment = client.get_experiment_by_name(EXPERIMENT)
        return client.search_runs(
            [experiment.experiment_id],
            f"tags.`{lineage.TAG_STEP}` = '{step}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )[0]

    def ingest(self, source: Path) -> mlflow.entities.Run:
        self.step("ingest", "--source", str(source), "--repo", self.repo)
        return self.newest("ingest")

    def train(self, lr: float) -> mlflow.entities.Run:
        self.step("train", "--repo", self.repo, "--lr", str(lr), *TRAIN)
        return self.newest("train")


def edit_mask(source: Path, name: str) -> None:
    """Paint the top-left quarter of mask ``name`` with class 1."""
    path = source / "masks" / f"{name}.png"
    mask = np.array(Image.open(path))
    mask[: mask.shape[0] // 2, : mask.shape[1] // 2] = 1
    Image.fromarray(mask).save(path)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, lakefs_server):
    """Train run A (lr 0.003) on the first ingest; train run B (lr 0.001) after one mask changed."""
    chain = LocalChain(tmp_path_factory.mktemp("compare"), lakefs_server)
    source = generate_demo_dataset(chain.root / "source", num_images=16, image_size=32, seed=5)
    first = chain.ingest(source)
    a = chain.train(0.003)
    edit_mask(source, "demo_00003")
    second = chain.ingest(source)
    b = chain.train(0.001)
    return SimpleNamespace(chain=chain, a=a, b=b, first=first, second=second)


@pytest.fixture
def in_chain(two_runs, monkeypatch):
    two_runs.chain.enter(monkeypatch)
    return two_runs


def compared(capsys, *args: str) -> str:
    main(["compare", *args])
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out


def test_two_runs_differing_in_lr_and_one_mask_show_both_changes(in_chain, capsys, tmp_path):
    a, b = in_chain.a.info.run_id, in_chain.b.info.run_id
    page = tmp_path / "compare.html"
    out = compared(capsys, a, b[:8], "--html", str(page))
    assert "optimizer.lr: 0.003 -> 0.001" in out
    assert "-  lr: 0.003" in out and "+  lr: 0.001" in out  # the resolved config's diff
    [data_line] = [line for line in out.splitlines() if " changed: " in line]
    assert data_line.strip().endswith("1 changed: demo_00003")
    assert " added: " not in out and " removed: " not in out
    assert "best_val_miou" in out and "best_val_iou_circle" in out
    *_, verdict, wrote = out.rstrip().splitlines()
    assert wrote == f"wrote {page}"
    assert verdict.split(" is better on best_val_miou ")[0] in ("A", "B") or verdict.startswith("A and B are equal")
    assert verdict.endswith("validated on different data commits, so the metric is not like for like")
    assert "same code commit" in out
    assert "demo_00003" in page.read_text() and "optimizer.lr" in page.read_text()


def test_data_commits_compare_by_their_diff_alone(in_chain, capsys):
    repo = in_chain.chain.repo
    first, second = (run.data.tags[lineage.TAG_DATA_COMMIT] for run in (in_chain.first, in_chain.second))
    out = compared(capsys, f"lakefs://{repo}/{first}/data", f"lakefs://{repo}/main")
    assert "1 changed: demo_00003" in out and "class share circle" in out
    assert out.rstrip().endswith("data commits only: no metric to compare")


def test_same_run_twice_shows_no_change(in_chain, capsys):
    run_id = in_chain.a.info.run_id
    out = compared(capsys, run_id, run_id)
    assert "params (A -> B)" not in out and "same data commit" in out
    assert out.rstrip().endswith("validated on the same data commit")


@pytest.mark.parametrize(
    "ref, reason",
    [
        ("models:/nope", "expected models:/<name>/<version> or models:/<name>@<alias>"),
        ("models:/nope/1", "nope"),
        ("abcdef12", "no MLflow run has this id"),
        ("lakefs://", "lakefs://repo/ref/path"),
    ],
)
def test_a_side_that_names_nothing_is_one_line(in_chain, capsys, ref, reason):
    with pytest.raises(SystemExit) as exited:
        main(["compare", in_chain.a.info.run_id, ref])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("segmodels compare: error: ") and reason in captured.err


def test_the_console_script_prints_the_comparison(in_chain):
    done = subprocess.run(
        [sys.executable, "-m", "segmodels.cli", "compare", in_chain.a.info.run_id, in_chain.b.info.run_id],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
        cwd=PROJECT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "optimizer.lr: 0.003 -> 0.001" in done.stdout and "1 changed: demo_00003" in done.stdout


def test_code_change_is_git_diff_stat_between_the_recorded_commits():
    from segmodels.compare import _code_change

    log = ["git", "-C", str(PROJECT), "log", "-2", "--format=%H", "--", "segmodels/ui/views.py"]
    older, newer = subprocess.run(log, capture_output=True, text=True, check=True).stdout.split()[::-1]
    header, *stat = _code_change(older, newer, PROJECT)
    assert header == f"code {older[:12]} -> {newer[:12]}"
    assert any("segmodels/ui/views.py" in line for line in stat) and "changed" in stat[-1]
    assert _code_change(older, "f" * 40, PROJECT) == [f"code {older[:12]} -> {'f' * 12} (not both in {PROJECT})"]
    assert _code_change(older, older, PROJECT) == [f"same code commit {older[:12]}"]
