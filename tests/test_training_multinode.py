"""Training across machines under torchrun's c10d rendezvous: the launcher's command lines and refusals, and (slow)
two nodes of one process each on this machine, each with its own segmodels home, against one lakeFS and one MLflow
store."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from segmodels.pipeline.params import LAUNCHER_PARAMS, STEP_PARAMS
from segmodels.pipeline.published_checkpoint import CHECKPOINT_PREFIX
from segmodels.tracking import lineage
from segmodels.tracking.nodes import TAG_NODE_OF, TAG_NODE_RANK, TAG_NODES
from segmodels.training.launch import launch_command, nodes_of, split_launcher_args

PROJECT = Path(__file__).resolve().parents[1]
EXPERIMENT = "multinode"
CHECKPOINT_BRANCH = "checkpoints"  # conf/lakefs/default.yaml's checkpoint_branch
METRICS = ("train_loss", "val_loss", "val_miou")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def nodes_from(argv: list[str]):
    params, rest = split_launcher_args(argv)
    return nodes_of(params, rest), rest


def test_two_nodes_run_torchrun_with_c10d_rendezvous_and_no_standalone():
    nodes, rest = nodes_from(["--nnodes", "2", "--node_rank", "1", "--rdzv_endpoint", "10.0.0.1:29400", "--lr", "1"])
    command = launch_command(1, "steps/train.py", rest, nodes)
    assert "--standalone" not in command
    for option in ("--nnodes=2", "--node_rank=1", "--nproc_per_node=1", "--rdzv_backend=c10d"):
        assert option in command
    assert "--rdzv_endpoint=10.0.0.1:29400" in command and "--rdzv_conf=join_timeout=600" in command
    assert command[-3:] == ["steps/train.py", "--lr", "1"]
    assert launch_command(1, "steps/train.py", rest, None)[1:] == ["steps/train.py", "--lr", "1"]


def test_every_node_derives_the_same_rendezvous_id_from_the_same_arguments():
    common = ["--nnodes", "2", "--rdzv_endpoint", "h:29400", "--data_ref", "lakefs://r/c1/data"]
    node0, _ = nodes_from([*common, "--node_rank", "0"])
    node1, _ = nodes_from(["--node_rank=1", *common])
    other_job, _ = nodes_from([*common, "--node_rank", "1", "--lr", "0.1"])
    assert node0.rdzv_id == node1.rdzv_id != other_job.rdzv_id
    assert nodes_from([*common, "--rdzv_id", "job-7"])[0].rdzv_id == "job-7"
    assert nodes_from(["--nproc", "4"])[0] is None  # one machine: torchrun --standalone as before


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--nnodes", "2"], "rdzv_endpoint='': nnodes=2 needs host:port"),
        *(  # a child process each (~3.5 s): one case in the fast tier
            pytest.param(*case, marks=pytest.mark.slow)
            for case in [
                (
                    ["--nnodes", "2", "--rdzv_endpoint", "h:1", "--node_rank", "2"],
                    "node_rank=2: expected 0 .. 1 (nnodes=2)",
                ),
                (["--nnodes", "zero"], "nnodes='zero': expected a whole number >= 1"),
                (["--nnodes", "2", "--rdzv_endpoint", "h:1", "--rdzv_timeout_s", "0"], "rdzv_timeout_s='0': expected"),
            ]
        ),
    ],
)
def test_launcher_refuses_bad_node_values_in_one_line(argv, message):
    result = subprocess.run(
        [sys.executable, "-m", "segmodels.training.launch", "steps/train.py", *argv],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"segmodels train: error: {message}"), result.stderr


@pytest.mark.slow
def test_a_node_whose_peers_never_come_gives_up_in_one_line_naming_the_endpoint(tmp_path):
    endpoint = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "segmodels.training.launch", "steps/train.py", "--nnodes", "2"]
        + ["--rdzv_endpoint", endpoint, "--rdzv_timeout_s", "3"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and time.monotonic() - started < 90  # measured 9 s on 2 loaded cores
    assert result.stderr.splitlines()[-1] == (
        f"segmodels train: error: rdzv_endpoint={endpoint}: the job's 2 nodes did not all join within "
        "rdzv_timeout_s=3; start train on every node with the same nnodes, rdzv_endpoint and rdzv_id"
    )


class Job:
    """Train runs on this machine against the session's lakeFS and one sqlite MLflow store, each node with its
    own segmodels home (no shared disk), launched as ``mlflow run`` or the MLproject's command runs the step."""

    def __init__(self, root: Path, lakefs_settings, tracking_uri: str, data_ref: str, repo: str):
        self.root, self.data_ref, self.repo = root, data_ref, repo
        self.env = {key: value for key, value in os.environ.items() if not key.startswith(("LAKECTL_", "MLFLOW_"))}
        self.env.update(
            {
                "LAKECTL_SERVER_ENDPOINT_URL": lakefs_settings.endpoint,
                "LAKECTL_CREDENTIALS_ACCESS_KEY_ID": lakefs_settings.access_key_id,
                "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY": lakefs_settings.secret_access_key,
                "MLFLOW_TRACKING_URI": tracking_uri,
                "MLFLOW_EXPERIMENT_NAME": EXPERIMENT,
                "OMP_NUM_THREADS": "1",
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            }
        )

    def params(self, **launcher) -> list[str]:
        given = {
            "data_ref": self.data_ref,
            "repo": self.repo,
            "epochs": "3",
            "batch_size": "4",
            "image_size": "32",
            "overrides": "trainer.num_workers=0 trainer.progress_bar=false model.decoder_channels=[16,16,16,8,8]",
            **launcher,
        }
        return [f"{name}={value}" for name, value in given.items()]

    def start(self, home: str, params: list[str], mlflow_run: bool = False) -> subprocess.Popen:
        if mlflow_run:
            command = ["mlflow", "run", str(PROJECT), "-e", "train", "--env-manager", "local"]
            command += [arg for param in params for arg in ("-P", param)]
        else:  # what the MLproject's train entry point runs
            command = [sys.executable, "-m", "segmodels.training.launch", "steps/train.py"]
            command += [arg for param in params for arg in (f"--{param.partition('=')[0]}", param.partition("=")[2])]
        log = (self.root / f"{home}-{time.monotonic_ns()}.log").open("w")
        return subprocess.Popen(
            command,
            cwd=PROJECT,
            env={**self.env, "SEGMODELS_HOME": str(self.root / home)},
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def two_nodes(self, mlflow_run: bool = False, **params) -> list[subprocess.Popen]:
        endpoint = f"127.0.0.1:{free_port()}"
        return [
            self.start(
                f"home{rank}",
                self.params(nnodes=2, node_rank=rank, rdzv_endpoint=endpoint, rdzv_timeout_s=120, **params),
                mlflow_run,
            )
            for rank in (0, 1)
        ]


def finished(processes: list[subprocess.Popen], timeout: float = 600) -> list[int]:
    """Every process's exit status (each has ``timeout`` seconds: a hung node fails the test)."""
    deadline = time.monotonic() + timeout
    return [process.wait(timeout=max(1.0, deadline - time.monotonic())) for process in processes]


def logs(job: Job) -> str:
    return "".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in sorted(job.root.glob("*.log")))


