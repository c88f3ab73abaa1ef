"""lakeFS semantics over SQLite: the facade that owns transactions and combines refs, staging and committed trees.

As lakeFS' graveler splits its catalog: ``refs`` (repositories, branches, tags, commits, ref expressions),
``staging`` (uncommitted changes per branch), ``tree`` (committed trees sharing unchanged nodes) and ``merge`` (the
pure three-way merge). Each public method here is one transaction of ``storage.Database``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

from . import refs, staging
from .errors import BadRequest, Conflict, Forbidden, NotFound, PreconditionFailed
from .merge import STRATEGIES, merge_changes
from .records import Commit, CommonPrefix, Difference, Entry, ResolvedRef, prefix_upper_bound, same_object
from .refs import parse_ref
from .staging import NOT_STAGED
from .storage import Database
from .tree import EMPTY_TREE, Trees
from .validation import BRANCH_NAME, REPOSITORY_NAME, TAG_NAME, check_name

__all__ = ["Catalog", "CommonPrefix", "Commit", "Difference", "Entry", "ResolvedRef"]

DEFAULT_AMOUNT = 100
MAX_AMOUNT = 1000
MERGE_STRATEGY_METADATA_KEY = ".lakefs.merge.strategy"  # recorded on merge commits, as lakeFS does
CHERRY_PICK_ORIGIN_KEY, CHERRY_PICK_COMMITTER_KEY = "cherry-pick-origin", "cherry-pick-committer"


def paginate(items: list, amount: int | None) -> tuple[list, bool]:
    """Cut ``items`` (fetched with one extra) to ``amount`` and say whether more exist."""
    amount = normalize_amount(amount)
    return items[:amount], len(items) > amount


def normalize_amount(amount: int | None) -> int:
    """lakeFS' ``paginationAmount``: none or <= 0 is the default, at most ``MAX_AMOUNT``."""
    if amount is None or amount <= 0:
        return DEFAULT_AMOUNT
    return min(amount, MAX_AMOUNT)


def page_by_path(
    stream: Callable[[str, bool], Iterator],
    prefix: str,
    after: str,
    amount: int | None,
    delimiter: str,
    common_prefix: Callable[[str], object],
) -> tuple[list, bool]:
    """One page of ``stream(start, inclusive)``'s results (things with a ``path``, in path order) below ``prefix``
    and after ``after``; with a ``delimiter``, everything under one common prefix is one ``common_prefix(path)``
    result, and the stream restarts past it."""
    limit = normalize_amount(amount)
    upper = prefix_upper_bound(prefix)
    results: list = []
    start, inclusive = max(after, prefix), after < prefix
    while len(results) <= limit:
        restart = None
        for item in stream(start, inclusive):
            if upper is not None and item.path >= upper:
                break
            cut = item.path.find(delimiter, len(prefix)) if delimiter else -1
            if cut < 0:
                results.append(item)
                if len(results) > limit:
                    break
                continue
            common = item.path[: cut + len(delimiter)]
            if common > after:
                results.append(common_prefix(common))
            restart = prefix_upper_bound(common)
            break
        if restart is None:
            break
        start, inclusive = restart, True
    return paginate(results, limit)


