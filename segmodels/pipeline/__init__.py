"""The pipeline steps behind the MLproject entry points, and the one way a step script runs them.

Each ``steps/<name>.py`` script is a thin shell: it hands its command line to :func:`run_step_cli`, which
turns the parameters into Hydra overrides (:mod:`segmodels.pipeline.params`), composes ``conf/<name>.yaml``
with them and calls the step's ``run(cfg)`` from :data:`STEPS`.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Callable, Sequence

from omegaconf import DictConfig

from segmodels.config import ConfigError, load_config
from segmodels.progress import quiet_mlflow_transfers_on_pipes
from segmodels.redaction import install_excepthook, install_log_redaction, redact_text

STEPS: dict[str, str] = {  # entry point -> module whose run(cfg) does the work
    "ingest": "segmodels.pipeline.ingest",
    "train": "segmodels.pipeline.train",
    "register": "segmodels.pipeline.register",
    "infer": "segmodels.pipeline.infer",
    "main": "segmodels.pipeline.main",
    "reproduce": "segmodels.pipeline.reproduce",
}


class StepError(RuntimeError):
    """A step cannot go on; the message is the one line the user sees."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is a complete, user-facing reason (no traceback needed)."""
    from mlflow.exceptions import MlflowException

    from segmodels.data import DataValidationError
    from segmodels.tracking.models import ModelURIError
    from segmodels.versioning import LakeFSError

    return (
        StepError,
        ConfigError,
        LakeFSError,
        DataValidationError,
        MlflowException,
        ModelURIError,
        FileNotFoundError,
        NotADirectoryError,
    )


def step_function(step: str) -> Callable[[DictConfig], object]:
    """The ``run(cfg)`` of ``step`` (imported on demand: steps pull in torch, MLflow, lakeFS)."""
    return importlib.import_module(STEPS[step]).run


def configure_output(step: str) -> None:
    """What a step prints: segmodels' own records from INFO (results, progress), other libraries' from WARNING
    (matplotlib's font-cache notes are INFO records); on a pipe, as under ``mlflow run``, none of MLflow's
    artifact transfer bars (they redraw with carriage returns: :mod:`segmodels.progress` reports there instead)."""
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s segmodels {step} %(levelname)s %(message)s")
    logging.getLogger("segmodels").setLevel(logging.INFO)
    quiet_mlflow_transfers_on_pipes()


def run_step_cli(step: str, argv: Sequence[str] | None = None) -> None:
    """Run ``step`` from its command line (see :mod:`segmodels.pipeline.params`).

    On a user error, print ``segmodels <step>: error: <reason>`` (then, indented, any detail lines such as
    a validation report's bad files) and exit with status 2. Log records, these lines and the traceback of an
    unexpected error have credentials masked (a source URL's password or signature: :mod:`segmodels.redaction`).
    SIGTERM or SIGINT stops the step like an error (:mod:`segmodels.pipeline.exits`: clean-up runs, the run ends
    failed), then one line and exit status 128 + the signal's number.
    """
    from segmodels.pipeline.exits import Terminated, signals_raise, step_scratch
    from segmodels.pipeline.params import step_overrides

    configure_output(step)
    install_log_redaction()
    install_excepthook()
    try:
        overrides = step_overrides(step, sys.argv[1:] if argv is None else argv)
        cfg = load_config(step, overrides)
        if "interactive" in cfg and cfg.interactive:  # fail before the step's imports, never wait for input
            from segmodels.pipeline.interactive import INSTEAD, require_terminal

            require_terminal(INSTEAD[step])
        if step == "train" and cfg.plan.mode == "auto":  # experiment=auto: values from the data's fingerprint
            from segmodels.pipeline.plan import planned_config

            cfg = planned_config(cfg, overrides)
        with signals_raise(), step_scratch():
            step_function(step)(cfg)
    except Terminated as stop:
        print(
            f"segmodels {step}: error: stopped by {stop} (temporary files and branches removed, run marked failed)",
            file=sys.stderr,
        )
        raise SystemExit(128 + stop.signum) from None
    except Exception as exc:
        if not isinstance(exc, (StepError, ConfigError)) and not isinstance(exc, user_errors()):
            raise  # user_errors() imports MLflow: not for the errors found before the step starts
        summary, *details = redact_text(str(exc)).strip().splitlines() or [type(exc).__name__]
        print(f"segmodels {step}: error: {summary.strip()}", file=sys.stderr)
        for line in details:  # e.g. a validation report: one bad file per line
            print(f"  {line.strip()}", file=sys.stderr)
        raise SystemExit(2) from None
