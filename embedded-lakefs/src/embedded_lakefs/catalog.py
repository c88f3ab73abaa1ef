"""lakeFS semantics: the facade that decides what each operation does, over three managers that store it.

As lakeFS' graveler splits its catalog: ``refs.RefManager`` (repositories, branches, tags, commits, protection rules,
ref expressions), ``staging.StagingManager`` (uncommitted changes and tombstones per branch) and
``committed.CommittedManager`` (committed trees: lookup, listing, diff, apply, merge through the pure ``merge``).
Each public method here is one unit of work, ``with self.store.write() as tx`` (or ``read()``): one SQLite
transaction of ``storage.Database`` that ``tx.refs``, ``tx.staging`` and ``tx.committed`` are bound to, so an
operation is stored whole or not at all. This module runs no SQL and no file I/O (``tests/test_catalog_layers.py``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .errors import BadRequest, Conflict, Forbidden, NotFound, PreconditionFailed
from .merge import STRATEGIES
from .records import Commit, CommonPrefix, Difference, Entry, ResolvedRef, prefix_upper_bound, same_object
from .refs import parse_ref
from .staging import NOT_STAGED
from .storage import Database, Transaction
from .tree import EMPTY_TREE
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
    """All metadata of the server: validation, write guards, staging overlays and paging over the managers."""

    def __init__(self, db_path: Path, synchronous: str = "FULL"):
        self.store = Database(db_path, synchronous)

    # -- repositories ----------------------------------------------------------------------------------------
    def create_repository(
        self, name: str, storage_namespace: str, default_branch: str = "main", read_only: bool = False
    ) -> dict:
        check_name("repository", name, REPOSITORY_NAME)
        check_name("branch", default_branch, BRANCH_NAME)
        if not storage_namespace:
            raise BadRequest("validation error: storage_namespace: required")
        now = int(time.time())
        with self.store.write() as tx:
            if tx.refs.find_repository(name) is not None:
                raise Conflict("error creating repository: not unique")
            tx.refs.add_repository(name, storage_namespace, default_branch, now, read_only)
            commit = tx.refs.create_commit(name, [], "", "Repository created", now, EMPTY_TREE, {})
            tx.refs.move_branch(name, default_branch, commit.id)
            return tx.refs.repository(name)

    def get_repository(self, name: str) -> dict:
        with self.store.read() as tx:
            return tx.refs.repository(name)

    def list_repositories(self, prefix: str = "", after: str = "", amount: int | None = None, search: str = ""):
        """A page of repositories whose names start with ``prefix`` and contain ``search`` (as lakeFS)."""
        with self.store.read() as tx:
            rows = tx.refs.repository_names(prefix, after, normalize_amount(amount) + 1, search)
            names, has_more = paginate([name for name in rows if name.startswith(prefix)], amount)
            return [tx.refs.repository(n) for n in names], has_more

    def delete_repository(self, name: str, force: bool = False) -> None:
        """Delete the repository; a read-only one only with ``force`` (lakeFS: 403 'read-only repository')."""
        with self.store.write() as tx:
            if tx.refs.repository(name)["read_only"] and not force:
                raise Forbidden("read-only repository")
            tx.staging.drop(name)
            tx.refs.delete_repository(name)

    # -- commits ---------------------------------------------------------------------------------------------
    def get_commit(self, repo: str, ref: str) -> Commit:
        with self.store.read() as tx:
            tx.refs.repository(repo)
            return tx.refs.commit(repo, tx.refs.resolve(repo, ref).commit_id)

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
        with self.store.write() as tx:
            tx.refs.repository(repo)
            head = tx.refs.branch_commit(repo, branch)
            self._guard(tx, repo, branch, force, committing=True)
            parent = tx.refs.commit(repo, head)
            changes = [(path, entry.value() if entry else None) for path, entry in tx.staging.changes(repo, branch)]
            tree_id = tx.committed.apply(parent.meta_range_id, changes)
            if tree_id == parent.meta_range_id and not allow_empty:
                raise BadRequest("commit: no changes")
            commit = tx.refs.create_commit(
                repo,
                [head],
                committer,
                message,
                int(date) if date is not None else int(time.time()),
                tree_id,
                metadata or {},
            )
            tx.refs.move_branch(repo, branch, commit.id)
            tx.staging.drop(repo, branch)
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
        with self.store.read() as tx:
            tx.refs.repository(repo)
            start = tx.refs.resolve(repo, ref).commit_id
            stop = tx.refs.resolve(repo, stop_at).commit_id if stop_at else None
            commits: Iterator[Commit] = tx.refs.history(repo, start, first_parent)
            if stop:
                commits = _through(commits, lambda c: c.id == stop)
            if since is not None:
                commits = itertools.takewhile(lambda c: c.creation_date >= since, commits)
            if after:
                commits = _after(commits, lambda c: c.id == after)
            if objects or prefixes:
                commits = (c for c in commits if self._commit_touches(tx, repo, c, objects, prefixes))
            page, has_more = paginate(list(itertools.islice(commits, normalize_amount(amount) + 1)), amount)
            return page, (has_more and not limit)

    @staticmethod
    def _commit_touches(tx: Transaction, repo: str, commit: Commit, objects, prefixes) -> bool:
        """Whether ``commit`` changed one of ``objects`` or something below one of ``prefixes`` (vs. its
        first parent; a root commit against the empty tree)."""
        parent = tx.refs.commit(repo, commit.parents[0]).meta_range_id if commit.parents else EMPTY_TREE
        if parent == commit.meta_range_id:
            return False
        for path in objects:
            if not same_object(tx.committed.get(parent, path), tx.committed.get(commit.meta_range_id, path)):
                return True
        for prefix in prefixes:
            for path, before, after in tx.committed.diff(parent, commit.meta_range_id, prefix):
                if not path.startswith(prefix):
                    break
                if not same_object(before, after):
                    return True
        return False

    # -- write guards: read-only repositories and branch protection -----------------------------------------
    def _guard(
        self,
        tx: Transaction,
        repo: str,
        branch: str | None,
        force: bool = False,
        committing: bool = False,
        protect: bool = True,
    ) -> None:
        """403 for a write to a read-only repository (unless ``force``) or to a protected branch."""
        if tx.refs.repository(repo)["read_only"] and not force:
            raise Forbidden("read-only repository")
        if protect and branch is not None and self._is_protected(tx, repo, branch):
            raise Forbidden("cannot commit to protected branch" if committing else "cannot write to protected branch")

    def check_writable(self, repo: str, branch: str, force: bool = False) -> None:
        """404 for a missing repository or branch, 403 when writes to ``branch`` are refused (see ``_guard``)."""
        with self.store.read() as tx:
            tx.refs.repository(repo)
            tx.refs.branch_commit(repo, branch)
            self._guard(tx, repo, branch, force)

    @staticmethod
    def _is_protected(tx: Transaction, repo: str, branch: str) -> bool:
        return any(fnmatch.fnmatchcase(branch, rule["pattern"]) for rule in tx.refs.protection_rules(repo))

    @staticmethod
    def _rules_etag(rules: list[dict]) -> str:
        return hashlib.sha256(json.dumps(rules, sort_keys=True).encode()).hexdigest()

    def get_branch_protection(self, repo: str) -> tuple[list[dict], str]:
        """The repository's branch protection rules and their ETag."""
        with self.store.read() as tx:
            tx.refs.repository(repo)
            rules = tx.refs.protection_rules(repo)
            return rules, self._rules_etag(rules)

    def set_branch_protection(self, repo: str, rules: list[dict], if_match: str | None = None) -> None:
        """Replace the rules; 412 when ``if_match`` is not the current rules' ETag."""
        with self.store.write() as tx:
            if tx.refs.repository(repo)["read_only"]:
                raise Forbidden("read-only repository")
            current = tx.refs.protection_rules(repo)
            if if_match is not None and if_match.strip().strip('"') != self._rules_etag(current):
                raise PreconditionFailed("precondition failed: branch protection rules were changed")
            tx.refs.set_protection_rules(repo, rules)

    # -- refs ------------------------------------------------------------------------------------------------
    def resolve(self, repo: str, ref: str) -> ResolvedRef:
        with self.store.read() as tx:
            tx.refs.repository(repo)
            return tx.refs.resolve(repo, ref)

    def merge_base(self, repo: str, a: str, b: str) -> str | None:
        """The best common ancestor of commits ``a`` and ``b`` (None when unrelated)."""
        with self.store.read() as tx:
            return tx.refs.merge_base(repo, a, b)

    # -- branches --------------------------------------------------------------------------------------------
    def create_branch(self, repo: str, name: str, source: str, force: bool = False, hidden: bool = False) -> str:
        """A new branch at ``source``'s commit; ``force`` only lets it into a read-only repository (as lakeFS);
        a ``hidden`` one is listed only on request."""
        check_name("branch", name, BRANCH_NAME)
        with self.store.write() as tx:
            tx.refs.repository(repo)
            if parse_ref(source).branch_modifier == "$":  # graveler.ErrCreateBranchNoCommit
                raise BadRequest(f"source reference '{source}': can only create a branch from a commit")
            self._check_new_ref_name(tx, repo, name, "tag ID", tx.refs.tag_commit)
            commit_id = tx.refs.resolve(repo, source).commit_id
            self._guard(tx, repo, None, force)
            if tx.refs.find_branch(repo, name) is not None:
                raise Conflict("branch already exists")
            tx.refs.move_branch(repo, name, commit_id, hidden)
            return commit_id

    @staticmethod
    def _check_new_ref_name(
        tx: Transaction, repo: str, name: str, other_kind: str, other_commit: Callable[[str, str], str | None]
    ) -> None:
        """409 when a new branch or tag name is a commit id, or the name of a tag or branch (``other_commit``
        finds its commit)."""
        if tx.refs.commit_exists(repo, name):
            raise Conflict(f"commit ID {name}: conflict found")
        if other_commit(repo, name) is not None:
            raise Conflict(f"{other_kind} {name}: conflict found")

    def get_branch(self, repo: str, name: str) -> str:
        with self.store.read() as tx:
            tx.refs.repository(repo)
            return tx.refs.branch_commit(repo, name)

    def list_branches(
        self, repo: str, prefix: str = "", after: str = "", amount: int | None = None, show_hidden: bool = False
    ):
        return self._list_named(repo, "branches", prefix, after, amount, show_hidden)

    def _list_named(self, repo: str, kind: str, prefix: str, after: str, amount: int | None, show_hidden: bool = True):
        """A page of ``(name, commit id)`` of the repository's ``kind`` (``branches``, hidden ones only with
        ``show_hidden``, or ``tags``)."""
        with self.store.read() as tx:
            tx.refs.repository(repo)
            limit = normalize_amount(amount) + 1
            if kind == "branches":
                return paginate(tx.refs.list_branches(repo, prefix, after, limit, show_hidden), amount)
            return paginate(tx.refs.list_tags(repo, prefix, after, limit), amount)

    def delete_branch(self, repo: str, name: str, force: bool = False) -> None:
        with self.store.write() as tx:
            repository = tx.refs.repository(repo)
            tx.refs.branch_commit(repo, name)
            self._guard(tx, repo, None, force)
            if name == repository["default_branch"]:
                raise BadRequest("cannot delete repository default branch")
            tx.refs.delete_branch(repo, name)
            tx.staging.drop(repo, name)

    def reset_branch(
        self, repo: str, branch: str, reset_type: str, path: str | None = None, force: bool = False
    ) -> None:
        """Drop uncommitted changes: all (``reset``), one object (``object``) or a prefix (``common_prefix``)."""
        if reset_type not in ("reset", "object", "common_prefix"):
            raise BadRequest("unknown reset type")
        with self.store.write() as tx:
            tx.refs.repository(repo)
            tx.refs.branch_commit(repo, branch)
            self._guard(tx, repo, branch, force)
            tx.staging.drop(repo, branch, "" if reset_type == "reset" else path or "", reset_type == "object")

    def hard_reset_branch(self, repo: str, branch: str, ref: str, force: bool = False) -> None:
        """Point ``branch`` at ``ref``'s commit and drop its staging area."""
        with self.store.write() as tx:
            tx.refs.repository(repo)
            tx.refs.branch_commit(repo, branch)
            self._guard(tx, repo, branch, force)
            tx.refs.move_branch(repo, branch, tx.refs.resolve(repo, ref).commit_id)
            tx.staging.drop(repo, branch)

    # -- tags ------------------------------------------------------------------------------------------------
    def create_tag(self, repo: str, name: str, ref: str, force: bool = False) -> str:
        """A new tag at ``ref``'s commit; ``force`` only lets it into a read-only repository (as lakeFS)."""
        check_name("tag", name, TAG_NAME)
        with self.store.write() as tx:
            tx.refs.repository(repo)
            self._check_new_ref_name(tx, repo, name, "branch name", tx.refs.find_branch)
            commit_id = tx.refs.resolve(repo, ref).commit_id
            self._guard(tx, repo, None, force)
            if tx.refs.tag_commit(repo, name):
                raise Conflict("tag already exists")
            tx.refs.add_tag(repo, name, commit_id)
            return commit_id

    def get_tag(self, repo: str, name: str) -> str:
        with self.store.read() as tx:
            tx.refs.repository(repo)
            commit_id = tx.refs.tag_commit(repo, name)
            if commit_id is None:
                raise NotFound("tag not found")
            return commit_id

    def list_tags(self, repo: str, prefix: str = "", after: str = "", amount: int | None = None):
        return self._list_named(repo, "tags", prefix, after, amount)

    def delete_tag(self, repo: str, name: str, force: bool = False) -> None:
        with self.store.write() as tx:
            tx.refs.repository(repo)
            self._guard(tx, repo, None, force)
            if not tx.refs.delete_tag(repo, name):
                raise NotFound("tag not found")

    # -- objects ---------------------------------------------------------------------------------------------
    @staticmethod
    def _lookup(tx: Transaction, repo: str, resolved: ResolvedRef, path: str) -> Entry | None:
        """The object at ``path`` as ``resolved`` sees it (its branch's staging area over its commit), or None."""
        if resolved.branch is not None:
            change = tx.staging.staged(repo, resolved.branch, path)
            if change is not NOT_STAGED:
                return change
        value = tx.committed.get(tx.refs.commit(repo, resolved.commit_id).meta_range_id, path)
        return Entry.from_value(path, value) if value is not None else None

    @staticmethod
    def _view(tx: Transaction, repo: str, resolved: ResolvedRef, start: str, inclusive: bool) -> Iterator[Entry]:
        """The objects ``resolved`` sees from ``start`` in path order: its commit's tree overlaid by its branch's
        staging area (staged writes replace, tombstones hide)."""
        root = tx.refs.commit(repo, resolved.commit_id).meta_range_id
        committed = tx.committed.items(root, start, inclusive)
        if resolved.branch is None:
            yield from (Entry.from_value(path, value) for path, value in committed)
            return
        staged = tx.staging.changes(repo, resolved.branch, start, inclusive)
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
        with self.store.read() as tx:
            tx.refs.repository(repo)
            entry = self._lookup(tx, repo, tx.refs.resolve(repo, ref), path)
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
        with self.store.write() as tx:
            tx.refs.repository(repo)
            head = tx.refs.branch_commit(repo, branch)
            self._guard(tx, repo, branch, force)
            if if_absent or if_match is not None:
                current = self._lookup(tx, repo, ResolvedRef(head, branch), entry.path)
                if if_absent and current is not None:
                    raise PreconditionFailed("path already exists")
                if if_match is not None and (current is None or current.checksum != if_match.strip('"')):
                    raise PreconditionFailed("precondition failed: ETag mismatch")
            tx.staging.stage(repo, branch, [entry])

    def stage_entries(self, repo: str, branch: str, entries: Iterable[Entry], force: bool = False) -> None:
        """Stage many object writes in one transaction (imports and bulk loads)."""
        with self.store.write() as tx:
            tx.refs.repository(repo)
            tx.refs.branch_commit(repo, branch)
            self._guard(tx, repo, branch, force)
            tx.staging.stage(repo, branch, entries)

    def delete_entries(
        self, repo: str, branch: str, paths: list[str], missing_ok: bool, force: bool = False
    ) -> list[str]:
        """Stage deletion of ``paths``; returns the paths not found (an error unless ``missing_ok``)."""
        with self.store.write() as tx:
            tx.refs.repository(repo)
            head = tx.refs.commit(repo, tx.refs.branch_commit(repo, branch))
            self._guard(tx, repo, branch, force)
            missing = []
            for path in paths:
                if self._lookup(tx, repo, ResolvedRef(head.id, branch), path) is None:
                    missing.append(path)
                    if not missing_ok:
                        raise NotFound("object not found")
                committed = tx.committed.get(head.meta_range_id, path) is not None
                tx.staging.stage_deletion(repo, branch, path, committed)
            return missing

    def list_entries(
        self, repo: str, ref: str, prefix: str = "", after: str = "", amount: int | None = None, delimiter: str = ""
    ) -> tuple[list, bool]:
        """Objects (and common prefixes, with ``delimiter``) at ``ref`` below ``prefix``, after ``after``."""
        with self.store.read() as tx:
            tx.refs.repository(repo)
            resolved = tx.refs.resolve(repo, ref)
            return page_by_path(
                lambda start, inclusive: self._view(tx, repo, resolved, start, inclusive),
                prefix,
                after,
                amount,
                delimiter,
                CommonPrefix,
            )

    def update_user_metadata(self, repo: str, branch: str, path: str, metadata: dict) -> None:
        """Replace the user metadata of the object at ``path`` on ``branch`` (staging the changed entry)."""
        with self.store.write() as tx:
            tx.refs.repository(repo)
            head = tx.refs.branch_commit(repo, branch)
            self._guard(tx, repo, branch)
            entry = self._lookup(tx, repo, ResolvedRef(head, branch), path)
            if entry is None:
                raise NotFound("object not found")
            tx.staging.stage(
                repo,
                branch,
                [Entry(path, entry.address, entry.checksum, entry.size, entry.mtime, entry.content_type, metadata)],
            )

    # -- diff ------------------------------------------------------------------------------------------------
    def diff_branch(
        self, repo: str, branch: str, prefix: str = "", after: str = "", amount: int | None = None, delimiter: str = ""
    ) -> tuple[list[Difference], bool]:
        """Uncommitted changes of ``branch``."""
        with self.store.read() as tx:
            tx.refs.repository(repo)
            root = tx.refs.commit(repo, tx.refs.branch_commit(repo, branch)).meta_range_id

            def differences(start: str, inclusive: bool) -> Iterator[Difference]:
                return _differences(
                    (path, tx.committed.get(root, path), entry.value() if entry else None)
                    for path, entry in tx.staging.changes(repo, branch, start, inclusive)
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
        with self.store.read() as tx:
            tx.refs.repository(repo)
            left_id = tx.refs.resolve(repo, left_ref).commit_id
            right_id = tx.refs.resolve(repo, right_ref).commit_id
            if diff_type == "three_dot":
                left_id = tx.refs.merge_base(repo, left_id, right_id) or left_id
            left = tx.refs.commit(repo, left_id).meta_range_id
            right = tx.refs.commit(repo, right_id).meta_range_id

            def differences(start: str, inclusive: bool) -> Iterator[Difference]:
                return _differences(tx.committed.diff(left, right, start, inclusive))

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
        with self.store.write() as tx:
            tx.refs.repository(repo)
            dest_head = tx.refs.branch_commit(repo, destination)
            self._guard(tx, repo, destination, force, protect=False)  # merging into protected branches is allowed
            if tx.staging.is_dirty(repo, destination):
                raise BadRequest(f"{destination}: uncommitted changes (dirty branch)")
            source_id = tx.refs.resolve(repo, source_ref).commit_id
            base_id = tx.refs.merge_base(repo, source_id, dest_head)
            source_commit = tx.refs.commit(repo, source_id)
            base_commit = tx.refs.commit(repo, base_id) if base_id else None
            # lakeFS' rule: "no changes" when the source's metarange is the base's (not when the result is the
            # destination); a first commit has no metarange there (""), unlike any later one, even an empty one
            unchanged = base_commit and lakefs_meta_range(source_commit) == lakefs_meta_range(base_commit)
            if unchanged and not (allow_empty or force):
                raise BadRequest("no changes")
            base = base_commit.meta_range_id if base_commit else EMPTY_TREE
            source = source_commit.meta_range_id
            dest = tx.refs.commit(repo, dest_head).meta_range_id
            tree_id = tx.committed.merge(base, source, dest, strategy)
            parents = [dest_head] if squash else [dest_head, source_id]
            commit = tx.refs.create_commit(
                repo,
                parents,
                committer,
                message or f"Merge '{source_ref}' into '{destination}'",
                int(time.time()),
                tree_id,
                {**(metadata or {}), MERGE_STRATEGY_METADATA_KEY: strategy or "default"},
            )
            tx.refs.move_branch(repo, destination, commit.id)
            return commit.id

    def _apply_commit_changes(
        self,
        tx: Transaction,
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
        head = tx.refs.branch_commit(repo, branch)
        self._guard(tx, repo, branch, force, committing=True)
        if tx.staging.is_dirty(repo, branch):
            raise BadRequest(f"{branch}: uncommitted changes (dirty branch)")
        commit = tx.refs.commit(repo, tx.refs.resolve(repo, ref).commit_id)
        if len(commit.parents) > 1 and not parent_number:  # lakeFS: ErrRevertMergeNoParent is a conflict (409)
            error = Conflict if reverse else BadRequest
            raise error(f"{operation}: must specify 1-based parent number for reverting/cherry-picking merge commit")
        if parent_number is not None and parent_number < 0:
            raise BadRequest("validation error: parent_number: must not be negative")
        index = max((parent_number or 1) - 1, 0)
        if index >= len(commit.parents):
            raise BadRequest(f"{operation}: parent does not exist")
        parent_tree = tx.refs.commit(repo, commit.parents[index]).meta_range_id
        head_tree = tx.refs.commit(repo, head).meta_range_id
        base, source = (commit.meta_range_id, parent_tree) if reverse else (parent_tree, commit.meta_range_id)
        return head, commit, tx.committed.merge(base, source, head_tree, None), head_tree

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
        with self.store.write() as tx:
            tx.refs.repository(repo)
            head, commit, tree_id, head_tree = self._apply_commit_changes(
                tx, repo, branch, ref, parent_number, True, "revert", force
            )
            if tree_id == head_tree and not allow_empty:
                raise BadRequest("no changes")
            new = tx.refs.create_commit(
                repo, [head], committer, message or f"Revert {ref}", int(time.time()), tree_id, metadata or {}
            )
            tx.refs.move_branch(repo, branch, new.id)
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
        with self.store.write() as tx:
            tx.refs.repository(repo)
            head, commit, tree_id, head_tree = self._apply_commit_changes(
                tx, repo, branch, ref, parent_number, False, "cherry-pick", force
            )
            if tree_id == head_tree:
                raise BadRequest("no changes")
            new = tx.refs.create_commit(
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
            tx.refs.move_branch(repo, branch, new.id)
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
