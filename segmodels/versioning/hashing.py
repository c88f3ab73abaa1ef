"""md5 of local files (what lakeFS reports as object checksums), and a persistent index of them.

``file_md5`` reads into one preallocated buffer (no per-chunk allocation). ``Md5Index`` remembers the md5 of a
file under (absolute path, size, mtime_ns) in ``<home>/cache/md5-index.json`` so an unchanged file is not read
again. The file is replaced atomically under an ``flock`` (concurrent processes merge their entries); a missing or
corrupt index only means files are hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

from embedded_lakefs.checksums import OverlappedMd5

from .flock import exclusive_lock

CHUNK_SIZE = 4 << 20
INDEX_FILE = "md5-index.json"
INDEX_VERSION = 1
MAX_ENTRIES = 200_000
# An md5 is remembered only for a file whose mtime is older than this: a file rewritten within the same timestamp
# tick (coarse clocks, 2 s on FAT) keeps size and mtime, and must not be trusted ("racy" entries, as in git).
RACY_SECONDS = 2.0


def file_chunks(path: Path, digest: OverlappedMd5 | None = None) -> Iterator[bytes]:
    """The bytes of ``path`` in ``CHUNK_SIZE`` pieces, fed to ``digest`` (overlapped with the consumer)."""
    with open(path, "rb", buffering=0) as source:
        while chunk := source.read(CHUNK_SIZE):
            if digest is not None:
                digest.update(chunk)
            yield chunk
    if digest is not None:
        digest.wait()


def file_md5(path: Path) -> str:
    """Hex md5 of a local file."""
    digest = hashlib.md5()
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as source:
        while read := source.readinto(buffer):
            digest.update(view[:read])
    return digest.hexdigest()


def _stat_key(stat: os.stat_result) -> tuple[int, int]:
    return stat.st_size, stat.st_mtime_ns


class Md5Index:
    """md5s of local files keyed by (absolute path, size, mtime_ns), loaded once, saved with ``save``."""

    def __init__(self, cache_dir: Path):
        self.path = Path(cache_dir) / INDEX_FILE
        self._entries = self._load()
        self._new: dict[str, list] = {}
        self._lock = threading.Lock()

    def _load(self) -> dict[str, list]:
        try:
            data = json.loads(self.path.read_text())
            if data.get("version") != INDEX_VERSION or not isinstance(data.get("entries"), dict):
                return {}
            return data["entries"]
        except (OSError, ValueError, AttributeError):
            return {}

    def lookup(self, path: Path, stat: os.stat_result) -> str | None:
        entry = self._entries.get(str(Path(path).absolute()))
        if (
            isinstance(entry, list)
            and len(entry) == 3
            and (entry[0], entry[1]) == _stat_key(stat)
            and isinstance(entry[2], str)
        ):
            return entry[2]
        return None

    def record(self, path: Path, stat: os.stat_result, md5: str) -> None:
        """Remember ``md5`` for ``path`` as it was at ``stat`` (unless too recently modified to be trusted)."""
        if time.time_ns() - stat.st_mtime_ns < RACY_SECONDS * 1e9:
            return
        entry = [stat.st_size, stat.st_mtime_ns, md5]
        with self._lock:
            key = str(Path(path).absolute())
            self._entries[key] = entry
            self._new[key] = entry

    def md5(self, path: Path, stat: os.stat_result | None = None) -> str:
        """md5 of ``path``, from the index when its size and mtime are unchanged, else hashed (and recorded)."""
        stat = stat or os.stat(path)
        cached = self.lookup(path, stat)
        if cached is not None:
            return cached
        md5 = file_md5(path)
        if _stat_key(os.stat(path)) == _stat_key(stat):  # not modified while hashing
            self.record(path, stat, md5)
        return md5

    def save(self) -> None:
        """Merge the new entries into the index file (atomic replace under a lock); errors are ignored."""
        with self._lock:
            new, self._new = self._new, {}
        if not new:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with exclusive_lock(self.path.with_suffix(".lock")):
                entries = self._load()
                entries.update(new)
                if len(entries) > MAX_ENTRIES:  # oldest insertions go first
                    entries = dict(list(entries.items())[-MAX_ENTRIES:])
                fd, tmp_name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{INDEX_FILE}.", suffix=".tmp")
                try:
                    with os.fdopen(fd, "w") as out:
                        json.dump({"version": INDEX_VERSION, "entries": entries}, out, separators=(",", ":"))
                    os.replace(tmp_name, self.path)
                except BaseException:
                    if os.path.exists(tmp_name):
                        os.unlink(tmp_name)
                    raise
        except OSError:
            pass  # a cache: failing to save it only costs hashing again
