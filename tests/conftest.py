"""Shared fixtures: an isolated environment for every test, the embedded lakeFS server and a connected client,
new sqlite MLflow stores and small prepared demo data sets.

Tests: two tiers. ``python -m pytest -q -m "not slow"`` before each commit (goal: under 3 minutes on a 2-core
machine; ``python benchmarks/test_tiers.py`` measures it and names its slowest tests); ``python -m pytest -q``, what
CI runs, adds the slow tier. Mark a test ``@pytest.mark.slow`` when it runs ``mlflow run`` or a chain of step
processes, a step on a terminal, a kill -9, several epochs of training or data at scale, and keep a quick test of
its concern in the fast tier."""

from __future__ import annotations

import logging
import os
import select
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import mlflow
import pytest
import sqlalchemy
from mlflow.store.db import utils as mlflow_db_utils
from mlflow.tracking import fluent as mlflow_fluent

from embedded_lakefs import create_server
from segmodels.config import load_config
from segmodels.data import generate_demo_dataset, prepare_dataset
from segmodels.versioning import LakeFS, LakeFSSettings
from segmodels.versioning import settings as versioning_settings


@pytest.fixture(autouse=True)
def isolated_lakefs_environment(tmp_path_factory, monkeypatch):
    """Point ``SEGMODELS_HOME`` and the lakectl config at temp paths and clear ``LAKECTL_*`` variables,
    so no test reads the user's ``~/.lakectl.yaml`` or ``./.segmodels`` (unless it sets them itself)."""
    home = tmp_path_factory.mktemp("segmodels-home")
    monkeypatch.setenv("SEGMODELS_HOME", str(home))
    for key in [k for k in os.environ if k.startswith("LAKECTL_")]:
        monkeypatch.delenv(key)
    lakectl_yaml = home / "lakectl.yaml"
    monkeypatch.setattr(versioning_settings, "lakectl_config_path", lambda: lakectl_yaml)
    return home


@pytest.fixture(autouse=True)
def fresh_boto3_default_session():
    """boto3's default session keeps the credentials it first read from the environment: a test that set
    ``AWS_ACCESS_KEY_ID`` (a moto server's) would sign every later ``boto3.client`` (MLflow's S3 artifacts) with it."""
    import boto3

    boto3.DEFAULT_SESSION = None
    yield
    boto3.DEFAULT_SESSION = None


@pytest.fixture(scope="session")
def lakefs_server(tmp_path_factory):
    """An embedded lakeFS server over a temp data dir, serving from a thread for the whole session."""
    server = create_server(tmp_path_factory.mktemp("lakefs-server")).start_in_thread()
    yield server
    server.shutdown()


@pytest.fixture
def lakefs_settings(lakefs_server) -> LakeFSSettings:
    return LakeFSSettings(lakefs_server.endpoint, lakefs_server.access_key_id, lakefs_server.secret_access_key)


@pytest.fixture
def lakefs(lakefs_settings, tmp_path) -> LakeFS:
    """A ``LakeFS`` client connected to the session's embedded server, with its cache in ``tmp_path``."""
    return LakeFS(lakefs_settings, home=tmp_path / "segmodels-home")


@pytest.fixture
def repo_name() -> str:
    """A repository name unique to the test (the session server is shared)."""
    return f"test-{uuid.uuid4().hex[:12]}"


# What every test starts from, taken before any fixture ran: a module-scoped fixture that runs a step in-process
# (mlflow.set_experiment exports MLFLOW_EXPERIMENT_ID, system metrics set MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING,
# run_step_cli sets the segmodels logger to INFO) is set up before a test's own fixtures, so restoring what a test
# found would keep its state for every later module.
MLFLOW_ENVIRONMENT = {key: value for key, value in os.environ.items() if key.startswith("MLFLOW_")}
SEGMODELS_LOG_LEVEL = logging.getLogger("segmodels").level


