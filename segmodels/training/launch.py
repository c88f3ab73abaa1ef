"""``python -m segmodels.training.launch --nproc N script.py args...``: run a training script in one process,
or, for N > 1, as N data-parallel processes under torchrun (DDP; gloo on CPU, NCCL on GPUs)."""

from __future__ import annotations

import argparse
import os
import sys


def launch_command(nproc: int, script: str, args: list[str]) -> list[str]:
    """The command line that runs ``script`` with ``args`` in ``nproc`` processes."""
    if nproc < 1:
        raise ValueError(f"nproc={nproc}: expected a whole number >= 1")
    if nproc == 1:
        return [sys.executable, script, *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", script, *args]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m segmodels.training.launch", description=__doc__)
    parser.add_argument("--nproc", default="1", help="processes (one per GPU); 1 runs the script directly")
    parser.add_argument("script")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args(argv)
    try:
        command = launch_command(int(options.nproc or 1), options.script, options.args)
    except ValueError as exc:
        print(f"segmodels train: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
