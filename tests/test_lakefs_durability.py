"""A server killed with SIGKILL mid-upload or mid-commit restarts consistent: before or after, never between."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import lakefs_sdk
import pytest

from embedded_lakefs import create_server
from embedded_lakefs.datadir import CLIENTS_LOCK_FILE, read_server_state, spawn_lock
from segmodels.versioning import LakeFS, LakeFSError, LakeFSSettings
from segmodels.versioning.embedded import is_healthy


class ServerProcess:
    """``python -m embedded_lakefs`` over ``data_dir`` in a subprocess that tests may SIGKILL."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.process: subprocess.Popen | None = None

    def start(self) -> LakeFSSettings:
        state = self.data_dir / "server.json"
        state.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "embedded_lakefs", "--data-dir", str(self.data_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if state.exists():
                endpoint = json.loads(state.read_text())["endpoint"]
                if is_healthy(endpoint):
                    keys = json.loads((self.data_dir / "credentials.json").read_text())
                    return LakeFSSettings(endpoint, keys["access_key_id"], keys["secret_access_key"])
            time.sleep(0.05)
        raise RuntimeError("server did not start")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def server_process(tmp_path):
    server = ServerProcess(tmp_path / "data")
    yield server
    if server.process and server.process.poll() is None:
        server.kill()


def test_kill_during_upload_leaves_no_partial_object(server_process, tmp_path):
    client = LakeFS(server_process.start(), home=tmp_path / "home")
    client.ensure_repository("durable")
    (tmp_path / "small.txt").write_bytes(b"committed")
    client.upload_file("durable", "main", "small.txt", tmp_path / "small.txt")
    client.commit("durable", "main", "before")
    host, port = client.settings.endpoint.removeprefix("http://").split(":")
    headers = client.sdk.objects_api.api_client.default_headers.copy()
    client.sdk.objects_api.api_client.update_params_for_auth(headers, None, ["basic_auth"], "", "POST", None)
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(
            (
                f"POST /api/v1/repositories/durable/branches/main/objects?path=big.bin HTTP/1.1\r\n"
                f"Host: {host}\r\nAuthorization: {headers['Authorization']}\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {20 << 20}\r\n\r\n"
            ).encode()
        )
        conn.sendall(os.urandom(8 << 20))
        time.sleep(0.2)
        server_process.kill()
    client = LakeFS(server_process.start(), home=tmp_path / "home")
    with pytest.raises(LakeFSError, match="HTTP 404"):
        client._call("stat", client.sdk.objects_api.stat_object, "durable", "main", "big.bin")
    assert [o.path for o in client.list_objects("durable", "main")] == ["small.txt"]
    assert not client.has_uncommitted_changes("durable", "main")
    assert list((server_process.data_dir / "blobs" / "tmp").iterdir()) == []


def staged_files(server_process, tmp_path) -> tuple[LakeFS, Path]:
    """A client of a fresh server whose repository ``durable`` has 300 files staged on main, and their folder."""
    client = LakeFS(server_process.start(), home=tmp_path / "home", attempts=1)
    client.ensure_repository("durable")
    source = tmp_path / "src"
    source.mkdir()
    for i in range(300):
        (source / f"f{i:03d}.txt").write_text(str(i))
    client.upload_directory("durable", "main", source, prefix="data")
    return client, source


def kill_during(server_process, tmp_path, call, delay: float) -> LakeFS:
    """Start ``call`` (a request), SIGKILL the server ``delay`` seconds later, restart it: a client of the new one."""

    def call_ignoring_errors() -> None:
        try:
            call()
        except Exception:  # noqa: BLE001 - the server was killed under it
            pass

    thread = threading.Thread(target=call_ignoring_errors)
    thread.start()
    time.sleep(delay)
    server_process.kill()
    thread.join()
    return LakeFS(server_process.start(), home=tmp_path / "home")


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.03, 0.08])
def test_kill_during_commit_is_all_or_nothing(server_process, tmp_path, delay):
    client, _ = staged_files(server_process, tmp_path)
    before = client.resolve_commit("durable", "main")
    client = kill_during(server_process, tmp_path, lambda: client.commit("durable", "main", "interrupted?"), delay)
    head = client.resolve_commit("durable", "main")
    visible = sorted(o.path for o in client.list_objects("durable", "main"))
    assert visible == sorted(f"data/f{i:03d}.txt" for i in range(300))
    if head == before:  # not committed: every change still staged
        assert client.has_uncommitted_changes("durable", "main")
        assert list(client.list_objects("durable", "main@")) == []
    else:  # committed: the whole tree, nothing left staged
        assert client.get_commit("durable", head).parents == [before]
        assert not client.has_uncommitted_changes("durable", "main")
        assert len(list(client.list_objects("durable", head))) == 300


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.03, 0.08])
def test_kill_during_merge_is_all_or_nothing(server_process, tmp_path, delay):
    client, source = staged_files(server_process, tmp_path)
    client.commit("durable", "main", "base")
    client.sdk.branches_api.create_branch("durable", lakefs_sdk.BranchCreation(name="feature", source="main"))
    for i in range(0, 300, 2):
        (source / f"f{i:03d}.txt").write_text(f"changed {i}")
    client.upload_directory("durable", "feature", source, prefix="data")
    client.commit("durable", "feature", "change half")
    (tmp_path / "other.txt").write_text("main moved on")
    client.upload_file("durable", "main", "other.txt", tmp_path / "other.txt")
    before = client.commit("durable", "main", "meanwhile on main").id
    feature = client.resolve_commit("durable", "feature")
    merge = client.sdk.refs_api.merge_into_branch
    client = kill_during(server_process, tmp_path, lambda: merge("durable", "feature", "main"), delay)
    head = client.resolve_commit("durable", "main")
    changed = client.sdk.objects_api.get_object("durable", "main", "data/f000.txt")
    if head == before:
        assert bytes(changed) == b"0"
    else:
        assert client.get_commit("durable", head).parents == [before, feature]
        assert bytes(changed) == b"changed 0"
        assert bytes(client.sdk.objects_api.get_object("durable", "main", "data/f001.txt")) == b"1"
    assert len(list(client.list_objects("durable", "main"))) == 301
    assert not client.has_uncommitted_changes("durable", "main")


