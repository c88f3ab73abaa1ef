"""Everything about ranks, in one place: which process this is under ``torchrun`` (DDP), the process group
(NCCL on CUDA, gloo on CPU), sums over processes and the DDP wrapper."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

NODE_RANK_ENV = "SEGMODELS_NODE_RANK"  # the node_rank the launcher was given (torchrun's c10d orders ranks itself)


def launched_rank() -> int:
    """This process's rank as torchrun's ``RANK`` gives it (0 for a plain single process); valid before the
    process group is joined."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Whether this process is rank 0: the one that writes files, logs to MLflow and publishes the model."""
    return launched_rank() == 0


@dataclass
class DistContext:
    """Where this process runs: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait for every process (no-op for one process)."""
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        """Destroy the process group when this context created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def resolve_device(name: str, local_rank: int) -> torch.device:
    """``auto`` picks CUDA (the local rank's GPU) when present, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def setup_distributed(device: str) -> DistContext:
    """Join the process group described by torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
    ``MASTER_ADDR``...); a single process without that environment gets a one-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = launched_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    owns_group = False
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
        owns_group = True
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistContext(rank, world_size, local_rank, resolved, owns_group)


def is_node_leader() -> bool:
    """Whether this process is its machine's first (``LOCAL_RANK`` 0): the one that speaks for the node."""
    return int(os.environ.get("LOCAL_RANK", "0")) == 0


def spans_nodes() -> bool:
    """Whether the job runs on more than one machine (torchrun's ``WORLD_SIZE`` above ``LOCAL_WORLD_SIZE``); valid
    before the process group is joined."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world > int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))


def this_process() -> dict:
    """Where this process runs: host name, the launcher's node_rank, local rank and the processes on its machine."""
    return {
        "host": socket.gethostname(),
        "node_rank": int(os.environ.get(NODE_RANK_ENV, "0")),
        "local_rank": int(os.environ.get("LOCAL_RANK", "0")),
        "local_world_size": int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
    }


def all_gather_objects(value: object) -> list:
    """``value`` of every process, by global rank (``[value]`` without a process group)."""
    if not dist.is_initialized():
        return [value]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def world_size() -> int:
    """Processes in the initialised process group (1 without one)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the processes, in place (unchanged without a process group)."""
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def wrap_for_training(model: nn.Module, context: DistContext, find_unused_parameters: bool = False) -> nn.Module:
    """``DistributedDataParallel(model)`` with several processes (gradients averaged over them), else ``model``.
    ``find_unused_parameters``: some parameters get no gradient in some steps (a frozen encoder)."""
    if not context.distributed:
        return model
    return DistributedDataParallel(
        model,
        device_ids=[context.device.index] if context.device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters,
    )
