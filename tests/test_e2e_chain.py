"""End to end: the real ``mlflow run`` chain on a tiny data set, against the embedded lakeFS server
and a sqlite MLflow store, checked through MLflow's client and ``lakefs_sdk``."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import lakefs_sdk
import mlflow
import numpy as np
import pytest
from lakefs_sdk.client import LakeFSClient
from mlflow.tracking import MlflowClient

from segmodels.data.demo import generate_demo_dataset
from segmodels.tracking import lineage

PROJECT = Path(__file__).resolve().parents[1]
EXPERIMENT = "e2e"
pytestmark = pytest.mark.slow


class Chain:
    """A sandbox (own MLflow store, lakeFS home, HOME) in which commands run like a user's would."""

    def __init__(self, root: Path):
        self.root = root
        self.home = root / "segmodels-home"
        self.env = {key: value for key, value in os.environ.items() if not key.startswith(("LAKECTL_", "MLFLOW_"))}
        self.env.update(
            {
                "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
                "MLFLOW_EXPERIMENT_NAME": EXPERIMENT,
                "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "0.5",  # the tiny train run lasts a few seconds
                "SEGMODELS_HOME": str(self.home),
                "HOME": str(root),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            }
        )

    def mlflow_run(self, entry_point: str, **params) -> subprocess.CompletedProcess:
        """``mlflow run <project> -e <entry_point> --env-manager local -P k=v ...``."""
        command = ["mlflow", "run", str(PROJECT), "-e", entry_point, "--env-manager", "local"]
        for key, value in params.items():
            command += ["-P", f"{key}={value}"]
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=900)

    def step(self, name: str, *overrides: str) -> subprocess.CompletedProcess:
        """A step script run directly, as ``mlflow run`` runs it."""
        return subprocess.run(
            [sys.executable, f"steps/{name}.py", *overrides],
            cwd=PROJECT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    def lakefs_client(self) -> LakeFSClient:
        """An sdk client for the embedded server the chain started."""
        state = json.loads((self.home / "lakefs" / "server.json").read_text())
        credentials = json.loads((self.home / "lakefs" / "credentials.json").read_text())
        config = lakefs_sdk.Configuration(
            host=f"{state['endpoint'].rstrip('/')}/api/v1",
            username=credentials["access_key_id"],
            password=credentials["secret_access_key"],
        )
        return LakeFSClient(config)

    def stop_server(self) -> None:
        state_file = self.home / "lakefs" / "server.json"
        if state_file.exists():
            try:
                os.kill(json.loads(state_file.read_text())["pid"], signal.SIGTERM)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    sandbox = Chain(root)
    sandbox.source = generate_demo_dataset(root / "source", num_images=24, image_size=32, seed=3)
    sandbox.predictions = root / "predictions"
    mlflow.set_tracking_uri(sandbox.env["MLFLOW_TRACKING_URI"])
    MlflowClient().create_experiment(EXPERIMENT, artifact_location=(root / "artifacts").as_uri())
    sandbox.result = sandbox.mlflow_run(
        "main",
        source=sandbox.source,
        epochs=1,
        image_size="[32,40]",
        batch_size=8,
        threshold=0.0,
        output_dir=sandbox.predictions,
        overrides="trainer.num_workers=0",
    )
    yield sandbox
    sandbox.stop_server()


@pytest.fixture(autouse=True)
def chain_store(chain, monkeypatch):
    """Each test reads the chain's MLflow store (conftest resets the tracking URI after every test) and, for
    models read through the lakefs:// artifact repository, the chain's embedded lakeFS."""
    mlflow.set_tracking_uri(chain.env["MLFLOW_TRACKING_URI"])
    monkeypatch.setenv("SEGMODELS_HOME", str(chain.home))


def child_runs(client: MlflowClient, parent_id: str) -> dict[str, mlflow.entities.Run]:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    return {run.data.tags[lineage.TAG_STEP]: run for run in runs}


def test_main_leaves_one_parent_with_four_finished_children(chain):
    assert chain.result.returncode == 0, chain.result.stderr[-3000:]
    client = MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    parents = client.search_runs([experiment.experiment_id], f"tags.`{lineage.TAG_STEP}` = 'main'")
    assert len(parents) == 1
    parent = parents[0]
    children = child_runs(client, parent.info.run_id)
    assert sorted(children) == ["infer", "ingest", "register", "train"]
    assert all(run.info.status == "FINISHED" for run in children.values())

    ingest, train, register, infer = (children[name] for name in ("ingest", "train", "register", "infer"))
    data_uri = ingest.data.tags[lineage.TAG_DATA_URI]
    data_commit = ingest.data.tags[lineage.TAG_DATA_COMMIT]
    assert data_uri.startswith("lakefs://segmodels/") and data_commit in data_uri
    # each child's params carry what the previous step produced
    assert train.data.params["data_ref"] == data_uri
    assert train.data.params["data_commit"] == data_commit
    assert register.data.params["run_id"] == train.info.run_id
    version = register.data.tags[lineage.TAG_MODEL_VERSION]
    assert infer.data.params["model_uri"] == f"models:/segmodels/{version}"
    assert infer.data.params["data_ref"] == data_uri
    # train records hyperparameters, per-epoch metrics and lineage
    assert {"optimizer.lr", "trainer.epochs", "trainer.batch_size", "transforms.image_size"} <= set(train.data.params)
    assert train.data.params["trainer.epochs"] == "1"
    assert train.data.params["transforms.image_size"] == "[32, 40]", "a list through -P reaches the engine"
    # only what was given is recorded beside the resolved config: no empty parameter
    for run in (parent, *children.values()):
        empty = {key for key, value in run.data.params.items() if value in ("", "''")}
        assert not empty, f"{run.data.tags[lineage.TAG_STEP]} records empty params {empty}"
    assert register.data.params["model_name"] == "segmodels" and register.data.params["metric"] == "best_val_miou"
    for metric in ("train_loss", "val_miou", "val_dice", "val_pixel_accuracy", "lr", "best_val_miou"):
        assert metric in train.data.metrics, metric
    assert any(key.startswith("system/") for key in train.data.metrics)
    for tag in (lineage.TAG_GIT_COMMIT, lineage.TAG_MODEL_COMMIT, lineage.TAG_MODEL_URI, lineage.TAG_DATA_URI):
        assert train.data.tags.get(tag), tag
    assert train.data.tags[lineage.TAG_MODEL_URI].startswith(
        f"lakefs://segmodels/{train.data.tags[lineage.TAG_MODEL_COMMIT]}/models/{train.info.run_id}"
    )
    assert any(a.path.startswith("config") for a in client.list_artifacts(train.info.run_id))
    # the parent carries the chain's key params and metrics, so chains sort and compare in the UI
    assert {
        key: parent.data.params.get(key) for key in ("data_commit", "model_name", "model_version", "model_alias")
    } == {"data_commit": data_commit, "model_name": "segmodels", "model_version": version, "model_alias": "champion"}
    assert parent.data.metrics["best_val_miou"] == train.data.metrics["best_val_miou"]
    assert parent.data.metrics["test_miou"] == infer.data.metrics["miou"]
    main_lines = [line for line in chain.result.stderr.splitlines() if " segmodels main " in line]
    assert main_lines[-1].endswith(f"model models:/segmodels/{version} became @champion (no @champion before)")
    assert {"learning_curves.png", "sample_predictions.png", "report.md", "report.html"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)
    }
    # the pinned data set shows under the ingest and train runs' data sets
    for run in (ingest, train):
        inputs = client.get_run(run.info.run_id).inputs.dataset_inputs
        assert any(data_uri in item.dataset.source for item in inputs), run.data.tags[lineage.TAG_STEP]


