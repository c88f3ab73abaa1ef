"""Refs: repositories, branches, tags and commits in SQL, and lakeFS ref expressions (``name``, ``name@``,
``name$``, ``name~N``, ``name^N`` and chains of them) resolved to commits.

:class:`RefManager` reads and writes them through one SQLite connection, inside the transaction the catalog opened
(``storage.Database``); the catalog decides what changes, the manager how it is stored.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
import sqlite3
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

from .errors import BadRequest, NotFound
from .records import Commit, ResolvedRef, prefix_upper_bound

COMMIT_VERSION = 1

_MODIFIER = re.compile(r"([~^])(\d*)|([@$])")
_HASH = re.compile(r"[a-fA-F0-9]{1,64}")


@dataclass(frozen=True)
class RefExpression:
    """A ref name and its modifiers: ``("~", n)`` / ``("^", n)`` ancestry steps, ``("@", 0)`` (the branch's
    committed head, staging excluded) or ``("$", 0)`` (the branch with its staging area)."""

    base: str
    modifiers: tuple[tuple[str, int], ...] = ()

    @property
    def committed_only(self) -> bool:
        return ("@", 0) in self.modifiers

    @property
    def branch_modifier(self) -> str | None:
        """``@`` or ``$`` when the ref carries one of those branch modifiers."""
        return next((kind for kind, _ in self.modifiers if kind in "@$"), None)


def is_a_hash(name: str) -> bool:
    """Whether ``name`` may be a commit id or a prefix of one (lakeFS tries those before branches and tags)."""
    return bool(_HASH.fullmatch(name))


def parse_ref(ref: str) -> RefExpression:
    """Split ``ref`` into its base name and modifiers, as lakeFS' ref parser does."""
    if not ref:
        raise BadRequest("invalid ref: empty ref")
    cut = min((i for i in (ref.find(c) for c in "~^@$") if i >= 0), default=len(ref))
    base, rest = ref[:cut], ref[cut:]
    if not base:
        raise BadRequest(f"invalid ref: {ref!r}")
    modifiers = []
    pos = 0
    while pos < len(rest):
        match = _MODIFIER.match(rest, pos)
        if not match:
            raise BadRequest(f"invalid ref: {ref!r}")
        if match.group(3):
            modifiers.append((match.group(3), 0))
        else:
            modifiers.append((match.group(1), int(match.group(2)) if match.group(2) else 1))
        pos = match.end()
    expression = RefExpression(base, tuple(modifiers))
    if expression.branch_modifier and len(modifiers) != 1:  # "@" / "$" stand alone, as in lakeFS
        raise BadRequest(f"invalid ref: {ref!r}")
    return expression