def test_idle_timeout_stops_the_server_and_clears_its_state(tmp_path):
    data_dir = tmp_path / "data"
    process = subprocess.Popen(
        [sys.executable, "-m", "embedded_lakefs", "--data-dir", str(data_dir), "--idle-timeout", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert not (data_dir / "server.json").exists()


def test_idle_server_does_not_stop_while_a_client_holds_the_spawn_lock(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "embedded_lakefs", "--data-dir", str(data_dir), "--idle-timeout", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with spawn_lock(data_dir):  # as a client finding the server holds it
            deadline = time.monotonic() + 30
            while not ((state := read_server_state(data_dir)) and is_healthy(state.endpoint)):
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.05)
            time.sleep(3)  # idle for longer than its timeout
            assert process.poll() is None
            assert read_server_state(data_dir) == state
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert read_server_state(data_dir) is None


def test_idle_server_stays_up_while_a_client_process_holds_the_clients_lock(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    log = tmp_path / "server.log"
    with open(data_dir / CLIENTS_LOCK_FILE, "a+") as clients:
        fcntl.flock(clients, fcntl.LOCK_SH)  # as a process that got the server's settings holds it
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "embedded_lakefs", "--data-dir", str(data_dir), "--idle-timeout", "1"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 60
            while "staying up while client" not in log.read_text():  # idle for longer than its timeout
                assert process.poll() is None, f"server stopped while a client lived:\n{log.read_text()}"
                assert time.monotonic() < deadline, "server never reached its idle timeout"
                time.sleep(0.05)
            state = read_server_state(data_dir)
            assert process.poll() is None and is_healthy(state.endpoint)
        except BaseException:
            process.kill()
            raise
    try:  # the client gone (its lock closed), the server stops
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert read_server_state(data_dir) is None
    assert "with no client connected, shutting down" in log.read_text()


def test_second_server_on_same_data_dir_is_refused(tmp_path):
    first = create_server(tmp_path / "data")
    try:
        with pytest.raises(RuntimeError, match="another embedded lakeFS server"):
            create_server(tmp_path / "data")
    finally:
        first.shutdown()
