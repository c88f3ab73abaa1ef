"""Step caching for ``main``: a step whose inputs did not change is not run again, its newest finished run is.

A step's **cache key** is the sha256 of: the entry point; its parameters as MLflow stores them (strings; the refs
main fills in are pinned commit ids, run ids and model versions); the fingerprint of what a parameter names
outside lakeFS (an ingest source folder); the git commit of the code (a dirty tree never reuses, unless
``reuse_dirty``: then the diff is part of the key); the sha256 of the step's resolved config. A finished run
gets the key as a tag; the lookup is one search on that tag (newest first, one result: no cap on the number of
runs, no oldest-first match). A reused step still shows as a child run of the new parent, tagged with the run
it reused and holding its params and output tags, so the next step gets the same refs.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from segmodels.config import ConfigError

DEMO_SOURCE = "demo"  # generated from the ingest config alone: the config hash covers it
TRUE_WORDS = ("true", "all", "yes", "1")
FALSE_WORDS = ("", "false", "no", "0", "none")


@dataclass(frozen=True)
class CodeVersion:
    """The code a step runs: its git commit, whether the work tree has changes, and a digest of them."""

    commit: str | None
    dirty: bool
    diff_sha256: str | None = None

    def reuse_blocker(self, reuse_dirty: bool) -> str | None:
        """Why runs of this code may not be reused (None: they may)."""
        if self.commit is None:
            return "the code is not a git checkout, so its version is unknown"
        if self.dirty and not reuse_dirty:
            return "the work tree has uncommitted changes (-P reuse_dirty=true reuses anyway)"
        return None

    def key_part(self) -> str:
        return f"{self.commit}+{self.diff_sha256}" if self.dirty else str(self.commit)


def code_version(project_dir: Path) -> CodeVersion:
    """The git commit of ``project_dir``, whether tracked files changed, and the sha256 of ``git diff HEAD``."""

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=project_dir, capture_output=True, check=False, timeout=120)

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return CodeVersion(None, False)
    diff = git("diff", "HEAD", "--binary")
    changed = bool(diff.stdout.strip())
    return CodeVersion(
        head.stdout.decode().strip(), changed, hashlib.sha256(diff.stdout).hexdigest() if changed else None
    )


def cache_key(
    entry_point: str, params: Mapping[str, str], config_sha256: str, code: CodeVersion, inputs: Mapping[str, str]
) -> str:
    """The step's cache key (see the module): equal keys mean the same code on the same inputs and config."""
    payload = {
        "entry_point": entry_point,
        "params": {str(k): str(v) for k, v in params.items()},
        "config_sha256": config_sha256,
        "code": code.key_part(),
        "inputs": dict(inputs),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def forced_steps(force: str, chain: Sequence[str]) -> set[str]:
    """The steps ``-P force=...`` reruns: ``true`` (or ``all``) every step, ``<step>`` (or a comma list) that step
    and every step after it, ``false`` none; anything else is a ConfigError naming the value."""
    value = str(force).strip().lower()
    if value in FALSE_WORDS:
        return set()
    if value in TRUE_WORDS:
        return set(chain)
    named = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in named if name not in chain]
    if unknown:
        raise ConfigError(
            f"force={force!r}: expected true, false or steps of {', '.join(chain)}; unknown {', '.join(unknown)}"
        )
    first = min(chain.index(name) for name in named)
    return set(chain[first:])


def source_fingerprint(source: str) -> str | None:
    """What an ingest source holds now, where it can be told cheaply: the demo (its config says it all), or a
    local folder's files (relative path, size, mtime; symlinks followed, as ingest follows them). None for anything
    else (a URL, an archive, a bucket, a lakeFS ref) and for a folder that cannot be read whole: such an ingest
    always runs (and reports what it cannot read), and makes no commit when nothing changed."""
    if source == DEMO_SOURCE:
        return DEMO_SOURCE
    folder = Path(source)
    if "://" in source or not folder.is_dir():
        return None
    digest = hashlib.sha256()
    try:
        _fingerprint_folder(folder, "", digest, set())
    except OSError:
        return None
    return f"folder:{digest.hexdigest()}"


def _fingerprint_folder(folder: Path, relative: str, digest, visited: set) -> None:
    """Feed ``digest`` each file below ``folder`` in name order (a folder reached twice through links: once)."""
    info = folder.stat()
    identity = (info.st_dev, info.st_ino)
    if identity in visited:
        digest.update(f"{relative}\0(seen)\n".encode("utf-8", "surrogateescape"))
        return
    visited.add(identity)
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        name = f"{relative}{entry.name}"
        try:
            info = entry.stat()
        except FileNotFoundError:  # a dangling link: ingest refuses it by name; its target may appear later
            info = entry.stat(follow_symlinks=False)
        if entry.is_dir():
            _fingerprint_folder(Path(entry.path), f"{name}/", digest, visited)
        else:
            digest.update(
                f"{name}\0{info.st_size}\0{info.st_mtime_ns}\0{entry.is_symlink()}\n".encode("utf-8", "surrogateescape")
            )


def find_reusable(client, experiment_id: str, key: str):
    """The newest FINISHED run of the experiment tagged with ``key``, or None."""
    from segmodels.tracking import lineage

    runs = client.search_runs(
        [experiment_id],
        max_results=1,
        order_by=["attributes.start_time DESC"],
        filter_string=f"tags.`{lineage.TAG_CACHE_KEY}` = '{key}' and attributes.status = 'FINISHED'",
    )
    return runs[0] if runs else None


def record_reuse(client, parent_run_id: str, experiment_id: str, reused, key: str):
    """A FINISHED child run of ``parent_run_id`` standing for ``reused``: its params, final metrics, tags (outputs
    included) and the tag naming the run that did the work (the original, when ``reused`` is itself a reuse)."""
    from mlflow.entities import Metric, Param
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_PROJECT_ENTRY_POINT, MLFLOW_RUN_NAME

    from segmodels.tracking import lineage

    tags = reused.data.tags
    origin = tags.get(lineage.TAG_REUSED_RUN, reused.info.run_id)
    kept = {k: v for k, v in tags.items() if not k.startswith("mlflow.") or k == MLFLOW_PROJECT_ENTRY_POINT}
    kept.update(
        {
            MLFLOW_PARENT_RUN_ID: parent_run_id,
            lineage.TAG_REUSED_RUN: origin,
            lineage.TAG_CACHE_KEY: key,
            MLFLOW_RUN_NAME: f"{tags.get(lineage.TAG_STEP, 'step')} (reused {origin[:8]})",
        }
    )
    run = client.create_run(experiment_id, tags=kept)
    params = [Param(k, v) for k, v in reused.data.params.items()]
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, 0) for k, v in reused.data.metrics.items() if not k.startswith("system/")]
    for start in range(0, max(len(params), len(metrics)), 100):
        client.log_batch(run.info.run_id, params=params[start : start + 100], metrics=metrics[start : start + 100])
    client.set_terminated(run.info.run_id, "FINISHED")
    return client.get_run(run.info.run_id)