@pytest.fixture(autouse=True)
def isolated_mlflow_state():
    """Leave no MLflow process state behind: a test's tracking URI or active experiment (set with
    ``mlflow.set_experiment`` on a temp store, which also exports ``MLFLOW_EXPERIMENT_ID``), or a module
    fixture's, must not leak into the next test: each ends with the session's starting ``MLFLOW_*`` variables."""
    yield
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    mlflow_fluent._active_experiment_id = None  # MLflow has no public way to unset it
    for key in [key for key in os.environ if key.startswith("MLFLOW_")]:
        del os.environ[key]
    os.environ.update(MLFLOW_ENVIRONMENT)


@pytest.fixture(autouse=True)
def isolated_segmodels_log_level():
    """Leave the ``segmodels`` logger's level as the session found it: a test or module fixture that runs a step
    in-process (``run_step_cli`` sets it to INFO, as a step's process should) must not change what later tests
    capture."""
    yield
    logging.getLogger("segmodels").setLevel(SEGMODELS_LOG_LEVEL)


@pytest.fixture(scope="session")
def new_sqlite_store(tmp_path_factory):
    """Make a new, empty sqlite MLflow store at a path and return its URI. Each is a copy of one store whose tables
    MLflow's migrations made once per session (about a second a store); it holds no experiment, so MLflow adds the
    Default one when it first opens the copy, as it does for a store it makes itself."""
    template = tmp_path_factory.mktemp("mlflow-store") / "mlflow.db"
    engine = sqlalchemy.create_engine(f"sqlite:///{template}")
    mlflow_db_utils._initialize_tables(engine)  # MLflow has no public way to make the tables alone
    engine.dispose()

    def make(path: Path) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"

    return make


@pytest.fixture(scope="session")
def tiny_demo_dataset(tmp_path_factory):
    """Factory of small prepared demo data sets (32x32 unless told, a quarter for validation, no test split)."""

    def make(num_images: int, seed: int, image_size: int = 32):
        root = tmp_path_factory.mktemp(f"demo-{num_images}-{seed}")
        source = generate_demo_dataset(root / "source", num_images=num_images, image_size=image_size, seed=seed)
        cfg = load_config("ingest", ["data.val_fraction=0.25", "data.test_fraction=0.0"])
        return prepare_dataset(source, root / "data", cfg.data, on_error=cfg.on_error, split_seed=cfg.split_seed).root

    return make


class PtyChild:
    """A command with stdin/stdout/stderr on the slave side of a pseudo-terminal; the test drives it
    from the master side, every read bounded by one overall deadline."""

    def __init__(self, command: list[str], timeout: float = 60.0, **popen) -> None:
        self.deadline = time.monotonic() + timeout
        self.master, slave = os.openpty()
        try:
            self.proc = subprocess.Popen(
                command, stdin=slave, stdout=slave, stderr=slave, start_new_session=True, **popen
            )
        finally:
            os.close(slave)
        self.output = ""

    def _read_some(self) -> bool:
        """Read what the child has written so far; False once the slave side is closed (child gone)."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"child timed out; output so far:\n{self.output}")
        ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
        if not ready:
            return True
        try:
            data = os.read(self.master, 4096)
        except OSError:  # EIO: every slave descriptor is closed
            return False
        self.output += data.decode("utf-8", "replace").replace("\r\n", "\n")
        return bool(data)

    def expect(self, text: str, count: int = 1) -> None:
        """Read until ``text`` has appeared ``count`` times in the output."""
        while self.output.count(text) < count:
            if not self._read_some():
                raise AssertionError(f"child ended before {text!r} x{count}; output:\n{self.output}")

    def send(self, data: str) -> None:
        os.write(self.master, data.encode())

    def finish(self) -> int:
        """Read to the end of the child's output and return its exit code."""
        while self._read_some():
            if self.proc.poll() is not None and not select.select([self.master], [], [], 0.2)[0]:
                break
        return self.proc.wait(timeout=max(self.deadline - time.monotonic(), 1.0))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


@pytest.fixture
def pty_process():
    """Start commands on pseudo-terminals (:class:`PtyChild`); each is killed at the end of the test."""
    children = []

    def start(command: list[str], **popen) -> PtyChild:
        children.append(PtyChild(command, **popen))
        return children[-1]

    yield start
    for child in children:
        child.close()
