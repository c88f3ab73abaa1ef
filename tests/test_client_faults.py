"""The client against servers that fail: bounded waits, one quiet line, and no ephemeral branches left behind."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import lakefs_sdk
import pytest
import urllib3

from segmodels.versioning import LakeFS, LakeFSError, LakeFSSettings
from segmodels.versioning import client as client_module
from segmodels.versioning.client import RemoteObject
from segmodels.versioning.ephemeral import PREFIX, EphemeralBranch, host_id, process_start

CONNECT, READ, WINDOW = 0.5, 0.5, 1.0
SLACK = 2.5  # a loaded machine's scheduling; the bound itself is WINDOW + CONNECT + READ
BOUND = WINDOW + CONNECT + READ + SLACK


class SilentServer:
    """Accepts TCP connections and never answers (sends ``reply`` first, when given, then nothing). With
    ``trickle``, answers each request with ``trickle`` one byte at a time, ``interval`` seconds apart."""

    def __init__(self, reply: bytes = b"", trickle: bytes = b"", interval: float = 0.0):
        self.reply, self.trickle, self.interval = reply, trickle, interval
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.sock.settimeout(0.1)
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(conn)
            if self.reply:
                conn.sendall(self.reply)
            if self.trickle:
                threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        request = b""
        try:
            while b"\r\n\r\n" not in request:
                data = conn.recv(65536)
                if not data:
                    return
                request += data
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: %d\r\n\r\n" % len(self.trickle)
            )
            for byte in self.trickle:
                time.sleep(self.interval)
                conn.sendall(bytes([byte]))
        except OSError:
            pass  # the client gave up

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.sock.close()
        for conn in self.connections:
            conn.close()


@pytest.fixture
def serve():
    servers: list[SilentServer] = []

    def start(**kwargs) -> SilentServer:
        servers.append(SilentServer(**kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def quick_client(endpoint: str, home: Path, **kwargs) -> LakeFS:
    settings = LakeFSSettings(endpoint, "AK", "SK", connect_timeout=CONNECT, read_timeout=READ, retry_window=WINDOW)
    return LakeFS(settings, home=home, **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_one_line(error: LakeFSError, endpoint: str) -> None:
    text = str(error)
    assert "\n" not in text and text.startswith(f"lakeFS {endpoint}: "), text
    assert "unreachable after" in text and "HTTPConnection object" not in text, text


# -- bounded waits ------------------------------------------------------------------------------------------------
CALLS = {
    "sdk call": lambda client, tmp: client.get_commit("repo", "main"),
    "sdk listing": lambda client, tmp: list(client.list_objects("repo", "main")),
    "upload": lambda client, tmp: client.upload_file("repo", "main", "small.bin", tmp / "small.bin"),
    "big upload": lambda client, tmp: client.upload_file("repo", "main", "big.bin", tmp / "big.bin"),
    "download": lambda client, tmp: client.download_object(
        "repo", "main", RemoteObject("a.bin", "0" * 32, 1000), tmp / "out" / "a.bin"
    ),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_every_call_to_a_silent_server_fails_in_bounded_time(serve, tmp_path, call):
    (tmp_path / "small.bin").write_bytes(b"x" * 1000)
    if call == "big upload":  # more than the socket buffers take: the send itself stalls
        (tmp_path / "big.bin").write_bytes(os.urandom(1 << 20) * 48)
    server = serve()
    client = quick_client(server.endpoint, tmp_path / "home")
    start = time.monotonic()
    with pytest.raises(LakeFSError) as info:
        CALLS[call](client, tmp_path)
    elapsed = time.monotonic() - start
    assert READ <= elapsed < BOUND, f"{call}: failed after {elapsed:.1f} s: {info.value}"
    assert_one_line(info.value, server.endpoint)
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []  # no partial download left


def test_download_stalling_mid_body_fails_in_bounded_time(serve, tmp_path):
    server = serve(
        reply=b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10
    )
    client = quick_client(server.endpoint, tmp_path / "home")
    start = time.monotonic()
    with pytest.raises(LakeFSError, match=r"no answer within 0\.5 s") as info:
        client.download_object("repo", "main", RemoteObject("a.bin", "0" * 32, 1000), tmp_path / "out" / "a.bin")
    assert time.monotonic() - start < BOUND
    assert_one_line(info.value, server.endpoint)
    assert list((tmp_path / "out").iterdir()) == []  # no partial file


def test_read_timeout_is_per_read_not_per_transfer(serve, tmp_path):
    body = b"slowly!!"
    server = serve(trickle=body, interval=0.2)  # 1.6 s in all, never 0.5 s without a byte
    client = quick_client(server.endpoint, tmp_path / "home", attempts=1)
    client.download_object(
        "repo", "main", RemoteObject("a.bin", hashlib.md5(body).hexdigest(), len(body)), tmp_path / "a.bin"
    )
    assert (tmp_path / "a.bin").read_bytes() == body


def test_default_waits_are_bounded_and_configurable(monkeypatch):
    for name in ("CONNECT_TIMEOUT", "READ_TIMEOUT", "RETRY_WINDOW", "EPHEMERAL_MAX_AGE"):
        monkeypatch.delenv(f"SEGMODELS_LAKEFS_{name}", raising=False)
    settings = LakeFSSettings("http://lakefs:8000", "AK", "SK")
    assert (settings.connect_timeout, settings.read_timeout, settings.retry_window, settings.ephemeral_max_age) == (
        10.0,
        60.0,
        45.0,
        86400.0,
    )
    assert settings.retry_window + settings.connect_timeout + settings.read_timeout <= 120
    monkeypatch.setenv("SEGMODELS_LAKEFS_CONNECT_TIMEOUT", "2.5")
    monkeypatch.setenv("SEGMODELS_LAKEFS_READ_TIMEOUT", "7")
    monkeypatch.setenv("SEGMODELS_LAKEFS_RETRY_WINDOW", "3")
    monkeypatch.setenv("SEGMODELS_LAKEFS_EPHEMERAL_MAX_AGE", "600")
    settings = LakeFSSettings("http://lakefs:8000", "AK", "SK")
    assert (settings.connect_timeout, settings.read_timeout, settings.retry_window, settings.ephemeral_max_age) == (
        2.5,
        7.0,
        3.0,
        600.0,
    )
    client = LakeFS(settings)
    assert client.sdk.objects_api.api_client.rest_client.timeout == (2.5, 7.0)
    assert client.sdk.objects_api.api_client.configuration.retries is False
    monkeypatch.setenv("SEGMODELS_LAKEFS_READ_TIMEOUT", "soon")
    with pytest.raises(LakeFSError, match="SEGMODELS_LAKEFS_READ_TIMEOUT='soon'"):
        LakeFSSettings("http://lakefs:8000", "AK", "SK")


def test_parallel_transfers_stop_at_the_first_failure():
    calls = []

    def work(item: int) -> int:
        calls.append(item)
        if item == 0:
            raise LakeFSError("first fails")
        time.sleep(0.2)
        return item

    start = time.monotonic()
    with pytest.raises(LakeFSError, match="first fails"):
        client_module._parallel(work, range(50), workers=2)
    assert time.monotonic() - start < 2 and len(calls) < 10
    assert client_module._parallel(lambda i: i * i, range(5), workers=3) == [0, 1, 4, 9, 16]


# -- quiet failures -------------------------------------------------------------------------------------------
def test_closed_port_fails_with_one_quiet_line(tmp_path, caplog, capfd):
    endpoint = f"http://127.0.0.1:{free_port()}"
    client = quick_client(endpoint, tmp_path / "home", backoff=0.01)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(
        LakeFSError,
        match=r"resolve ref repo/main: server unreachable after 5 attempts .*"
        r"\(connection refused\)$",
    ) as info:
        client.get_commit("repo", "main")
    assert_one_line(info.value, endpoint)
    out, err = capfd.readouterr()
    assert "Retrying" not in out + err + caplog.text
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


CLOSED_PORT_SCRIPT = """
import logging, sys
from segmodels.versioning import LakeFS, LakeFSError, LakeFSSettings
logging.basicConfig(level=logging.INFO)  # as the steps log: urllib3's warnings would show
client = LakeFS(LakeFSSettings(sys.argv[1], "AK", "SK"), home=sys.argv[2], backoff=0.01)
try:
    client.get_commit("repo", "main")