def metric_history(client: MlflowClient, run_id: str) -> dict[str, list[float]]:
    return {key: [m.value for m in client.get_metric_history(run_id, key)] for key in METRICS}


@pytest.fixture
def job(tmp_path, lakefs, lakefs_settings, repo_name, new_sqlite_store, tiny_demo_dataset):
    lakefs.ensure_repository(repo_name)
    data = lakefs.commit_directory(repo_name, "main", tiny_demo_dataset(num_images=24, seed=5), "data", "demo data")
    tracking_uri = new_sqlite_store(tmp_path / "mlflow.db")
    client = MlflowClient(tracking_uri)
    client.create_experiment(EXPERIMENT, artifact_location=(tmp_path / "artifacts").as_uri())
    sandbox = Job(tmp_path, lakefs_settings, tracking_uri, str(data), repo_name)
    sandbox.client, sandbox.lakefs = client, lakefs
    return sandbox


def train_runs(job: Job) -> list:
    return job.client.search_runs([job.client.get_experiment_by_name(EXPERIMENT).experiment_id])


@pytest.mark.slow
def test_two_nodes_of_one_process_train_as_one_machine_with_two_and_record_both_nodes(job):
    single = job.start("single", job.params(nproc=2))
    assert finished([single]) == [0], logs(job)
    (reference,) = train_runs(job)

    assert finished(job.two_nodes(mlflow_run=True)) == [0, 0], logs(job)
    runs = [run for run in train_runs(job) if run.info.run_id != reference.info.run_id]
    (run,) = [run for run in runs if lineage.TAG_STEP in run.data.tags]
    (node_run,) = [other for other in runs if other is not run]  # what mlflow run made on node 1, nested
    assert node_run.data.tags[MLFLOW_PARENT_RUN_ID] == node_run.data.tags[TAG_NODE_OF] == run.info.run_id
    # c10d gives global rank 0 to whichever node it orders first (torch ignores node_rank there): the nested run
    # is the other machine's, whatever node_rank it was started with
    assert node_run.data.tags[TAG_NODE_RANK] in ("0", "1") and node_run.info.status == "FINISHED"
    assert run.info.status == "FINISHED" and run.data.tags[lineage.TAG_STEP] == "train"
    assert run.data.tags[lineage.TAG_MODEL_URI].endswith(f"/models/{run.info.run_id}")
    nodes = json.loads(run.data.tags[TAG_NODES])
    assert [(node["node_rank"], node["processes"]) for node in nodes] == [(0, 1), (1, 1)]
    assert all(node["host"] == socket.gethostname() for node in nodes)
    params = run.data.params
    assert (params["distributed.nnodes"], params["distributed.world_size"], params["distributed.nproc_per_node"]) == (
        "2",
        "2",
        "1",
    )

    expected, got = metric_history(job.client, reference.info.run_id), metric_history(job.client, run.info.run_id)
    for key in METRICS:
        assert len(got[key]) == len(expected[key]) == 3, key
        assert got[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), key


