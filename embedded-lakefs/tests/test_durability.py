"""A server killed with SIGKILL mid-upload or mid-commit restarts consistent: before or after, never between."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import lakefs_sdk
import pytest
from lakefs_sdk.client import LakeFSClient

from embedded_lakefs import create_server
from embedded_lakefs.datadir import CLIENTS_LOCK_FILE, read_server_state, spawn_lock


def is_healthy(endpoint: str) -> bool:
    """Whether a lakeFS server answers its health check at ``endpoint``."""
    try:
        with urllib.request.urlopen(endpoint + "/api/v1/healthcheck", timeout=2) as response:
            return response.status == 204
    except (urllib.error.URLError, OSError, ValueError):
        return False


class Client:
    """An SDK client of one server process, and the few calls these tests make with it."""

    def __init__(self, endpoint: str, keys: dict, retries: int | None = None):
        self.endpoint, self.keys = endpoint, keys
        config = lakefs_sdk.Configuration(
            host=endpoint + "/api/v1", username=keys["access_key_id"], password=keys["secret_access_key"]
        )
        config.retries = retries  # 0: a call the server dies under fails instead of being sent again
        self.sdk = LakeFSClient(config)

    def basic_auth(self) -> str:
        token = f"{self.keys['access_key_id']}:{self.keys['secret_access_key']}"
        return "Basic " + base64.b64encode(token.encode()).decode()

    def create_repository(self, repo: str) -> None:
        self.sdk.repositories_api.create_repository(
            lakefs_sdk.RepositoryCreation(name=repo, storage_namespace=f"local://{repo}", default_branch="main")
        )

    def upload(self, repo: str, branch: str, path: str, content: bytes) -> None:
        self.sdk.objects_api.upload_object(repo, branch, path, content=content)

    def upload_directory(self, repo: str, branch: str, source: Path, prefix: str) -> None:
        for file in sorted(source.iterdir()):
            self.upload(repo, branch, f"{prefix}/{file.name}", file.read_bytes())

    def commit(self, repo: str, branch: str, message: str) -> str:
        return self.sdk.commits_api.commit(repo, branch, lakefs_sdk.CommitCreation(message=message)).id

    def head(self, repo: str, branch: str) -> str:
        return self.sdk.branches_api.get_branch(repo, branch).commit_id

    def parents(self, repo: str, commit_id: str) -> list[str]:
        return self.sdk.commits_api.get_commit(repo, commit_id).parents

    def paths(self, repo: str, ref: str) -> list[str]:
        listed = self.sdk.objects_api.list_objects(repo, ref, amount=1000)
        assert not listed.pagination.has_more
        return [o.path for o in listed.results]

    def has_uncommitted_changes(self, repo: str, branch: str) -> bool:
        return bool(self.sdk.branches_api.diff_branch(repo, branch, amount=1).results)


class ServerProcess:
    """``python -m embedded_lakefs`` over ``data_dir`` in a subprocess that tests may SIGKILL."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.process: subprocess.Popen | None = None

    def start(self, retries: int | None = None) -> Client:
        """Start the server and return a client of it."""
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
                    return Client(endpoint, json.loads((self.data_dir / "credentials.json").read_text()), retries)
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


def test_kill_during_upload_leaves_no_partial_object(server_process):
    client = server_process.start()
    client.create_repository("durable")
    client.upload("durable", "main", "small.txt", b"committed")
    client.commit("durable", "main", "before")
    host, port = client.endpoint.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(
            (
                f"POST /api/v1/repositories/durable/branches/main/objects?path=big.bin HTTP/1.1\r\n"
                f"Host: {host}\r\nAuthorization: {client.basic_auth()}\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {20 << 20}\r\n\r\n"
            ).encode()
        )
        conn.sendall(os.urandom(8 << 20))
        time.sleep(0.2)
        server_process.kill()
    client = server_process.start()
    with pytest.raises(lakefs_sdk.exceptions.NotFoundException) as not_found:
        client.sdk.objects_api.stat_object("durable", "main", "big.bin")
    assert not_found.value.status == 404
    assert client.paths("durable", "main") == ["small.txt"]
    assert not client.has_uncommitted_changes("durable", "main")
    assert list((server_process.data_dir / "blobs" / "tmp").iterdir()) == []


def staged_files(server_process, tmp_path) -> tuple[Client, Path]:
    """A client (no retries) of a fresh server whose repository ``durable`` has 300 files staged on main, and their
    folder."""
    client = server_process.start(retries=0)
    client.create_repository("durable")
    source = tmp_path / "src"
    source.mkdir()
    for i in range(300):
        (source / f"f{i:03d}.txt").write_text(str(i))
    client.upload_directory("durable", "main", source, prefix="data")
    return client, source


def kill_during(server_process, call, delay: float) -> Client:
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
    return server_process.start()


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.03, 0.08])
def test_kill_during_commit_is_all_or_nothing(server_process, tmp_path, delay):
    client, _ = staged_files(server_process, tmp_path)
    before = client.head("durable", "main")
    client = kill_during(server_process, lambda: client.commit("durable", "main", "interrupted?"), delay)
    head = client.head("durable", "main")
    assert sorted(client.paths("durable", "main")) == sorted(f"data/f{i:03d}.txt" for i in range(300))
    if head == before:  # not committed: every change still staged
        assert client.has_uncommitted_changes("durable", "main")
        assert client.paths("durable", "main@") == []
    else:  # committed: the whole tree, nothing left staged
        assert client.parents("durable", head) == [before]
        assert not client.has_uncommitted_changes("durable", "main")
        assert len(client.paths("durable", head)) == 300


@pytest.mark.slow  # 450 uploads and a restart each: 5-7 s
@pytest.mark.parametrize("delay", [0.0, 0.01, 0.03, 0.08])
def test_kill_during_merge_is_all_or_nothing(server_process, tmp_path, delay):
    client, source = staged_files(server_process, tmp_path)
    client.commit("durable", "main", "base")
    client.sdk.branches_api.create_branch("durable", lakefs_sdk.BranchCreation(name="feature", source="main"))
    for i in range(0, 300, 2):
        (source / f"f{i:03d}.txt").write_text(f"changed {i}")
    client.upload_directory("durable", "feature", source, prefix="data")
    client.commit("durable", "feature", "change half")
    client.upload("durable", "main", "other.txt", b"main moved on")
    before = client.commit("durable", "main", "meanwhile on main")
    feature = client.head("durable", "feature")
    merge = client.sdk.refs_api.merge_into_branch
    client = kill_during(server_process, lambda: merge("durable", "feature", "main"), delay)
    head = client.head("durable", "main")
    changed = client.sdk.objects_api.get_object("durable", "main", "data/f000.txt")
    if head == before:
        assert bytes(changed) == b"0"
    else:
        assert client.parents("durable", head) == [before, feature]
        assert bytes(changed) == b"changed 0"
        assert bytes(client.sdk.objects_api.get_object("durable", "main", "data/f001.txt")) == b"1"
    assert len(client.paths("durable", "main")) == 301
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
