"""md5 computed beside I/O: lakeFS reports md5 checksums, and on large transfers md5 is the bottleneck, so
its updates run on a shared thread pool (hashlib releases the GIL on large buffers) while the caller reads,
writes or computes other hashes. Used by the embedded server and the client alike."""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

PARALLEL_MIN_BYTES = 1 << 18  # smaller chunks are hashed inline: a thread hand-off would cost more than it saves

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def hash_pool() -> ThreadPoolExecutor:
    """Shared threads that run md5 updates beside the I/O of the calling thread."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max(2, os.cpu_count() or 2), thread_name_prefix="md5")
        return _pool


class OverlappedMd5:
    """md5 of a stream of chunks, each update running on ``hash_pool`` while the caller moves on (in order).

    Chunks handed to ``update`` must not be modified afterwards (bytes, or a buffer not reused until the next
    ``update`` call returns).
    """

    def __init__(self):
        self._md5 = hashlib.md5()
        self._pending: Future | None = None

    def update(self, chunk) -> None:
        self.wait()
        if len(chunk) >= PARALLEL_MIN_BYTES:
            self._pending = hash_pool().submit(self._md5.update, chunk)
        else:
            self._md5.update(chunk)

    def wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def hexdigest(self) -> str:
        self.wait()
        return self._md5.hexdigest()
