"""Start (once) and find the embedded lakeFS server of a segmodels home folder."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..lakefs_server.auth import Credentials
from .errors import LakeFSError
from .settings import API_PATH, LakeFSSettings

IDLE_TIMEOUT_SECONDS = 900
START_TIMEOUT_SECONDS = 60
STATE_FILE = "server.json"
LOG_FILE = "server.log"


def segmodels_home(home: Path | None = None) -> Path:
    """``home``, else ``$SEGMODELS_HOME``, else ``./.segmodels`` (absolute)."""
    return Path(home or os.environ.get("SEGMODELS_HOME") or ".segmodels").absolute()


def is_healthy(endpoint: str, timeout: float = 2.0) -> bool:
    """Whether a lakeFS server answers its health check at ``endpoint``."""
    try:
        with urllib.request.urlopen(endpoint + API_PATH + "/healthcheck", timeout=timeout) as response:
            return response.status == 204
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _running_endpoint(data_dir: Path) -> str | None:
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    endpoint = state.get("endpoint") if isinstance(state, dict) else None
    return endpoint if isinstance(endpoint, str) and is_healthy(endpoint) else None


def ensure_embedded_server(home: Path | None = None) -> LakeFSSettings:
    """Settings of the embedded server over ``<home>/lakefs``, spawning it (detached) unless it answers."""
    data_dir = segmodels_home(home) / "lakefs"
    data_dir.mkdir(parents=True, exist_ok=True)
    credentials = Credentials.load_or_create(data_dir / "credentials.json")
    with open(data_dir / "spawn.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one spawner per data dir at a time
        endpoint = _running_endpoint(data_dir) or _spawn(data_dir)
    return LakeFSSettings(endpoint, credentials.access_key_id, credentials.secret_access_key)


def _spawn(data_dir: Path) -> str:
    log_path = data_dir / LOG_FILE
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "segmodels.lakefs_server", "--data-dir", str(data_dir),
             "--idle-timeout", str(IDLE_TIMEOUT_SECONDS)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            close_fds=True)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:]
            raise LakeFSError(f"embedded lakeFS server over {data_dir} exited with code {process.returncode}: "
                              f"{tail[0] if tail else 'no output'} (log: {log_path})")
        try:
            state = json.loads((data_dir / STATE_FILE).read_text())
        except (OSError, ValueError):
            state = {}
        if state.get("pid") == process.pid and is_healthy(state.get("endpoint", "")):
            return state["endpoint"]
        time.sleep(0.05)
    process.kill()
    raise LakeFSError(f"embedded lakeFS server over {data_dir} did not become healthy within "
                      f"{START_TIMEOUT_SECONDS} s (log: {log_path})")
