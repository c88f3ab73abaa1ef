"""The embedded server's open connections: a deadline for every phase of a request, two bounded pools, and,
when a pool is full, closing the connection that waits or lags longest so that a new client is answered.

A connection starts *unauthenticated* (at most ``Limits.max_unauthenticated`` of them) and moves to the
*authenticated* pool (``max_connections - max_unauthenticated``) with its first request that carries valid
credentials; public requests (``/healthcheck``) are answered from the unauthenticated pool, so slow
authenticated clients never starve them and unauthenticated clients never starve authenticated ones. An
authenticated request without a body that finds the authenticated pool full is answered from its place in the
unauthenticated one (its connection then closed); one with a body is refused with 503.

Deadlines (checked every ``interval`` seconds by one watchdog thread):

- a request head must arrive within ``header_timeout`` (``idle_timeout`` for a kept-alive connection to start
  its next request), however the bytes trickle in;
- a request body must arrive within ``body_deadline`` seconds plus one second per ``min_body_rate`` bytes
  received (a slow body is answered 408 and the connection closed).

When a pool is full, a new connection takes the place of the one that has been reading a request head longest,
for at least ``HEAD_GRACE`` seconds (a client sends its head at once: one still reading is trickling), else of
one kept alive and idle for at least ``EVICTABLE_AFTER`` seconds, else of one whose body lags ``min_body_rate``
as long (answered 503); with none such the new one waits up to ``ADMIT_WAIT`` seconds for a place being
released (requests being answered free theirs at once), then is refused with 503. Connections closed this way
whose threads have not ended yet are bounded too, so the server runs at most
``max_connections + max_unauthenticated`` connection threads.
"""

from __future__ import annotations

import socket
import threading
import time

from .errors import ApiError
from .transport import Limits, Request

EVICTABLE_AFTER = 0.5  # seconds idle (or lagging in a body) before a newcomer may take the place
HEAD_GRACE = 0.05  # seconds a connection reads its head before a newcomer may take its place
ADMIT_WAIT = 0.2  # seconds a new connection may wait (stalling accepting) for a place that is being released
LINGER_SECONDS = 0.5  # refused connections: how long to drain what the client still sends before closing
MAX_CLOSING = 1024  # refused connections drained at once (beyond, closed at once)
IDLE, HEAD, BODY, BUSY = "idle", "head", "body", "busy"


