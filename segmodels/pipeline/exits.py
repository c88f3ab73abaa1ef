"""Clean exits of a step: SIGTERM and SIGINT unwind like an error, and temporary folders name their process.

A signal raises :class:`Terminated` where the step is, so every ``finally`` block and context manager runs:
temporary folders are removed, ephemeral lakeFS branches deleted, the MLflow run ends FAILED (``main`` cancels
the child step it waits on). A second signal during that clean-up takes the default action (the process ends).

Every temporary folder a step makes lives in one folder of its own, ``<tmp>/segmodels-<host>-<pid>-<start>-*``
(:func:`step_scratch`), named like ephemeral branches (:mod:`segmodels.versioning.ephemeral`): a process killed
where no clean-up runs (SIGKILL, a power cut) leaves it behind, and the next step on this host removes it once
that process is gone.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from segmodels.versioning.ephemeral import host_id, process_alive, process_start

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
SCRATCH_PREFIX = "segmodels-"
_SCRATCH = re.compile(r"segmodels-(?P<host>[0-9a-f]{10})-(?P<pid>[0-9]+)-(?P<start>[0-9]+)-.+")


class Terminated(KeyboardInterrupt):
    """The step got SIGTERM or SIGINT (a ``KeyboardInterrupt``: no ``except Exception`` swallows it, and MLflow
    cancels a child run it waits on)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum: int, _frame) -> None:
    signal.signal(signum, signal.SIG_DFL)  # a second one ends the process, clean-up or not
    raise Terminated(signum)


@contextmanager
def signals_raise() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise :class:`Terminated` (the previous handlers come back after); in
    another thread than the main one, which cannot set handlers, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _raise_terminated) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def sweep_dead_scratch(root: Path) -> None:
    """Remove the scratch folders under ``root`` of processes on this host that are gone."""
    for folder in root.glob(f"{SCRATCH_PREFIX}*"):
        match = _SCRATCH.fullmatch(folder.name)
        if match and folder.is_dir() and process_alive(match["host"], int(match["pid"]), int(match["start"])) is False:
            shutil.rmtree(folder, ignore_errors=True)
            log.info("removed %s, left by process %s that is gone", folder, match["pid"])


@contextmanager
def step_scratch() -> Iterator[Path]:
    """A folder of this process that holds every temporary folder made within the block (``tempfile``'s default
    folder), removed after it; first the folders of dead processes are swept."""
    root = Path(tempfile.gettempdir())
    sweep_dead_scratch(root)
    pid = os.getpid()
    folder = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{host_id()}-{pid}-{process_start(pid) or 0}-", dir=root))
    saved, tempfile.tempdir = tempfile.tempdir, str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = saved
        shutil.rmtree(folder, ignore_errors=True)