def test_lakefs_commits_name_the_runs_that_made_them(chain):
    client = MlflowClient()
    parent = client.search_runs(
        [client.get_experiment_by_name(EXPERIMENT).experiment_id], f"tags.`{lineage.TAG_STEP}` = 'main'"
    )[0]
    children = child_runs(client, parent.info.run_id)
    sdk = chain.lakefs_client()
    data_commit = sdk.commits_api.get_commit("segmodels", children["ingest"].data.tags[lineage.TAG_DATA_COMMIT])
    assert data_commit.metadata["mlflow_run_id"] == children["ingest"].info.run_id
    model_commit_id = children["train"].data.tags[lineage.TAG_MODEL_COMMIT]
    model_commit = sdk.commits_api.get_commit("segmodels", model_commit_id)
    assert model_commit.metadata["mlflow_run_id"] == children["train"].info.run_id
    assert model_commit.metadata["data_commit"] == data_commit.id
    listing = sdk.objects_api.list_objects(
        "segmodels", model_commit_id, prefix=f"models/{children['train'].info.run_id}/artifacts/"
    )
    assert {Path(obj.path).name for obj in listing.results} == {"model.pt", "model.yaml"}
    assert (
        sdk.objects_api.stat_object(
            "segmodels", model_commit_id, f"models/{children['train'].info.run_id}/MLmodel"
        ).size_bytes
        > 0
    )
    # the model is stored once: MLflow's artifact store holds no weights
    weights = [path for path in (chain.root / "artifacts").rglob("*") if path.name in ("model.pt", "pyfunc_model.py")]
    assert not weights, weights
    data = sdk.objects_api.list_objects("segmodels", data_commit.id, prefix="data/", amount=1000)
    assert any(obj.path == "data/dataset.yaml" for obj in data.results)


