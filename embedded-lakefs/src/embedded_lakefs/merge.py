"""Three-way merge as pure functions: of one path's values, and of a source's changes into a destination.

Values are whatever a committed tree stores (None: absent); ``same`` says whether two are the same version.
"""

from __future__ import annotations

import operator
from typing import Callable, Iterable, Iterator

from .errors import Conflict

STRATEGIES = (None, "", "dest-wins", "source-wins")


def merge_value(base, source, dest, strategy: str | None = None, same: Callable = operator.eq):
    """The merged value of a path, as lakeFS merges: a side that did not change it takes the other's value;
    both changed it alike: that value; both changed it differently: ``strategy``'s side, else a conflict."""
    if same(source, base) or same(source, dest):
        return dest
    if same(dest, base):
        return source
    if strategy == "dest-wins":
        return dest
    if strategy == "source-wins":
        return source
    raise Conflict("conflict found")


def merge_changes(
    source_changes: Iterable[tuple[str, object, object]],
    dest_value: Callable[[str], object],
    strategy: str | None = None,
    same: Callable = operator.eq,
) -> Iterator[tuple[str, object]]:
    """The changes to make to the destination: ``source_changes`` are ``(path, base value, source value)``
    for the paths where source differs from the merge base; ``dest_value(path)`` reads the destination."""
    for path, base, source in source_changes:
        if same(base, source):
            continue
        dest = dest_value(path)
        merged = merge_value(base, source, dest, strategy, same)
        if merged is not dest and not same(merged, dest):
            yield path, merged
