"""An exclusive file lock that a fork does not carry into the child.

An ``flock`` belongs to the open file, which a fork shares: a child forked while a thread of its parent holds the
lock (a DataLoader worker started while a prefetch thread saves an index or reserves cache room) would hold it
until it exits, and every process waiting for it, the child too, would wait forever. Each child closes its copies
of the locks held at the fork; a guard keeps a fork out from between opening a lock file and recording it.
"""

from __future__ import annotations

import fcntl
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_held: set[int] = set()  # descriptors of lock files this process's threads have open
_fork_guard = threading.Lock()


def _close_inherited_locks() -> None:
    for fd in _held:
        os.close(fd)
    _held.clear()
    _fork_guard.release()


os.register_at_fork(
    before=_fork_guard.acquire, after_in_parent=_fork_guard.release, after_in_child=_close_inherited_locks
)


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if absent) for the block; a forked child never holds it."""
    with _fork_guard:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        _held.add(fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with _fork_guard:
            _held.discard(fd)
            os.close(fd)
