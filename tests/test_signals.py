"""Clean exits (issue 25, case 11): SIGTERM stops a step like an error, and temporary folders that dead processes
left are swept."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from segmodels.pipeline.exits import step_scratch, sweep_dead_scratch
from segmodels.tracking import lineage
from segmodels.versioning import ephemeral
from segmodels.versioning.ephemeral import host_id, process_start

PROJECT = Path(__file__).resolve().parents[1]


class TrickleHandler(http.server.BaseHTTPRequestHandler):
    """Announces a 100 MB archive and sends one byte every 0.1 s until the client goes away."""

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", str(100 << 20))
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"\0")
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            return

    def log_message(self, *args):
        pass


@pytest.fixture
def trickling_source():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TrickleHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/data.zip"
    server.shutdown()


def wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    pytest.fail(f"no {what} within {seconds} s")


@pytest.mark.slow
def test_sigterm_during_an_ingest_download_cleans_up_and_fails_the_run(
    tmp_path, lakefs_server, lakefs, repo_name, trickling_source
):
    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LAKECTL_", "MLFLOW_"))}
    env.update(
        {
            "LAKECTL_SERVER_ENDPOINT_URL": lakefs_server.endpoint,
            "LAKECTL_CREDENTIALS_ACCESS_KEY_ID": lakefs_server.access_key_id,
            "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY": lakefs_server.secret_access_key,
            "MLFLOW_TRACKING_URI": tracking_uri,
            "TMPDIR": str(scratch_root),
            "SEGMODELS_HOME": str(tmp_path / "home"),
        }
    )
    step = subprocess.Popen(
        [sys.executable, "steps/ingest.py", "--source", trickling_source, "--repo", repo_name],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        download = wait_for(
            lambda: list(scratch_root.glob("segmodels-*/segmodels-source-*/data.zip")), 120, "download in progress"
        )
        assert f"-{step.pid}-" in download[0].parts[-3], "the scratch folder names its process"
        step.send_signal(signal.SIGTERM)
        _, stderr = step.communicate(timeout=120)
    finally:
        step.kill()
    assert step.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == (
        "segmodels ingest: error: stopped by SIGTERM (temporary files and branches removed, run marked failed)"
    )
    assert not list(scratch_root.iterdir()), "no temporary folder left"
    mlflow.set_tracking_uri(tracking_uri)
    try:
        [run] = MlflowClient().search_runs(["0"], f"tags.`{lineage.TAG_STEP}` = 'ingest'")
    finally:
        mlflow.set_tracking_uri(None)
    assert run.info.status == "FAILED"
    assert not [
        branch.id
        for branch in lakefs.sdk.branches_api.list_branches(repo_name).results
        if branch.id.startswith(ephemeral.PREFIX)
    ], "no ephemeral branch left"


def test_scratch_folders_of_dead_processes_are_swept_and_live_ones_kept(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    me = os.getpid()
    dead = tmp_path / f"segmodels-{host_id()}-{dead_pid}-0-abc"
    reused_pid = tmp_path / f"segmodels-{host_id()}-{me}-{process_start(me) + 1}-abc"  # this pid, another start
    alive = tmp_path / f"segmodels-{host_id()}-{me}-{process_start(me)}-abc"
    other_host = tmp_path / f"segmodels-{'0' * 10}-{dead_pid}-0-abc"
    unrelated = tmp_path / "segmodels-source-abc"
    for folder in (dead, reused_pid, alive, other_host, unrelated):
        (folder / "part").mkdir(parents=True)
    if process_start(dead_pid) is not None:
        pytest.skip("the finished process's pid was reused at once")

    sweep_dead_scratch(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (alive, other_host, unrelated))


def test_temporary_folders_of_a_step_live_in_its_scratch_folder_removed_after(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(KeyboardInterrupt), step_scratch() as scratch:
        inner = Path(tempfile.mkdtemp(prefix="segmodels-source-"))
        assert inner.parent == scratch and scratch.parent == tmp_path
        raise KeyboardInterrupt
    assert not list(tmp_path.iterdir()) and tempfile.tempdir == str(tmp_path)
