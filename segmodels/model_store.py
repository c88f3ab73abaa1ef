"""Model storage: each train run's complete MLflow model lives in lakeFS, one folder per run, at an immutable
commit. It is written here, once; everything reads it back through MLflow (``models:/``, ``runs:/``,
``lakefs://`` URIs) and the ``lakefs`` artifact repository (:mod:`segmodels.lakefs_artifacts`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from segmodels.versioning import LakeFS, LakeFSUri


def publish_model(
    lakefs: LakeFS,
    model_dir: Path,
    repo: str,
    branch: str,
    prefix: str,
    run_id: str,
    metadata: Mapping[str, str],
    source_ref: str = "main",
) -> LakeFSUri:
    """Commit ``model_dir`` (an MLflow model folder) to ``lakefs://repo/branch/prefix/<run_id>/`` in one atomic
    merge and return the URI pinned to the resulting commit (``branch`` is created from ``source_ref`` if new)."""
    return lakefs.commit_directory(
        repo,
        branch,
        model_dir,
        f"{prefix.strip('/')}/{run_id}",
        f"Model of MLflow run {run_id}",
        metadata={"mlflow_run_id": run_id, **metadata},
        source_ref=source_ref,
    )