class Connection:
    """One client connection as the pools and the watchdog see it."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.authenticated = False
        self.phase = BUSY
        self.since = time.monotonic()  # when the phase started
        self.deadline = float("inf")  # phases IDLE, HEAD: when the head must be complete
        self.request: Request | None = None  # phase BODY: the request whose body is read
        self.cut = False  # shut down by the watchdog or for a newcomer
        self.evicted = False  # shut down for a newcomer (its place already given away)

    def lag(self, now: float, rate: float) -> float:
        """Bytes that a body in progress is behind ``rate`` (<= 0: on time or no body)."""
        if self.phase != BODY or self.request is None or self.request.body_complete:
            return 0.0
        return (now - self.since) * rate - self.request.received


class Connections:
    """Admits, times and (under pressure) closes the server's connections; see the module docstring."""

    def __init__(self, limits: Limits, interval: float = 0.1):
        self._limits = limits
        self._open: dict[socket.socket, Connection] = {}
        self._counts = {False: 0, True: 0}  # connections holding a place, by ``authenticated``
        self._evicted = 0  # connections shut down for a newcomer whose threads have not ended
        self._closing: dict[socket.socket, float] = {}  # refused connections: drained briefly, then closed
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)
        self._stopped = threading.Event()
        self._interval = interval
        threading.Thread(target=self._run, name="lakefs-connection-watchdog", daemon=True).start()

    def _capacity(self, authenticated: bool) -> int:
        unauthenticated = self._limits.max_unauthenticated
        return self._limits.max_connections - unauthenticated if authenticated else unauthenticated

    def admit(self, sock: socket.socket) -> Connection | None:
        """A place for a new connection in the unauthenticated pool; None when there is none (refuse it)."""
        with self._lock:
            deadline = time.monotonic() + ADMIT_WAIT  # a place held by a request being answered frees at once
            while not self._make_room(False):
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._released.wait(min(left, HEAD_GRACE))
            conn = self._open[sock] = Connection(sock)
            self._counts[False] += 1
            return conn

    def authenticate(self, conn: Connection) -> bool:
        """Move ``conn`` (whose request carried valid credentials) to the authenticated pool; False: no room."""
        with self._lock:
            if conn.authenticated or conn.evicted:
                return not conn.evicted
            if not self._make_room(True):
                return False
            self._counts[False] -= 1
            self._counts[True] += 1
            conn.authenticated = True
            return True

    def get(self, sock: socket.socket) -> Connection:
        with self._lock:
            return self._open[sock]

    def release(self, conn: Connection) -> None:
        """``conn``'s thread ended: its place is free."""
        with self._lock:
            self._open.pop(conn.sock, None)
            if conn.evicted:
                self._evicted -= 1
            else:
                self._counts[conn.authenticated] -= 1
            self._released.notify_all()

    def wait_head(self, conn: Connection, seconds: float, idle: bool = False) -> None:
        """``conn`` reads a request head (``idle``: waits for a next request), complete within ``seconds``."""
        with self._lock:
            now = time.monotonic()
            conn.phase, conn.since, conn.deadline, conn.request = IDLE if idle else HEAD, now, now + seconds, None

    def read_body(self, conn: Connection, request: Request) -> None:
        """``request``'s body is to be read: from now on it must keep ``min_body_rate`` after ``body_deadline``."""
        with self._lock:
            conn.phase, conn.since, conn.request = BODY, time.monotonic(), request

    def busy(self, conn: Connection) -> bool:
        """``conn`` works on a request (no deadline); False when it was shut down (never act on what it read)."""
        with self._lock:
            conn.phase, conn.since, conn.request = BUSY, time.monotonic(), None
            return not conn.cut

    def _make_room(self, authenticated: bool) -> bool:
        """Whether the pool has a place, closing a waiting or lagging connection for it when full (lock held)."""
        if self._counts[authenticated] < self._capacity(authenticated):
            return True
        if self._evicted >= self._limits.max_unauthenticated:
            return False
        now = time.monotonic()
        rate = self._limits.min_body_rate
        waiting = [
            c
            for c in self._open.values()
            if c.authenticated == authenticated and not c.cut and _evictable(c, now, rate)
        ]
        if not waiting:
            return False
        victim = min(waiting, key=lambda c: ((HEAD, IDLE, BODY).index(c.phase), c.since))
        self._cut(victim, ApiError("too many connections: this slow request was closed, retry later", 503))
        victim.evicted = True
        self._counts[authenticated] -= 1
        self._evicted += 1
        return True

    @staticmethod
    def _cut(conn: Connection, error: ApiError) -> None:
        """Wake ``conn``'s thread: a body reader gets ``error`` (answered before closing), a head reader EOF."""
        conn.cut = True
        if conn.phase == BODY and conn.request is not None:
            conn.request.cut = error
            how = socket.SHUT_RD  # the answer can still be sent
        else:
            how = socket.SHUT_RDWR
        try:
            conn.sock.shutdown(how)
        except OSError:
            pass

    def close_later(self, sock: socket.socket) -> None:
        """Close ``sock`` (whose answer was sent) after reading what the client still sends, for a moment: a
        socket closed with unread bytes sends a reset, which can destroy the answer before the client reads it."""
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
        except OSError:
            sock.close()
            return
        with self._lock:
            if len(self._closing) < MAX_CLOSING:
                self._closing[sock] = time.monotonic() + LINGER_SECONDS
                return
        sock.close()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        limits = self._limits
        while not self._stopped.wait(self._interval):
            now = time.monotonic()
            with self._lock:
                for conn in self._open.values():
                    if conn.cut:
                        continue
                    if conn.phase in (IDLE, HEAD) and now >= conn.deadline:
                        self._cut(conn, ApiError("timed out reading the request head", 408))
                    elif conn.phase == BODY and conn.lag(now - limits.body_deadline, limits.min_body_rate) > 0:
                        self._cut(
                            conn,
                            ApiError(
                                f"timed out reading the request body: slower than "
                                f"{limits.min_body_rate} bytes/s after {limits.body_deadline:g} s",
                                408,
                            ),
                        )
                for sock, deadline in list(self._closing.items()):
                    if deadline > now and _drained(sock):
                        continue
                    del self._closing[sock]
                    sock.close()
        with self._lock:
            for sock in self._closing:
                sock.close()
            self._closing.clear()


def _evictable(conn: Connection, now: float, rate: float) -> bool:
    """Whether a newcomer may take ``conn``'s place: trickling its head, idle, or lagging in its body."""
    age = now - conn.since
    if conn.phase == HEAD:
        return age >= HEAD_GRACE
    return age >= EVICTABLE_AFTER and (conn.phase == IDLE or conn.lag(now, rate) > 0)


def _drained(sock: socket.socket) -> bool:
    """Read what ``sock`` (non-blocking) has; False once the client closed it or it failed."""
    try:
        while sock.recv(65536):
            pass
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