except LakeFSError as exc:
    print(exc, file=sys.stderr)
"""


def test_closed_port_prints_only_the_error_line(tmp_path):
    """Logging set up as the steps do it, no pytest capture: urllib3's own retry warnings would reach stderr."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-c", CLOSED_PORT_SCRIPT, endpoint, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lakeFS {endpoint}: resolve ref repo/main: "), result.stderr


# -- leftovers of killed writers --------------------------------------------------------------------------------
WRITER_SCRIPT = """
import sys
from pathlib import Path
from segmodels.versioning import LakeFS, LakeFSSettings
endpoint, key, secret, repo, home, source, prefix = sys.argv[1:]
client = LakeFS(LakeFSSettings(endpoint, key, secret), home=Path(home))
with client.atomic_write(repo, "main", "write " + prefix) as write:
    client.upload_directory(repo, write.branch, source, prefix=prefix)
    print("staged", write.branch, flush=True)
    sys.stdin.readline()
print("merged", write.commit_id, flush=True)
"""


class Writer:
    """``atomic_write`` in a child process: stages ``prefix/`` then waits for a line on stdin to merge."""

    def __init__(self, settings: LakeFSSettings, repo: str, home: Path, source: Path, prefix: str):
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRITER_SCRIPT,
                settings.endpoint,
                settings.access_key_id,
                settings.secret_access_key,
                repo,
                str(home),
                str(source),
                prefix,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.output = b""

    def line(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.output:
            left = deadline - time.monotonic()
            assert left > 0, f"writer said nothing; output so far: {self.output!r}"
            if select.select([self.process.stdout], [], [], left)[0]:
                data = os.read(self.process.stdout.fileno(), 4096)
                assert data, f"writer ended (code {self.process.wait()}); output: {self.output!r}"
                self.output += data
        line, self.output = self.output.split(b"\n", 1)
        return line.decode()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def branch_names(lakefs: LakeFS, repo: str) -> set[str]:
    return {b.id for b in lakefs.sdk.branches_api.list_branches(repo, amount=1000).results}


def paths(lakefs: LakeFS, repo: str, ref: str) -> list[str]:
    return sorted(o.path for o in lakefs.list_objects(repo, ref))


def test_next_write_removes_branches_of_dead_writers_only(lakefs, lakefs_settings, repo_name, tmp_path):
    lakefs.ensure_repository(repo_name)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f.txt").write_text("data")
    lakefs.upload_file(repo_name, "main", "base.txt", tmp_path / "src" / "f.txt")
    base = lakefs.commit(repo_name, "main", "base").id

    with ExitStack() as stack:
        killed = Writer(lakefs_settings, repo_name, tmp_path / "home-k", tmp_path / "src", "killed")
        stack.callback(killed.close)
        live = Writer(lakefs_settings, repo_name, tmp_path / "home-l", tmp_path / "src", "live")
        stack.callback(live.close)
        killed_branch = killed.line().split()[1]
        live_branch = live.line().split()[1]
        in_process = ExitStack()  # an atomic write still open in this process
        stack.callback(in_process.close)
        open_write = in_process.enter_context(lakefs.atomic_write(repo_name, "main", "in-process"))
        lakefs.upload_directory(repo_name, open_write.branch, tmp_path / "src", prefix="inproc")

        assert paths(lakefs, repo_name, killed_branch) == ["base.txt", "killed/f.txt"]
        assert lakefs.has_uncommitted_changes(repo_name, killed_branch)
        killed.process.send_signal(signal.SIGKILL)
        killed.process.wait()

        now, here, live_start = int(time.time()), host_id(), process_start(live.process.pid)
        old = now - 10 * 86400
        fakes = {  # name -> whether the next write to main keeps it
            f"{PREFIX}main-{here}-{live.process.pid}-{live_start}-{old}-00000001": True,  # alive: at any age
            f"{PREFIX}main-{here}-{live.process.pid}-{live_start + 1}-{now}-00000002": False,  # pid reused
            f"{PREFIX}main-0123456789-{os.getpid()}-5-{now}-00000003": True,  # elsewhere: age unknown yet
            f"{PREFIX}main-0123456789-{os.getpid()}-5-{old}-00000004": False,  # elsewhere, too old
            f"{PREFIX}main-{here}-{os.getpid()}-{process_start(os.getpid())}-{now}-00000005": False,  # ours, closed
            f"{PREFIX}main-x-{here}-{killed.process.pid}-1-{old}-00000006": True,  # another target
            f"{PREFIX}main-{here}-{killed.process.pid}": True,  # not an ephemeral name
        }
        for name in fakes:
            lakefs.sdk.branches_api.create_branch(repo_name, lakefs_sdk.BranchCreation(name=name, source="main"))
        before = branch_names(lakefs, repo_name)
        assert {killed_branch, live_branch, open_write.branch} | set(fakes) <= before

        with lakefs.atomic_write(repo_name, "main", "next") as nxt:
            lakefs.upload_directory(repo_name, nxt.branch, tmp_path / "src", prefix="next")
            during = branch_names(lakefs, repo_name)
        assert killed_branch not in during
        assert {live_branch, open_write.branch, nxt.branch} <= during
        assert {name for name in fakes if name in during} == {name for name, kept in fakes.items() if kept}

        head = lakefs.get_commit(repo_name, "main")
        assert head.id == nxt.commit_id and base in head.parents
        assert paths(lakefs, repo_name, "main") == ["base.txt", "next/f.txt"]

        in_process.close()  # the in-process write merges, then the live writer
        assert open_write.changed
        live.process.stdin.write(b"go\n")
        live.process.stdin.flush()
        merged = live.line().split()
        assert merged[0] == "merged" and live.process.wait(timeout=30) == 0

    assert lakefs.resolve_commit(repo_name, "main") == merged[1]
    assert paths(lakefs, repo_name, "main") == ["base.txt", "inproc/f.txt", "live/f.txt", "next/f.txt"]
    assert branch_names(lakefs, repo_name) == {"main"} | {name for name, kept in fakes.items() if kept}


def test_ephemeral_names_are_valid_and_parse_back(lakefs, repo_name):
    long_a, long_b = "release-" + "a" * 120, "release-" + "a" * 119 + "b"
    for target in ["main", "feature-x_1", "tx-main-0123456789-1-2-3-abcdef01", long_a]:
        branch = EphemeralBranch.new(target)
        assert re.fullmatch(r"\w[-\w]*", branch.name) and len(branch.name) < 160, branch.name
        assert EphemeralBranch.parse(branch.name) == branch
        assert branch.writer_alive() is True and not branch.is_stale(time.time(), 1e-3, open_here=True)
    assert EphemeralBranch.new(long_a).target_key != EphemeralBranch.new(long_b).target_key
    assert EphemeralBranch.parse("main") is None and EphemeralBranch.parse(PREFIX + "main-1-2") is None
    lakefs.ensure_repository(repo_name)
    lakefs.ensure_branch(repo_name, long_a)
    with lakefs.atomic_write(repo_name, long_a, "long") as write:
        assert write.branch.startswith(PREFIX + "release-")
    assert branch_names(lakefs, repo_name) == {"main", long_a}


def test_writer_aged_out_only_when_its_liveness_is_unknown(lakefs_settings, repo_name, tmp_path):
    lakefs = LakeFS(replace(lakefs_settings, ephemeral_max_age=1.0), home=tmp_path / "home")
    lakefs.ensure_repository(repo_name)
    with lakefs.atomic_write(repo_name, "main", "outer") as outer:
        now = int(time.time())
        foreign = f"{PREFIX}main-0123456789-1-1-{now - 5}-0000000a"
        lakefs.sdk.branches_api.create_branch(repo_name, lakefs_sdk.BranchCreation(name=foreign, source="main"))
        with lakefs.atomic_write(repo_name, "main", "inner"):
            names = branch_names(lakefs, repo_name)
        assert outer.branch in names and foreign not in names
    assert branch_names(lakefs, repo_name) == {"main"}


def answer_lost_once(monkeypatch, api, name: str) -> list:
    """The first call of ``api.name`` reaches the server and does its work, then its answer is lost (a read
    timeout); later calls go through. Returns the list of the calls' outcomes."""
    real = getattr(api, name)
    outcomes: list = []

    def call(*args, **kwargs):
        result = real(*args, **kwargs)
        outcomes.append(result)
        if len(outcomes) == 1:
            raise urllib3.exceptions.ReadTimeoutError(None, "/api/v1", "Read timed out.")
        return result

    monkeypatch.setattr(api, name, call)
    return outcomes


def test_a_commit_or_merge_whose_answer_was_lost_is_done_once_and_reported_done(
    lakefs, repo_name, tmp_path, monkeypatch
):
    """The retry of a commit (or merge) that landed would get 400 "no changes"; the client finds its own commit
    by the request id in its metadata and returns it."""
    lakefs.ensure_repository(repo_name)
    (tmp_path / "f.txt").write_text("data")
    lakefs.upload_file(repo_name, "main", "f.txt", tmp_path / "f.txt")
    base = lakefs.resolve_commit(repo_name, "main")
    answer_lost_once(monkeypatch, lakefs.sdk.commits_api, "commit")
    committed = lakefs.commit(repo_name, "main", "once", {"k": "v"})
    assert committed.parents == [base] and committed.message == "once" and committed.metadata["k"] == "v"
    assert lakefs.resolve_commit(repo_name, "main") == committed.id
    assert [c.message for c in lakefs.sdk.refs_api.log_commits(repo_name, "main").results][:2] == [
        "once",
        "Repository created",
    ]

    lakefs.sdk.branches_api.create_branch(repo_name, lakefs_sdk.BranchCreation(name="feature", source="main"))
    lakefs.upload_file(repo_name, "feature", "g.txt", tmp_path / "f.txt")
    lakefs.commit(repo_name, "feature", "feature work")
    outcomes = answer_lost_once(monkeypatch, lakefs.sdk.refs_api, "merge_into_branch")
    merged = lakefs.merge(repo_name, "feature", "main", message="merge once")
    assert merged == outcomes[0].reference == lakefs.resolve_commit(repo_name, "main")
    assert lakefs.get_commit(repo_name, "main").parents == [committed.id, lakefs.resolve_commit(repo_name, "feature")]
    with pytest.raises(LakeFSError, match="no changes"):  # a real refusal is still reported
        lakefs.commit(repo_name, "main", "nothing staged")
