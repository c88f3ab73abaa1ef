"""The pure three-way merge (``embedded_lakefs.merge``): every combination of added / removed / changed on the
merge base, the source and the destination, with and without a strategy."""

from __future__ import annotations

import pytest

from embedded_lakefs.errors import Conflict
from embedded_lakefs.merge import merge_changes, merge_value
from embedded_lakefs.records import same_object

A, B, C = "A", "B", "C"
CONFLICT = Conflict
# (case, base, source, destination, merged); None: the path is absent
CASES = [
    ("absent everywhere", None, None, None, None),
    ("added on source", None, A, None, A),
    ("added on destination", None, None, A, A),
    ("added on both alike", None, A, A, A),
    ("added on both differently", None, A, B, CONFLICT),
    ("unchanged", A, A, A, A),
    ("removed on source", A, None, A, None),
    ("removed on destination", A, A, None, None),
    ("removed on both", A, None, None, None),
    ("changed on source", A, B, A, B),
    ("changed on destination", A, A, B, B),
    ("changed on both alike", A, B, B, B),
    ("changed on both differently", A, B, C, CONFLICT),
    ("changed on source, removed on destination", A, B, None, CONFLICT),
    ("removed on source, changed on destination", A, None, B, CONFLICT),
]


@pytest.mark.parametrize("case, base, source, dest, merged", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("strategy", [None, "dest-wins", "source-wins"])
def test_merge_value(case, base, source, dest, merged, strategy):
    if merged is CONFLICT and strategy is None:
        with pytest.raises(Conflict, match="conflict found"):
            merge_value(base, source, dest, strategy)
    elif merged is CONFLICT:
        assert merge_value(base, source, dest, strategy) == (dest if strategy == "dest-wins" else source)
    else:
        assert merge_value(base, source, dest, strategy) == merged


def test_every_combination_is_in_the_table():
    values = (None, A, B, C)
    covered = {(b, s, d) for _, b, s, d, _ in CASES}
    canonical = set()
    for base in (None, A):
        for source in values:
            for dest in values:
                names = {}  # rename values in order of appearance, so (A, B, B) and (A, C, C) are one case
                key = tuple(None if v is None else names.setdefault(v, "ABC"[len(names)]) for v in (base, source, dest))
                canonical.add(key)
    assert canonical == covered


def test_merge_changes_lists_only_what_changes_the_destination():
    base = {"same": [1], "src-changed": [1], "both-removed": [1], "dest-changed": [1]}
    source = {"same": [1], "src-changed": [2], "dest-changed": [1], "src-added": [5]}
    dest = {"same": [1], "src-changed": [1], "dest-changed": [3]}
    source_changes = [
        (k, base.get(k), source.get(k)) for k in sorted(base.keys() | source.keys()) if base.get(k) != source.get(k)
    ]
    assert list(merge_changes(source_changes, dest.get)) == [("src-added", [5]), ("src-changed", [2])]


def test_an_object_rewritten_with_the_same_content_is_the_same_object():
    entry = ["sha", "md5", 10, 1000, "image/png", {}]
    touched = ["sha", "md5", 10, 2000, "image/png", {}]
    assert same_object(entry, touched) and not same_object(entry, ["sha", "md5", 10, 1000, "image/png", {"a": "1"}])
    assert merge_value(entry, touched, None, same=same_object) is None  # only the mtime changed: no conflict
    assert list(merge_changes([("p", entry, touched)], lambda _: entry, same=same_object)) == []
