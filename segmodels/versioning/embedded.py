"""Start (once) and find the embedded lakeFS server of a segmodels home folder."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Callable

from embedded_lakefs.datadir import (
    CLIENTS_LOCK_FILE,
    LOG_FILE,
    SERVER_LOCK_FILE,
    load_or_create_credentials,
    read_server_state,
    spawn_lock,
)
from segmodels.home import embedded_server_dir, segmodels_home

from .errors import LakeFSError
from .settings import API_PATH, LakeFSSettings

__all__ = ["ensure_embedded_server", "is_healthy", "segmodels_home"]

IDLE_TIMEOUT_SECONDS = 900
START_TIMEOUT_SECONDS = 60
POLL_SECONDS = 0.05

# data dir -> this process' open ``clients.lock`` there, shared-locked until the process dies (even by SIGKILL:
# the kernel drops the lock with the last descriptor). Only changed holding that data dir's spawn lock.
_client_locks: dict[Path, IO] = {}


def is_healthy(endpoint: str, timeout: float = 2.0) -> bool:
    """Whether a lakeFS server answers its health check at ``endpoint``."""
    try:
        with urllib.request.urlopen(endpoint + API_PATH + "/healthcheck", timeout=timeout) as response:
            return response.status == 204
    except (urllib.error.URLError, OSError, ValueError):
        return False


def ensure_embedded_server(home: Path | None = None) -> LakeFSSettings:
    """Settings of the embedded server over ``<home>/lakefs``, spawning it (detached) unless one runs there.

    Safe for concurrent callers, threads or processes: all get the same credentials and the same server.
    The calling process becomes a client of the server for the rest of its life: the server does not stop
    for idleness while it lives, so the settings stay good for it and for the child processes it hands them to.
    """
    data_dir = embedded_server_dir(home)
    data_dir.mkdir(parents=True, exist_ok=True)
    credentials = load_or_create_credentials(data_dir)
    with spawn_lock(data_dir):
        endpoint = _running_endpoint(data_dir) or _spawn(data_dir)
        _hold_client_lock(data_dir)  # under the spawn lock, where the server decides to stop: not mid-stop
    return LakeFSSettings(endpoint, credentials.access_key_id, credentials.secret_access_key)


def _hold_client_lock(data_dir: Path) -> None:
    """Hold a shared lock on ``data_dir/clients.lock`` until this process dies (once per data dir; again when
    the file was replaced, as when the data dir was deleted and made anew). Caller holds the spawn lock."""
    path = data_dir / CLIENTS_LOCK_FILE
    held = _client_locks.get(data_dir)
    if held is not None and _same_file(held, path):
        return
    lock = open(path, "a+")  # noqa: SIM115 (held open for the process's life) not inheritable: exec'd children (the server first) do not hold it
    fcntl.flock(lock, fcntl.LOCK_SH)
    _client_locks[data_dir] = lock
    if held is not None:
        held.close()


def _same_file(opened: IO, path: Path) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    fd = os.fstat(opened.fileno())
    return (fd.st_dev, fd.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _server_running(data_dir: Path) -> bool:
    """Whether a server holds ``data_dir``'s server lock (starting, serving or stopping). The kernel drops
    the lock of a dead process, so a ``server.json`` left by a killed server does not count."""
    with open(data_dir / SERVER_LOCK_FILE, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False  # closing the file releases the probe


def _await_endpoint(data_dir: Path, alive: Callable[[], bool], pid: int | None = None) -> str | None:
    """The endpoint ``server.json`` records (for process ``pid``, when given) once it answers; None as soon as
    ``alive()`` is false; a ``LakeFSError`` after ``START_TIMEOUT_SECONDS``."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while alive():
        state = read_server_state(data_dir)
        if state is not None and (pid is None or state.pid == pid) and is_healthy(state.endpoint):
            return state.endpoint
        if time.monotonic() > deadline:
            raise LakeFSError(
                f"embedded lakeFS server over {data_dir} did not answer within "
                f"{START_TIMEOUT_SECONDS} s (log: {data_dir / LOG_FILE})"
            )
        time.sleep(POLL_SECONDS)
    return None


def _running_endpoint(data_dir: Path) -> str | None:
    """The endpoint of the server running over ``data_dir`` (waiting while it starts), None when none runs."""
    return _await_endpoint(data_dir, lambda: _server_running(data_dir))


def _spawn(data_dir: Path) -> str:
    log_path = data_dir / LOG_FILE
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "embedded_lakefs",
                "--data-dir",
                str(data_dir),
                "--idle-timeout",
                str(IDLE_TIMEOUT_SECONDS),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    try:
        endpoint = _await_endpoint(data_dir, lambda: process.poll() is None, process.pid)
    except LakeFSError:
        process.kill()
        raise
    if endpoint is None:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:]
        raise LakeFSError(
            f"embedded lakeFS server over {data_dir} exited with code {process.returncode}: "
            f"{tail[0] if tail else 'no output'} (log: {log_path})"
        )
    return endpoint
