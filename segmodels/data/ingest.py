"""Put a prepared data set into lakeFS: validated locally first, then written on an ephemeral branch and merged
in one step, uploading only files whose checksum changed."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from segmodels.data.errors import ValidationReport
from segmodels.data.info import MANIFEST_FILE, DatasetInfo
from segmodels.data.prepare import prepare_dataset
from segmodels.data.sources import redact
from segmodels.data.stats import DatasetStats

log = logging.getLogger(__name__)


@dataclass
class IngestResult:
    """What an ingest did: the pinned commit, whether it changed anything, the transfer and the data set's facts."""

    commit_id: str
    uri: str  # lakefs://<repo>/<commit_id>/<prefix>, pinned to the commit
    changed: bool
    uploaded_files: int
    skipped_files: int
    deleted_files: int
    info: DatasetInfo
    report: ValidationReport
    stats: DatasetStats
    source: str  # the source as given, credentials removed
    dataset_digest: str  # sha256 of the manifest: equal content, equal digest

    def summary(self) -> str:
        if not self.changed:
            return f"data unchanged: nothing uploaded, no new commit; {self.uri} is current"
        return (
            f"committed {self.uri}: {self.uploaded_files} file(s) uploaded, {self.skipped_files} unchanged, "
            f"{self.deleted_files} deleted"
        )


def default_work_dir(repo: str, branch: str, prefix: str) -> Path:
    """Persistent per-target folder under $SEGMODELS_HOME, so re-ingesting unchanged data decodes nothing."""
    home = Path(os.environ.get("SEGMODELS_HOME", ".segmodels"))
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{repo}/{branch}/{prefix}".strip("/"))
    return home / "ingest" / safe


@contextmanager
def _locked(folder: Path):
    """Exclusive use of a work folder (two ingests into one target wait for each other)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield folder
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ingest(
    source,
    lakefs,
    repo: str,
    branch: str,
    prefix: str = "data",
    *,
    format: str = "auto",
    on_error: str = "fail",
    split_seed: int = 0,
    commit_message: str | None = None,
    commit_metadata: dict | None = None,
    work_dir: Path | None = None,
    **prepare_options,
) -> IngestResult:
    """Validate and normalise `source`, then commit it under `lakefs://repo/branch/prefix` atomically.

    Nothing reaches lakeFS unless validation passes (or on_error="skip"); the upload happens on an ephemeral
    branch merged in one step, so a failure anywhere leaves `branch` as it was. Unchanged files are not uploaded
    and unchanged data makes no commit. Other keyword arguments go to `prepare_dataset` (classes, mask_values,
    val_fraction, options, ...). The commit metadata holds the source, the data set digest and `commit_metadata`.
    """
    work = Path(work_dir) if work_dir else default_work_dir(repo, branch, prefix)
    with _locked(work):
        prepared = prepare_dataset(
            source,
            work / "dataset",
            format=format,
            on_error=on_error,
            split_seed=split_seed,
            cache_file=work / "prepare-cache.json",
            lakefs=lakefs,
            **prepare_options,
        )
        digest = hashlib.sha256((prepared.root / MANIFEST_FILE).read_bytes()).hexdigest()
        metadata = {
            "source": redact(source),
            "format": str(prepared.info.extra.get("source_format", format)),
            "dataset_digest": digest,
            "images": str(prepared.stats.num_images),
            "skipped_bad_files": str(len(prepared.report)),
        }
        metadata.update({str(k): redact(v) for k, v in (commit_metadata or {}).items()})
        message = commit_message or f"ingest {prepared.info.name}: {prepared.stats.num_images} images from {redact(source)}"
        with lakefs.atomic_write(repo, branch, message, metadata) as staged:
            transfer = lakefs.upload_directory(repo, staged.branch, prepared.root, prefix=prefix, delete_missing=True)
    result = IngestResult(
        commit_id=staged.commit_id,
        uri=f"lakefs://{repo}/{staged.commit_id}/{prefix.strip('/')}".rstrip("/"),
        changed=bool(staged.changed),
        uploaded_files=transfer.files,
        skipped_files=transfer.skipped,
        deleted_files=transfer.deleted,
        info=prepared.info,
        report=prepared.report,
        stats=prepared.stats,
        source=redact(source),
        dataset_digest=digest,
    )
    log.info(result.summary())
    return result
