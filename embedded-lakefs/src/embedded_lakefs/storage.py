"""The catalog's SQLite database: schema, connections, transactions (units of work), migration.

Every mutation is one SQLite transaction (WAL), so a process killed at any point leaves either the state before
or the state after it. ``Database.write()`` / ``read()`` open one and hand it out as a :class:`Transaction`: the
refs, staging and committed-data managers bound to that one transaction.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .committed import CommittedManager
from .refs import RefManager
from .staging import StagingManager, entry_from_row
from .tree import EMPTY_TREE, NodeCache

PAGE_SIZE = 16384  # tree nodes are 1-3 KB: several share a page
SCHEMA_VERSION = 3  # 1: a row per object per tree (``tree_entries``); 2: shared tree nodes (``nodes``);
# 3: hidden branches (``branches.hidden``), commit times in nanoseconds for lakeFS' log order (``commits.created_ns``)
ADDED_COLUMNS = (  # (table, column, declaration) added since schema 1, in the order added
    ("branches", "hidden", "INTEGER NOT NULL DEFAULT 0"),
    ("commits", "created_ns", "INTEGER NOT NULL DEFAULT 0"),
)
SCHEMA = """
CREATE TABLE IF NOT EXISTS repositories (
    name TEXT PRIMARY KEY, storage_namespace TEXT NOT NULL, default_branch TEXT NOT NULL,
    creation_date INTEGER NOT NULL, read_only INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS branches (
    repo TEXT NOT NULL, name TEXT NOT NULL, commit_id TEXT NOT NULL, hidden INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (repo, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tags (
    repo TEXT NOT NULL, name TEXT NOT NULL, commit_id TEXT NOT NULL, PRIMARY KEY (repo, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS commits (
    repo TEXT NOT NULL, id TEXT NOT NULL, parents TEXT NOT NULL, committer TEXT NOT NULL, message TEXT NOT NULL,
    creation_date INTEGER NOT NULL, meta_range_id TEXT NOT NULL, metadata TEXT NOT NULL,
    generation INTEGER NOT NULL, created_ns INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (repo, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nodes (id TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS staging (
    repo TEXT NOT NULL, branch TEXT NOT NULL, path TEXT NOT NULL, tombstone INTEGER NOT NULL,
    address TEXT, checksum TEXT, size INTEGER, mtime INTEGER, content_type TEXT, metadata TEXT,
    PRIMARY KEY (repo, branch, path)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS branch_protection (repo TEXT PRIMARY KEY, rules TEXT NOT NULL) WITHOUT ROWID;
"""


class Transaction:
    """A unit of work: one SQLite transaction seen through the refs (``refs``), staging (``staging``) and committed
    data (``committed``) managers, all bound to it."""

    def __init__(self, conn: sqlite3.Connection, node_cache: NodeCache):
        self.refs = RefManager(conn)
        self.staging = StagingManager(conn)
        self.committed = CommittedManager(conn, node_cache)


class Database:
    """One SQLite file: a connection per thread, serialized write transactions, snapshot reads."""

    def __init__(self, path: Path, synchronous: str = "FULL"):
        self.path = str(path)
        self.synchronous = synchronous
        self.node_cache = NodeCache()
        self._local = threading.local()
        self._write_lock = threading.Lock()
        with self._writing() as conn:
            migrated = migrate(conn, CommittedManager(conn, self.node_cache))
        if migrated:
            self._compact()

    def _compact(self) -> None:
        """Give back free pages and take the page size of new databases; skipped while another connection is
        open (the database stays valid, only larger)."""
        conn = self.connection()
        try:
            conn.execute("PRAGMA journal_mode=DELETE")
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
            conn.execute("VACUUM")
        except sqlite3.OperationalError:
            pass
        finally:
            conn.execute("PRAGMA journal_mode=WAL")

    def connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # takes effect on a new database only
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            self._local.conn = conn
        return conn

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection in a write transaction (serialized, rolled back on an error)."""
        with self._write_lock:
            conn = self.connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def write(self) -> Iterator[Transaction]:
        """A write transaction: all of it or nothing is stored."""
        with self._writing() as conn:
            yield Transaction(conn, self.node_cache)

    @contextmanager
    def read(self) -> Iterator[Transaction]:
        """A read transaction: a snapshot, concurrent with the writer (WAL)."""
        conn = self.connection()
        conn.execute("BEGIN")
        try:
            yield Transaction(conn, self.node_cache)
        finally:
            conn.execute("COMMIT")


def migrate(conn: sqlite3.Connection, trees: CommittedManager) -> bool:
    """Create the schema, or bring an older database to it: the columns added since (``ADDED_COLUMNS``) and, for a
    version-1 database (one row per object per tree), shared tree nodes.

    Commit ids stay as they are; each commit's ``meta_range_id`` becomes its tree's new root id. A commit's tree
    is built from its first parent's as the changes between the two (SQL set differences), so the migration costs
    about one pass over the old rows. It runs inside the caller's transaction: an interrupted migration leaves
    the version-1 database untouched. True when it migrated."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise RuntimeError(
            f"{conn.execute('PRAGMA database_list').fetchone()[2]}: written by a newer embedded-lakefs "
            f"(schema {version}, this one reads {SCHEMA_VERSION})"
        )
    old_trees = conn.execute("SELECT 1 FROM sqlite_master WHERE name='tree_entries'").fetchone() is not None
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    _add_columns(conn)
    if old_trees:
        new_roots = {EMPTY_TREE: EMPTY_TREE}
        commits = conn.execute("SELECT repo, id, parents, meta_range_id FROM commits ORDER BY generation").fetchall()
        old_tree_of = {(repo, commit_id): tree_id for repo, commit_id, _, tree_id in commits}
        for repo, _, parents, tree_id in commits:
            if tree_id not in new_roots:
                parents = json.loads(parents)
                base = old_tree_of.get((repo, parents[0]), EMPTY_TREE) if parents else EMPTY_TREE
                new_roots[tree_id] = trees.apply(new_roots[base], _tree_changes(conn, base, tree_id))
        conn.executemany(
            "UPDATE commits SET meta_range_id=? WHERE meta_range_id=?",
            [(new, old) for old, new in new_roots.items() if old != EMPTY_TREE],
        )
        conn.execute("DROP TABLE tree_entries")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    return old_trees


def _add_columns(conn: sqlite3.Connection) -> None:
    """Give tables of an older schema the columns added since (schema 3: a branch is not hidden; a commit's time
    in nanoseconds is its creation second's start)."""
    for table, column, declaration in ADDED_COLUMNS:
        if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
            if column == "created_ns":
                conn.execute("UPDATE commits SET created_ns = creation_date * 1000000000")


def _tree_changes(conn: sqlite3.Connection, base: str, tree_id: str) -> list[tuple[str, list | None]]:
    """The changes from version-1 tree ``base`` to ``tree_id``, sorted by path (None: removed)."""
    columns = "path, address, checksum, size, mtime, content_type, metadata"  # version 1's, fixed
    written = conn.execute(
        f"SELECT {columns} FROM tree_entries WHERE tree_id=? EXCEPT SELECT {columns} FROM tree_entries WHERE tree_id=?",
        (tree_id, base),
    )
    removed = conn.execute(
        "SELECT path FROM tree_entries WHERE tree_id=? EXCEPT SELECT path FROM tree_entries WHERE tree_id=?",
        (base, tree_id),
    )
    changes = [(row[0], entry_from_row(row).value()) for row in written] + [(row[0], None) for row in removed]
    return sorted(changes, key=lambda change: change[0])
