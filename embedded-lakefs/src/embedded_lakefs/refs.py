"""Refs: repositories, branches, tags and commits in SQL, and lakeFS ref expressions (``name``, ``name@``,
``name$``, ``name~N``, ``name^N`` and chains of them) resolved to commits.

Functions over a connection inside the caller's transaction.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
import sqlite3
from dataclasses import dataclass
from typing import Iterator

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


# -- repositories ------------------------------------------------------------------------------------------------
def repository(conn: sqlite3.Connection, name: str) -> dict:
    """The repository's settings as lakeFS reports them; 404 when it does not exist."""
    row = conn.execute(
        "SELECT name, storage_namespace, default_branch, creation_date, read_only FROM repositories WHERE name=?",
        (name,),
    ).fetchone()
    if row is None:
        raise NotFound("repository not found")
    return {
        "id": row[0],
        "storage_namespace": row[1],
        "default_branch": row[2],
        "creation_date": row[3],
        "read_only": bool(row[4]),
    }


# -- commits -----------------------------------------------------------------------------------------------------
def insert_commit(
    conn: sqlite3.Connection,
    repo: str,
    parents: list,
    committer: str,
    message: str,
    creation_date: int,
    tree_id: str,
    metadata: dict,
) -> Commit:
    """Store a commit; its id is the hash of its content (parents, tree, message, ...)."""
    generation = 1 + max((commit(conn, repo, p).generation for p in parents), default=0)
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
    conn.execute(
        "INSERT OR IGNORE INTO commits VALUES (?,?,?,?,?,?,?,?,?)",
        (
            repo,
            commit_id,
            json.dumps(parents),
            committer,
            message,
            creation_date,
            tree_id,
            json.dumps(metadata),
            generation,
        ),
    )
    return Commit(commit_id, parents, committer, message, creation_date, tree_id, metadata, generation)


def commit(conn: sqlite3.Connection, repo: str, commit_id: str) -> Commit:
    row = conn.execute(
        "SELECT id, parents, committer, message, creation_date, meta_range_id, metadata, "
        "generation FROM commits WHERE repo=? AND id=?",
        (repo, commit_id),
    ).fetchone()
    if row is None:
        raise NotFound("commit not found")
    return Commit(row[0], json.loads(row[1]), row[2], row[3], row[4], row[5], json.loads(row[6]), row[7])


def history(conn: sqlite3.Connection, repo: str, start: str, first_parent: bool = False) -> Iterator[Commit]:
    """The commits reachable from ``start`` (or its first-parent line) in lakeFS' log order: newest generation
    first, then newest creation date, then by id. Lazy: a parent's generation is below its children's, so once
    the newest unread commit has generation g, every commit of generation g has been found."""

    def entry(c: Commit) -> tuple:
        return -c.generation, -c.creation_date, c.id, c

    queue, seen = [entry(commit(conn, repo, start))], {start}
    while queue:
        current = heapq.heappop(queue)[3]
        yield current
        for parent in current.parents[:1] if first_parent else current.parents:
            if parent not in seen:
                seen.add(parent)
                heapq.heappush(queue, entry(commit(conn, repo, parent)))


def merge_base(conn: sqlite3.Connection, repo: str, a: str, b: str) -> str | None:
    """The best common ancestor of commits ``a`` and ``b`` (highest generation, then highest id; None when
    unrelated). Walks both histories newest generation first and stops at the first commit both reach, so it
    reads the commits since the merge base, not the whole history."""
    reached: dict[str, int] = {a: 1}
    reached[b] = reached.get(b, 0) | 2
    queue = [(-commit(conn, repo, c).generation, c) for c in reached]
    heapq.heapify(queue)
    best: tuple[int, str] | None = None
    while queue:
        negative_generation, current = heapq.heappop(queue)
        if best is not None and -negative_generation < best[0]:
            break
        if reached[current] == 3:
            best = max(best or (0, ""), (-negative_generation, current))
            continue  # a common ancestor's own ancestors are worse candidates
        for parent in commit(conn, repo, current).parents:
            if parent not in reached:
                heapq.heappush(queue, (-commit(conn, repo, parent).generation, parent))
                reached[parent] = 0
            reached[parent] |= reached[current]
    return best[1] if best else None


