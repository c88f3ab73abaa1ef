"""Garbage collection: delete the commits, tree nodes and blobs nothing live references.

Live: every commit reachable from a branch or a tag, and (for ``retention``) every commit younger than that, with
their ancestors; every tree node of a live commit; every blob a live tree or a staging area references. A commit
left unreachable (a deleted branch's, a reset's) goes once it is older than the retention, then its nodes and
blobs; a blob nothing ever referenced (a failed upload) goes once it has not been written for the retention.
History reachable from a branch or tag is never collected: any recorded commit can be read back.

Safe while the server runs: the marking and the deletion of commits and nodes are one write transaction, and blobs
are deleted under :meth:`BlobStore.collecting`, which waits for uploads between storing a blob and staging it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .blockstore import BlobStore
from .refs import RefManager
from .storage import Database

DEFAULT_RETENTION_DAYS = 7.0


@dataclass(frozen=True)
class CollectionReport:
    """What a collection removed (or, with ``dry_run``, would remove)."""

    commits: int
    nodes: int
    node_bytes: int
    blobs: int
    blob_bytes: int
    dry_run: bool

    def summary(self) -> str:
        verb = "would free" if self.dry_run else "freed"
        return (
            f"{verb} {self.blobs} blobs ({self.blob_bytes / 1e6:.1f} MB), {self.commits} unreachable commits "
            f"and {self.nodes} tree nodes ({self.node_bytes / 1e6:.1f} MB)"
        )


def collect_garbage(
    data_dir: Path, retention_days: float = DEFAULT_RETENTION_DAYS, dry_run: bool = False, now: float | None = None
) -> CollectionReport:
    """Collect the embedded server's data directory ``data_dir`` (``lakefs.db`` and ``blobs/``)."""
    data_dir = Path(data_dir)
    if not (data_dir / "lakefs.db").is_file():
        raise FileNotFoundError(f"{data_dir}: no embedded lakeFS data here (lakefs.db is missing)")
    cutoff = (time.time() if now is None else now) - retention_days * 86400
    db, blobs = Database(data_dir / "lakefs.db"), BlobStore(data_dir / "blobs")
    with blobs.collecting():
        with db.read() if dry_run else db.write() as tx:
            dead_commits, live_roots = _sweep_commits(tx.refs, cutoff)
            live_nodes: set[str] = set()
            live_blobs = set(tx.staging.addresses())
            for root in live_roots:
                for _, node in tx.committed.walk(root, live_nodes):
                    if node.level == 0:
                        live_blobs.update(value[0] for _, value in node.items)
            dead_nodes = [(node_id, size) for node_id, size in tx.committed.node_sizes() if node_id not in live_nodes]
            if not dry_run:
                tx.refs.delete_commits(dead_commits)
                tx.committed.delete_nodes(node_id for node_id, _ in dead_nodes)
        dead_blobs = [
            (address, stat.st_size)
            for address, stat in blobs.addresses()
            if address not in live_blobs and stat.st_mtime < cutoff
        ]
        if not dry_run:
            for address, _ in dead_blobs:
                blobs.path(address).unlink(missing_ok=True)
    return CollectionReport(
        len(dead_commits),
        len(dead_nodes),
        sum(size for _, size in dead_nodes),
        len(dead_blobs),
        sum(size for _, size in dead_blobs),
        dry_run,
    )


def _sweep_commits(refs: RefManager, cutoff: float) -> tuple[list[tuple[str, str]], set[str]]:
    """The unreachable commits older than ``cutoff`` (``(repo, id)``) and the tree roots of the others."""
    commits = {(repo, commit_id): (parents, date, root) for repo, commit_id, parents, date, root in refs.all_commits()}
    frontier = refs.heads()
    frontier += [key for key, (_, date, _) in commits.items() if date >= cutoff]
    live: set[tuple[str, str]] = set()
    while frontier:
        key = frontier.pop()
        if key in live or key not in commits:
            continue
        live.add(key)
        frontier.extend((key[0], parent) for parent in commits[key][0])
    return [key for key in commits if key not in live], {commits[key][2] for key in live}
