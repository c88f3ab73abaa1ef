"""Contract suite over the high-level ``lakefs`` package and ``lakefs-spec`` (fsspec).

Runs against the embedded server, or a real lakeFS when ``LAKEFS_TEST_ENDPOINT`` is set.
"""

from __future__ import annotations

import uuid

import lakefs
import pytest
from lakefs.client import Client
from lakefs_spec import LakeFSFileSystem


@pytest.fixture(scope="module")
def client(contract_target) -> Client:
    return Client(
        host=contract_target.endpoint,
        username=contract_target.access_key_id,
        password=contract_target.secret_access_key,
    )


@pytest.fixture
def repository(client):
    prefix = client.storage_config.default_namespace_prefix or "local://"
    name = f"clients-{uuid.uuid4().hex[:10]}"
    namespace = prefix + name if prefix.endswith("://") else prefix.rstrip("/") + "/" + name
    repo = lakefs.Repository(name, client=client).create(storage_namespace=namespace, default_branch="main")
    yield repo
    repo.delete()


# -- lakefs (high-level) -----------------------------------------------------------------------------------------
def test_high_level_objects_commit_and_log(repository):
    main = repository.branch("main")
    main.object("data/a.txt").upload(b"alpha", content_type="text/plain", metadata={"origin": "test"})
    with main.object("data/b.bin").writer(mode="wb") as writer:
        writer.write(b"\x00" * 10_000)
    stat = main.object("data/a.txt").stat()
    assert (stat.size_bytes, stat.content_type, stat.metadata) == (5, "text/plain", {"origin": "test"})
    assert [c.path for c in main.uncommitted()] == ["data/a.txt", "data/b.bin"]
    ref = main.commit("add data", metadata={"k": "v"})
    assert ref.get_commit().metadata == {"k": "v"}
    assert [c.message for c in main.log()] == ["add data", "Repository created"]
    with main.object("data/a.txt").reader(mode="r") as reader:
        assert reader.read() == "alpha"
    with main.object("data/b.bin").reader() as reader:
        reader.seek(9_990)
        assert reader.read() == b"\x00" * 10
    assert main.object("data/a.txt").exists() and not main.object("data/none").exists()
    assert [o.path for o in main.objects(prefix="data/")] == ["data/a.txt", "data/b.bin"]


def test_high_level_transaction_merges_atomically(repository):
    main = repository.branch("main")
    main.object("keep").upload(b"1")
    main.commit("base")
    with main.transact(commit_message="tx", commit_metadata={"tx": "1"}) as tx:
        tx.object("new").upload(b"new")
        tx.object("keep").delete()
        assert not main.object("new").exists()
    assert main.object("new").exists() and not main.object("keep").exists()
    assert [b.id for b in repository.branches()] == ["main"]


def test_high_level_branches_tags_diff_merge(repository):
    main = repository.branch("main")
    main.object("a").upload(b"1")
    main.commit("one")
    dev = repository.branch("dev").create(source_reference="main")
    dev.object("b").upload(b"2")
    dev.commit("two")
    assert [d.path for d in main.diff(dev)] == ["b"]
    dev.merge_into(main)
    assert main.object("b").reader().read() == b"2"
    tag = repository.tag("v1").create(main)
    assert tag.get_commit().id == main.get_commit().id
    assert [t.id for t in repository.tags()] == ["v1"]


# -- lakefs-spec (fsspec) ----------------------------------------------------------------------------------------
def test_lakefs_spec_filesystem(repository, contract_target, tmp_path):
    fs = LakeFSFileSystem(
        host=contract_target.endpoint,
        username=contract_target.access_key_id,
        password=contract_target.secret_access_key,
    )
    root = f"{repository.id}/main"
    fs.pipe(f"{root}/dir/one.txt", b"one")
    with fs.open(f"{root}/dir/two.txt", "wb") as out:
        out.write(b"two")
    assert fs.cat(f"{root}/dir/one.txt") == b"one"
    assert sorted(fs.ls(f"{root}/dir", detail=False)) == [f"{root}/dir/one.txt", f"{root}/dir/two.txt"]
    assert fs.info(f"{root}/dir/two.txt")["size"] == 3
    assert fs.exists(f"{root}/dir/one.txt") and not fs.exists(f"{root}/dir/none")
    local = tmp_path / "local.bin"
    local.write_bytes(b"local")
    fs.put_file(str(local), f"{root}/up/local.bin")
    fs.get_file(f"{root}/up/local.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == b"local"
    fs.rm(f"{root}/dir/one.txt")
    assert not fs.exists(f"{root}/dir/one.txt")
    repository.branch("main").commit("spec writes")
    with fs.transaction(repository.id, "main") as tx:
        fs.pipe(f"{repository.id}/{tx.branch.id}/tx.txt", b"tx")
        tx.commit(message="spec tx")
        assert not fs.exists(f"{root}/tx.txt")
    assert fs.cat(f"{root}/tx.txt") == b"tx"
    with fs.transaction(repository.id, "main") as tx:  # revert, tag and rev-parse inside a transaction
        undone = tx.revert(tx.branch, tx.rev_parse(tx.branch.id).id)
        assert undone.message.startswith("Revert ")
        assert not fs.exists(f"{repository.id}/{tx.branch.id}/tx.txt")
        tx.tag(tx.branch.head.get_commit().id, "spec-reverted")
    assert not fs.exists(f"{root}/tx.txt")
    assert fs.exists(f"{root}/up/local.bin")
    assert repository.tag("spec-reverted").get_commit().message.startswith("Revert ")
