"""A data directory written before trees shared their nodes (schema 1: a row per object per commit) migrates on
open: the same commits (ids unchanged), objects, branches, tags and staged changes; an interrupted migration
leaves the old database as it was. One of schema 2 (before hidden branches and nanosecond commit times) gains
those columns: its branches are not hidden, its commits keep their log order."""

from __future__ import annotations

import json
import sqlite3

import pytest

from embedded_lakefs import storage
from embedded_lakefs.catalog import Catalog

SCHEMA_1 = """
CREATE TABLE repositories (name TEXT PRIMARY KEY, storage_namespace TEXT NOT NULL, default_branch TEXT NOT NULL,
    creation_date INTEGER NOT NULL, read_only INTEGER NOT NULL DEFAULT 0);
CREATE TABLE branches (repo TEXT NOT NULL, name TEXT NOT NULL, commit_id TEXT NOT NULL,
    PRIMARY KEY (repo, name)) WITHOUT ROWID;
CREATE TABLE tags (repo TEXT NOT NULL, name TEXT NOT NULL, commit_id TEXT NOT NULL,
    PRIMARY KEY (repo, name)) WITHOUT ROWID;
CREATE TABLE commits (repo TEXT NOT NULL, id TEXT NOT NULL, parents TEXT NOT NULL, committer TEXT NOT NULL,
    message TEXT NOT NULL, creation_date INTEGER NOT NULL, meta_range_id TEXT NOT NULL, metadata TEXT NOT NULL,
    generation INTEGER NOT NULL, PRIMARY KEY (repo, id)) WITHOUT ROWID;
CREATE TABLE tree_entries (tree_id TEXT NOT NULL, path TEXT NOT NULL, address TEXT NOT NULL, checksum TEXT NOT NULL,
    size INTEGER NOT NULL, mtime INTEGER NOT NULL, content_type TEXT NOT NULL, metadata TEXT NOT NULL,
    PRIMARY KEY (tree_id, path)) WITHOUT ROWID;
CREATE TABLE staging (repo TEXT NOT NULL, branch TEXT NOT NULL, path TEXT NOT NULL, tombstone INTEGER NOT NULL,
    address TEXT, checksum TEXT, size INTEGER, mtime INTEGER, content_type TEXT, metadata TEXT,
    PRIMARY KEY (repo, branch, path)) WITHOUT ROWID;
CREATE TABLE branch_protection (repo TEXT PRIMARY KEY, rules TEXT NOT NULL) WITHOUT ROWID;
"""
ROOT, FIRST, SECOND = "c0" * 32, "c1" * 32, "c2" * 32


def row(tree: str, path: str, n: int) -> tuple:
    return (tree, path, f"{n:064x}", f"{n:032x}", n, 1_700_000_000, "image/png", json.dumps({"n": str(n)}))


def write_schema_1(db_path) -> None:
    """A repository as schema 1 stored it: two commits (tree t1: 300 objects; t2: one changed, one added), a tag,
    a feature branch with a staged write and a staged deletion."""
    conn = sqlite3.connect(db_path)
    conn.executescript(SCHEMA_1)
    conn.execute("INSERT INTO repositories VALUES ('old', 'local://old', 'main', 1700000000, 0)")
    commits = [(ROOT, [], "", 1), (FIRST, [ROOT], "t1", 2), (SECOND, [FIRST], "t2", 3)]
    for commit_id, parents, tree, generation in commits:
        conn.execute(
            "INSERT INTO commits VALUES ('old',?,?,?,?,?,?,?,?)",
            (
                commit_id,
                json.dumps(parents),
                "me",
                f"commit {generation}",
                1_700_000_000 + generation,
                tree,
                "{}",
                generation,
            ),
        )
    t1 = [row("t1", f"data/{i:03d}.png", i) for i in range(300)]
    t2 = [r for r in (row("t2", *r[1:2], r[4]) for r in t1) if r[1] != "data/007.png"]
    t2 += [row("t2", "data/007.png", 1007), row("t2", "data/new.png", 2000)]
    conn.executemany("INSERT INTO tree_entries VALUES (?,?,?,?,?,?,?,?)", t1 + t2)
    conn.execute("INSERT INTO branches VALUES ('old', 'main', ?)", (SECOND,))
    conn.execute("INSERT INTO branches VALUES ('old', 'feature', ?)", (FIRST,))
    conn.execute("INSERT INTO tags VALUES ('old', 'v1', ?)", (FIRST,))
    conn.execute("INSERT INTO staging VALUES ('old', 'feature', 'data/001.png', 1, NULL, NULL, NULL, NULL, NULL, NULL)")
    conn.execute(
        "INSERT INTO staging VALUES ('old', 'feature', 'data/zz.png', 0, ?, ?, 5, 1, 'image/png', '{}')",
        ("f" * 64, "e" * 32),
    )
    conn.commit()
    conn.close()


def paths(catalog: Catalog, ref: str) -> list[str]:
    entries, has_more = catalog.list_entries("old", ref, amount=1000)
    assert not has_more
    return [e.path for e in entries]


