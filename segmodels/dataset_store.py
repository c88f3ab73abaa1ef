"""Data set storage: normalised data sets live in lakeFS under a prefix of a branch, at immutable commits.

Beside ``segmodels.model_store`` (model packages), this is the one interface the steps use to put and get data
sets: :func:`ingest` prepares a source locally (``segmodels.data``) and publishes it in one atomic merge,
:func:`fetch_dataset` reads one back pinned to its commit. ``segmodels.data`` itself never writes to lakeFS.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping
from urllib.parse import urlsplit

from segmodels.data import DatasetInfo, DatasetStats, Layout, PreparedDataset, ValidationReport, prepare_dataset
from segmodels.data.sources import redact
from segmodels.home import segmodels_home
from segmodels.redaction import redact_text
from segmodels.schemas import DataConfig
from segmodels.versioning import LakeFS, LakeFSUri

log = logging.getLogger(__name__)

BAD_FILES = "bad_files.csv"  # in an ingest's work folder: every file the last ingest refused and why


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
    source: str  # the source as the user named it, credentials masked
    dataset_digest: str  # sha256 of the manifest: equal content, equal digest
    root: Path  # the prepared data set on local disk (the work folder's copy)

    def summary(self) -> str:
        """One line for the log: what was committed, or that nothing changed."""
        if not self.changed:
            return f"data unchanged: nothing uploaded, no new commit; {self.uri} is current"
        return (
            f"committed {self.uri}: {self.uploaded_files} file(s) uploaded, {self.skipped_files} unchanged, "
            f"{self.deleted_files} deleted"
        )


def ingest(
    lakefs: LakeFS,
    source,
    data: DataConfig,
    repo: str,
    branch: str,
    prefix: str,
    *,
    on_error: str,
    split_seed: int,
    metadata: Mapping[str, str] | None = None,
    recorded_source: str | None = None,
    work_dir: Path | None = None,
) -> IngestResult:
    """Validate and normalise `source` with the `data` options, then commit it under `lakefs://repo/branch/prefix`.

    Nothing reaches lakeFS unless validation passes (or on_error="skip"); see :func:`publish_dataset` for the
    commit. The data set is prepared in `work_dir` (default: a folder per target under the segmodels home), kept
    between runs so that re-ingesting unchanged data decodes nothing. `recorded_source` is how the commit names
    the source when `source` is only where it was put for reading (e.g. `demo`, generated into a temp folder).
    """
    work = Path(work_dir) if work_dir else default_work_dir(repo, branch, prefix)
    data = named_after_url(data, source)
    with _locked(work):
        prepared = prepare_dataset(
            source,
            work / "dataset",
            data,
            on_error=on_error,
            split_seed=split_seed,
            cache_file=work / "prepare-cache.json",
            lakefs=lakefs,
            report_file=work / BAD_FILES,
        )
        return publish_dataset(lakefs, prepared, repo, branch, prefix, recorded_source or source, metadata or {})


def url_dataset_name(source: str) -> str:
    """The data set name a URL source stands for: the last part of its path without suffixes (``data`` for
    ``https://host/d/data.zip?X-Amz-Signature=...``), else its host; never its user info, query or fragment."""
    try:
        parts = urlsplit(source)
        return Path(parts.path.rstrip("/")).name.split(".")[0] or parts.hostname or "dataset"
    except ValueError:  # e.g. an unclosed "[" in the user info: resolve_source refuses the source in one line
        return "dataset"


def named_after_url(data: DataConfig, source) -> DataConfig:
    """``data`` naming the data set after a URL source's path when it names none and the default name, the
    source's last ``/`` part, would take in more (a presigned URL's query with its signature and token)."""
    text = str(source)
    if getattr(data, "name", None) or "://" not in text:
        return data
    name = url_dataset_name(text)
    if Path(text.rstrip("/")).name.split(".")[0] == name:
        return data  # the default is this name already (and the prepare cache's settings stay as they were)
    if dataclasses.is_dataclass(data):
        return dataclasses.replace(data, name=name)
    from omegaconf import OmegaConf

    return OmegaConf.merge(data, {"name": name})


def publish_dataset(
    lakefs: LakeFS, prepared: PreparedDataset, repo: str, branch: str, prefix: str, source, metadata: Mapping[str, str]
) -> IngestResult:
    """Commit a prepared data set to `lakefs://repo/branch/prefix` in one atomic merge.

    The upload happens on an ephemeral branch merged in one step, so a failure anywhere leaves `branch` as it
    was; unchanged files are not uploaded and unchanged data makes no commit. The commit message and metadata
    name `source` (credentials masked) and hold the data set digest, format, counts and `metadata`.
    """
    named_source = redact(source)
    digest = hashlib.sha256(Layout(prepared.root).manifest_file.read_bytes()).hexdigest()
    commit_metadata = {
        "source": named_source,
        "format": str(prepared.info.extra["source_format"]),
        "dataset_digest": digest,
        "images": str(prepared.stats.num_images),
        "skipped_bad_files": str(len(prepared.report)),
        **{str(key): redact(value) for key, value in metadata.items()},
    }
    message = redact_text(f"ingest {prepared.info.name}: {prepared.stats.num_images} images from {named_source}")
    with lakefs.atomic_write(repo, branch, message, commit_metadata) as staged:
        transfer = lakefs.upload_directory(repo, staged.branch, prepared.root, prefix=prefix, delete_missing=True)
    result = IngestResult(
        commit_id=staged.commit_id,
        uri=str(LakeFSUri(repo, staged.commit_id, prefix.strip("/"))),
        changed=bool(staged.changed),
        uploaded_files=transfer.files,
        skipped_files=transfer.skipped,
        deleted_files=transfer.deleted,
        info=prepared.info,
        report=prepared.report,
        stats=prepared.stats,
        source=named_source,
        dataset_digest=digest,
        root=prepared.root,
    )
    log.info(result.summary())
    return result


def fetch_dataset(lakefs: LakeFS, uri: LakeFSUri | str) -> Path:
    """The local folder of the data set at a pinned URI (objects downloaded once, linked into a view per commit)."""
    with using_dataset(lakefs, uri) as folder:
        return folder


@contextmanager
def using_dataset(lakefs: LakeFS, uri: LakeFSUri | str) -> Iterator[Path]:
    """:func:`fetch_dataset`'s folder, locked against the cache's eviction while the block reads it."""
    uri = LakeFSUri.parse(uri) if isinstance(uri, str) else uri
    with lakefs.using_prefix(uri.repo, uri.ref, uri.path) as folder:
        yield folder


def default_work_dir(repo: str, branch: str, prefix: str) -> Path:
    """The persistent folder, under the segmodels home, where data for one lakeFS target is prepared."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{repo}/{branch}/{prefix}".strip("/"))
    return segmodels_home() / "ingest" / safe


@contextmanager
def _locked(folder: Path) -> Iterator[Path]:
    """Exclusive use of a work folder (two ingests into one target wait for each other)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield folder
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
