"""The ``reproduce`` entry point for real: a train run made by ``mlflow run`` from a git repository of the project's
files (a copy, so nothing depends on this checkout's git state), against the session's embedded lakeFS and a
sqlite MLflow store, rerun with its recorded code, config and data commit, and its per-epoch metrics compared."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from segmodels.data.demo import generate_demo_dataset
from segmodels.pipeline import reproduce, run_step_cli
from segmodels.tracking import lineage

PROJECT = Path(__file__).resolve().parents[1]
EXPERIMENT = "reproduce"
TRAIN_PARAMS = {
    "epochs": "2",
    "image_size": "32",
    "batch_size": "8",
    "overrides": "trainer.num_workers=0 trainer.progress_bar=false model.decoder_channels=[16,16,16,8,8]",
}
IDENTITY = ["-c", "user.name=segmodels tests", "-c", "user.email=tests@segmodels.invalid", "-c", "commit.gpgsign=false"]
pytestmark = pytest.mark.slow


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *IDENTITY, *args], check=True, capture_output=True, text=True
    ).stdout.strip()


class Project:
    """A git repository holding the project's files, a sqlite MLflow store and a segmodels home, with the
    environment in which commands run there as a user's would (lakectl settings naming the session's server)."""

    def __init__(self, root: Path, lakefs_server):
        self.root, self.repo, self.home = root, root / "project", root / "segmodels-home"
        listed = subprocess.run(
            ["git", "-C", str(PROJECT), "ls-files", "-co", "--exclude-standard", "-z"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split("\0")
        for name in filter(None, listed):
            if (PROJECT / name).is_file():
                (self.repo / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(PROJECT / name, self.repo / name)
        git(self.repo, "init", "--quiet")
        git(self.repo, "add", "--all")
        git(self.repo, "commit", "--quiet", "-m", "the project")
        self.first_commit = self.head()
        self.tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        self.env = {
            key: value for key, value in os.environ.items() if not key.startswith(("LAKECTL_", "MLFLOW_", "GIT_"))
        }
        self.env.update(
            {
                "LAKECTL_SERVER_ENDPOINT_URL": lakefs_server.endpoint,
                "LAKECTL_CREDENTIALS_ACCESS_KEY_ID": lakefs_server.access_key_id,
                "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY": lakefs_server.secret_access_key,
                "MLFLOW_TRACKING_URI": self.tracking_uri,
                "MLFLOW_EXPERIMENT_NAME": EXPERIMENT,
                "SEGMODELS_HOME": str(self.home),
                "PYTHONPATH": str(self.repo),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            }
        )

    def run(self, *command: str) -> subprocess.CompletedProcess:
        result = subprocess.run(list(command), cwd=self.repo, env=self.env, capture_output=True, text=True, timeout=900)
        sys.stdout.write(result.stdout[-4000:])
        sys.stderr.write(result.stderr[-4000:])
        return result

    def mlflow_run(self, entry_point: str, **params: str) -> subprocess.CompletedProcess:
        command = ["mlflow", "run", str(self.repo), "-e", entry_point, "--env-manager", "local"]
        for key, value in params.items():
            command += ["-P", f"{key}={value}"]
        return self.run(*command)

    def head(self) -> str:
        return git(self.repo, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def project(tmp_path_factory, lakefs_server):
    sandbox = Project(tmp_path_factory.mktemp("reproduce"), lakefs_server)
    mlflow.set_tracking_uri(sandbox.tracking_uri)
    MlflowClient().create_experiment(EXPERIMENT, artifact_location=(sandbox.root / "artifacts").as_uri())
    mlflow.set_tracking_uri(None)
    return sandbox


@pytest.fixture(scope="module")
def trained(project):
    """The id of a train run made by ``mlflow run . -e train`` on a tiny demo data set in the project repository."""
    source = generate_demo_dataset(project.root / "source", num_images=16, image_size=32, seed=5)
    repo = f"repro-{os.getpid()}"
    ingest = project.run(sys.executable, "steps/ingest.py", "--source", str(source), "--repo", repo)
    assert ingest.returncode == 0, ingest.stderr[-3000:]
    result = project.mlflow_run("train", repo=repo, **TRAIN_PARAMS)
    assert result.returncode == 0, result.stderr[-3000:]
    mlflow.set_tracking_uri(project.tracking_uri)
    experiment = MlflowClient().get_experiment_by_name(EXPERIMENT)
    [run] = MlflowClient().search_runs([experiment.experiment_id], f"tags.`{lineage.TAG_STEP}` = 'train'")
    mlflow.set_tracking_uri(None)
    assert run.data.tags[lineage.TAG_GIT_COMMIT] == project.head() and run.data.tags[lineage.TAG_GIT_DIRTY] == "false"
    return run.info.run_id


@pytest.fixture(autouse=True)
def project_store(project):
    mlflow.set_tracking_uri(project.tracking_uri)


def histories(client: MlflowClient, run_id: str, keys) -> dict[str, list[tuple[int, float]]]:
    """Each metric's ``(step, repr(value))`` pairs: equal only when bit for bit equal (NaN included)."""
    return {
        key: [(m.step, repr(m.value)) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]
        for key in keys
    }