def test_a_schema_1_database_migrates_with_its_commits_objects_and_staging(tmp_path):
    db_path = tmp_path / "lakefs.db"
    write_schema_1(db_path)
    catalog = Catalog(db_path)
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == storage.SCHEMA_VERSION
    assert conn.execute("SELECT 1 FROM sqlite_master WHERE name='tree_entries'").fetchone() is None
    assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0  # the old rows' pages are given back
    assert conn.execute("PRAGMA page_size").fetchone()[0] == storage.PAGE_SIZE
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert catalog.get_branch("old", "main") == SECOND and catalog.get_tag("old", "v1") == FIRST
    assert [c.id for c in catalog.log("old", "main")[0]] == [SECOND, FIRST, ROOT]
    assert paths(catalog, FIRST) == [f"data/{i:03d}.png" for i in range(300)]
    assert paths(catalog, "main") == sorted([f"data/{i:03d}.png" for i in range(300)] + ["data/new.png"])
    entry = catalog.get_entry("old", "main", "data/007.png")
    assert (entry.address, entry.size, entry.metadata) == (f"{1007:064x}", 1007, {"n": "1007"})
    assert catalog.get_entry("old", "v1", "data/007.png").size == 7
    feature = paths(catalog, "feature")
    assert "data/001.png" not in feature and "data/zz.png" in feature and len(feature) == 300
    diff, _ = catalog.diff_refs("old", FIRST, SECOND, amount=1000)
    assert [(d.type, d.path) for d in diff] == [("changed", "data/007.png"), ("added", "data/new.png")]
    assert [(d.type, d.path) for d in catalog.diff_branch("old", "feature")[0]] == [
        ("removed", "data/001.png"),
        ("added", "data/zz.png"),
    ]
    new = catalog.commit("old", "feature", "after the migration", "me")
    assert catalog.merge("old", "feature", "main", "me")
    assert "data/001.png" not in paths(catalog, "main") and new.parents == [FIRST]
    Catalog(db_path)  # opening again is a no-op
    assert catalog.get_entry("old", "main", "data/new.png").size == 2000


def test_an_interrupted_migration_leaves_the_schema_1_database_as_it_was(tmp_path, monkeypatch):
    db_path = tmp_path / "lakefs.db"
    write_schema_1(db_path)
    before = sqlite3.connect(db_path).execute("SELECT count(*) FROM tree_entries").fetchone()[0]
    calls = []

    def apply_then_fail(self, root, changes):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if killed in the middle
        return original(self, root, changes)

    original = storage.CommittedManager.apply
    monkeypatch.setattr(storage.CommittedManager, "apply", apply_then_fail)
    with pytest.raises(KeyboardInterrupt):
        Catalog(db_path)
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT count(*) FROM tree_entries").fetchone()[0] == before
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    assert conn.execute("SELECT DISTINCT meta_range_id FROM commits ORDER BY 1").fetchall() == [("",), ("t1",), ("t2",)]
    conn.close()
    monkeypatch.setattr(storage.CommittedManager, "apply", original)
    assert paths(Catalog(db_path), "main")[-1] == "data/new.png"


def test_a_database_of_a_newer_schema_is_refused_in_one_line(tmp_path):
    db_path = tmp_path / "lakefs.db"
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version={storage.SCHEMA_VERSION + 1}")
    conn.close()
    newer = storage.SCHEMA_VERSION + 1
    with pytest.raises(RuntimeError, match=rf"lakefs\.db: written by a newer embedded-lakefs \(schema {newer}, "):
        Catalog(db_path)


def test_a_schema_2_database_gains_hidden_branches_and_commit_times(tmp_path):
    db_path = tmp_path / "lakefs.db"
    catalog = Catalog(db_path)
    catalog.create_repository("two", "local://two")
    first = catalog.commit("two", "main", "first", "me", date=1_700_000_001, allow_empty=True)
    second = catalog.commit("two", "main", "second", "me", date=1_700_000_002, allow_empty=True)
    catalog.create_branch("two", "feature", "main")
    conn = sqlite3.connect(db_path)
    conn.execute("ALTER TABLE branches DROP COLUMN hidden")  # as schema 2 stored them
    conn.execute("ALTER TABLE commits DROP COLUMN created_ns")
    conn.execute("PRAGMA user_version=2")
    conn.commit()
    conn.close()

    catalog = Catalog(db_path)
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == storage.SCHEMA_VERSION
    times = dict(conn.execute("SELECT id, created_ns FROM commits WHERE repo='two'").fetchall())
    assert times[first.id] == first.creation_date * 10**9 and times[second.id] == second.creation_date * 10**9
    assert [name for name, _ in catalog.list_branches("two")[0]] == ["feature", "main"]
    assert [c.message for c in catalog.log("two", "main")[0]] == ["second", "first", "Repository created"]
    catalog.create_branch("two", "hidden", "main", hidden=True)
    assert [name for name, _ in catalog.list_branches("two")[0]] == ["feature", "main"]
    assert [name for name, _ in catalog.list_branches("two", show_hidden=True)[0]] == ["feature", "hidden", "main"]
