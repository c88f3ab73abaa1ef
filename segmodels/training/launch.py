"""``python -m segmodels.training.launch script.py [--nproc N] [--nnodes N --node_rank R --rdzv_endpoint host:port]
args...``: run a training script in one process, or as data-parallel processes under torchrun (DDP; gloo on CPU,
NCCL on GPUs): ``nproc`` on this machine, and with ``nnodes`` > 1 on every machine of the job, which meet through
torchrun's c10d rendezvous at ``rdzv_endpoint``. The defaults are ``conf/launcher.yaml``'s."""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass

import yaml

from segmodels.config import default_config_dir

from .distributed import NODE_RANK_ENV

LAUNCHER_FILE = "launcher.yaml"  # in conf/: the launcher's parameters and their defaults


def launcher_defaults() -> dict[str, str]:
    """The launcher's parameters and their default values, from ``conf/launcher.yaml``."""
    loaded = yaml.safe_load((default_config_dir() / LAUNCHER_FILE).read_text())
    return {name: str(value) for name, value in loaded.items()}


@dataclass(frozen=True)
class Nodes:
    """The machines of a multi-node job and this one's place among them."""

    nnodes: int
    node_rank: int
    rdzv_endpoint: str
    rdzv_id: str
    rdzv_timeout_s: int


def whole_number(name: str, value: str, minimum: int) -> int:
    """``value`` as an int >= ``minimum``; a ValueError naming the parameter otherwise."""
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise ValueError(f"{name}={value!r}: expected a whole number >= {minimum}")
    return number


def nodes_of(params: dict[str, str], script_args: list[str]) -> Nodes | None:
    """The job's nodes from the launcher parameters (None for one machine); a ValueError names a bad value."""
    nnodes = whole_number("nnodes", params["nnodes"], 1)
    node_rank = whole_number("node_rank", params["node_rank"], 0)
    timeout = whole_number("rdzv_timeout_s", params["rdzv_timeout_s"], 1)
    if nnodes == 1:
        return None
    if node_rank >= nnodes:
        raise ValueError(f"node_rank={node_rank}: expected 0 .. {nnodes - 1} (nnodes={nnodes})")
    host, _, port = params["rdzv_endpoint"].rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(
            f"rdzv_endpoint={params['rdzv_endpoint']!r}: nnodes={nnodes} needs host:port, an address every node "
            "reaches (node 0's), e.g. -P rdzv_endpoint=10.0.0.1:29400"
        )
    rdzv_id = params["rdzv_id"] or default_rdzv_id(nnodes, params["rdzv_endpoint"], script_args)
    return Nodes(nnodes, node_rank, params["rdzv_endpoint"], rdzv_id, timeout)


def default_rdzv_id(nnodes: int, endpoint: str, script_args: list[str]) -> str:
    """A rendezvous id every node of a job derives alike: the hash of what they are all given the same."""
    payload = "\0".join([str(nnodes), endpoint, *script_args])
    return "segmodels-" + hashlib.sha256(payload.encode()).hexdigest()[:16]


def launch_command(nproc: int, script: str, args: list[str], nodes: Nodes | None = None) -> list[str]:
    """The command line that runs ``script`` with ``args`` in ``nproc`` processes (on each of ``nodes``)."""
    if nproc < 1:
        raise ValueError(f"nproc={nproc}: expected a whole number >= 1")
    if nodes is None:
        if nproc == 1:
            return [sys.executable, script, *args]
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            script,
            *args,
        ]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={nodes.nnodes}",
        f"--node_rank={nodes.node_rank}",
        f"--nproc_per_node={nproc}",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint={nodes.rdzv_endpoint}",
        f"--rdzv_id={nodes.rdzv_id}",
        f"--rdzv_conf=join_timeout={nodes.rdzv_timeout_s}",
        script,
        *args,
    ]


def split_launcher_args(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """The launcher's parameters (``--nproc N`` or ``--nproc=N``, ``--nnodes``...) taken out of a step's arguments,
    wherever MLflow put them, over ``conf/launcher.yaml``'s defaults; an empty value keeps the default."""
    defaults = launcher_defaults()
    params, rest = dict(defaults), []
    remaining = list(args)
    while remaining:
        arg = remaining.pop(0)
        name, sep, value = arg[2:].partition("=")
        if arg.startswith("--") and name in defaults and (sep or remaining):
            params[name] = (value if sep else remaining.pop(0)) or defaults[name]
        else:
            rest.append(arg)
    return params, rest


def run_torchrun(command: list[str], nodes: Nodes) -> None:
    """Run torchrun's command line in this process, turning a rendezvous the other nodes never joined into one line
    naming the endpoint, and a failed process into torchrun's summary of it (without this launcher's traceback)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousTimeoutError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(command[3:])
    except RendezvousTimeoutError:
        print(
            f"segmodels train: error: rdzv_endpoint={nodes.rdzv_endpoint}: the job's {nodes.nnodes} nodes did not all "
            f"join within rdzv_timeout_s={nodes.rdzv_timeout_s}; start train on every node with the same nnodes, "
            "rdzv_endpoint and rdzv_id",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
    except ChildFailedError as error:
        print(str(error), file=sys.stderr)
        raise SystemExit(1) from None


def main(argv: list[str] | None = None) -> None:
    """Exec ``script`` (the first argument) in one process or under torchrun, as the launcher parameters say."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0].startswith("-"):
        print(
            "usage: python -m segmodels.training.launch script.py [--nproc N] [--nnodes N ...] [args...]",
            file=sys.stderr,
        )
        raise SystemExit(2)
    params, rest = split_launcher_args(args[1:])
    try:
        nproc = whole_number("nproc", params["nproc"], 1)
        nodes = nodes_of(params, rest)
    except ValueError as error:
        print(f"segmodels train: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    command = launch_command(nproc, args[0], rest, nodes)
    if nodes is None:
        os.execv(command[0], command)
    os.environ[NODE_RANK_ENV] = str(nodes.node_rank)
    run_torchrun(command, nodes)


if __name__ == "__main__":
    main()