def reproduction_of(client: MlflowClient, output: str, run_id: str) -> tuple[mlflow.entities.Run, str]:
    """The reproduction run the result line names, after checking that line."""
    [line] = [line for line in output.splitlines() if line.startswith(f"reproduced run {run_id} as ")]
    new_id = line.split(" as ", 1)[1].split(":", 1)[0]
    return client.get_run(new_id), line


def assert_identical_reproduction(client: MlflowClient, run_id: str, new: mlflow.entities.Run, line: str) -> None:
    original = client.get_run(run_id)
    per_epoch = ["train_loss", "lr", "val_loss", "val_miou", "val_dice", "val_pixel_accuracy"]
    compared = reproduce.compared_keys(original, ["system/*", "*_time_s", "*_per_s"])
    assert set(per_epoch) <= set(compared)
    assert line.endswith(f": per-epoch metrics identical ({len(compared)} metrics x 2 epochs)"), line
    before, after = histories(client, run_id, compared), histories(client, new.info.run_id, compared)
    assert [step for step, _ in before["val_miou"]] == [0, 1]
    assert before == after  # bit for bit, every epoch
    assert new.info.status == "FINISHED"
    tags = new.data.tags
    assert tags[lineage.TAG_REPRODUCES] == run_id and tags[lineage.TAG_REPRODUCED] == "exact"
    assert tags[lineage.TAG_STEP] == "train"
    # the recorded commit's code ran, from a clean checkout of that commit, on the recorded data commit and config
    assert tags[lineage.TAG_GIT_COMMIT] == original.data.tags[lineage.TAG_GIT_COMMIT]
    assert tags[lineage.TAG_GIT_DIRTY] == "false"
    assert tags[lineage.TAG_DATA_URI] == original.data.tags[lineage.TAG_DATA_URI]
    assert new.data.params["data_ref"] == original.data.tags[lineage.TAG_DATA_URI]
    for key in ("seed", "trainer.epochs", "optimizer.lr", "model.decoder_channels", "transforms.image_size"):
        assert new.data.params[key] == original.data.params[key], key
    assert tags[lineage.TAG_MODEL_URI].endswith(f"/models/{new.info.run_id}")  # a full train run: its own model

    parent = client.get_run(tags["mlflow.parentRunId"])
    assert parent.data.tags[lineage.TAG_STEP] == "reproduce" and parent.info.status == "FINISHED"
    assert parent.data.tags[lineage.TAG_REPRODUCES] == run_id
    assert parent.data.tags[lineage.TAG_REPRODUCTION_RUN] == new.info.run_id
    assert parent.data.tags[lineage.TAG_REPRODUCED] == "exact"
    assert parent.data.metrics["max_abs_metric_diff"] == 0.0
    report = mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/{reproduce.REPORT_ARTIFACT}")
    assert "| `val_miou` | 2 | 0 | identical |" in report and "bit for bit" in report
    assert "composed the recorded config" in report


def test_mlflow_run_reproduce_reruns_a_train_run_bit_for_bit(project, trained):
    result = project.mlflow_run("reproduce", run_id=trained)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient()
    new, line = reproduction_of(client, result.stdout + result.stderr, trained)
    assert_identical_reproduction(client, trained, new, line)
    reproduce_run = client.get_run(new.data.tags["mlflow.parentRunId"])
    assert reproduce_run.data.params["run_id"] == trained  # the run mlflow run made for the entry point


