"""Model storage: model packages live in lakeFS, one folder per train run, at an immutable commit.

This is the one interface the steps use to put and get model files, so that the storage can move
(e.g. behind an MLflow artifact repository for ``lakefs://`` URIs) without touching the steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from segmodels.versioning import LakeFS, LakeFSUri


def publish_model(lakefs: LakeFS, package_dir: Path, repo: str, branch: str, prefix: str,
                  run_id: str, metadata: Mapping[str, str], source_ref: str = "main") -> LakeFSUri:
    """Commit ``package_dir`` to ``lakefs://repo/branch/prefix/<run_id>/`` in one atomic merge and
    return the URI pinned to the resulting commit (``branch`` is created from ``source_ref`` if new)."""
    path = f"{prefix.strip('/')}/{run_id}"
    lakefs.ensure_branch(repo, branch, source_ref=source_ref)
    message = f"Model package of MLflow run {run_id}"
    with lakefs.atomic_write(repo, branch, message, metadata={"mlflow_run_id": run_id, **metadata}) as write:
        lakefs.upload_directory(repo, write.branch, package_dir, prefix=path, delete_missing=True)
    return LakeFSUri(repo, write.commit_id, path)


def fetch_model(lakefs: LakeFS, uri: LakeFSUri | str) -> Path:
    """The local folder of the model package at a pinned URI (downloaded once per commit)."""
    uri = LakeFSUri.parse(uri) if isinstance(uri, str) else uri
    return lakefs.download_prefix(uri.repo, uri.ref, uri.path)