class Catalog:
    """All metadata of the server, in one SQLite database."""

    def __init__(self, db_path: Path, synchronous: str = "FULL"):
        self.db = Database(db_path, synchronous)

    # -- repositories ----------------------------------------------------------------------------------------
    def create_repository(
        self, name: str, storage_namespace: str, default_branch: str = "main", read_only: bool = False
    ) -> dict:
        check_name("repository", name, REPOSITORY_NAME)
        check_name("branch", default_branch, BRANCH_NAME)
        if not storage_namespace:
            raise BadRequest("validation error: storage_namespace: required")
        now = int(time.time())
        with self.db.write() as conn:
            if conn.execute("SELECT 1 FROM repositories WHERE name=?", (name,)).fetchone():
                raise Conflict("error creating repository: not unique")
            conn.execute(
                "INSERT INTO repositories VALUES (?,?,?,?,?)",
                (name, storage_namespace, default_branch, now, int(read_only)),
            )
            commit = refs.insert_commit(conn, name, [], "", "Repository created", now, EMPTY_TREE, {})
            refs.move_branch(conn, name, default_branch, commit.id)
            return refs.repository(conn, name)

    def get_repository(self, name: str) -> dict:
        with self.db.read() as conn:
            return refs.repository(conn, name)

    def list_repositories(self, prefix: str = "", after: str = "", amount: int | None = None):
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT name FROM repositories WHERE name > ? AND name >= ? ORDER BY name LIMIT ?",
                (after, prefix, normalize_amount(amount) + 1),
            ).fetchall()
            names, has_more = paginate([r[0] for r in rows if r[0].startswith(prefix)], amount)
            return [refs.repository(conn, n) for n in names], has_more

    def delete_repository(self, name: str) -> None:
        with self.db.write() as conn:
            refs.repository(conn, name)
            staging.drop(conn, name)
            for table in ("branches", "tags", "commits"):
                conn.execute(f"DELETE FROM {table} WHERE repo=?", (name,))
            conn.execute("DELETE FROM branch_protection WHERE repo=?", (name,))
            conn.execute("DELETE FROM repositories WHERE name=?", (name,))

    # -- commits ---------------------------------------------------------------------------------------------
    def get_commit(self, repo: str, ref: str) -> Commit:
        with self.db.read() as conn:
            refs.repository(conn, repo)
            return refs.commit(conn, repo, refs.resolve(conn, repo, ref).commit_id)

    def commit(
        self,
        repo: str,
        branch: str,
        message: str,
        committer: str,
        metadata: dict | None = None,
        date: int | None = None,
        allow_empty: bool = False,
        force: bool = False,
    ) -> Commit:
        """Commit the branch's staged changes: O(changes x log objects) time and new storage."""
        if not message:
            raise BadRequest("validation error: message: commit message is required")
        with self.db.write() as conn:
            refs.repository(conn, repo)
            head = refs.branch_commit(conn, repo, branch)
            self._guard(conn, repo, branch, force, committing=True)
            parent = refs.commit(conn, repo, head)
            changes = [(path, entry.value() if entry else None) for path, entry in staging.changes(conn, repo, branch)]
            tree_id = self.db.trees(conn).apply(parent.meta_range_id, changes)
            if tree_id == parent.meta_range_id and not allow_empty:
                raise BadRequest("commit: no changes")
            commit = refs.insert_commit(
                conn,
                repo,
                [head],
                committer,
                message,
                int(date) if date is not None else int(time.time()),
                tree_id,
                metadata or {},
            )
            refs.move_branch(conn, repo, branch, commit.id)
            staging.drop(conn, repo, branch)
            return commit

    def log(
        self,
        repo: str,
        ref: str,
        after: str = "",
        amount: int | None = None,
        first_parent: bool = False,
        stop_at: str | None = None,
        limit: bool = False,
        objects: list[str] | tuple = (),
        prefixes: list[str] | tuple = (),
        since: float | None = None,
    ) -> tuple[list[Commit], bool]:
        """Commits reachable from ``ref``, newest generation first, paginated by commit id.

        ``stop_at`` ends the log at that commit (included), ``since`` at the first commit created before it
        (excluded). With ``objects`` / ``prefixes`` only commits that changed one of those objects, or an
        object below one of those prefixes, relative to their first parent are listed (as lakeFS does)."""
        with self.db.read() as conn:
            refs.repository(conn, repo)
            start = refs.resolve(conn, repo, ref).commit_id
            stop = refs.resolve(conn, repo, stop_at).commit_id if stop_at else None
            commits: Iterator[Commit] = refs.history(conn, repo, start, first_parent)
            if stop:
                commits = _through(commits, lambda c: c.id == stop)
            if since is not None:
                commits = itertools.takewhile(lambda c: c.creation_date >= since, commits)
            if after:
                commits = _after(commits, lambda c: c.id == after)
            if objects or prefixes:
                trees = self.db.trees(conn)
                commits = (c for c in commits if self._commit_touches(conn, trees, repo, c, objects, prefixes))
            page, has_more = paginate(list(itertools.islice(commits, normalize_amount(amount) + 1)), amount)
            return page, (has_more and not limit)

    @staticmethod
    def _commit_touches(conn, trees: Trees, repo: str, commit: Commit, objects, prefixes) -> bool:
        """Whether ``commit`` changed one of ``objects`` or something below one of ``prefixes`` (vs. its
        first parent; a root commit against the empty tree)."""
        parent = refs.commit(conn, repo, commit.parents[0]).meta_range_id if commit.parents else EMPTY_TREE
        if parent == commit.meta_range_id:
            return False
        for path in objects:
            if not same_object(trees.get(parent, path), trees.get(commit.meta_range_id, path)):
                return True
        for prefix in prefixes:
            for path, before, after in trees.diff(parent, commit.meta_range_id, prefix):
                if not path.startswith(prefix):
                    break
                if not same_object(before, after):
                    return True
        return False

    # -- write guards: read-only repositories and branch protection -----------------------------------------
    def _guard(
        self, conn, repo: str, branch: str | None, force: bool = False, committing: bool = False, protect: bool = True
    ) -> None:
        """403 for a write to a read-only repository (unless ``force``) or to a protected branch."""
        if refs.repository(conn, repo)["read_only"] and not force:
            raise Forbidden("read-only repository")
        if protect and branch is not None and self._is_protected(conn, repo, branch):
            raise Forbidden("cannot commit to protected branch" if committing else "cannot write to protected branch")

    def check_writable(self, repo: str, branch: str, force: bool = False) -> None:
        """404 for a missing repository or branch, 403 when writes to ``branch`` are refused (see ``_guard``)."""
        with self.db.read() as conn:
            refs.repository(conn, repo)
            refs.branch_commit(conn, repo, branch)
            self._guard(conn, repo, branch, force)

    @staticmethod
    def _protection_rules(conn, repo: str) -> list[dict]:
        row = conn.execute("SELECT rules FROM branch_protection WHERE repo=?", (repo,)).fetchone()
        return json.loads(row[0]) if row else []

    def _is_protected(self, conn, repo: str, branch: str) -> bool:
        return any(fnmatch.fnmatchcase(branch, rule["pattern"]) for rule in self._protection_rules(conn, repo))

    @staticmethod
    def _rules_etag(rules: list[dict]) -> str:
        return hashlib.sha256(json.dumps(rules, sort_keys=True).encode()).hexdigest()

    def get_branch_protection(self, repo: str) -> tuple[list[dict], str]:
        """The repository's branch protection rules and their ETag."""
        with self.db.read() as conn:
            refs.repository(conn, repo)
            rules = self._protection_rules(conn, repo)
            return rules, self._rules_etag(rules)

    def set_branch_protection(self, repo: str, rules: list[dict], if_match: str | None = None) -> None:
        """Replace the rules; 412 when ``if_match`` is not the current rules' ETag."""
        with self.db.write() as conn:
            if refs.repository(conn, repo)["read_only"]:
                raise Forbidden("read-only repository")
            current = self._protection_rules(conn, repo)
            if if_match is not None and if_match.strip().strip('"') != self._rules_etag(current):
                raise PreconditionFailed("precondition failed: branch protection rules were changed")
            conn.execute("INSERT OR REPLACE INTO branch_protection VALUES (?,?)", (repo, json.dumps(rules)))

    # -- refs ------------------------------------------------------------------------------------------------
    def resolve(self, repo: str, ref: str) -> ResolvedRef:
        with self.db.read() as conn:
            refs.repository(conn, repo)
            return refs.resolve(conn, repo, ref)

    def merge_base(self, repo: str, a: str, b: str) -> str | None:
        """The best common ancestor of commits ``a`` and ``b`` (None when unrelated)."""
        with self.db.read() as conn:
            return refs.merge_base(conn, repo, a, b)

    # -- branches --------------------------------------------------------------------------------------------
    def create_branch(self, repo: str, name: str, source: str, force: bool = False) -> str:
        """A new branch at ``source``'s commit; ``force`` only lets it into a read-only repository (as lakeFS)."""
        check_name("branch", name, BRANCH_NAME)
        with self.db.write() as conn:
            refs.repository(conn, repo)
            if parse_ref(source).branch_modifier == "$":  # graveler.ErrCreateBranchNoCommit
                raise BadRequest(f"source reference '{source}': can only create a branch from a commit")
            self._check_new_ref_name(conn, repo, name, "tag ID", "tags")
            commit_id = refs.resolve(conn, repo, source).commit_id
            self._guard(conn, repo, None, force)
            if conn.execute("SELECT 1 FROM branches WHERE repo=? AND name=?", (repo, name)).fetchone():
                raise Conflict("branch already exists")
            refs.move_branch(conn, repo, name, commit_id)
            return commit_id

    @staticmethod
    def _check_new_ref_name(conn, repo: str, name: str, other_kind: str, other_table: str) -> None:
        """409 when a new branch or tag name is a commit id, or the name of a tag or branch (``other_table``)."""
        if conn.execute("SELECT 1 FROM commits WHERE repo=? AND id=?", (repo, name)).fetchone():
            raise Conflict(f"commit ID {name}: conflict found")
        if conn.execute(f"SELECT 1 FROM {other_table} WHERE repo=? AND name=?", (repo, name)).fetchone():
            raise Conflict(f"{other_kind} {name}: conflict found")

    def get_branch(self, repo: str, name: str) -> str:
        with self.db.read() as conn:
            refs.repository(conn, repo)
            return refs.branch_commit(conn, repo, name)

    def list_branches(self, repo: str, prefix: str = "", after: str = "", amount: int | None = None):
        return self._list_named(repo, "branches", prefix, after, amount)

    def _list_named(self, repo: str, table: str, prefix: str, after: str, amount: int | None):
        with self.db.read() as conn:
            refs.repository(conn, repo)
            return paginate(refs.list_named(conn, repo, table, prefix, after, normalize_amount(amount) + 1), amount)

    def delete_branch(self, repo: str, name: str, force: bool = False) -> None:
        with self.db.write() as conn:
            repository = refs.repository(conn, repo)
            refs.branch_commit(conn, repo, name)
            self._guard(conn, repo, None, force)
            if name == repository["default_branch"]:
                raise BadRequest("cannot delete repository default branch")
            conn.execute("DELETE FROM branches WHERE repo=? AND name=?", (repo, name))
            staging.drop(conn, repo, name)

    def reset_branch(
        self, repo: str, branch: str, reset_type: str, path: str | None = None, force: bool = False
    ) -> None:
        """Drop uncommitted changes: all (``reset``), one object (``object``) or a prefix (``common_prefix``)."""
        if reset_type not in ("reset", "object", "common_prefix"):
            raise BadRequest("unknown reset type")
        with self.db.write() as conn:
            refs.repository(conn, repo)
            refs.branch_commit(conn, repo, branch)
            self._guard(conn, repo, branch, force)
            staging.drop(conn, repo, branch, "" if reset_type == "reset" else path or "", reset_type == "object")

    def hard_reset_branch(self, repo: str, branch: str, ref: str, force: bool = False) -> None:
        """Point ``branch`` at ``ref``'s commit and drop its staging area."""
        with self.db.write() as conn:
            refs.repository(conn, repo)
            refs.branch_commit(conn, repo, branch)
            self._guard(conn, repo, branch, force)
            refs.move_branch(conn, repo, branch, refs.resolve(conn, repo, ref).commit_id)
            staging.drop(conn, repo, branch)

    # -- tags ------------------------------------------------------------------------------------------------
    def create_tag(self, repo: str, name: str, ref: str, force: bool = False) -> str:
        """A new tag at ``ref``'s commit; ``force`` only lets it into a read-only repository (as lakeFS)."""
        check_name("tag", name, TAG_NAME)
        with self.db.write() as conn:
            refs.repository(conn, repo)
            self._check_new_ref_name(conn, repo, name, "branch name", "branches")
            commit_id = refs.resolve(conn, repo, ref).commit_id
            self._guard(conn, repo, None, force)
            if refs.tag_commit(conn, repo, name):
                raise Conflict("tag already exists")
            conn.execute("INSERT INTO tags VALUES (?,?,?)", (repo, name, commit_id))
            return commit_id

    def get_tag(self, repo: str, name: str) -> str:
        with self.db.read() as conn:
            refs.repository(conn, repo)
            commit_id = refs.tag_commit(conn, repo, name)
            if commit_id is None:
                raise NotFound("tag not found")
            return commit_id

    def list_tags(self, repo: str, prefix: str = "", after: str = "", amount: int | None = None):
        return self._list_named(repo, "tags", prefix, after, amount)

    def delete_tag(self, repo: str, name: str, force: bool = False) -> None:
        with self.db.write() as conn:
            refs.repository(conn, repo)
            self._guard(conn, repo, None, force)
            if conn.execute("DELETE FROM tags WHERE repo=? AND name=?", (repo, name)).rowcount == 0:
                raise NotFound("tag not found")

    # -- objects ---------------------------------------------------------------------------------------------
    def _lookup(self, conn, repo: str, resolved: ResolvedRef, path: str) -> Entry | None:
        """The object at ``path`` as ``resolved`` sees it (its branch's staging area over its commit), or None."""
        if resolved.branch is not None:
            change = staging.staged(conn, repo, resolved.branch, path)
            if change is not NOT_STAGED:
                return change
        value = self.db.trees(conn).get(refs.commit(conn, repo, resolved.commit_id).meta_range_id, path)
        return Entry.from_value(path, value) if value is not None else None

    def _view(self, conn, repo: str, resolved: ResolvedRef, start: str, inclusive: bool) -> Iterator[Entry]:
        """The objects ``resolved`` sees from ``start`` in path order: its commit's tree overlaid by its branch's
        staging area (staged writes replace, tombstones hide)."""
        root = refs.commit(conn, repo, resolved.commit_id).meta_range_id
        committed = self.db.trees(conn).items(root, start, inclusive)
        if resolved.branch is None:
            yield from (Entry.from_value(path, value) for path, value in committed)
            return
        staged = staging.changes(conn, repo, resolved.branch, start, inclusive)
        change = next(staged, None)
        for path, value in committed:
            while change is not None and change[0] < path:
                if change[1] is not None:
                    yield change[1]
                change = next(staged, None)
            if change is not None and change[0] == path:
                if change[1] is not None:
                    yield change[1]
                change = next(staged, None)
            else:
                yield Entry.from_value(path, value)
        while change is not None:
            if change[1] is not None:
                yield change[1]
            change = next(staged, None)

    def get_entry(self, repo: str, ref: str, path: str) -> Entry:
        with self.db.read() as conn:
            refs.repository(conn, repo)
            entry = self._lookup(conn, repo, refs.resolve(conn, repo, ref), path)
            if entry is None:
                raise NotFound("object not found")
            return entry

    def exists(self, repo: str, ref: str, path: str) -> bool:
        try:
            self.get_entry(repo, ref, path)
        except NotFound:
            return False
        return True

    def put_entry(
        self,
        repo: str,
        branch: str,
        entry: Entry,
        if_absent: bool = False,
        if_match: str | None = None,
        force: bool = False,
    ) -> None:
        with self.db.write() as conn:
            refs.repository(conn, repo)
            head = refs.branch_commit(conn, repo, branch)
            self._guard(conn, repo, branch, force)
            if if_absent or if_match is not None:
                current = self._lookup(conn, repo, ResolvedRef(head, branch), entry.path)
                if if_absent and current is not None:
                    raise PreconditionFailed("path already exists")
                if if_match is not None and (current is None or current.checksum != if_match.strip('"')):
                    raise PreconditionFailed("precondition failed: ETag mismatch")
            staging.stage(conn, repo, branch, [entry])

    def stage_entries(self, repo: str, branch: str, entries: Iterable[Entry], force: bool = False) -> None:
        """Stage many object writes in one transaction (imports and bulk loads)."""
        with self.db.write() as conn:
            refs.repository(conn, repo)
            refs.branch_commit(conn, repo, branch)
            self._guard(conn, repo, branch, force)
            staging.stage(conn, repo, branch, entries)

    def delete_entries(
        self, repo: str, branch: str, paths: list[str], missing_ok: bool, force: bool = False
    ) -> list[str]:
        """Stage deletion of ``paths``; returns the paths not found (an error unless ``missing_ok``)."""
        with self.db.write() as conn:
            refs.repository(conn, repo)
            head = refs.commit(conn, repo, refs.branch_commit(conn, repo, branch))
            self._guard(conn, repo, branch, force)
            trees = self.db.trees(conn)
            missing = []
            for path in paths:
                if self._lookup(conn, repo, ResolvedRef(head.id, branch), path) is None:
                    missing.append(path)
                    if not missing_ok:
                        raise NotFound("object not found")
                staging.stage_deletion(conn, repo, branch, path, trees.get(head.meta_range_id, path) is not None)
            return missing

    def list_entries(
        self, repo: str, ref: str, prefix: str = "", after: str = "", amount: int | None = None, delimiter: str = ""
    ) -> tuple[list, bool]:
        """Objects (and common prefixes, with ``delimiter``) at ``ref`` below ``prefix``, after ``after``."""
        with self.db.read() as conn:
            refs.repository(conn, repo)
            resolved = refs.resolve(conn, repo, ref)
            return page_by_path(
                lambda start, inclusive: self._view(conn, repo, resolved, start, inclusive),
                prefix,
                after,
                amount,
                delimiter,
                CommonPrefix,
            )

    def update_user_metadata(self, repo: str, branch: str, path: str, metadata: dict) -> None:
        """Replace the user metadata of the object at ``path`` on ``branch`` (staging the changed entry)."""
        with self.db.write() as conn:
            refs.repository(conn, repo)
            head = refs.branch_commit(conn, repo, branch)
            self._guard(conn, repo, branch)
            entry = self._lookup(conn, repo, ResolvedRef(head, branch), path)
            if entry is None:
                raise NotFound("object not found")
            staging.stage(
                conn,
                repo,
                branch,
                [Entry(path, entry.address, entry.checksum, entry.size, entry.mtime, entry.content_type, metadata)],
            )

    # -- diff ------------------------------------------------------------------------------------------------
    def diff_branch(
        self, repo: str, branch: str, prefix: str = "", after: str = "", amount: int | None = None, delimiter: str = ""
    ) -> tuple[list[Difference], bool]:
        """Uncommitted changes of ``branch``."""
        with self.db.read() as conn:
            refs.repository(conn, repo)
            root = refs.commit(conn, repo, refs.branch_commit(conn, repo, branch)).meta_range_id
            trees = self.db.trees(conn)

            def differences(start: str, inclusive: bool) -> Iterator[Difference]:
                return _differences(
                    (path, trees.get(root, path), entry.value() if entry else None)
                    for path, entry in staging.changes(conn, repo, branch, start, inclusive)
                )

            return page_by_path(differences, prefix, after, amount, delimiter, _prefix_changed)

    def diff_refs(
        self,
        repo: str,
        left_ref: str,
        right_ref: str,
        diff_type: str = "three_dot",
        prefix: str = "",
        after: str = "",
        amount: int | None = None,
        delimiter: str = "",
    ) -> tuple[list[Difference], bool]:
        """Committed differences from ``left_ref`` (or its merge base with ``right_ref``) to ``right_ref``."""
        if diff_type not in ("two_dot", "three_dot"):
            raise BadRequest(f"invalid diff type {diff_type!r}")
        with self.db.read() as conn:
            refs.repository(conn, repo)
            left_id = refs.resolve(conn, repo, left_ref).commit_id
            right_id = refs.resolve(conn, repo, right_ref).commit_id
            if diff_type == "three_dot":
                left_id = refs.merge_base(conn, repo, left_id, right_id) or left_id
            left = refs.commit(conn, repo, left_id).meta_range_id
            right = refs.commit(conn, repo, right_id).meta_range_id
            trees = self.db.trees(conn)

            def differences(start: str, inclusive: bool) -> Iterator[Difference]:
                return _differences(trees.diff(left, right, start, inclusive))

            return page_by_path(differences, prefix, after, amount, delimiter, _prefix_changed)

    # -- merge, revert, cherry-pick --------------------------------------------------------------------------
    def merge(
        self,
        repo: str,
        source_ref: str,
        destination: str,
        committer: str,
        message: str | None = None,
        metadata: dict | None = None,
        strategy: str | None = None,
        allow_empty: bool = False,
        squash: bool = False,
        force: bool = False,
    ) -> str:
        """Merge ``source_ref``'s commit into ``destination``; returns the new head commit id."""
        if strategy not in STRATEGIES:
            raise BadRequest(f"invalid strategy {strategy!r}: merge strategy is not supported")
        with self.db.write() as conn:
            refs.repository(conn, repo)
            dest_head = refs.branch_commit(conn, repo, destination)
            self._guard(conn, repo, destination, force, protect=False)  # merging into protected branches is allowed
            if staging.is_dirty(conn, repo, destination):
                raise BadRequest(f"{destination}: uncommitted changes (dirty branch)")
            source_id = refs.resolve(conn, repo, source_ref).commit_id
            base_id = refs.merge_base(conn, repo, source_id, dest_head)
            source_commit = refs.commit(conn, repo, source_id)
            base_commit = refs.commit(conn, repo, base_id) if base_id else None
            # lakeFS' rule: "no changes" when the source's metarange is the base's (not when the result is the
            # destination); a first commit has no metarange there (""), unlike any later one, even an empty one
            unchanged = base_commit and lakefs_meta_range(source_commit) == lakefs_meta_range(base_commit)
            if unchanged and not (allow_empty or force):
                raise BadRequest("no changes")
            base = base_commit.meta_range_id if base_commit else EMPTY_TREE
            source = source_commit.meta_range_id
            dest = refs.commit(conn, repo, dest_head).meta_range_id
            tree_id = self._three_way(conn, base, source, dest, strategy)
            parents = [dest_head] if squash else [dest_head, source_id]
            commit = refs.insert_commit(
                conn,
                repo,
                parents,
                committer,
                message or f"Merge '{source_ref}' into '{destination}'",
                int(time.time()),
                tree_id,
                {**(metadata or {}), MERGE_STRATEGY_METADATA_KEY: strategy or "default"},
            )
            refs.move_branch(conn, repo, destination, commit.id)
            return commit.id

    def _three_way(self, conn, base: str, source: str, dest: str, strategy: str | None) -> str:
        """The root of ``dest`` with the changes from ``base`` to ``source`` merged in (O(changes x log N))."""
        trees = self.db.trees(conn)
        changes = list(
            merge_changes(trees.diff(base, source), lambda path: trees.get(dest, path), strategy, same_object)
        )
        return trees.apply(dest, changes)

    def _apply_commit_changes(
        self,
        conn,
        repo: str,
        branch: str,
        ref: str,
        parent_number: int | None,
        reverse: bool,
        operation: str,
        force: bool = False,
    ) -> tuple[str, Commit, str, str]:
        """``(head, commit, new tree, head's tree)``: the tree of ``branch``'s head with the change of ``ref``'s
        commit (against its parent number ``parent_number``) applied, or undone (``reverse``); 409 on a
        conflict, 400 on a dirty branch."""
        head = refs.branch_commit(conn, repo, branch)
        self._guard(conn, repo, branch, force, committing=True)
        if staging.is_dirty(conn, repo, branch):
            raise BadRequest(f"{branch}: uncommitted changes (dirty branch)")
        commit = refs.commit(conn, repo, refs.resolve(conn, repo, ref).commit_id)
        if len(commit.parents) > 1 and not parent_number:  # lakeFS: ErrRevertMergeNoParent is a conflict (409)
            error = Conflict if reverse else BadRequest
            raise error(f"{operation}: must specify 1-based parent number for reverting/cherry-picking merge commit")
        if parent_number is not None and parent_number < 0:
            raise BadRequest("validation error: parent_number: must not be negative")
        index = max((parent_number or 1) - 1, 0)
        if index >= len(commit.parents):
            raise BadRequest(f"{operation}: parent does not exist")
        parent_tree = refs.commit(conn, repo, commit.parents[index]).meta_range_id
        head_tree = refs.commit(conn, repo, head).meta_range_id
        base, source = (commit.meta_range_id, parent_tree) if reverse else (parent_tree, commit.meta_range_id)
        return head, commit, self._three_way(conn, base, source, head_tree, None), head_tree

    def revert(
        self,
        repo: str,
        branch: str,
        ref: str,
        parent_number: int | None,
        committer: str,
        message: str | None = None,
        metadata: dict | None = None,
        allow_empty: bool = False,
        force: bool = False,
    ) -> Commit:
        """Commit on ``branch`` the inverse of the change ``ref``'s commit made."""
        with self.db.write() as conn:
            refs.repository(conn, repo)
            head, commit, tree_id, head_tree = self._apply_commit_changes(
                conn, repo, branch, ref, parent_number, True, "revert", force
            )
            if tree_id == head_tree and not allow_empty:
                raise BadRequest("no changes")
            new = refs.insert_commit(
                conn, repo, [head], committer, message or f"Revert {ref}", int(time.time()), tree_id, metadata or {}
            )
            refs.move_branch(conn, repo, branch, new.id)
            return new

    def cherry_pick(
        self,
        repo: str,
        branch: str,
        ref: str,
        parent_number: int | None,
        committer: str,
        message: str | None = None,
        metadata: dict | None = None,
        force: bool = False,
    ) -> Commit:
        """Commit on ``branch`` the change ``ref``'s commit made (its message and metadata unless overridden), noting
        where it came from in the metadata, as lakeFS does."""
        with self.db.write() as conn:
            refs.repository(conn, repo)
            head, commit, tree_id, head_tree = self._apply_commit_changes(
                conn, repo, branch, ref, parent_number, False, "cherry-pick", force
            )
            if tree_id == head_tree:
                raise BadRequest("no changes")
            new = refs.insert_commit(
                conn,
                repo,
                [head],
                committer,
                message or commit.message,
                int(time.time()),
                tree_id,
                {
                    **(commit.metadata if metadata is None else metadata),
                    CHERRY_PICK_ORIGIN_KEY: commit.id,
                    CHERRY_PICK_COMMITTER_KEY: commit.committer,
                },
            )
            refs.move_branch(conn, repo, branch, new.id)
            return new


def lakefs_meta_range(commit: Commit) -> str:
    """What lakeFS' metarange id for ``commit`` equals: none (``""``) for a repository's first commit, where any
    later commit has one, its empty tree's included (``EMPTY_TREE`` here is ``""`` for both)."""
    if not commit.parents:
        return ""
    return commit.meta_range_id or "empty"


def _through(items: Iterator, last: Callable[[object], bool]) -> Iterator:
    """``items`` up to and including the first one that is ``last`` (all of them when none is)."""
    for item in items:
        yield item
        if last(item):
            return


def _after(items: Iterator, first: Callable[[object], bool]) -> Iterator:
    """``items`` after the first one that is ``first`` (none when none is)."""
    for item in items:
        if first(item):
            yield from items
            return


def _differences(changes: Iterator[tuple[str, list | None, list | None]]) -> Iterator[Difference]:
    """The differences among ``(path, before, after)`` stored values: those that are not the same object."""
    return (
        Difference.between(path, before, after) for path, before, after in changes if not same_object(before, after)
    )


def _prefix_changed(path: str) -> Difference:
    return Difference("prefix_changed", path, None, True)
