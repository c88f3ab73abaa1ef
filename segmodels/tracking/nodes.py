"""The machines of a multi-node train run, on its MLflow run: rank 0's run records every node, and the run that
``mlflow run`` made on another machine is nested under it as its node (it holds nothing else), so the
experiment's list shows one train run per job."""

from __future__ import annotations

import json
import logging
import os

import mlflow
from mlflow.environment_variables import MLFLOW_RUN_ID
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from segmodels.training import Callback, TrainState
from segmodels.training.distributed import all_gather_objects, this_process

log = logging.getLogger(__name__)

TAG_NODES = "segmodels.nodes"  # on rank 0's run: JSON list, one entry per machine (node_rank, host, processes)
TAG_NODE_OF = "segmodels.node_of"  # on another machine's run: the train run (rank 0's) it is a node of
TAG_NODE_RANK = "segmodels.node_rank"  # on another machine's run: that machine's node_rank


class NodeRecord(Callback):
    """Every process at the start of training: the processes tell each other where they run and which data commit
    they pinned (all must have pinned the same); rank 0 records the nodes, each other machine's first process nests
    the run ``mlflow run`` made there under rank 0's."""

    every_rank = True

    def __init__(self, data_commit: str):
        self.data_commit = data_commit

    def on_fit_start(self, state: TrainState) -> None:
        run = mlflow.active_run()
        me = {**this_process(), "data_commit": self.data_commit, "run_id": run.info.run_id if run else None}
        everyone = all_gather_objects(me)
        commits = sorted({process["data_commit"] for process in everyone})
        if len(commits) > 1:
            raise RuntimeError(
                f"the nodes pinned different data commits ({', '.join(commits)}): give every node the same "
                "-P data_ref=<commit id>"
            )
        main_run = everyone[0]["run_id"]
        if state.dist.is_main:
            record_nodes(everyone)
        elif me["local_rank"] == 0:
            nest_node_run(os.environ.get(MLFLOW_RUN_ID.name), main_run, me["node_rank"])


def nodes_of(processes: list[dict]) -> list[dict]:
    """One entry per machine (node_rank, host, processes on it), by node_rank."""
    nodes = {p["node_rank"]: {"node_rank": p["node_rank"], "host": p["host"], "processes": 0} for p in processes}
    for process in processes:
        nodes[process["node_rank"]]["processes"] += 1
    return [nodes[rank] for rank in sorted(nodes)]


def record_nodes(processes: list[dict]) -> None:
    """On the active run (rank 0's): the job's machines as a tag, and its shape as params."""
    nodes = nodes_of(processes)
    mlflow.set_tag(TAG_NODES, json.dumps(nodes))
    mlflow.log_params(
        {
            "distributed.nnodes": len(nodes),
            "distributed.nproc_per_node": max(node["processes"] for node in nodes),
            "distributed.world_size": len(processes),
        }
    )


def nest_node_run(node_run: str | None, main_run: str | None, node_rank: int) -> None:
    """The run ``mlflow run`` made on a machine without rank 0, tagged as a node of ``main_run`` and nested under
    it (``mlflow.parentRunId``), so the experiment's list shows one train run per job; ``mlflow run`` finishes it
    as usual. Not deleted: ``mlflow run`` (3.x) sets every run it made terminated at the end, which MLflow refuses
    for a deleted run, failing that node. Nothing without such a run (a node started without ``mlflow run``)."""
    if not node_run or not main_run or node_run == main_run:
        return
    client = MlflowClient()
    for key, value in {MLFLOW_PARENT_RUN_ID: main_run, TAG_NODE_OF: main_run, TAG_NODE_RANK: str(node_rank)}.items():
        client.set_tag(node_run, key, value)
    log.info("node %s: its MLflow run %s is nested under train run %s as its node", node_rank, node_run, main_run)
