"""The embedded lakeFS server under slow clients: tricklers holding connections (authenticated uploads sending a
byte at a time, unauthenticated request heads, reconnecting when cut) must not keep health checks or
authenticated clients from being answered, each slow request is cut at its deadline, and the server's
connection threads stay bounded.

The server runs with small limits (a 2 s body deadline, 8 + 4 connections) so that each test takes seconds.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid

import pytest
from test_hostile import Conn, call, head, heads

from embedded_lakefs import create_server
from embedded_lakefs.transport import Limits

LIMITS = Limits(
    header_timeout=2.0,
    idle_timeout=2.0,
    body_timeout=30.0,
    body_deadline=2.0,
    min_body_rate=1024,
    max_connections=12,
    max_unauthenticated=4,
)
TRICKLERS = 20  # unauthenticated head tricklers: 5x the pool
UPLOADERS = LIMITS.max_connections - LIMITS.max_unauthenticated + 2  # slow uploads: 2 more than the pool (130/128)
ANSWER_BOUND = 3.0  # seconds a health check or an API call may take while tricklers hold connections


@pytest.fixture
def server(tmp_path):
    server = create_server(tmp_path / "data", limits=LIMITS).start_in_thread()
    yield server
    server.shutdown()


@pytest.fixture
def repo(server):
    name = f"slow-{uuid.uuid4().hex[:8]}"
    assert call(server, "POST", "/repositories", {"name": name, "storage_namespace": f"local://{name}"})[0] == 201
    return name


def connection_threads() -> int:
    """Connection threads of this process beyond those open when the module started (other modules' servers
    may hold keep-alive connections of their clients)."""
    return sum("process_request_thread" in t.name for t in threading.enumerate()) - BASELINE_THREADS[0]


@pytest.fixture(autouse=True)
def other_connections():
    """Count the connection threads that other servers of this process hold, before the test makes its own."""
    BASELINE_THREADS[0] = 0
    BASELINE_THREADS[0] = connection_threads()


BASELINE_THREADS = [0]


class Tricklers:
    """``count`` threads, each sending ``opening`` then one byte of ``trickle`` per ``pause`` seconds over a
    connection, reconnecting whenever the server closes it; records how each connection ended."""

    def __init__(self, server, count: int, opening: bytes, trickle: bytes, pause: float):
        self.server, self.opening, self.trickle, self.pause = server, opening, trickle, pause
        self.stop = threading.Event()
        self.ended: list[tuple[int | None, float]] = []  # (status answered or None, seconds the connection lived)
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(count)]

    def __enter__(self) -> Tricklers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _run(self) -> None:
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                conn = Conn(self.server, timeout=10)
            except OSError:
                time.sleep(self.pause)
                continue
            status = None
            try:
                conn.send(self.opening)
                conn.sock.settimeout(self.pause)
                for byte in self.trickle:
                    if self.stop.is_set():
                        return
                    try:
                        conn.sock.recv(1, socket.MSG_PEEK)
                        break  # answered or closed
                    except TimeoutError:
                        conn.send(bytes([byte]))
                conn.sock.settimeout(5)
                status = conn.response()[0]
            except (OSError, ValueError, IndexError):
                pass
            finally:
                conn.close()
            self.ended.append((status, time.monotonic() - start))


def assert_answered_while(server, tricklers: Tricklers, seconds: float, repo: str) -> int:
    """Health checks and authenticated calls answered in time for ``seconds``; the most connection threads seen."""
    most_threads = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for method, target, expected in (("GET", "/healthcheck", 204), ("GET", f"/repositories/{repo}", 200)):
            start = time.monotonic()
            status = call(server, method, target)[0]
            took = time.monotonic() - start
            assert status == expected and took < ANSWER_BOUND, (target, status, took, tricklers.ended[-5:])
        most_threads = max(most_threads, connection_threads())
        time.sleep(0.1)
    return most_threads


@pytest.mark.slow  # trickling clients for ~8 s
def test_slow_authenticated_uploads_leave_room_and_are_cut_at_the_deadline(server, repo):
    before = heads(server, repo)
    opening = head(
        server,
        "POST",
        f"/api/v1/repositories/{repo}/branches/main/objects?path=slow",
        "Content-Type: application/octet-stream\r\nContent-Length: 1000\r\n",
    )
    with Tricklers(server, UPLOADERS, opening, b"x" * 1000, pause=0.5) as tricklers:
        time.sleep(1.0)  # every place of the authenticated pool is taken
        most_threads = assert_answered_while(server, tricklers, 5.0, repo)
    bound = LIMITS.max_connections + LIMITS.max_unauthenticated
    assert most_threads <= bound
    assert tricklers.ended, "no slow upload was cut"
    # each slow upload was answered 408 at its deadline or 503 to make room, never let through
    statuses = {status for status, _ in tricklers.ended}
    assert statuses <= {408, 503, None}, tricklers.ended
    lived = [seconds for _, seconds in tricklers.ended]
    assert max(lived) < LIMITS.body_deadline + 4.0, lived  # 2 s deadline (+ 1000 B/s: ~0 s), generous margin
    assert heads(server, repo) == before
    assert call(server, "GET", f"/repositories/{repo}/branches/main/diff")[1]["results"] == []
    time.sleep(1.0)
    assert connection_threads() <= 1  # all ended (the health check's own may still be closing)


@pytest.mark.slow  # trickling clients for ~7 s
def test_unauthenticated_head_tricklers_that_reconnect_leave_room(server, repo):
    opening = b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: test\r\nX-Slow: "
    with Tricklers(server, TRICKLERS, opening, b"a" * 1000, pause=0.3) as tricklers:
        time.sleep(1.0)  # the unauthenticated pool is full
        most_threads = assert_answered_while(server, tricklers, 5.0, repo)
    assert most_threads <= LIMITS.max_connections + LIMITS.max_unauthenticated
    assert len(tricklers.ended) >= TRICKLERS, tricklers.ended  # cut (deadline or newcomer) or refused, then again
    assert all(seconds < LIMITS.header_timeout + 4.0 for _, seconds in tricklers.ended), tricklers.ended


@pytest.mark.slow  # a 4 s upload
def test_upload_slower_than_the_deadline_but_at_the_minimum_rate_completes(server, repo):
    """The body deadline grows with the bytes received: 4 s at 4 KiB/s (above 1 KiB/s) passes a 2 s deadline."""
    data = b"y" * (16 << 10)
    conn = Conn(server, timeout=10)
    conn.send(
        head(
            server,
            "POST",
            f"/api/v1/repositories/{repo}/branches/main/objects?path=steady",
            f"Content-Type: application/octet-stream\r\nContent-Length: {len(data)}\r\n",
        )
    )
    start = time.monotonic()
    for offset in range(0, len(data), 1024):
        conn.send(data[offset : offset + 1024])
        time.sleep(0.25)
    status, _, body = conn.response()
    conn.close()
    assert status == 201 and json.loads(body)["size_bytes"] == len(data)
    assert time.monotonic() - start > LIMITS.body_deadline


def test_limits_that_leave_no_authenticated_place_are_refused():
    with pytest.raises(ValueError, match="max_unauthenticated"):
        Limits(max_connections=8, max_unauthenticated=8)
