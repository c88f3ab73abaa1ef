"""lakeFS semantics over SQLite: repositories, branches with staging areas, immutable commits, tags, merge, diff.

Every mutation is one SQLite transaction (WAL), so a process killed at any point leaves either the state
before or the state after the operation. Committed trees are stored once per content hash (``tree_id``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .errors import BadRequest, Conflict, Forbidden, NotFound, PreconditionFailed
from .refs import is_a_hash, parse_ref
from .validation import BRANCH_NAME, REPOSITORY_NAME, TAG_NAME, check_name

SCHEMA = """
CREATE TABLE IF NOT EXISTS repositories (
    name TEXT PRIMARY KEY, storage_namespace TEXT NOT NULL, default_branch TEXT NOT NULL,
    creation_date INTEGER NOT NULL, read_only INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS branches (
    repo TEXT NOT NULL, name TEXT NOT NULL, commit_id TEXT NOT NULL, PRIMARY KEY (repo, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tags (
    repo TEXT NOT NULL, name TEXT NOT NULL, commit_id TEXT NOT NULL, PRIMARY KEY (repo, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS commits (
    repo TEXT NOT NULL, id TEXT NOT NULL, parents TEXT NOT NULL, committer TEXT NOT NULL, message TEXT NOT NULL,
    creation_date INTEGER NOT NULL, meta_range_id TEXT NOT NULL, metadata TEXT NOT NULL,
    generation INTEGER NOT NULL, PRIMARY KEY (repo, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tree_entries (
    tree_id TEXT NOT NULL, path TEXT NOT NULL, address TEXT NOT NULL, checksum TEXT NOT NULL,
    size INTEGER NOT NULL, mtime INTEGER NOT NULL, content_type TEXT NOT NULL, metadata TEXT NOT NULL,
    PRIMARY KEY (tree_id, path)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS staging (
    repo TEXT NOT NULL, branch TEXT NOT NULL, path TEXT NOT NULL, tombstone INTEGER NOT NULL,
    address TEXT, checksum TEXT, size INTEGER, mtime INTEGER, content_type TEXT, metadata TEXT,
    PRIMARY KEY (repo, branch, path)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS branch_protection (repo TEXT PRIMARY KEY, rules TEXT NOT NULL) WITHOUT ROWID;
"""

ENTRY_COLUMNS = "path, address, checksum, size, mtime, content_type, metadata"
EMPTY_TREE = ""
COMMIT_VERSION = 1
DEFAULT_AMOUNT = 100
MAX_AMOUNT = 1000
MERGE_STRATEGY_METADATA_KEY = ".lakefs.merge.strategy"  # recorded on merge commits, as lakeFS does


@dataclass(frozen=True)
class Entry:
    """An object version: where its bytes are (``address``) and what lakeFS reports about it."""

    path: str
    address: str
    checksum: str
    size: int
    mtime: int
    content_type: str
    metadata: dict = field(default_factory=dict)

    @classmethod
    def from_row(cls, row) -> "Entry":
        return cls(row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]))

    def identity(self) -> tuple:
        """What makes two entries the same object version (for merge and diff)."""
        return (self.address, self.checksum, self.size, self.content_type, json.dumps(self.metadata, sort_keys=True))


@dataclass(frozen=True)
class CommonPrefix:
    """A listing result standing for every path below ``path`` (which ends with the delimiter)."""

    path: str


@dataclass(frozen=True)
class Commit:
    id: str
    parents: list
    committer: str
    message: str
    creation_date: int
    meta_range_id: str
    metadata: dict
    generation: int


@dataclass(frozen=True)
class Difference:
    """One line of a diff: ``type`` is added / removed / changed / conflict / prefix_changed."""

    type: str
    path: str
    size: int | None = None
    common_prefix: bool = False


@dataclass(frozen=True)
class ResolvedRef:
    """A ref resolved to a commit; ``branch`` is set when reads must include that branch's staging area."""

    commit_id: str
    branch: str | None = None


def _prefix_upper_bound(prefix: str) -> str | None:
    """Smallest string greater than every string that starts with ``prefix`` (None: unbounded)."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            return prefix[:-1] + chr(last + 1)
        prefix = prefix[:-1]
    return None


def tree_id_of(entries: dict[str, Entry]) -> str:
    """Content hash of a tree (the commit's ``meta_range_id``); the empty tree is ``""``."""
    if not entries:
        return EMPTY_TREE
    digest = hashlib.sha256()
    for path in sorted(entries):
        e = entries[path]
        digest.update(json.dumps([path, e.address, e.checksum, e.size, e.mtime, e.content_type,
                                  e.metadata], sort_keys=True).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def paginate(items: list, amount: int | None) -> tuple[list, bool]:
    """Cut ``items`` (fetched with one extra) to ``amount`` and say whether more exist."""
    amount = normalize_amount(amount)
    return items[:amount], len(items) > amount


def normalize_amount(amount: int | None) -> int:
    """lakeFS' ``paginationAmount``: none or <= 0 is the default, at most ``MAX_AMOUNT``."""
    if amount is None or amount <= 0:
        return DEFAULT_AMOUNT
    return min(amount, MAX_AMOUNT)


class Catalog:
    """All metadata of the server, in one SQLite database."""

    def __init__(self, db_path: Path, synchronous: str = "FULL"):
        self.db_path = str(db_path)
        self.synchronous = synchronous
        self._local = threading.local()
        self._write_lock = threading.Lock()
        with self._write_lock:
            self._conn().executescript(SCHEMA)

    # -- connections and transactions ------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            self._local.conn = conn
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._write_lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    # -- repositories ----------------------------------------------------------------------------------------
    def create_repository(self, name: str, storage_namespace: str, default_branch: str = "main",
                          read_only: bool = False) -> dict:
        check_name("repository", name, REPOSITORY_NAME)
        check_name("branch", default_branch, BRANCH_NAME)
        if not storage_namespace:
            raise BadRequest("validation error: storage_namespace: required")
        now = int(time.time())
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM repositories WHERE name=?", (name,)).fetchone():
                raise Conflict("error creating repository: not unique")
            conn.execute("INSERT INTO repositories VALUES (?,?,?,?,?)",
                         (name, storage_namespace, default_branch, now, int(read_only)))
            commit = self._insert_commit(conn, name, [], "", "Repository created", now, EMPTY_TREE, {})
            conn.execute("INSERT INTO branches VALUES (?,?,?)", (name, default_branch, commit.id))
        return self.get_repository(name)

    def get_repository(self, name: str, conn: sqlite3.Connection | None = None) -> dict:
        row = (conn or self._conn()).execute(
            "SELECT name, storage_namespace, default_branch, creation_date, read_only FROM repositories "
            "WHERE name=?", (name,)).fetchone()
        if row is None:
            raise NotFound("repository not found")
        return {"id": row[0], "storage_namespace": row[1], "default_branch": row[2], "creation_date": row[3],
                "read_only": bool(row[4])}

    def list_repositories(self, prefix: str = "", after: str = "", amount: int | None = None):
        rows = self._conn().execute(
            "SELECT name FROM repositories WHERE name > ? AND name >= ? ORDER BY name LIMIT ?",
            (after, prefix, normalize_amount(amount) + 1)).fetchall()
        names = [r[0] for r in rows if r[0].startswith(prefix)]
        names, has_more = paginate(names, amount)
        return [self.get_repository(n) for n in names], has_more

    def delete_repository(self, name: str) -> None:
        with self._write() as conn:
            self.get_repository(name, conn)
            conn.execute("DELETE FROM branch_protection WHERE repo=?", (name,))
            for table in ("branches", "tags", "commits", "staging"):
                conn.execute(f"DELETE FROM {table} WHERE repo=?", (name,))
            conn.execute("DELETE FROM repositories WHERE name=?", (name,))

    # -- commits ---------------------------------------------------------------------------------------------
    def _insert_commit(self, conn, repo: str, parents: list, committer: str, message: str, creation_date: int,
                       tree_id: str, metadata: dict) -> Commit:
        generation = 1 + max((self._commit(conn, repo, p).generation for p in parents), default=0)
        body = json.dumps({"parents": parents, "committer": committer, "message": message,
                           "creation_date": creation_date, "meta_range_id": tree_id, "metadata": metadata,
                           "generation": generation, "version": COMMIT_VERSION}, sort_keys=True)
        commit_id = hashlib.sha256(f"{repo}\n{body}".encode()).hexdigest()
        conn.execute("INSERT OR IGNORE INTO commits VALUES (?,?,?,?,?,?,?,?,?)",
                     (repo, commit_id, json.dumps(parents), committer, message, creation_date, tree_id,
                      json.dumps(metadata), generation))
        return Commit(commit_id, parents, committer, message, creation_date, tree_id, metadata, generation)

    def _commit(self, conn, repo: str, commit_id: str) -> Commit:
        row = conn.execute("SELECT id, parents, committer, message, creation_date, meta_range_id, metadata, "
                           "generation FROM commits WHERE repo=? AND id=?", (repo, commit_id)).fetchone()
        if row is None:
            raise NotFound("commit not found")
        return Commit(row[0], json.loads(row[1]), row[2], row[3], row[4], row[5], json.loads(row[6]), row[7])

    def get_commit(self, repo: str, ref: str) -> Commit:
        with self._read() as conn:
            self.get_repository(repo, conn)
            return self._commit(conn, repo, self._resolve(conn, repo, ref).commit_id)

    def commit(self, repo: str, branch: str, message: str, committer: str, metadata: dict | None = None,
               date: int | None = None, allow_empty: bool = False, force: bool = False) -> Commit:
        if not message:
            raise BadRequest("validation error: message: commit message is required")
        with self._write() as conn:
            self.get_repository(repo, conn)
            head = self._branch_commit(conn, repo, branch)
            self._guard(conn, repo, branch, force, committing=True)
            parent = self._commit(conn, repo, head)
            tree = self._tree(conn, parent.meta_range_id)
            staged = self._staging(conn, repo, branch)
            for path, entry in staged.items():
                if entry is None:
                    tree.pop(path, None)
                else:
                    tree[path] = entry
            tree_id = tree_id_of(tree)
            if tree_id == parent.meta_range_id and not allow_empty:
                raise BadRequest("commit: no changes")
            self._store_tree(conn, tree_id, tree)
            commit = self._insert_commit(conn, repo, [head], committer, message,
                                         int(date) if date is not None else int(time.time()), tree_id,
                                         metadata or {})
            conn.execute("UPDATE branches SET commit_id=? WHERE repo=? AND name=?", (commit.id, repo, branch))
            conn.execute("DELETE FROM staging WHERE repo=? AND branch=?", (repo, branch))
            return commit

    def log(self, repo: str, ref: str, after: str = "", amount: int | None = None, first_parent: bool = False,
            stop_at: str | None = None, limit: bool = False, objects: list[str] | tuple = (),
            prefixes: list[str] | tuple = (), since: float | None = None) -> tuple[list[Commit], bool]:
        """Commits reachable from ``ref``, newest generation first, paginated by commit id.

        ``stop_at`` ends the log at that commit (included), ``since`` at the first commit created before it
        (excluded). With ``objects`` / ``prefixes`` only commits that changed one of those objects, or an
        object below one of those prefixes, relative to their first parent are listed (as lakeFS does)."""
        with self._read() as conn:
            self.get_repository(repo, conn)
            start = self._resolve(conn, repo, ref).commit_id
            stop = self._resolve(conn, repo, stop_at).commit_id if stop_at else None
            seen, frontier, commits = set(), [start], []
            while frontier:
                commit_id = frontier.pop()
                if commit_id in seen:
                    continue
                seen.add(commit_id)
                commit = self._commit(conn, repo, commit_id)
                commits.append(commit)
                frontier.extend(commit.parents[:1] if first_parent else commit.parents)
            commits.sort(key=lambda c: (-c.generation, -c.creation_date, c.id))
            if stop:
                cut = next((i for i, c in enumerate(commits) if c.id == stop), None)
                if cut is not None:
                    commits = commits[:cut + 1]
            if since is not None:
                cut = next((i for i, c in enumerate(commits) if c.creation_date < since), None)
                if cut is not None:
                    commits = commits[:cut]
            if after:
                cut = next((i for i, c in enumerate(commits) if c.id == after), None)
                commits = commits[cut + 1:] if cut is not None else []
            if objects or prefixes:
                wanted, matching = normalize_amount(amount) + 1, []
                for commit in commits:
                    if self._commit_touches(conn, repo, commit, objects, prefixes):
                        matching.append(commit)
                        if len(matching) >= wanted:
                            break
                commits = matching
            page, has_more = paginate(commits, amount)
            return page, (has_more and not limit)

    def _commit_touches(self, conn, repo: str, commit: Commit, objects, prefixes) -> bool:
        """Whether ``commit`` changed one of ``objects`` or something below one of ``prefixes`` (vs. its
        first parent; a root commit against the empty tree)."""
        parent_tree = self._commit(conn, repo, commit.parents[0]).meta_range_id if commit.parents else EMPTY_TREE
        if parent_tree == commit.meta_range_id:
            return False
        for path in objects:
            if self._tree_slice(conn, parent_tree, path, exact=True) != \
                    self._tree_slice(conn, commit.meta_range_id, path, exact=True):
                return True
        for prefix in prefixes:
            if self._tree_slice(conn, parent_tree, prefix) != self._tree_slice(conn, commit.meta_range_id, prefix):
                return True
        return False

    def _tree_slice(self, conn, tree_id: str, path: str, exact: bool = False) -> dict[str, tuple]:
        """Identities of a tree's entries at ``path`` (``exact``) or below the prefix ``path``."""
        if tree_id == EMPTY_TREE:
            return {}
        if exact:
            rows = conn.execute(f"SELECT {ENTRY_COLUMNS} FROM tree_entries WHERE tree_id=? AND path=?",
                                (tree_id, path))
        else:
            upper = _prefix_upper_bound(path)
            rows = conn.execute(f"SELECT {ENTRY_COLUMNS} FROM tree_entries WHERE tree_id=? AND path >= ?"
                                + (" AND path < ?" if upper else ""), (tree_id, path, *([upper] if upper else [])))
        return {row[0]: Entry.from_row(row).identity() for row in rows}

    # -- trees and staging -----------------------------------------------------------------------------------
    def _tree(self, conn, tree_id: str) -> dict[str, Entry]:
        if tree_id == EMPTY_TREE:
            return {}
        rows = conn.execute(f"SELECT {ENTRY_COLUMNS} FROM tree_entries WHERE tree_id=?", (tree_id,))
        return {row[0]: Entry.from_row(row) for row in rows}

    def _store_tree(self, conn, tree_id: str, tree: dict[str, Entry]) -> None:
        if tree_id == EMPTY_TREE or conn.execute("SELECT 1 FROM tree_entries WHERE tree_id=? LIMIT 1",
                                                 (tree_id,)).fetchone():
            return
        conn.executemany("INSERT INTO tree_entries VALUES (?,?,?,?,?,?,?,?)",
                         [(tree_id, e.path, e.address, e.checksum, e.size, e.mtime, e.content_type,
                           json.dumps(e.metadata)) for e in tree.values()])

    def _staging(self, conn, repo: str, branch: str) -> dict[str, Entry | None]:
        rows = conn.execute(f"SELECT tombstone, {ENTRY_COLUMNS} FROM staging WHERE repo=? AND branch=?",
                            (repo, branch))
        return {row[1]: None if row[0] else Entry.from_row(row[1:]) for row in rows}

    # -- write guards: read-only repositories and branch protection -----------------------------------------
    def _guard(self, conn, repo: str, branch: str | None, force: bool = False, committing: bool = False,
               protect: bool = True) -> None:
        """403 for a write to a read-only repository (unless ``force``) or to a protected branch."""
        if self.get_repository(repo, conn)["read_only"] and not force:
            raise Forbidden("read-only repository")
        if protect and branch is not None and self._is_protected(conn, repo, branch):
            raise Forbidden("cannot commit to protected branch" if committing else
                            "cannot write to protected branch")

    def check_writable(self, repo: str, branch: str, force: bool = False) -> None:
        """404 for a missing repository or branch, 403 when writes to ``branch`` are refused (see ``_guard``)."""
        with self._read() as conn:
            self.get_repository(repo, conn)
            self._branch_commit(conn, repo, branch)
            self._guard(conn, repo, branch, force)

    def _protection_rules(self, conn, repo: str) -> list[dict]:
        row = conn.execute("SELECT rules FROM branch_protection WHERE repo=?", (repo,)).fetchone()
        return json.loads(row[0]) if row else []

    def _is_protected(self, conn, repo: str, branch: str) -> bool:
        return any(fnmatch.fnmatchcase(branch, rule["pattern"]) for rule in self._protection_rules(conn, repo))

    @staticmethod
    def _rules_etag(rules: list[dict]) -> str:
        return hashlib.sha256(json.dumps(rules, sort_keys=True).encode()).hexdigest()

    def get_branch_protection(self, repo: str) -> tuple[list[dict], str]:
        """The repository's branch protection rules and their ETag."""
        with self._read() as conn:
            self.get_repository(repo, conn)
            rules = self._protection_rules(conn, repo)
            return rules, self._rules_etag(rules)

    def set_branch_protection(self, repo: str, rules: list[dict], if_match: str | None = None) -> None:
        """Replace the rules; 412 when ``if_match`` is not the current rules' ETag."""
        with self._write() as conn:
            repository = self.get_repository(repo, conn)
            if repository["read_only"]:
                raise Forbidden("read-only repository")
            current = self._protection_rules(conn, repo)
            if if_match is not None and if_match.strip().strip('"') != self._rules_etag(current):
                raise PreconditionFailed("precondition failed: branch protection rules were changed")
            conn.execute("INSERT OR REPLACE INTO branch_protection VALUES (?,?)", (repo, json.dumps(rules)))

    # -- refs ------------------------------------------------------------------------------------------------
    def _branch_commit(self, conn, repo: str, branch: str) -> str:
        row = conn.execute("SELECT commit_id FROM branches WHERE repo=? AND name=?", (repo, branch)).fetchone()
        if row is None:
            raise NotFound(f"branch '{branch}' not found")
        return row[0]

    def _resolve(self, conn, repo: str, ref: str) -> ResolvedRef:
        expression = parse_ref(ref)
        resolved = self._resolve_name(conn, repo, expression.base)
        if expression.branch_modifier:
            if resolved.branch is None:  # "@" and "$" apply to branches only
                raise BadRequest(f"{ref}: invalid ref")
            return resolved if expression.branch_modifier == "$" else ResolvedRef(resolved.commit_id)
        if expression.modifiers:
            resolved = ResolvedRef(resolved.commit_id)
        commit_id = resolved.commit_id
        for kind, n in expression.modifiers:
            if kind == "~":
                for _ in range(n):
                    parents = self._commit(conn, repo, commit_id).parents
                    if not parents:
                        raise NotFound(f"{ref}: commit not found")
                    commit_id = parents[0]
            elif n > 0:
                parents = self._commit(conn, repo, commit_id).parents
                if n > len(parents):
                    raise BadRequest(f"{ref}: parent out of range")
                commit_id = parents[n - 1]
        return ResolvedRef(commit_id, resolved.branch)

    def _resolve_name(self, conn, repo: str, name: str) -> ResolvedRef:
        """As lakeFS' ``revResolve``: a commit id or unique id prefix first, then a branch, then a tag.

        An ambiguous prefix resolves as no commit (lakeFS' lookup answers not-found), so a branch or tag of
        that name still wins, and otherwise it is a 404."""
        if is_a_hash(name):
            if conn.execute("SELECT 1 FROM commits WHERE repo=? AND id=?", (repo, name)).fetchone():
                return ResolvedRef(name)
            upper = _prefix_upper_bound(name)
            rows = conn.execute("SELECT id FROM commits WHERE repo=? AND id >= ? AND id < ? LIMIT 2",
                                (repo, name, upper)).fetchall()
            if len(rows) == 1:
                return ResolvedRef(rows[0][0])
        row = conn.execute("SELECT commit_id FROM branches WHERE repo=? AND name=?", (repo, name)).fetchone()
        if row:
            return ResolvedRef(row[0], name)
        row = conn.execute("SELECT commit_id FROM tags WHERE repo=? AND name=?", (repo, name)).fetchone()
        if row:
            return ResolvedRef(row[0])
        raise NotFound(f"{name}: not found")

    def resolve(self, repo: str, ref: str) -> ResolvedRef:
        with self._read() as conn:
            self.get_repository(repo, conn)
            return self._resolve(conn, repo, ref)

    # -- branches --------------------------------------------------------------------------------------------
    def create_branch(self, repo: str, name: str, source: str, force: bool = False) -> str:
        check_name("branch", name, BRANCH_NAME)
        with self._write() as conn:
            self.get_repository(repo, conn)
            if parse_ref(source).branch_modifier == "$":  # graveler.ErrCreateBranchNoCommit
                raise BadRequest(f"source reference '{source}': can only create a branch from a commit")
            commit_id = self._resolve(conn, repo, source).commit_id
            self._guard(conn, repo, None, force)
            if conn.execute("SELECT 1 FROM branches WHERE repo=? AND name=?", (repo, name)).fetchone():
                if not force:
                    raise Conflict("branch already exists")
                conn.execute("DELETE FROM staging WHERE repo=? AND branch=?", (repo, name))
            conn.execute("INSERT OR REPLACE INTO branches VALUES (?,?,?)", (repo, name, commit_id))
            return commit_id

    def get_branch(self, repo: str, name: str) -> str:
        with self._read() as conn:
            self.get_repository(repo, conn)
            return self._branch_commit(conn, repo, name)

    def list_branches(self, repo: str, prefix: str = "", after: str = "", amount: int | None = None):
        return self._list_named(repo, "branches", prefix, after, amount)

    def _list_named(self, repo: str, table: str, prefix: str, after: str, amount: int | None):
        with self._read() as conn:
            self.get_repository(repo, conn)
            upper = _prefix_upper_bound(prefix)
            rows = conn.execute(
                f"SELECT name, commit_id FROM {table} WHERE repo=? AND name > ? AND name >= ? "
                + ("AND name < ? " if upper else "") + "ORDER BY name LIMIT ?",
                (repo, after, prefix, *([upper] if upper else []), normalize_amount(amount) + 1)).fetchall()
            return paginate([(r[0], r[1]) for r in rows], amount)

    def delete_branch(self, repo: str, name: str, force: bool = False) -> None:
        with self._write() as conn:
            repository = self.get_repository(repo, conn)
            self._branch_commit(conn, repo, name)
            self._guard(conn, repo, None, force)
            if name == repository["default_branch"]:
                raise BadRequest("cannot delete repository default branch")
            conn.execute("DELETE FROM branches WHERE repo=? AND name=?", (repo, name))
            conn.execute("DELETE FROM staging WHERE repo=? AND branch=?", (repo, name))

    def reset_branch(self, repo: str, branch: str, reset_type: str, path: str | None = None,
                     force: bool = False) -> None:
        """Drop uncommitted changes: all (``reset``), one object (``object``) or a prefix (``common_prefix``)."""
        with self._write() as conn:
            self.get_repository(repo, conn)
            self._branch_commit(conn, repo, branch)
            self._guard(conn, repo, branch, force)
            if reset_type == "reset":
                conn.execute("DELETE FROM staging WHERE repo=? AND branch=?", (repo, branch))
            elif reset_type == "object":
                conn.execute("DELETE FROM staging WHERE repo=? AND branch=? AND path=?", (repo, branch, path or ""))
            elif reset_type == "common_prefix":
                upper = _prefix_upper_bound(path or "")
                conn.execute("DELETE FROM staging WHERE repo=? AND branch=? AND path >= ?"
                             + (" AND path < ?" if upper else ""),
                             (repo, branch, path or "", *([upper] if upper else [])))
            else:
                raise BadRequest("unknown reset type")

    def hard_reset_branch(self, repo: str, branch: str, ref: str, force: bool = False) -> None:
        """Point ``branch`` at ``ref``'s commit and drop its staging area."""
        with self._write() as conn:
            self.get_repository(repo, conn)
            self._branch_commit(conn, repo, branch)
            self._guard(conn, repo, branch, force)
            commit_id = self._resolve(conn, repo, ref).commit_id
            conn.execute("UPDATE branches SET commit_id=? WHERE repo=? AND name=?", (commit_id, repo, branch))
            conn.execute("DELETE FROM staging WHERE repo=? AND branch=?", (repo, branch))

    # -- tags ------------------------------------------------------------------------------------------------
    def create_tag(self, repo: str, name: str, ref: str, force: bool = False) -> str:
        check_name("tag", name, TAG_NAME)
        with self._write() as conn:
            self.get_repository(repo, conn)
            commit_id = self._resolve(conn, repo, ref).commit_id
            if conn.execute("SELECT 1 FROM tags WHERE repo=? AND name=?", (repo, name)).fetchone() and not force:
                raise Conflict("tag already exists")
            conn.execute("INSERT OR REPLACE INTO tags VALUES (?,?,?)", (repo, name, commit_id))
            return commit_id

    def get_tag(self, repo: str, name: str) -> str:
        with self._read() as conn:
            self.get_repository(repo, conn)
            row = conn.execute("SELECT commit_id FROM tags WHERE repo=? AND name=?", (repo, name)).fetchone()
            if row is None:
                raise NotFound("tag not found")
            return row[0]

    def list_tags(self, repo: str, prefix: str = "", after: str = "", amount: int | None = None):
        return self._list_named(repo, "tags", prefix, after, amount)

    def delete_tag(self, repo: str, name: str) -> None:
        with self._write() as conn:
            self.get_repository(repo, conn)
            if conn.execute("DELETE FROM tags WHERE repo=? AND name=?", (repo, name)).rowcount == 0:
                raise NotFound("tag not found")

    # -- objects ---------------------------------------------------------------------------------------------
    def get_entry(self, repo: str, ref: str, path: str) -> Entry:
        with self._read() as conn:
            self.get_repository(repo, conn)
            return self._get_entry(conn, repo, self._resolve(conn, repo, ref), path)

    def _get_entry(self, conn, repo: str, resolved: ResolvedRef, path: str) -> Entry:
        if resolved.branch is not None:
            row = conn.execute(f"SELECT tombstone, {ENTRY_COLUMNS} FROM staging WHERE repo=? AND branch=? "
                               "AND path=?", (repo, resolved.branch, path)).fetchone()
            if row is not None:
                if row[0]:
                    raise NotFound("object not found")
                return Entry.from_row(row[1:])
        tree_id = self._commit(conn, repo, resolved.commit_id).meta_range_id
        row = conn.execute(f"SELECT {ENTRY_COLUMNS} FROM tree_entries WHERE tree_id=? AND path=?",
                           (tree_id, path)).fetchone()
        if row is None:
            raise NotFound("object not found")
        return Entry.from_row(row)

    def exists(self, repo: str, ref: str, path: str) -> bool:
        try:
            self.get_entry(repo, ref, path)
        except NotFound:
            return False
        return True

    def put_entry(self, repo: str, branch: str, entry: Entry, if_absent: bool = False,
                  if_match: str | None = None, force: bool = False) -> None:
        with self._write() as conn:
            self.get_repository(repo, conn)
            head = self._branch_commit(conn, repo, branch)
            self._guard(conn, repo, branch, force)
            if if_absent or if_match is not None:
                try:
                    current = self._get_entry(conn, repo, ResolvedRef(head, branch), entry.path)
                except NotFound:
                    current = None
                if if_absent and current is not None:
                    raise PreconditionFailed("path already exists")
                if if_match is not None and (current is None or current.checksum != if_match.strip('"')):
                    raise PreconditionFailed("precondition failed: ETag mismatch")
            conn.execute("INSERT OR REPLACE INTO staging VALUES (?,?,?,0,?,?,?,?,?,?)",
                         (repo, branch, entry.path, entry.address, entry.checksum, entry.size, entry.mtime,
                          entry.content_type, json.dumps(entry.metadata)))

    def delete_entries(self, repo: str, branch: str, paths: list[str], missing_ok: bool,
                       force: bool = False) -> list[str]:
        """Stage deletion of ``paths``; returns the paths not found (an error unless ``missing_ok``)."""
        with self._write() as conn:
            self.get_repository(repo, conn)
            head = self._branch_commit(conn, repo, branch)
            self._guard(conn, repo, branch, force)
            tree_id = self._commit(conn, repo, head).meta_range_id
            missing = []
            for path in paths:
                in_tree = tree_id != EMPTY_TREE and conn.execute(
                    "SELECT 1 FROM tree_entries WHERE tree_id=? AND path=?", (tree_id, path)).fetchone()
                staged = conn.execute("SELECT tombstone FROM staging WHERE repo=? AND branch=? AND path=?",
                                      (repo, branch, path)).fetchone()
                exists = (staged is not None and not staged[0]) or (staged is None and in_tree)
                if not exists:
                    missing.append(path)
                    if not missing_ok:
                        raise NotFound("object not found")
                if in_tree:
                    conn.execute("INSERT OR REPLACE INTO staging (repo, branch, path, tombstone) VALUES (?,?,?,1)",
                                 (repo, branch, path))
                else:
                    conn.execute("DELETE FROM staging WHERE repo=? AND branch=? AND path=?", (repo, branch, path))
            return missing

    def list_entries(self, repo: str, ref: str, prefix: str = "", after: str = "", amount: int | None = None,
                     delimiter: str = "") -> tuple[list, bool]:
        """Objects (and common prefixes, with ``delimiter``) at ``ref`` below ``prefix``, after ``after``."""
        limit = normalize_amount(amount)
        with self._read() as conn:
            self.get_repository(repo, conn)
            resolved = self._resolve(conn, repo, ref)
            tree_id = self._commit(conn, repo, resolved.commit_id).meta_range_id
            upper = _prefix_upper_bound(prefix)
            results: list = []
            lower, inclusive = max(after, prefix), after < prefix
            while len(results) <= limit:
                rows = self._fetch_view(conn, repo, resolved.branch, tree_id, lower, inclusive, upper,
                                        limit + 1 - len(results))
                if not rows:
                    break
                for entry in rows:
                    rest = entry.path[len(prefix):]
                    cut = rest.find(delimiter) if delimiter else -1
                    if cut < 0:
                        results.append(entry)
                        lower, inclusive = entry.path, False
                        continue
                    common = prefix + rest[:cut + len(delimiter)]
                    if common > after:
                        results.append(CommonPrefix(common))
                    skip_to = _prefix_upper_bound(common)
                    if skip_to is None:
                        return paginate(results, limit)
                    lower, inclusive = skip_to, True
                    break
            return paginate(results, limit)

    def _fetch_view(self, conn, repo: str, branch: str | None, tree_id: str, lower: str, inclusive: bool,
                    upper: str | None, limit: int) -> list[Entry]:
        """Up to ``limit`` entries of a commit tree overlaid by a branch's staging area, in path order."""
        op = ">=" if inclusive else ">"
        bound = " AND path < ?" if upper else ""
        extra = [upper] if upper else []
        entries: list[Entry] = []
        if tree_id != EMPTY_TREE:
            unstaged = (" AND NOT EXISTS (SELECT 1 FROM staging s WHERE s.repo=? AND s.branch=? "
                        "AND s.path=tree_entries.path)") if branch is not None else ""
            params = [tree_id, lower, *extra] + ([repo, branch] if branch is not None else []) + [limit]
            entries += [Entry.from_row(r) for r in conn.execute(
                f"SELECT {ENTRY_COLUMNS} FROM tree_entries WHERE tree_id=? AND path {op} ?{bound}{unstaged} "
                "ORDER BY path LIMIT ?", params)]
        if branch is not None:
            entries += [Entry.from_row(r) for r in conn.execute(
                f"SELECT {ENTRY_COLUMNS} FROM staging WHERE repo=? AND branch=? AND tombstone=0 "
                f"AND path {op} ?{bound} ORDER BY path LIMIT ?", [repo, branch, lower, *extra, limit])]
        entries.sort(key=lambda e: e.path)
        return entries[:limit]

    # -- diff and merge --------------------------------------------------------------------------------------
    def diff_branch(self, repo: str, branch: str, prefix: str = "", after: str = "", amount: int | None = None,
                    delimiter: str = "") -> tuple[list[Difference], bool]:
        """Uncommitted changes of ``branch``."""
        with self._read() as conn:
            self.get_repository(repo, conn)
            head = self._branch_commit(conn, repo, branch)
            left = self._tree(conn, self._commit(conn, repo, head).meta_range_id)
            right = dict(left)
            for path, entry in self._staging(conn, repo, branch).items():
                if entry is None:
                    right.pop(path, None)
                else:
                    right[path] = entry
        return _page_differences(_differences(left, right), prefix, after, amount, delimiter)

    def diff_refs(self, repo: str, left_ref: str, right_ref: str, diff_type: str = "three_dot", prefix: str = "",
                  after: str = "", amount: int | None = None, delimiter: str = "") -> tuple[list[Difference], bool]:
        """Committed differences from ``left_ref`` (or its merge base with ``right_ref``) to ``right_ref``."""
        if diff_type not in ("two_dot", "three_dot"):
            raise BadRequest(f"invalid diff type {diff_type!r}")
        with self._read() as conn:
            self.get_repository(repo, conn)
            left_id = self._resolve(conn, repo, left_ref).commit_id
            right_id = self._resolve(conn, repo, right_ref).commit_id
            if diff_type == "three_dot":
                left_id = self._merge_base(conn, repo, left_id, right_id) or left_id
            left = self._tree(conn, self._commit(conn, repo, left_id).meta_range_id)
            right = self._tree(conn, self._commit(conn, repo, right_id).meta_range_id)
        return _page_differences(_differences(left, right), prefix, after, amount, delimiter)

    def _ancestors(self, conn, repo: str, commit_id: str) -> dict[str, int]:
        """Every ancestor of ``commit_id`` (itself included) with its generation."""
        seen: dict[str, int] = {}
        frontier = [commit_id]
        while frontier:
            current = frontier.pop()
            if current in seen:
                continue
            commit = self._commit(conn, repo, current)
            seen[current] = commit.generation
            frontier.extend(commit.parents)
        return seen

    def _merge_base(self, conn, repo: str, a: str, b: str) -> str | None:
        ours, theirs = self._ancestors(conn, repo, a), self._ancestors(conn, repo, b)
        common = [c for c in ours if c in theirs]
        return max(common, key=lambda c: (ours[c], c)) if common else None

    def merge_base(self, repo: str, a: str, b: str) -> str | None:
        """The best common ancestor of commits ``a`` and ``b`` (None when unrelated)."""
        with self._read() as conn:
            return self._merge_base(conn, repo, a, b)

    def merge(self, repo: str, source_ref: str, destination: str, committer: str, message: str | None = None,
              metadata: dict | None = None, strategy: str | None = None, allow_empty: bool = False,
              squash: bool = False, force: bool = False) -> str:
        """Merge ``source_ref``'s commit into ``destination``; returns the new head commit id."""
        if strategy not in (None, "", "dest-wins", "source-wins"):
            raise BadRequest(f"invalid strategy {strategy!r}: merge strategy is not supported")
        with self._write() as conn:
            self.get_repository(repo, conn)
            dest_head = self._branch_commit(conn, repo, destination)
            self._guard(conn, repo, destination, force, protect=False)  # merging into protected branches is allowed
            if conn.execute("SELECT 1 FROM staging WHERE repo=? AND branch=? LIMIT 1",
                            (repo, destination)).fetchone():
                raise BadRequest(f"{destination}: uncommitted changes (dirty branch)")
            source_id = self._resolve(conn, repo, source_ref).commit_id
            base_id = self._merge_base(conn, repo, source_id, dest_head)
            base = self._tree(conn, self._commit(conn, repo, base_id).meta_range_id) if base_id else {}
            source = self._tree(conn, self._commit(conn, repo, source_id).meta_range_id)
            dest_commit = self._commit(conn, repo, dest_head)
            dest = self._tree(conn, dest_commit.meta_range_id)
            merged = _three_way(base, source, dest, strategy)
            tree_id = tree_id_of(merged)
            if tree_id == dest_commit.meta_range_id and not allow_empty:
                raise BadRequest("no changes")
            self._store_tree(conn, tree_id, merged)
            parents = [dest_head] if squash else [dest_head, source_id]
            commit = self._insert_commit(conn, repo, parents, committer,
                                         message or f"Merge '{source_ref}' into '{destination}'",
                                         int(time.time()), tree_id,
                                         {**(metadata or {}), MERGE_STRATEGY_METADATA_KEY: strategy or "default"})
            conn.execute("UPDATE branches SET commit_id=? WHERE repo=? AND name=?", (commit.id, repo, destination))
            return commit.id

    def _apply_commit_changes(self, conn, repo: str, branch: str, ref: str, parent_number: int | None,
                              reverse: bool, operation: str,
                              force: bool = False) -> tuple[str, Commit, dict[str, Entry], str]:
        """The tree of ``branch``'s head with the change of ``ref``'s commit (against its parent number
        ``parent_number``) applied, or undone (``reverse``); 409 on a conflict, 400 on a dirty branch."""
        head = self._branch_commit(conn, repo, branch)
        self._guard(conn, repo, branch, force, committing=True)
        if conn.execute("SELECT 1 FROM staging WHERE repo=? AND branch=? LIMIT 1", (repo, branch)).fetchone():
            raise BadRequest(f"{branch}: uncommitted changes (dirty branch)")
        commit = self._commit(conn, repo, self._resolve(conn, repo, ref).commit_id)
        if len(commit.parents) > 1 and not parent_number:  # lakeFS: ErrRevertMergeNoParent is a conflict (409)
            error = Conflict if reverse else BadRequest
            raise error(f"{operation}: must specify 1-based parent number for reverting/cherry-picking merge commit")
        if parent_number is not None and parent_number < 0:
            raise BadRequest("validation error: parent_number: must not be negative")
        index = max((parent_number or 1) - 1, 0)
        if index >= len(commit.parents):
            raise BadRequest(f"{operation}: parent does not exist")
        parent_tree = self._tree(conn, self._commit(conn, repo, commit.parents[index]).meta_range_id)
        commit_tree = self._tree(conn, commit.meta_range_id)
        head_commit = self._commit(conn, repo, head)
        dest = self._tree(conn, head_commit.meta_range_id)
        base, source = (commit_tree, parent_tree) if reverse else (parent_tree, commit_tree)
        merged = _three_way(base, source, dest, None)
        return head, commit, merged, head_commit.meta_range_id

    def revert(self, repo: str, branch: str, ref: str, parent_number: int | None, committer: str,
               message: str | None = None, metadata: dict | None = None, allow_empty: bool = False,
               force: bool = False) -> Commit:
        """Commit on ``branch`` the inverse of the change ``ref``'s commit made."""
        with self._write() as conn:
            self.get_repository(repo, conn)
            head, commit, tree, head_tree = self._apply_commit_changes(conn, repo, branch, ref, parent_number,
                                                                       True, "revert", force)
            tree_id = tree_id_of(tree)
            if tree_id == head_tree and not allow_empty:
                raise BadRequest("no changes")
            self._store_tree(conn, tree_id, tree)
            new = self._insert_commit(conn, repo, [head], committer, message or f"Revert {ref}", int(time.time()),
                                      tree_id, metadata or {})
            conn.execute("UPDATE branches SET commit_id=? WHERE repo=? AND name=?", (new.id, repo, branch))
            return new

    def cherry_pick(self, repo: str, branch: str, ref: str, parent_number: int | None, committer: str,
                    message: str | None = None, metadata: dict | None = None, force: bool = False) -> Commit:
        """Commit on ``branch`` the change ``ref``'s commit made (its message and metadata unless overridden)."""
        with self._write() as conn:
            self.get_repository(repo, conn)
            head, commit, tree, head_tree = self._apply_commit_changes(conn, repo, branch, ref, parent_number,
                                                                       False, "cherry-pick", force)
            tree_id = tree_id_of(tree)
            if tree_id == head_tree:
                raise BadRequest("no changes")
            self._store_tree(conn, tree_id, tree)
            new = self._insert_commit(conn, repo, [head], committer, message or commit.message,
                                      int(time.time()), tree_id,
                                      commit.metadata if metadata is None else metadata)
            conn.execute("UPDATE branches SET commit_id=? WHERE repo=? AND name=?", (new.id, repo, branch))
            return new

    def update_user_metadata(self, repo: str, branch: str, path: str, metadata: dict) -> None:
        """Replace the user metadata of the object at ``path`` on ``branch`` (staging the changed entry)."""
        with self._write() as conn:
            self.get_repository(repo, conn)
            head = self._branch_commit(conn, repo, branch)
            self._guard(conn, repo, branch)
            entry = self._get_entry(conn, repo, ResolvedRef(head, branch), path)
            conn.execute("INSERT OR REPLACE INTO staging VALUES (?,?,?,0,?,?,?,?,?,?)",
                         (repo, branch, path, entry.address, entry.checksum, entry.size, entry.mtime,
                          entry.content_type, json.dumps(metadata)))


def _differences(left: dict[str, Entry], right: dict[str, Entry]) -> list[Difference]:
    diffs = []
    for path in sorted(left.keys() | right.keys()):
        before, after = left.get(path), right.get(path)
        if before is None:
            diffs.append(Difference("added", path, after.size))
        elif after is None:
            diffs.append(Difference("removed", path, before.size))
        elif before.identity() != after.identity():
            diffs.append(Difference("changed", path, after.size))
    return diffs


def _page_differences(diffs: list[Difference], prefix: str, after: str, amount: int | None,
                      delimiter: str) -> tuple[list[Difference], bool]:
    results: list[Difference] = []
    for diff in diffs:
        if not diff.path.startswith(prefix):
            continue
        rest = diff.path[len(prefix):]
        cut = rest.find(delimiter) if delimiter else -1
        if cut >= 0:
            common = prefix + rest[:cut + len(delimiter)]
            if results and results[-1].path == common:
                continue
            diff = Difference("prefix_changed", common, None, True)
        if diff.path > after:
            results.append(diff)
    return paginate(results, amount)


def _three_way(base: dict[str, Entry], source: dict[str, Entry], dest: dict[str, Entry],
               strategy: str | None) -> dict[str, Entry]:
    merged: dict[str, Entry] = {}
    for path in base.keys() | source.keys() | dest.keys():
        b, s, d = base.get(path), source.get(path), dest.get(path)
        key = lambda e: e.identity() if e is not None else None  # noqa: E731
        if key(s) == key(b) or key(s) == key(d):
            chosen = d
        elif key(d) == key(b):
            chosen = s
        elif strategy == "dest-wins":
            chosen = d
        elif strategy == "source-wins":
            chosen = s
        else:
            raise Conflict("conflict found")
        if chosen is not None:
            merged[path] = chosen
    return merged