def test_alias_points_at_a_loadable_model_and_predictions_exist(chain):
    client = MlflowClient()
    version = client.get_model_version_by_alias("segmodels", "champion")
    assert version.tags[lineage.TAG_DATA_COMMIT]
    assert version.tags[lineage.TAG_MODEL_URI].startswith("lakefs://segmodels/")
    assert version.source == version.tags[lineage.TAG_MODEL_URI]
    model = mlflow.pyfunc.load_model("models:/segmodels@champion")  # from lakeFS, through the plugin
    assert model.predict(np.zeros((30, 50, 3), np.uint8))[0].shape == (30, 50)
    masks = sorted((chain.predictions / "masks").glob("*.png"))
    overlays = sorted((chain.predictions / "overlays").glob("*.png"))
    assert masks and len(masks) == len(overlays)
    assert (chain.predictions / "metrics.csv").read_text().count("\n") == len(masks) + 1


def test_train_runs_alone_on_the_head_of_the_data_branch(chain):
    result = chain.mlflow_run(
        "train", lr=0.001, epochs=1, image_size=32, batch_size=8, overrides="trainer.num_workers=0"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs(
        [experiment.experiment_id],
        f"tags.`{lineage.TAG_STEP}` = 'train'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    run = runs[0]
    assert "mlflow.parentRunId" not in run.data.tags
    assert run.data.params["optimizer.lr"] == "0.001"
    head = chain.lakefs_client().refs_api.log_commits("segmodels", "main", amount=1).results[0].id
    assert run.data.params["data_commit"] == head


@pytest.mark.parametrize(
    "step, overrides, reason",
    [
        ("train", ["data_ref=no-such-ref"], "no-such-ref"),
        ("ingest", ["source=/no/such/folder"], "/no/such/folder"),
    ],
)
def test_bad_arguments_exit_non_zero_with_one_line(chain, step, overrides, reason):
    result = chain.step(step, *overrides)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"segmodels {step}: error:")]
    assert len(errors) == 1 and reason in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_unknown_parameter_through_mlflow_run_is_one_line(chain):
    result = chain.mlflow_run("register", bogus=1)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("segmodels register: error:")]
    assert errors == [
        "segmodels register: error: unknown parameter 'bogus' for register; expected one of run_id, "
        "model_name, metric, threshold, alias, force, parent_run_id, interactive, overrides, or a "
        "config key such as lakefs.repo"
    ]
    assert "usage:" not in result.stderr and "Traceback" not in result.stderr


def test_no_secret_reaches_mlflow(chain):
    secret = json.loads((chain.home / "lakefs" / "credentials.json").read_text())["secret_access_key"]
    client = MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    assert runs
    for run in runs:
        assert secret not in json.dumps(run.data.params) + json.dumps(run.data.tags)
        for artifact in client.list_artifacts(run.info.run_id, "config"):
            text = Path(client.download_artifacts(run.info.run_id, artifact.path)).read_text()
            assert secret not in text
    stored = b"".join(path.read_bytes() for path in (chain.root).glob("mlflow.db*"))
    assert secret.encode() not in stored