def test_reproduce_runs_the_recorded_commit_when_the_working_tree_has_moved_on(project, trained):
    recorded = MlflowClient().get_run(trained).data.tags[lineage.TAG_GIT_COMMIT]
    engine = project.repo / "segmodels" / "training" / "engine.py"
    text = engine.read_text()
    changed = text.replace("loss = criterion(logits, masks)", "loss = 2 * criterion(logits, masks)")
    assert changed != text
    engine.write_text(changed)  # new code trains differently and reports twice the loss
    git(project.repo, "commit", "--quiet", "-am", "scale the loss")
    assert project.head() != recorded

    checkout = project.home / "reproduce" / recorded
    if checkout.exists():  # made by the first test: a tracked file changed there makes it be checked out again
        with open(checkout / "segmodels" / "training" / "engine.py", "a") as tampered:
            tampered.write("# edited by hand\n")

    result = project.run(sys.executable, "steps/reproduce.py", "--run_id", trained)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient()
    new, line = reproduction_of(client, result.stdout + result.stderr, trained)
    assert_identical_reproduction(client, trained, new, line)
    assert "loss = criterion(logits, masks)" in (checkout / "segmodels/training/engine.py").read_text()
    assert git(checkout, "rev-parse", "HEAD") == recorded
    assert "edited by hand" not in (checkout / "segmodels/training/engine.py").read_text()
    assert not (project.repo / ".git" / "worktrees").exists(), "nothing left in the project's repository"


DATA_COMMIT = "c" * 64
PINNED_DATA = {
    lineage.TAG_LAKEFS_REPO: "demo-repo",
    lineage.TAG_DATA_COMMIT: DATA_COMMIT,
    lineage.TAG_DATA_URI: f"lakefs://demo-repo/{DATA_COMMIT}/data",
}


def fake_train_run(client: MlflowClient, **tags: str) -> str:
    """A finished run carrying ``tags`` (and a train config artifact): the refusals come before any training."""
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    run = client.create_run(experiment, tags={lineage.TAG_STEP: "train", **PINNED_DATA, **tags})
    client.log_text(run.info.run_id, "seed: 1\ntrainer:\n  device: cpu\n", reproduce.CONFIG_ARTIFACT)
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


@pytest.mark.parametrize(
    "tags, reason",
    [
        (
            {lineage.TAG_GIT_COMMIT: "a" * 40, lineage.TAG_GIT_DIRTY: "true"},
            "ran uncommitted changes on top of commit aaaaaaaaaaaa (segmodels.git_dirty=true): the code that ran is "
            "not recoverable",
        ),
        ({}, "recorded no git commit (segmodels.git_commit)"),
        ({lineage.TAG_GIT_COMMIT: "b" * 40, lineage.TAG_GIT_DIRTY: "false"}, f"commit {'b' * 40} (recorded by run"),
        ({lineage.TAG_STEP: "ingest"}, "is not a train run (segmodels.step=ingest)"),
    ],
)
def test_a_run_that_cannot_be_reproduced_is_refused_with_one_line(project, monkeypatch, capsys, tags, reason):
    run_id = fake_train_run(MlflowClient(), **tags)
    monkeypatch.chdir(project.repo)
    with pytest.raises(SystemExit) as exit_info:
        run_step_cli("reproduce", ["--run_id", run_id])
    assert exit_info.value.code == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("segmodels reproduce: error: ") and reason in errors[0], errors
    assert not (project.home / "reproduce" / ("b" * 40)).exists()


