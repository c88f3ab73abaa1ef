"""Streaming reads (``data.access=stream``): a data set read from lakeFS on demand through the bounded cache
(``segmodels.versioning.stream``, ``segmodels.versioning.cache`` reservations), against the embedded server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from segmodels.versioning.cache import CacheFullError, ObjectCache
from segmodels.versioning.client import RemoteObject
from segmodels.versioning.hashing import Md5Index

HOLDER = """
import sys, time
from pathlib import Path
from segmodels.versioning.cache import ObjectCache

with ObjectCache(Path(sys.argv[1]), max_bytes=int(sys.argv[2])).reserved(int(sys.argv[3]), "holder"):
    print("reserved", flush=True)
    time.sleep(60)
"""


def test_room_a_live_process_reserved_is_not_given_to_another_and_a_dead_ones_is(tmp_path):
    root = tmp_path / "cache"
    script = tmp_path / "holder.py"
    script.write_text(textwrap.dedent(HOLDER))
    holder = subprocess.Popen(
        [sys.executable, str(script), str(root), "1000", "700"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "reserved"
        cache = ObjectCache(root, max_bytes=1000)
        with pytest.raises(CacheFullError, match="0.00 GB reserved by downloads running"):
            cache.make_room(400, "second writer")
        cache.make_room(300, "second writer")  # what is left fits
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    cache.make_room(1000, "after the holder died")  # a dead process's reservation is ignored (and removed)
    assert list((root / "reservations").iterdir()) == []


def put_object(cache: ObjectCache, data: bytes, index: Md5Index) -> Path:
    import hashlib

    obj = RemoteObject(f"{len(data)}.bin", hashlib.md5(data).hexdigest(), len(data))
    return cache.fetch_object(obj, lambda _, path: Path(path).write_bytes(data), index)


def test_objects_no_view_links_are_evicted_least_recently_used_first_and_never_while_read(tmp_path):
    cache = ObjectCache(tmp_path / "cache", max_bytes=3000)
    index = Md5Index(tmp_path / "cache")
    first, second, third = (put_object(cache, os.urandom(1000), index) for _ in range(3))
    os.utime(first, ns=(1, first.stat().st_mtime_ns))  # least recently used
    os.utime(second, ns=(2, second.stat().st_mtime_ns))
    with cache.open_object(first) as held:  # read now: the next least recently used goes instead
        cache.make_room(1000, "fourth")
        assert held.read() and first.exists() and not second.exists() and third.exists()
    os.utime(first, ns=(3, first.stat().st_mtime_ns))  # reading may have set its atime: older than third's again
    cache.make_room(2000, "fifth")  # one of the two must go: the least recently used
    assert not first.exists() and third.exists()
