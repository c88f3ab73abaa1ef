"""Ephemeral branches of atomic writes: names that say who writes, and whether that writer can still be alive.

A name is ``_segmodels-tmp-<target>-<host>-<pid>-<start>-<created>-<random>``:

- ``target``: the branch the write merges into (cut to 64 characters plus a hash when longer);
- ``host``: 10 hex digits hashing the host name, boot and pid namespace, so that two writers with the same
  ``host`` see the same processes under the same pids;
- ``pid`` and ``start``: the writer process and its start time (clock ticks since boot on Linux, else
  milliseconds since the epoch), so that a reused pid is not taken for the writer;
- ``created``: Unix time (seconds) the branch was made; ``random``: 8 hex digits.

A writer is dead when it ran on this host and its pid is gone, a zombie, or another process's. Branches of dead
writers are stale at once; others only once older than the maximum age, and never while their writer is known
alive (here: a live process, or an atomic write still open in this process).
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import psutil

PREFIX = "_segmodels-tmp-"
MAX_TARGET_CHARS = 64
_NAME = re.compile(
    r"(?P<target>\w[-\w]*)-(?P<host>[0-9a-f]{10})-(?P<pid>[0-9]+)-(?P<start>[0-9]+)"
    r"-(?P<created>[0-9]+)-(?P<token>[0-9a-f]{8})"
)

_HAS_PROC = Path("/proc/self/stat").exists()
_open_lock = threading.Lock()
_open_branches: set[str] = set()  # names of the ephemeral branches of atomic writes open in this process (unique
# names: not keyed by endpoint, which two clients may spell differently for one server)


def target_key(target: str) -> str:
    """How ``target`` appears in its ephemeral branch names (long names cut, with a hash to keep them apart)."""
    if len(target) <= MAX_TARGET_CHARS:
        return target
    return target[: MAX_TARGET_CHARS - 13] + "_" + hashlib.sha256(target.encode()).hexdigest()[:12]


def name_prefix(target: str) -> str:
    """The prefix of every ephemeral branch name for ``target`` (branches of other targets may share it)."""
    return f"{PREFIX}{target_key(target)}-"


@dataclass(frozen=True)
class EphemeralBranch:
    """An ephemeral branch name, parsed."""

    name: str
    target_key: str
    host: str
    pid: int
    start: int
    created: int

    @classmethod
    def new(cls, target: str) -> EphemeralBranch:
        """A fresh name for a write into ``target`` by this process."""
        pid, created = os.getpid(), int(time.time())
        start = process_start(pid) or 0
        key = target_key(target)
        return cls(
            f"{PREFIX}{key}-{host_id()}-{pid}-{start}-{created}-{uuid.uuid4().hex[:8]}",
            key,
            host_id(),
            pid,
            start,
            created,
        )

    @classmethod
    def parse(cls, name: str) -> EphemeralBranch | None:
        """The parts of ``name``, None when it is not an ephemeral branch name."""
        if not name.startswith(PREFIX):
            return None
        match = _NAME.fullmatch(name[len(PREFIX) :])
        if match is None:
            return None
        return cls(name, match["target"], match["host"], int(match["pid"]), int(match["start"]), int(match["created"]))

    def writer_alive(self) -> bool | None:
        """True when the writer is known alive, False when known dead, None when that cannot be told here."""
        return process_alive(self.host, self.pid, self.start)

    def is_stale(self, now: float, max_age: float, open_here: bool) -> bool:
        """Whether the branch may be deleted: not open in this process, and its writer dead or unknown and the
        branch older than ``max_age`` seconds. A writer known alive keeps its branch at any age."""
        if open_here:
            return False
        if self.pid == os.getpid() and self.host == host_id():
            return True  # a write of this process no longer open (its clean-up failed), or of a dead one before it
        alive = self.writer_alive()
        if alive is None:
            return now - self.created > max_age
        return not alive


def mark_open(branch: str) -> None:
    """Record that an atomic write of this process uses ``branch`` (before the branch is made)."""
    with _open_lock:
        _open_branches.add(branch)


def mark_closed(branch: str) -> None:
    with _open_lock:
        _open_branches.discard(branch)


def is_open(branch: str) -> bool:
    with _open_lock:
        return branch in _open_branches


@cache
def _host_id(hostname: str) -> str:
    parts = [hostname]
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        parts.append(f"boot-{int(psutil.boot_time())}")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:10]


def host_id() -> str:
    """10 hex digits, equal for processes that see the same processes under the same pids (same host, boot and
    pid namespace)."""
    return _host_id(socket.gethostname())


def process_alive(host: str, pid: int, start: int) -> bool | None:
    """Whether process ``pid`` that started at ``start`` (:func:`process_start`, 0: unknown) on ``host``
    (:func:`host_id`) lives: None when ``host`` is another one, whose processes cannot be seen here."""
    if host != host_id():
        return None
    now = process_start(pid)
    if now is None:
        return False  # no such process (or only its zombie): it is gone
    if not (now and start):
        return True  # a process with that pid lives; when it started is not known
    return now == start  # else the pid now belongs to another process


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (ticks since boot on Linux, else ms since the epoch); None when there is no
    such process or only its zombie, 0 when it exists but its start cannot be read."""
    if pid <= 0:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        stat = b""
    if stat:
        fields = stat[stat.rindex(b")") + 2 :].split()  # after "pid (comm) ": state is field 3, starttime 22
        return None if fields[0] in (b"Z", b"X") else int(fields[19])
    if not _HAS_PROC:
        try:
            process = psutil.Process(pid)
            if process.status() != psutil.STATUS_ZOMBIE:
                return int(process.create_time() * 1000)
            return None
        except psutil.NoSuchProcess:
            return None
        except psutil.Error:
            pass
    try:  # hidden from /proc (hidepid) or not readable: whether it exists at all
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return 0
