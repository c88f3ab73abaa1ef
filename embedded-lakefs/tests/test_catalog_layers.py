"""The catalog's layering, as lakeFS' graveler: the facade (``catalog``) decides what happens and runs no storage
code; the refs, staging and committed-data managers store it, all bound to one transaction (a unit of work)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from embedded_lakefs import catalog
from embedded_lakefs.catalog import Catalog, Entry
from embedded_lakefs.storage import Database

SQL_KEYWORD = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER|PRAGMA|BEGIN|COMMIT|ROLLBACK|VACUUM)\b"
)
STORAGE_CALLS = {"execute", "executemany", "executescript", "cursor", "connect", "open", "read_text", "write_text"}
STORAGE_CALLS |= {"read_bytes", "write_bytes", "unlink", "mkdir", "rename", "replace", "fsync"}
STORAGE_MODULES = {"sqlite3", "os", "shutil", "io"}


def storage_code(source: str) -> list[str]:
    """What in ``source`` is storage code: imports of storage modules, calls that run SQL or file I/O, SQL text,
    and reaches past a manager into its connection (``.conn``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in STORAGE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in STORAGE_MODULES:
            found.append(f"from {node.module} import")
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in STORAGE_CALLS:
                found.append(f"line {node.lineno}: call of {name}")
        elif isinstance(node, ast.Attribute) and node.attr == "conn":
            found.append(f"line {node.lineno}: .conn")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_KEYWORD.search(node.value):
            found.append(f"line {node.lineno}: SQL {node.value[:40]!r}")
    return found


def test_the_catalog_facade_runs_no_sql_and_no_file_io():
    assert storage_code(Path(catalog.__file__).read_text()) == []


@pytest.mark.parametrize(
    "snippet",
    [
        "import sqlite3",
        "from os import path",
        "conn.execute('x')",
        "tx.refs.conn.executemany('x', [])",
        "q = 'SELECT name FROM repositories'",
        "q = f'DELETE FROM {table} WHERE repo=?'",
        "Path('x').write_text('y')",
    ],
)
def test_the_layering_check_finds_storage_code(snippet):
    assert storage_code(snippet)


def test_the_catalogs_strings_are_not_mistaken_for_sql():
    assert storage_code("m = 'cannot commit to protected branch'; n = 'Repository created'") == []


def test_one_transaction_binds_the_three_managers(tmp_path):
    """A unit of work stores all of its refs, staging and committed-data changes, or (on an error) none."""
    store = Database(tmp_path / "lakefs.db", synchronous="OFF")
    entry = Entry("a.txt", "addr", "sum", 1, 0, "text/plain", {})
    with store.write() as tx:
        tx.refs.add_repository("repo", "local://repo", "main", 0, False)
        root = tx.committed.apply("", [(entry.path, entry.value())])
        first = tx.refs.create_commit("repo", [], "me", "first", 0, root, {})
        tx.refs.move_branch("repo", "main", first.id)
        nodes = list(tx.committed.node_sizes())
    other = Entry("b.txt", "addr2", "sum2", 2, 0, "text/plain", {})
    with pytest.raises(KeyboardInterrupt), store.write() as tx:
        tree = tx.committed.apply(root, [(other.path, other.value())])
        second = tx.refs.create_commit("repo", [first.id], "me", "second", 1, tree, {})
        tx.refs.move_branch("repo", "main", second.id)
        tx.staging.stage("repo", "main", [other])
        tx.refs.add_tag("repo", "v1", second.id)
        assert len(list(tx.committed.node_sizes())) > len(nodes)
        raise KeyboardInterrupt  # as if killed in the middle
    with store.read() as tx:
        assert list(tx.committed.node_sizes()) == nodes
        assert tx.refs.branch_commit("repo", "main") == first.id
        assert not tx.refs.commit_exists("repo", second.id) and tx.refs.tag_commit("repo", "v1") is None
        assert not tx.staging.is_dirty("repo", "main")
        assert tx.committed.get(tx.refs.commit("repo", first.id).meta_range_id, "a.txt") == entry.value()


def test_the_facade_reads_what_the_managers_stored(tmp_path):
    """Catalog answers from the managers' storage: a commit made through a unit of work is what the facade logs."""
    lakefs = Catalog(tmp_path / "lakefs.db", synchronous="OFF")
    lakefs.create_repository("repo", "local://repo")
    lakefs.put_entry("repo", "main", Entry("a.txt", "addr", "sum", 1, 0, "text/plain", {}))
    made = lakefs.commit("repo", "main", "add a", "me")
    with lakefs.store.read() as tx:
        assert tx.refs.branch_commit("repo", "main") == made.id
        assert [path for path, _ in tx.committed.items(made.meta_range_id)] == ["a.txt"]
    assert [c.id for c in lakefs.log("repo", "main")[0]][0] == made.id
