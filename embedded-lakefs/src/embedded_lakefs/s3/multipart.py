"""Multipart uploads in progress: one folder per upload under the data directory, a JSON file per part.

Parts are blobs of the server's :class:`~..blockstore.BlobStore` (written once, addressed by content); completing
an upload streams them, in order, into the object's blob. Limits are S3's, which lakeFS documents for its gateway:
part numbers 1 to 10,000, parts of at most 5 GiB, and each part but the last at least 5 MiB.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .xml import S3Error

MAX_PART_NUMBER = 10_000
MAX_PART_SIZE = 5 << 30
MIN_PART_SIZE = 5 << 20
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_META = "upload.json"


@dataclass(frozen=True)
class Upload:
    """An upload's destination and the object attributes given when it was created."""

    id: str
    repo: str
    branch: str
    key: str
    content_type: str
    metadata: dict
    initiated: int


@dataclass(frozen=True)
class Part:
    number: int
    address: str
    etag: str  # md5 hex
    size: int
    mtime: int


def multipart_etag(part_etags: list[str]) -> str:
    """S3's (and lakeFS') ETag of a multipart object: md5 of the parts' binary md5s, ``-`` the part count."""
    digest = hashlib.md5(b"".join(bytes.fromhex(etag) for etag in part_etags)).hexdigest()
    return f"{digest}-{len(part_etags)}"


def part_number(text: str | None) -> int:
    if not text or not text.isdigit() or not 1 <= int(text) <= MAX_PART_NUMBER:
        raise S3Error("InvalidArgument", f"Part number must be an integer between 1 and {MAX_PART_NUMBER}")
    return int(text)


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(path.name + f".{secrets.token_hex(4)}.tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


class Uploads:
    """The uploads in progress under ``root``."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _folder(self, upload_id: str) -> Path:
        if not _UPLOAD_ID.fullmatch(upload_id or ""):
            raise S3Error("NoSuchUpload")
        return self.root / upload_id

    def create(self, repo: str, branch: str, key: str, content_type: str, metadata: dict) -> Upload:
        upload = Upload(secrets.token_hex(16), repo, branch, key, content_type, metadata, int(time.time()))
        folder = self._folder(upload.id)
        folder.mkdir(parents=True)
        _write_json(folder / _META, upload.__dict__)
        return upload

    def get(self, upload_id: str, repo: str, branch: str, key: str) -> Upload:
        """The upload ``upload_id`` to ``repo/branch/key``; NoSuchUpload when unknown, done or elsewhere."""
        try:
            upload = Upload(**json.loads((self._folder(upload_id) / _META).read_text()))
        except FileNotFoundError:
            raise S3Error("NoSuchUpload") from None
        if (upload.repo, upload.branch, upload.key) != (repo, branch, key):
            raise S3Error("NoSuchUpload")
        return upload

    def add_part(self, upload: Upload, part: Part) -> None:
        try:
            _write_json(self._folder(upload.id) / f"part-{part.number:05d}.json", part.__dict__)
        except FileNotFoundError:
            raise S3Error("NoSuchUpload") from None  # aborted or completed meanwhile

    def parts(self, upload: Upload) -> list[Part]:
        folder = self._folder(upload.id)
        return [Part(**json.loads(path.read_text())) for path in sorted(folder.glob("part-*.json"))]

    def in_progress(self, repo: str) -> list[Upload]:
        found = []
        for meta in self.root.glob(f"*/{_META}") if self.root.exists() else []:
            try:
                upload = Upload(**json.loads(meta.read_text()))
            except FileNotFoundError:
                continue
            if upload.repo == repo:
                found.append(upload)
        return sorted(found, key=lambda u: (u.branch, u.key, u.initiated))

    def remove(self, upload: Upload) -> None:
        shutil.rmtree(self._folder(upload.id), ignore_errors=True)

    def chosen_parts(self, upload: Upload, requested: list[tuple[int, str]]) -> list[Part]:
        """The parts a CompleteMultipartUpload names (number, ETag), checked as S3 checks them."""
        if not requested:
            raise S3Error("MalformedXML", "You must specify at least one part")
        numbers = [number for number, _ in requested]
        if numbers != sorted(set(numbers)):
            raise S3Error("InvalidPartOrder")
        stored = {part.number: part for part in self.parts(upload)}
        chosen = []
        for number, etag in requested:
            part = stored.get(number)
            if part is None or part.etag != etag.strip().strip('"'):
                raise S3Error("InvalidPart", f"part {number} was not uploaded or its ETag does not match")
            chosen.append(part)
        for part in chosen[:-1]:
            if part.size < MIN_PART_SIZE:
                raise S3Error("EntityTooSmall", f"part {part.number} is {part.size} bytes, at least {MIN_PART_SIZE}")
        return chosen