class RefManager:
    """The refs of one transaction (lakeFS' ``graveler.RefManager``): repositories, branches, tags, commits and
    branch protection rules, in SQLite tables; and ref expressions resolved to commits."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    # -- repositories --------------------------------------------------------------------------------------------
    def find_repository(self, name: str) -> dict | None:
        """The repository's settings as lakeFS reports them, or None."""
        row = self.conn.execute(
            "SELECT name, storage_namespace, default_branch, creation_date, read_only FROM repositories WHERE name=?",
            (name,),
        ).fetchone()
        if row is None:
            return None
        return {
            "id": row[0],
            "storage_namespace": row[1],
            "default_branch": row[2],
            "creation_date": row[3],
            "read_only": bool(row[4]),
        }

    def repository(self, name: str) -> dict:
        """The repository's settings; 404 when it does not exist."""
        found = self.find_repository(name)
        if found is None:
            raise NotFound("repository not found")
        return found

    def add_repository(
        self, name: str, storage_namespace: str, default_branch: str, creation_date: int, read_only: bool
    ) -> None:
        self.conn.execute(
            "INSERT INTO repositories VALUES (?,?,?,?,?)",
            (name, storage_namespace, default_branch, creation_date, int(read_only)),
        )

    def repository_names(self, prefix: str, after: str, limit: int, search: str = "") -> list[str]:
        """Up to ``limit`` repository names after ``after``, from ``prefix`` on (the caller keeps those below it),
        containing ``search`` (case-sensitive, as Go's strings.Contains)."""
        rows = self.conn.execute(
            "SELECT name FROM repositories WHERE name > ? AND name >= ? AND instr(name, ?) > 0 ORDER BY name LIMIT ?",
            (after, prefix, search, limit),
        ).fetchall()
        return [r[0] for r in rows]

    def delete_repository(self, name: str) -> None:
        """Delete the repository with its branches, tags, commits and protection rules."""
        for table in ("branches", "tags", "commits"):
            self.conn.execute(f"DELETE FROM {table} WHERE repo=?", (name,))
        self.conn.execute("DELETE FROM branch_protection WHERE repo=?", (name,))
        self.conn.execute("DELETE FROM repositories WHERE name=?", (name,))

    def protection_rules(self, repo: str) -> list[dict]:
        """The repository's branch protection rules (``{"pattern": ...}``), none when never set."""
        row = self.conn.execute("SELECT rules FROM branch_protection WHERE repo=?", (repo,)).fetchone()
        return json.loads(row[0]) if row else []

    def set_protection_rules(self, repo: str, rules: list[dict]) -> None:
        self.conn.execute("INSERT OR REPLACE INTO branch_protection VALUES (?,?)", (repo, json.dumps(rules)))

    # -- commits -------------------------------------------------------------------------------------------------
    def create_commit(
        self,
        repo: str,
        parents: list,
        committer: str,
        message: str,
        creation_date: int,
        tree_id: str,
        metadata: dict,
    ) -> Commit:
        """Store a new commit; its id is the hash of its content (parents, tree, message, ...)."""
        generation = 1 + max((self.commit(repo, p).generation for p in parents), default=0)
        body = json.dumps(
            {
                "parents": parents,
                "committer": committer,
                "message": message,
                "creation_date": creation_date,
                "meta_range_id": tree_id,
                "metadata": metadata,
                "generation": generation,
                "version": COMMIT_VERSION,
            },
            sort_keys=True,
        )
        commit_id = hashlib.sha256(f"{repo}\n{body}".encode()).hexdigest()
        created = Commit(commit_id, parents, committer, message, creation_date, tree_id, metadata, generation)
        self.add_commit(repo, created, _nanoseconds(creation_date))
        return created

    def add_commit(self, repo: str, commit: Commit, created_ns: int | None = None) -> None:
        """Store ``commit`` as it is (a no-op for a commit id already stored); ``created_ns``, its creation time in
        nanoseconds, orders the log (default: the start of its creation second)."""
        self.conn.execute(
            "INSERT OR IGNORE INTO commits (repo, id, parents, committer, message, creation_date, meta_range_id, "
            "metadata, generation, created_ns) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                repo,
                commit.id,
                json.dumps(commit.parents),
                commit.committer,
                commit.message,
                commit.creation_date,
                commit.meta_range_id,
                json.dumps(commit.metadata),
                commit.generation,
                commit.creation_date * 1_000_000_000 if created_ns is None else created_ns,
            ),
        )

    def commit(self, repo: str, commit_id: str) -> Commit:
        """The commit; 404 when it does not exist."""
        return self._commit_and_time(repo, commit_id)[0]

    def _commit_and_time(self, repo: str, commit_id: str) -> tuple[Commit, int]:
        """The commit and its creation time in nanoseconds; 404 when it does not exist."""
        row = self.conn.execute(
            "SELECT id, parents, committer, message, creation_date, meta_range_id, metadata, "
            "generation, created_ns FROM commits WHERE repo=? AND id=?",
            (repo, commit_id),
        ).fetchone()
        if row is None:
            raise NotFound("commit not found")
        return Commit(row[0], json.loads(row[1]), row[2], row[3], row[4], row[5], json.loads(row[6]), row[7]), row[8]

    def commit_exists(self, repo: str, commit_id: str) -> bool:
        return (
            self.conn.execute("SELECT 1 FROM commits WHERE repo=? AND id=?", (repo, commit_id)).fetchone() is not None
        )

    def history(self, repo: str, start: str, first_parent: bool = False) -> Iterator[Commit]:
        """The commits reachable from ``start`` (or its first-parent line) in lakeFS' log order (its
        ``commitsPriorityQueue``): of the commits reached and not yet listed, the newest by creation time
        (nanoseconds) first, equal times by commit id descending."""

        def entry(commit_id: str) -> tuple:
            commit, created_ns = self._commit_and_time(repo, commit_id)
            return -created_ns, _Descending(commit.id), commit

        queue, seen = [entry(start)], {start}
        while queue:
            current = heapq.heappop(queue)[2]
            yield current
            for parent in current.parents[:1] if first_parent else current.parents:
                if parent not in seen:
                    seen.add(parent)
                    heapq.heappush(queue, entry(parent))

    def merge_base(self, repo: str, a: str, b: str) -> str | None:
        """The best common ancestor of commits ``a`` and ``b`` (highest generation, then highest id; None when
        unrelated). Walks both histories newest generation first and stops at the first commit both reach, so it
        reads the commits since the merge base, not the whole history."""
        reached: dict[str, int] = {a: 1}
        reached[b] = reached.get(b, 0) | 2
        queue = [(-self.commit(repo, c).generation, c) for c in reached]
        heapq.heapify(queue)
        best: tuple[int, str] | None = None
        while queue:
            negative_generation, current = heapq.heappop(queue)
            if best is not None and -negative_generation < best[0]:
                break
            if reached[current] == 3:
                best = max(best or (0, ""), (-negative_generation, current))
                continue  # a common ancestor's own ancestors are worse candidates
            for parent in self.commit(repo, current).parents:
                if parent not in reached:
                    heapq.heappush(queue, (-self.commit(repo, parent).generation, parent))
                    reached[parent] = 0
                reached[parent] |= reached[current]
        return best[1] if best else None

    def all_commits(self) -> Iterator[tuple[str, str, list, int, str]]:
        """``(repo, id, parents, creation date, tree root)`` of every commit of every repository."""
        for repo, commit_id, parents, date, root in self.conn.execute(
            "SELECT repo, id, parents, creation_date, meta_range_id FROM commits"
        ):
            yield repo, commit_id, json.loads(parents), date, root

    def delete_commits(self, keys: Iterable[tuple[str, str]]) -> None:
        """Delete the commits ``(repo, id)``."""
        self.conn.executemany("DELETE FROM commits WHERE repo=? AND id=?", keys)

    # -- branches and tags ---------------------------------------------------------------------------------------
    def heads(self) -> list[tuple[str, str]]:
        """``(repo, commit id)`` of every branch and tag of every repository."""
        rows = self.conn.execute("SELECT repo, commit_id FROM branches UNION SELECT repo, commit_id FROM tags")
        return [(row[0], row[1]) for row in rows]

    def find_branch(self, repo: str, branch: str) -> str | None:
        """The branch's head commit id, or None."""
        row = self.conn.execute("SELECT commit_id FROM branches WHERE repo=? AND name=?", (repo, branch)).fetchone()
        return row[0] if row else None

    def branch_commit(self, repo: str, branch: str) -> str:
        """The branch's head commit id; 404 when the branch does not exist."""
        commit_id = self.find_branch(repo, branch)
        if commit_id is None:
            raise NotFound(f"branch '{branch}' not found")
        return commit_id

    def move_branch(self, repo: str, branch: str, commit_id: str, hidden: bool = False) -> None:
        """Point ``branch`` at ``commit_id``; a new branch is created ``hidden`` or not, an existing one keeps its
        flag."""
        self.conn.execute(
            "INSERT INTO branches (repo, name, commit_id, hidden) VALUES (?,?,?,?) "
            "ON CONFLICT (repo, name) DO UPDATE SET commit_id=excluded.commit_id",
            (repo, branch, commit_id, int(hidden)),
        )

    def delete_branch(self, repo: str, branch: str) -> None:
        self.conn.execute("DELETE FROM branches WHERE repo=? AND name=?", (repo, branch))

    def tag_commit(self, repo: str, tag: str) -> str | None:
        """The tag's commit id, or None."""
        row = self.conn.execute("SELECT commit_id FROM tags WHERE repo=? AND name=?", (repo, tag)).fetchone()
        return row[0] if row else None

    def add_tag(self, repo: str, tag: str, commit_id: str) -> None:
        self.conn.execute("INSERT INTO tags VALUES (?,?,?)", (repo, tag, commit_id))

    def delete_tag(self, repo: str, tag: str) -> bool:
        """Delete the tag; False when there was none."""
        return self.conn.execute("DELETE FROM tags WHERE repo=? AND name=?", (repo, tag)).rowcount > 0

    def list_branches(
        self, repo: str, prefix: str, after: str, limit: int, show_hidden: bool = False
    ) -> list[tuple[str, str]]:
        """Up to ``limit`` ``(name, commit id)`` of the branches after ``after``, below ``prefix``; hidden ones only
        with ``show_hidden``."""
        return self._list_named("branches", repo, prefix, after, limit, "" if show_hidden else "AND NOT hidden ")

    def list_tags(self, repo: str, prefix: str, after: str, limit: int) -> list[tuple[str, str]]:
        """Up to ``limit`` ``(name, commit id)`` of the tags after ``after``, below ``prefix``."""
        return self._list_named("tags", repo, prefix, after, limit)

    def _list_named(
        self, table: str, repo: str, prefix: str, after: str, limit: int, condition: str = ""
    ) -> list[tuple[str, str]]:
        upper = prefix_upper_bound(prefix)
        rows = self.conn.execute(
            f"SELECT name, commit_id FROM {table} WHERE repo=? AND name > ? AND name >= ? {condition}"
            + ("AND name < ? " if upper else "")
            + "ORDER BY name LIMIT ?",
            (repo, after, prefix, *([upper] if upper else []), limit),
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    # -- resolution ----------------------------------------------------------------------------------------------
    def resolve(self, repo: str, ref: str) -> ResolvedRef:
        """The commit ``ref`` names (and the branch whose staging area reads include), as lakeFS resolves refs."""
        expression = parse_ref(ref)
        resolved = self._resolve_name(repo, expression.base)
        if expression.branch_modifier:
            if resolved.branch is None:  # "@" and "$" apply to branches only
                raise BadRequest(f"{ref}: invalid ref")
            return resolved if expression.branch_modifier == "$" else ResolvedRef(resolved.commit_id)
        commit_id = resolved.commit_id
        for kind, n in expression.modifiers:
            if kind == "~":
                for _ in range(n):
                    parents = self.commit(repo, commit_id).parents
                    if not parents:
                        raise NotFound(f"{ref}: commit not found")
                    commit_id = parents[0]
            elif n > 0:
                parents = self.commit(repo, commit_id).parents
                if n > len(parents):
                    raise BadRequest(f"{ref}: parent out of range")
                commit_id = parents[n - 1]
        return ResolvedRef(commit_id, None if expression.modifiers else resolved.branch)

    def _resolve_name(self, repo: str, name: str) -> ResolvedRef:
        """As lakeFS' ``revResolve``: a full commit id first, then a branch, then a tag, then a unique commit id
        prefix (a branch or tag named like a prefix, ``b`` or ``cafe``, is that branch or tag).

        An ambiguous prefix resolves as no commit (lakeFS' lookup answers not-found): a 404."""
        hashlike = is_a_hash(name)
        if hashlike and self.commit_exists(repo, name):
            return ResolvedRef(name)
        branch_head = self.find_branch(repo, name)
        if branch_head is not None:
            return ResolvedRef(branch_head, name)
        tagged = self.tag_commit(repo, name)
        if tagged:
            return ResolvedRef(tagged)
        if hashlike:
            rows = self.conn.execute(
                "SELECT id FROM commits WHERE repo=? AND id >= ? AND id < ? LIMIT 2",
                (repo, name, prefix_upper_bound(name)),
            ).fetchall()
            if len(rows) == 1:
                return ResolvedRef(rows[0][0])
        raise NotFound(f"{name}: not found")


def _nanoseconds(creation_date: int) -> int:
    """A commit's creation time in nanoseconds: now, when ``creation_date`` is the current second (so commits of
    one second keep their order, as lakeFS' nanosecond timestamps do), else the start of ``creation_date``."""
    now = time.time_ns()
    return now if now // 1_000_000_000 == creation_date else creation_date * 1_000_000_000


@dataclass(frozen=True)
class _Descending:
    """A commit id that sorts in reverse (lakeFS lists commits of equal creation time by id, descending)."""

    id: str

    def __lt__(self, other: _Descending) -> bool:
        return self.id > other.id
