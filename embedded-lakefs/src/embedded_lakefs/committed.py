"""Committed data: the trees commits point at (lakeFS' metaranges), with their nodes in the ``nodes`` table.

:class:`CommittedManager` (lakeFS' ``graveler.CommittedManager``) looks paths up, lists, diffs, applies changes and
merges, over :class:`~.tree.Trees` whose nodes it reads and writes through one SQLite connection, inside the
transaction the catalog opened (``storage.Database``). Values are what a tree stores under a path
(``Entry.value()``; None: absent).
"""

from __future__ import annotations

import sqlite3
from typing import Iterable, Iterator

from .merge import merge_changes
from .records import same_object
from .tree import MissingNode, Node, NodeCache, Trees


class SQLiteNodes:
    """Tree nodes in the ``nodes`` table, through one connection (and so inside its transaction)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def get(self, node_id: str) -> bytes:
        row = self.conn.execute("SELECT data FROM nodes WHERE id=?", (node_id,)).fetchone()
        if row is None:
            raise MissingNode(node_id)
        return row[0]

    def put(self, node_id: str, data: bytes) -> None:
        self.conn.execute("INSERT OR IGNORE INTO nodes VALUES (?,?)", (node_id, data))


class CommittedManager:
    """The committed trees of one transaction; a tree is named by its root id (``EMPTY_TREE``: no objects)."""

    def __init__(self, conn: sqlite3.Connection, cache: NodeCache):
        self.conn = conn
        self.trees = Trees(SQLiteNodes(conn), cache)

    def get(self, root: str, path: str) -> list | None:
        """The value stored under ``path``, or None."""
        return self.trees.get(root, path)

    def items(self, root: str, start: str = "", inclusive: bool = True) -> Iterator[tuple[str, list]]:
        """``(path, value)`` in path order from ``start`` (included or not)."""
        return self.trees.items(root, start, inclusive)

    def diff(
        self, left: str, right: str, start: str = "", inclusive: bool = True
    ) -> Iterator[tuple[str, list | None, list | None]]:
        """``(path, left value, right value)`` for each path whose values differ, in path order from ``start``."""
        return self.trees.diff(left, right, start, inclusive)

    def apply(self, root: str, changes: Iterable[tuple[str, list | None]]) -> str:
        """The root of ``root``'s tree with ``changes`` (sorted by path, unique; None: delete): O(k log N)."""
        return self.trees.apply(root, changes)

    def merge(self, base: str, source: str, dest: str, strategy: str | None) -> str:
        """The root of ``dest`` with the changes from ``base`` to ``source`` merged in (``merge.merge_changes``;
        409 on a conflict ``strategy`` does not settle): O(changes x log N)."""
        changes = list(merge_changes(self.diff(base, source), lambda path: self.get(dest, path), strategy, same_object))
        return self.apply(dest, changes)

    def walk(self, root: str, seen: set[str]) -> Iterator[tuple[str, Node]]:
        """Each node of the tree not in ``seen`` (subtrees in it are skipped), adding it to ``seen``."""
        return self.trees.walk(root, seen)

    def node_sizes(self) -> Iterator[tuple[str, int]]:
        """``(node id, stored bytes)`` of every node (of every tree)."""
        return iter(self.conn.execute("SELECT id, length(data) FROM nodes"))

    def delete_nodes(self, node_ids: Iterable[str]) -> None:
        self.conn.executemany("DELETE FROM nodes WHERE id=?", ((node_id,) for node_id in node_ids))
