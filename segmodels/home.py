"""The segmodels home folder: where segmodels keeps local state (caches, work folders) and the data directory
of its embedded lakeFS server (whose files ``embedded_lakefs.datadir`` describes)."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

HOME_ENV = "SEGMODELS_HOME"
DEFAULT_HOME = ".segmodels"  # the folder's name: in ~ by default, or in the working directory when present there
LAKEFS_DIR = "lakefs"


def segmodels_home(home: Path | None = None) -> Path:
    """The segmodels home folder (absolute): ``home``, else ``$SEGMODELS_HOME``, else ``./.segmodels`` when that
    folder already exists in the working directory (a project folder that kept its state there, as segmodels did
    before), else ``~/.segmodels``.

    The user-level default is what makes state survive ``mlflow run <git url>``: MLflow runs each such run in a
    fresh temporary checkout, which never holds a ``.segmodels`` (it is git-ignored), so every step of every
    checkout meets in ``~/.segmodels``. ``~`` is ``$HOME`` (:meth:`Path.home`)."""
    chosen = home or os.environ.get(HOME_ENV)
    if chosen:
        return Path(chosen).expanduser().absolute()
    local = Path(DEFAULT_HOME)
    if local.is_dir():
        _note_local_home(local.absolute())
        return local.absolute()
    try:
        return (Path.home() / DEFAULT_HOME).absolute()
    except (RuntimeError, KeyError):  # no $HOME and no passwd entry: the working directory is all there is
        return local.absolute()


@functools.cache
def _note_local_home(path: Path) -> None:
    """Say once per process and folder that a working directory's own ``.segmodels`` is in use."""
    logging.getLogger(__name__).info(
        "segmodels home: %s (it exists in the working directory; elsewhere the home is ~/%s, and $%s chooses one)",
        path,
        DEFAULT_HOME,
        HOME_ENV,
    )


def embedded_server_dir(home: Path | None = None) -> Path:
    """The embedded lakeFS server's data directory: ``<segmodels home>/lakefs``."""
    return segmodels_home(home) / LAKEFS_DIR