@pytest.mark.parametrize(
    "overrides, outcome, exit_code",
    [
        ([], "differs", 1),
        (["compare=tolerance", "tolerance.rel=1e-3"], "within_tolerance", 0),
    ],
)
def test_the_outcome_is_tagged_and_a_reproduction_that_differs_exits_1(
    project, monkeypatch, capsys, overrides, outcome, exit_code
):
    """The step's bookkeeping around a (stubbed) train step whose val_miou differs in the last bits at epoch 2
    (MLflow step 1)."""
    client = MlflowClient()
    original = fake_train_run(client, **{lineage.TAG_GIT_COMMIT: project.first_commit, lineage.TAG_GIT_DIRTY: "false"})
    values = {"val_miou": [0.5, 0.25], "train_loss": [1.5, 1.25], "train_time_s": [3.0, 4.0]}
    for key, series in values.items():
        for step, value in enumerate(series):
            client.log_metric(original, key, value, step=step)

    def stub_train_step(client, folder, recorded, run_id, experiment_id):
        assert recorded.run_id == original and (folder / "conf" / "train.yaml").read_text().count(original) == 1
        for key, series in values.items():
            for step, value in enumerate(series):
                client.log_metric(
                    run_id,
                    key,
                    value + (1e-6 if (key, step) == ("val_miou", 1) else 0.5 * (key == "train_time_s")),
                    step=step,
                )
        client.set_terminated(run_id, "FINISHED")

    monkeypatch.setattr(reproduce, "run_old_train_step", stub_train_step)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    monkeypatch.chdir(project.repo)
    if exit_code:
        with pytest.raises(SystemExit) as exit_info:
            run_step_cli("reproduce", ["--run_id", original[:8], *overrides])  # as report.md shows it
        assert exit_info.value.code == exit_code
    else:
        run_step_cli("reproduce", ["--run_id", original[:8], *overrides])  # as report.md shows it
    [line] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("reproduced run")]
    reproduce_run = client.search_runs(
        [client.get_experiment_by_name(EXPERIMENT).experiment_id],
        f"tags.`{lineage.TAG_REPRODUCES}` = '{original}' and tags.`{lineage.TAG_STEP}` = 'reproduce'",
    )[0]
    new_id = reproduce_run.data.tags[lineage.TAG_REPRODUCTION_RUN]
    assert reproduce_run.info.status == ("FAILED" if exit_code else "FINISHED")
    assert reproduce_run.data.tags[lineage.TAG_REPRODUCED] == outcome
    assert client.get_run(new_id).data.tags[lineage.TAG_REPRODUCED] == outcome
    assert math.isclose(reproduce_run.data.metrics["max_abs_metric_diff"], 1e-6, rel_tol=1e-3)  # timings ignored
    if exit_code:
        assert line == (
            f"reproduced run {original} as {new_id}: per-epoch metrics differ (bit for bit): val_miou "
            f"epoch 2: 0.25 vs {0.25 + 1e-6!r}"
        )  # counted from 1, as the training log counts
    else:
        assert line == (
            f"reproduced run {original} as {new_id}: per-epoch metrics within tolerance (2 metrics x 2 "
            f"epochs), rel 0.001 / abs 0.0001, max abs diff 1e-06"
        )


def test_metrics_compare_bit_for_bit_on_cpu_and_within_tolerance_on_cuda():
    original = {0: 0.5, 1: 0.25}
    assert reproduce.compare_histories("val_miou", original, dict(original), "exact", 1e-3, 1e-4).identical
    nudged = {0: 0.5, 1: 0.25 + 1e-9}
    exact = reproduce.compare_histories("val_miou", original, nudged, "exact", 1e-3, 1e-4)
    assert exact.describe() == f"val_miou epoch 2: 0.25 vs {0.25 + 1e-9!r}"  # step 1: the log's epoch 2
    loose = reproduce.compare_histories("val_miou", original, nudged, "tolerance", 1e-3, 1e-4)
    assert not loose.identical and loose.mismatch is None and math.isclose(loose.max_abs_diff, 1e-9, rel_tol=1e-6)
    assert reproduce.Comparison([loose], "tolerance", 1e-3, 1e-4).outcome == reproduce.WITHIN_TOLERANCE
    far = reproduce.compare_histories("val_miou", original, {0: 0.5, 1: 0.3}, "tolerance", 1e-3, 1e-4)
    comparison = reproduce.Comparison([loose, far], "tolerance", 1e-3, 1e-4)
    assert comparison.outcome == reproduce.DIFFERS and comparison.first_mismatch() is far
    missing = reproduce.compare_histories("val_dice", original, None, "exact", 1e-3, 1e-4)
    assert missing.describe() == "val_dice: missing in the reproduction"
    nan = reproduce.compare_histories("val_loss", {0: float("nan")}, {0: float("nan")}, "exact", 0, 0)
    assert nan.identical
