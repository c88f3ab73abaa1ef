"""Writer of the normalised layout (see `segmodels.data.layout`), incremental.

A cache file beside the layout remembers, per sample, the stat signature and content fingerprint of its source
files and the files written for it, so re-preparing unchanged data decodes nothing, and reads nothing when the
source files' sizes and modification times are as before.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from segmodels.data.errors import DataValidationError
from segmodels.data.info import DatasetInfo, write_dataset_info
from segmodels.data.layout import Layout

CACHE_VERSION = 2


@dataclass(frozen=True)
class WrittenFile:
    """A file of the layout as the manifest records it."""

    path: str  # relative to the layout root, POSIX separators
    checksum: str  # sha256 hex
    size: int
    split: str
    kind: str  # "image" or "mask"


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of data (the manifest's checksum)."""
    return hashlib.sha256(data).hexdigest()


class LayoutWriter:
    """Writes one sample at a time into `layout`; `finish` writes manifest.csv and dataset.yaml and drops stale
    files."""

    def __init__(self, layout: Layout, cache_file: Path | None, options_digest: str):
        self.layout = layout
        self.cache_file = Path(cache_file) if cache_file else None
        self.options_digest = options_digest
        layout.root.mkdir(parents=True, exist_ok=True)
        foreign = sorted(entry.name for entry in layout.root.iterdir() if entry.name not in layout.entries)
        if foreign:
            raise DataValidationError(
                f"{layout.root}: output folder holds files that are not a prepared data set: {foreign[:5]}"
            )
        layout.dataset_file.unlink(missing_ok=True)  # present only once the layout is complete
        self._previous = self._load_cache()
        self._entries: dict[str, dict] = {}
        self.files: list[WrittenFile] = []
        self.reused = 0

    def _load_cache(self) -> dict:
        if not self.cache_file or not self.cache_file.is_file():
            return {}
        try:
            document = json.loads(self.cache_file.read_text())
        except (OSError, ValueError):
            return {}
        if document.get("version") != CACHE_VERSION or document.get("options") != self.options_digest:
            return {}
        return document.get("samples", {})

    def reuse(
        self, name: str, split: str, *, fingerprint: str | None = None, signature: list | None = None
    ) -> dict | None:
        """The cached entry of an unchanged sample whose files are still in place (then recorded as written), else None.

        Unchanged means: same source stat `signature` (size and mtime of its source files: nothing read), or same
        content `fingerprint` (the signature is then refreshed).
        """
        entry = self._previous.get(name)
        if not entry or entry["split"] != split:
            return None
        if not (
            (signature and entry.get("signature") == signature) or (fingerprint and entry["fingerprint"] == fingerprint)
        ):
            return None
        for path, _, size, _, mtime_ns in entry["files"]:
            try:
                status = (self.layout.root / path).stat()
            except FileNotFoundError:
                return None
            if status.st_size != size or status.st_mtime_ns != mtime_ns:
                return None
        entry = {**entry, "signature": signature}
        self._record(name, entry)
        self.reused += 1
        return entry

    def write(self, name: str, split: str, image_suffix: str, image: bytes, mask: bytes, details: dict) -> dict:
        """Write sample `name`'s image (bytes as read, file extension `image_suffix`) and encoded mask into `split`;
        `details` (fingerprint, signature, stats) are cached with them."""
        outputs = [
            ("image", self.layout.image_path(split, name + image_suffix), image),
            ("mask", self.layout.mask_path(split, name), mask),
        ]
        files = []
        for kind, target, data in outputs:
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f".{sha256_hex(target.name.encode())[:16]}.tmp")  # short: any name fits
            temporary.write_bytes(data)
            os.replace(temporary, target)
            files.append([self.layout.relative(target), sha256_hex(data), len(data), kind, target.stat().st_mtime_ns])
        entry = {"split": split, "files": files, **details}
        self._record(name, entry)
        return entry

    def _record(self, name: str, entry: dict) -> None:
        self._entries[name] = entry
        for path, checksum, size, kind, _ in entry["files"]:
            self.files.append(WrittenFile(path, checksum, size, entry["split"], kind))

    def finish(self, info: DatasetInfo) -> None:
        """Drop files no sample wrote, then write manifest.csv and, last, dataset.yaml."""
        expected = {file.path for file in self.files}
        for folder in (self.layout.images_dir, self.layout.masks_dir):
            for path in sorted(folder.rglob("*"), reverse=True):
                if path.is_file() and self.layout.relative(path) not in expected:
                    path.unlink()
                elif path.is_dir() and not any(path.iterdir()):
                    path.rmdir()
        with open(self.layout.manifest_file, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["file", "checksum", "size", "split", "kind"])
            for file in sorted(self.files, key=lambda f: f.path):
                writer.writerow([file.path, file.checksum, file.size, file.split, file.kind])
        write_dataset_info(info, self.layout)

    def save_cache(self) -> None:
        """Persist what was written this run (entries of samples not seen again are forgotten)."""
        if not self.cache_file:
            return
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        document = {"version": CACHE_VERSION, "options": self.options_digest, "samples": self._entries}
        temporary = self.cache_file.with_name(self.cache_file.name + ".tmp")
        temporary.write_text(json.dumps(document, sort_keys=True))
        os.replace(temporary, self.cache_file)