def test_train_data_parallel_under_torchrun_records_one_run(chain):
    client = MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    before = {run.info.run_id for run in client.search_runs([experiment.experiment_id])}
    result = chain.mlflow_run(
        "train", nproc=2, epochs=1, image_size=32, batch_size=4, overrides="trainer.num_workers=0"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    new = [run for run in client.search_runs([experiment.experiment_id]) if run.info.run_id not in before]
    assert len(new) == 1, "only rank 0 records a run"
    run = new[0]
    assert run.info.status == "FINISHED" and run.data.params["nproc"] == "2"
    assert run.data.tags[lineage.TAG_MODEL_URI].endswith(f"/models/{run.info.run_id}")


def test_lineage_walks_the_chain_both_ways(chain):
    client = MlflowClient()
    parent = client.search_runs(
        [client.get_experiment_by_name(EXPERIMENT).experiment_id], f"tags.`{lineage.TAG_STEP}` = 'main'"
    )[0]
    children = child_runs(client, parent.info.run_id)
    data_commit = children["ingest"].data.tags[lineage.TAG_DATA_COMMIT]
    version = children["register"].data.tags[lineage.TAG_MODEL_VERSION]

    def lineage_of(ref: str, *flags: str) -> str:
        result = subprocess.run(
            ["segmodels", "lineage", ref, *flags], env=chain.env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    backward = lineage_of("models:/segmodels@champion")
    for expected in (
        data_commit,
        children["ingest"].info.run_id,
        children["train"].info.run_id,
        children["train"].data.tags[lineage.TAG_MODEL_COMMIT],
        str(chain.source),
    ):
        assert expected in backward, expected
    forward = json.loads(lineage_of(f"lakefs://segmodels/{data_commit}", "--json"))
    assert forward["kind"] == "data_commit"
    assert ("segmodels", version) in {(v["name"], v["version"]) for v in forward["versions"]}
    assert children["train"].info.run_id in {run["run_id"] for run in forward["train_runs"]}


def test_a_killed_train_step_resumes_from_its_checkpoint_to_the_same_metrics(chain):
    """SIGKILL mid-training leaves the step's checkpoint in the segmodels home; the same step rerun resumes from
    it, says so, and ends with the metrics of an uninterrupted run (seeded); success removes the work folder."""
    args = [
        "--epochs",
        "6",
        "--image_size",
        "32",
        "--batch_size",
        "8",
        "trainer.num_workers=0",
        "trainer.progress_bar=false",
    ]
    work_root = chain.home / "train-work"
    client = MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id

    def newest_train_run():
        return client.search_runs(
            [experiment], f"tags.`{lineage.TAG_STEP}` = 'train'", order_by=["attributes.start_time DESC"], max_results=1
        )[0]

    def curve(run) -> list[tuple[int, float]]:
        return [
            (m.step, m.value)
            for m in sorted(client.get_metric_history(run.info.run_id, "val_miou"), key=lambda m: m.step)
        ]

    straight = chain.step("train", *args)
    assert straight.returncode == 0, straight.stderr[-3000:]
    uninterrupted = newest_train_run()
    assert not any(work_root.iterdir()), "a finished step leaves no work folder"

    killed = subprocess.Popen(
        [sys.executable, "steps/train.py", *args],
        cwd=PROJECT,
        env=chain.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not list(work_root.glob("*/checkpoints/last.pt")) and killed.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=60) == -signal.SIGKILL, "killed mid-run, before it finished"
    assert list(work_root.glob("*/checkpoints/last.pt")), "the checkpoint survives the kill"

    resumed = chain.step("train", *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    run = newest_train_run()
    assert run.data.tags[lineage.TAG_RESUMED_AFTER_EPOCH].isdigit()
    resumed_curve, straight_curve = curve(run), curve(uninterrupted)
    assert [step for step, _ in resumed_curve] == [step for step, _ in straight_curve] == list(range(6))
    assert [value for _, value in resumed_curve] == pytest.approx([value for _, value in straight_curve])
    assert run.data.metrics["best_val_miou"] == pytest.approx(uninterrupted.data.metrics["best_val_miou"])
    assert not any(work_root.iterdir())


def test_infer_of_a_name_never_registered_prints_a_register_command_that_works_as_printed(chain):
    """`infer -P model_uri=models:/<new name>@champion` with no such model: one line naming the register command of
    the newest train run; that command, typed as printed, registers it, and the same infer then predicts."""
    params = {"model_uri": "models:/people@champion", "output_dir": chain.root / "people-predictions"}
    refused = chain.mlflow_run("infer", **params)
    assert refused.returncode != 0
    [line] = [line for line in refused.stderr.splitlines() if line.startswith("segmodels infer: error:")]
    command = shlex.split(re.search(r"\((mlflow run \. -e register [^)]*)\)", line)[1])
    assert command[:5] == ["mlflow", "run", ".", "-e", "register"], line
    hinted = dict(command[index + 1].split("=", 1) for index, word in enumerate(command) if word == "-P")
    registered = chain.mlflow_run("register", **hinted)
    assert registered.returncode == 0, registered.stderr[-3000:]
    predicted = chain.mlflow_run("infer", **params)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert list((chain.root / "people-predictions" / "masks").glob("*.png"))
