"""Branches' staging areas: uncommitted object writes and deletions (tombstones), per branch, by path.

:class:`StagingManager` reads and writes them through one SQLite connection, inside the transaction the catalog
opened (``storage.Database``).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Iterable, Iterator

from .records import Entry, prefix_upper_bound

ENTRY_COLUMNS = "path, address, checksum, size, mtime, content_type, metadata"
NOT_STAGED = object()  # what ``staged`` answers for a path without staged changes


def entry_from_row(row) -> Entry:
    """The entry of a row of ``ENTRY_COLUMNS`` (metadata as JSON)."""
    return Entry(row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]))


class StagingManager:
    """The staging areas of one transaction (lakeFS' ``graveler.StagingManager``): per branch and path, a staged
    write (an :class:`Entry`) or a tombstone (a staged deletion of a committed object), in the ``staging`` table."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def stage(self, repo: str, branch: str, entries: Iterable[Entry]) -> None:
        """Stage writes of ``entries`` (replacing earlier staged changes of their paths)."""
        self.conn.executemany(
            "INSERT OR REPLACE INTO staging VALUES (?,?,?,0,?,?,?,?,?,?)",
            (
                (repo, branch, e.path, e.address, e.checksum, e.size, e.mtime, e.content_type, json.dumps(e.metadata))
                for e in entries
            ),
        )

    def stage_deletion(self, repo: str, branch: str, path: str, committed: bool) -> None:
        """Stage the deletion of ``path``: a tombstone over a ``committed`` object, else just drop the staged one."""
        if committed:
            self.conn.execute(
                "INSERT OR REPLACE INTO staging (repo, branch, path, tombstone) VALUES (?,?,?,1)", (repo, branch, path)
            )
        else:
            self.conn.execute("DELETE FROM staging WHERE repo=? AND branch=? AND path=?", (repo, branch, path))

    def staged(self, repo: str, branch: str, path: str):
        """The staged change of ``path``: an Entry, None (a tombstone), or ``NOT_STAGED``."""
        row = self.conn.execute(
            f"SELECT tombstone, {ENTRY_COLUMNS} FROM staging WHERE repo=? AND branch=? AND path=?", (repo, branch, path)
        ).fetchone()
        if row is None:
            return NOT_STAGED
        return None if row[0] else entry_from_row(row[1:])

    def changes(
        self, repo: str, branch: str, start: str = "", inclusive: bool = True
    ) -> Iterator[tuple[str, Entry | None]]:
        """The branch's staged changes in path order from ``start``: ``(path, Entry)`` or ``(path, None)``."""
        op = ">=" if inclusive else ">"
        rows = self.conn.execute(
            f"SELECT tombstone, {ENTRY_COLUMNS} FROM staging WHERE repo=? AND branch=? AND path {op} ? ORDER BY path",
            (repo, branch, start),
        )
        for row in rows:
            yield row[1], None if row[0] else entry_from_row(row[1:])

    def is_dirty(self, repo: str, branch: str) -> bool:
        """Whether the branch has staged changes."""
        return (
            self.conn.execute("SELECT 1 FROM staging WHERE repo=? AND branch=? LIMIT 1", (repo, branch)).fetchone()
            is not None
        )

    def drop(self, repo: str, branch: str | None = None, prefix: str = "", exact: bool = False) -> None:
        """Discard staged changes: of the repository, of ``branch``, below ``prefix`` or (``exact``) of one path."""
        if branch is None:
            self.conn.execute("DELETE FROM staging WHERE repo=?", (repo,))
        elif exact:
            self.conn.execute("DELETE FROM staging WHERE repo=? AND branch=? AND path=?", (repo, branch, prefix))
        else:
            upper = prefix_upper_bound(prefix)
            self.conn.execute(
                "DELETE FROM staging WHERE repo=? AND branch=? AND path >= ?" + (" AND path < ?" if upper else ""),
                (repo, branch, prefix, *([upper] if upper else [])),
            )

    def addresses(self) -> Iterator[str]:
        """Blob addresses of every staged write (of every repository)."""
        return (row[0] for row in self.conn.execute("SELECT DISTINCT address FROM staging WHERE tombstone=0"))
