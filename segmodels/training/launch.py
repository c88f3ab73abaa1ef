"""``python -m segmodels.training.launch script.py [--nproc N] args...``: run a training script in one process,
or, for N > 1, as N data-parallel processes under torchrun (DDP; gloo on CPU, NCCL on GPUs)."""

from __future__ import annotations

import os
import sys


def launch_command(nproc: int, script: str, args: list[str]) -> list[str]:
    """The command line that runs ``script`` with ``args`` in ``nproc`` processes."""
    if nproc < 1:
        raise ValueError(f"nproc={nproc}: expected a whole number >= 1")
    if nproc == 1:
        return [sys.executable, script, *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", script, *args]


def split_nproc(args: list[str]) -> tuple[str, list[str]]:
    """``--nproc N`` (or ``--nproc=N``) taken out of a step's arguments, wherever MLflow put it."""
    nproc, rest = "1", []
    remaining = list(args)
    while remaining:
        arg = remaining.pop(0)
        if arg == "--nproc" and remaining:
            nproc = remaining.pop(0)
        elif arg.startswith("--nproc="):
            nproc = arg.partition("=")[2]
        else:
            rest.append(arg)
    return nproc or "1", rest


def main(argv: list[str] | None = None) -> None:
    """Exec ``script`` (the first argument) in one process or under torchrun, as ``--nproc`` says."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0].startswith("-"):
        print("usage: python -m segmodels.training.launch script.py [--nproc N] [args...]", file=sys.stderr)
        raise SystemExit(2)
    nproc, rest = split_nproc(args[1:])
    try:
        command = launch_command(int(nproc), args[0], rest)
    except ValueError:
        print(f"segmodels train: error: nproc={nproc!r}: expected a whole number >= 1", file=sys.stderr)
        raise SystemExit(2) from None
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
