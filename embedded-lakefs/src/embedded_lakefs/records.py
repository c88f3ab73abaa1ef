"""The records the catalog keeps and answers with: object entries, commits, differences, resolved refs; and the
path ranges they are looked up by. Plain values shared by every layer: how they are stored is the managers' (``refs``,
``staging``, ``committed``)."""

from __future__ import annotations

from dataclasses import dataclass, field

MTIME = 3  # position of the modification time in an entry's stored value


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
    def from_value(cls, path: str, value: list) -> Entry:
        """From the value a committed tree stores under ``path``."""
        return cls(path, *value)

    def value(self) -> list:
        """What a committed tree stores under the entry's path."""
        return [self.address, self.checksum, self.size, self.mtime, self.content_type, self.metadata]


def prefix_upper_bound(prefix: str) -> str | None:
    """Smallest string greater than every string that starts with ``prefix`` (None: unbounded)."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            return prefix[:-1] + chr(last + 1)
        prefix = prefix[:-1]
    return None


def same_object(a: list | None, b: list | None) -> bool:
    """Whether two stored values are the same object version (the modification time aside), as merge and diff
    compare them; None is an absent object."""
    if a is None or b is None:
        return a is b
    return a[:MTIME] == b[:MTIME] and a[MTIME + 1 :] == b[MTIME + 1 :]


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

    @classmethod
    def between(cls, path: str, before: list | None, after: list | None) -> Difference:
        """The difference from stored value ``before`` to ``after`` (not the same object)."""
        if before is None:
            return cls("added", path, after[2])
        if after is None:
            return cls("removed", path, before[2])
        return cls("changed", path, after[2])


@dataclass(frozen=True)
class ResolvedRef:
    """A ref resolved to a commit; ``branch`` is set when reads must include that branch's staging area."""

    commit_id: str
    branch: str | None = None
