"""Training across machines under torchrun's c10d rendezvous: the launcher's command lines and refusals, and (slow)
two nodes of one process each on this machine, each with its own segmodels home, against one lakeFS and one MLflow
store."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from segmodels.training.launch import launch_command, nodes_of, split_launcher_args

PROJECT = Path(__file__).resolve().parents[1]


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
        (["--nnodes", "2", "--rdzv_endpoint", "h:1", "--node_rank", "2"], "node_rank=2: expected 0 .. 1 (nnodes=2)"),
        (["--nnodes", "zero"], "nnodes='zero': expected a whole number >= 1"),
        (["--nnodes", "2", "--rdzv_endpoint", "h:1", "--rdzv_timeout_s", "0"], "rdzv_timeout_s='0': expected"),
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
