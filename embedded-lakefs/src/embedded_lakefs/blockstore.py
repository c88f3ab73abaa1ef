"""Content-addressed blob store: bytes stream to a temp file, then fsync + rename under their sha256.

Each chunk is hashed twice (md5: the checksum / ETag lakeFS reports; sha256: the address). The md5 of a chunk runs
on a small shared thread pool while the sha256 and the file write of the same chunk, and the socket read of the
next one, run in the request thread: hashlib releases the GIL on large buffers, so both hashes use a core each.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from .checksums import OverlappedMd5


@dataclass(frozen=True)
class Blob:
    """A stored blob: ``address`` is the sha256 it is stored under, ``checksum`` the md5 lakeFS reports."""

    address: str
    checksum: str
    size: int


class BlobStore:
    """Immutable blobs under ``root/objects/ab/<sha256>``; a blob is visible only once complete.

    A writer holds :meth:`referencing` from writing a blob until the catalog references it; garbage collection
    holds :meth:`collecting` (exclusive) from finding the referenced blobs until it has deleted the others, so it
    never deletes a blob that a write in flight is about to reference."""

    def __init__(self, root: Path, fsync: bool = True):
        self.root = Path(root)
        self.objects_dir = self.root / "objects"
        self.tmp_dir = self.root / "tmp"
        self.lock_path = self.root / "gc.lock"
        self.fsync = fsync
        self.objects_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def remove_interrupted_uploads(self) -> None:
        """Drop temp files of uploads that never finished (only while no upload runs: at server start)."""
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        with open(self.lock_path, "a+") as lock:  # a descriptor of its own: flock excludes it from the others
            fcntl.flock(lock, mode)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def referencing(self):
        """Shared lock: held while a written (or reused) blob is not yet referenced by the catalog."""
        return self._locked(fcntl.LOCK_SH)

    def collecting(self):
        """Exclusive lock: no write is between storing a blob and referencing it."""
        return self._locked(fcntl.LOCK_EX)

    def addresses(self) -> Iterator[tuple[str, os.stat_result]]:
        """Every stored blob's address and ``stat``."""
        for shard in sorted(self.objects_dir.iterdir()):
            for blob in sorted(shard.iterdir()):
                yield blob.name, blob.stat()

    def path(self, address: str) -> Path:
        """Local file of the blob stored under ``address``."""
        if len(address) != 64 or not all(c in "0123456789abcdef" for c in address):
            raise ValueError(f"invalid blob address {address!r}")
        return self.objects_dir / address[:2] / address

    def write(self, chunks: Iterable[bytes]) -> Blob:
        """Store the concatenated ``chunks``; returns the blob (deduplicated by content)."""
        md5, sha = OverlappedMd5(), hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp_dir, prefix="upload-")
        try:
            with os.fdopen(fd, "wb", buffering=0) as out:
                try:
                    for chunk in chunks:
                        md5.update(chunk)  # runs beside this chunk's sha256 and write, in order
                        sha.update(chunk)
                        view = memoryview(chunk)
                        while view:  # raw writes may be partial
                            view = view[out.write(view) :]
                        size += len(chunk)
                finally:
                    md5.wait()
                if self.fsync:
                    os.fsync(out.fileno())
            address = sha.hexdigest()
            final = self.path(address)
            if final.exists():
                os.unlink(tmp_name)
                os.utime(final)  # written again now: as young as a new blob for garbage collection
            else:
                final.parent.mkdir(exist_ok=True)
                os.replace(tmp_name, final)
        except BaseException:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
            raise
        return Blob(address=address, checksum=md5.hexdigest(), size=size)
