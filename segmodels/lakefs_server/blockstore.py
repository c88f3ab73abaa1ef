"""Content-addressed blob store: bytes stream to a temp file, then fsync + rename under their sha256."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable


@dataclass(frozen=True)
class Blob:
    """A stored blob: ``address`` is the sha256 it is stored under, ``checksum`` the md5 lakeFS reports."""

    address: str
    checksum: str
    size: int


class BlobStore:
    """Immutable blobs under ``root/objects/ab/<sha256>``; a blob is visible only once complete."""

    def __init__(self, root: Path, fsync: bool = True):
        self.root = Path(root)
        self.objects_dir = self.root / "objects"
        self.tmp_dir = self.root / "tmp"
        self.fsync = fsync
        self.objects_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.tmp_dir, ignore_errors=True)  # leftovers of interrupted uploads
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def path(self, address: str) -> Path:
        """Local file of the blob stored under ``address``."""
        if len(address) != 64 or not all(c in "0123456789abcdef" for c in address):
            raise ValueError(f"invalid blob address {address!r}")
        return self.objects_dir / address[:2] / address

    def write(self, chunks: Iterable[bytes]) -> Blob:
        """Store the concatenated ``chunks``; returns the blob (deduplicated by content)."""
        md5, sha = hashlib.md5(), hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp_dir, prefix="upload-")
        try:
            with os.fdopen(fd, "wb", buffering=0) as out:
                for chunk in chunks:
                    md5.update(chunk)
                    sha.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                if self.fsync:
                    os.fsync(out.fileno())
            address = sha.hexdigest()
            final = self.path(address)
            if final.exists():
                os.unlink(tmp_name)
            else:
                final.parent.mkdir(exist_ok=True)
                os.replace(tmp_name, final)
        except BaseException:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
            raise
        return Blob(address=address, checksum=md5.hexdigest(), size=size)
