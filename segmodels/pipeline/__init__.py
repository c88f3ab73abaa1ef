"""The pipeline steps behind the MLproject entry points, and the one way a step script runs them.

Each ``steps/<name>.py`` script is a thin shell: it hands its arguments to :func:`run_step_cli`,
which composes ``conf/<name>.yaml`` with them and calls ``segmodels.pipeline.<name>.run(cfg)``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from segmodels.config import ConfigError, load_config, split_overrides

STEPS = ("ingest", "train", "register", "infer", "main")


class StepError(RuntimeError):
    """A step cannot go on; the message is the one line the user sees."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is a complete, user-facing reason (no traceback needed)."""
    from mlflow.exceptions import MlflowException

    from segmodels.data import DataValidationError
    from segmodels.versioning import LakeFSError

    return (StepError, ConfigError, LakeFSError, DataValidationError, MlflowException,
            FileNotFoundError, NotADirectoryError)


def run_step_cli(step: str, argv: Sequence[str] | None = None) -> None:
    """Run ``step`` from a command line of ``key=value`` overrides and ``--overrides "..."``.

    On a user error, print ``segmodels <step>: error: <reason>`` (then, indented, any detail lines such as
    a validation report's bad files) and exit with status 2.
    """
    parser = argparse.ArgumentParser(prog=f"steps/{step}.py", description=f"segmodels {step} step")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, key=value (empty value: keep default)")
    parser.add_argument("--overrides", dest="free_overrides", default="", help="more Hydra overrides, space separated")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s segmodels {step} %(levelname)s %(message)s")
    try:
        cfg = load_config(step, split_overrides(args.overrides, args.free_overrides))
        importlib.import_module(f"segmodels.pipeline.{step}").run(cfg)
    except user_errors() as exc:
        summary, *details = str(exc).strip().splitlines() or [type(exc).__name__]
        print(f"segmodels {step}: error: {summary.strip()}", file=sys.stderr)
        for line in details:  # e.g. a validation report: one bad file per line
            print(f"  {line.strip()}", file=sys.stderr)
        raise SystemExit(2) from None