def published_checkpoints(job: Job) -> list[str]:
    if not job.lakefs.is_branch(job.repo, CHECKPOINT_BRANCH):
        return []
    return [obj.path for obj in job.lakefs.list_objects(job.repo, CHECKPOINT_BRANCH, f"{CHECKPOINT_PREFIX}/")]


def wait_for_published_checkpoint(job: Job, nodes: list[subprocess.Popen], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not published_checkpoints(job):
        assert all(node.poll() is None for node in nodes), logs(job)
        assert time.monotonic() < deadline, "no checkpoint was published"
        time.sleep(0.2)


def kill_node(node: subprocess.Popen) -> None:
    """SIGKILL a node's launcher and every process under it (torchrun starts its workers in sessions of their own,
    so killing the launcher's process group alone leaves the worker training)."""
    launcher = psutil.Process(node.pid)
    for process in [launcher, *launcher.children(recursive=True)]:
        process.kill()


@pytest.mark.slow
def test_a_node_killed_mid_epoch_stops_the_job_and_a_rerun_of_both_resumes_from_the_published_checkpoint(job):
    params = {"epochs": "6", "image_size": "64"}
    nodes = job.two_nodes(**params)
    wait_for_published_checkpoint(job, nodes)
    kill_node(nodes[1])  # mid-epoch 2 or later
    killed_at = time.monotonic()
    survivor, killed = finished(nodes, timeout=300)  # the survivor must not hang on its dead peer
    assert killed == -signal.SIGKILL and survivor != 0, logs(job)
    survivor_exit_s = time.monotonic() - killed_at
    published_epoch = int(job.lakefs.get_commit(job.repo, CHECKPOINT_BRANCH).metadata["epoch"])
    assert 0 <= published_epoch < 5

    assert finished(job.two_nodes(**params)) == [0, 0], logs(job)
    (run,) = [run for run in train_runs(job) if run.info.status == "FINISHED" and lineage.TAG_STEP in run.data.tags]
    assert run.data.tags[lineage.TAG_RESUMED_AFTER_EPOCH] == str(published_epoch), logs(job)
    assert len(metric_history(job.client, run.info.run_id)["val_miou"]) == 6  # the earlier epochs' too
    assert "resuming from the published checkpoint" in logs(job)
    assert published_checkpoints(job) == [], "removed once the model is committed"
    print(f"survivor exited {survivor_exit_s:.1f} s after its peer was killed; resumed after epoch {published_epoch}")


@pytest.mark.parametrize("example", ["docker/k8s-train-job.yaml", "docker/slurm-train.sh"])
def test_cluster_examples_parse_and_pass_only_parameters_train_takes(example):
    path = PROJECT / example
    if path.suffix == ".sh":
        assert subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True).returncode == 0
    else:
        job = [document for document in yaml.safe_load_all(path.read_text()) if document["kind"] == "Job"][0]
        assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2
    given = set(re.findall(r"-P (\w+)=", path.read_text()))
    assert {"nnodes", "node_rank", "rdzv_endpoint"} <= given
    assert given <= {*STEP_PARAMS["train"], *LAUNCHER_PARAMS["train"]}