# -- branches and tags -------------------------------------------------------------------------------------------
def branch_commit(conn: sqlite3.Connection, repo: str, branch: str) -> str:
    row = conn.execute("SELECT commit_id FROM branches WHERE repo=? AND name=?", (repo, branch)).fetchone()
    if row is None:
        raise NotFound(f"branch '{branch}' not found")
    return row[0]


def move_branch(conn: sqlite3.Connection, repo: str, branch: str, commit_id: str) -> None:
    conn.execute("INSERT OR REPLACE INTO branches VALUES (?,?,?)", (repo, branch, commit_id))


def tag_commit(conn: sqlite3.Connection, repo: str, tag: str) -> str | None:
    row = conn.execute("SELECT commit_id FROM tags WHERE repo=? AND name=?", (repo, tag)).fetchone()
    return row[0] if row else None


def list_named(conn: sqlite3.Connection, repo: str, table: str, prefix: str, after: str, limit: int) -> list:
    """Up to ``limit`` ``(name, commit id)`` of ``branches`` or ``tags`` after ``after``, below ``prefix``."""
    upper = prefix_upper_bound(prefix)
    rows = conn.execute(
        f"SELECT name, commit_id FROM {table} WHERE repo=? AND name > ? AND name >= ? "
        + ("AND name < ? " if upper else "")
        + "ORDER BY name LIMIT ?",
        (repo, after, prefix, *([upper] if upper else []), limit),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


# -- resolution --------------------------------------------------------------------------------------------------
def resolve(conn: sqlite3.Connection, repo: str, ref: str) -> ResolvedRef:
    """The commit ``ref`` names (and the branch whose staging area reads include), as lakeFS resolves refs."""
    expression = parse_ref(ref)
    resolved = _resolve_name(conn, repo, expression.base)
    if expression.branch_modifier:
        if resolved.branch is None:  # "@" and "$" apply to branches only
            raise BadRequest(f"{ref}: invalid ref")
        return resolved if expression.branch_modifier == "$" else ResolvedRef(resolved.commit_id)
    commit_id = resolved.commit_id
    for kind, n in expression.modifiers:
        if kind == "~":
            for _ in range(n):
                parents = commit(conn, repo, commit_id).parents
                if not parents:
                    raise NotFound(f"{ref}: commit not found")
                commit_id = parents[0]
        elif n > 0:
            parents = commit(conn, repo, commit_id).parents
            if n > len(parents):
                raise BadRequest(f"{ref}: parent out of range")
            commit_id = parents[n - 1]
    return ResolvedRef(commit_id, None if expression.modifiers else resolved.branch)


def _resolve_name(conn: sqlite3.Connection, repo: str, name: str) -> ResolvedRef:
    """As lakeFS' ``revResolve``: a commit id or unique id prefix first, then a branch, then a tag.

    An ambiguous prefix resolves as no commit (lakeFS' lookup answers not-found), so a branch or tag of that
    name still wins, and otherwise it is a 404."""
    if is_a_hash(name):
        if conn.execute("SELECT 1 FROM commits WHERE repo=? AND id=?", (repo, name)).fetchone():
            return ResolvedRef(name)
        rows = conn.execute(
            "SELECT id FROM commits WHERE repo=? AND id >= ? AND id < ? LIMIT 2", (repo, name, prefix_upper_bound(name))
        ).fetchall()
        if len(rows) == 1:
            return ResolvedRef(rows[0][0])
    row = conn.execute("SELECT commit_id FROM branches WHERE repo=? AND name=?", (repo, name)).fetchone()
    if row:
        return ResolvedRef(row[0], name)
    tagged = tag_commit(conn, repo, name)
    if tagged:
        return ResolvedRef(tagged)
    raise NotFound(f"{name}: not found")
