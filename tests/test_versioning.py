"""The segmodels versioning client: settings, URIs, embedded server start-up, transfers, atomic writes."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest

from segmodels.versioning import (LakeFS, LakeFSError, LakeFSSettings, LakeFSUri, connect,
                                  ensure_embedded_server)
from segmodels.versioning import settings as versioning_settings


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


# -- settings and URIs -------------------------------------------------------------------------------------------
def test_settings_none_without_endpoint():
    assert LakeFSSettings.from_environment() is None


def test_settings_from_environment_normalises_lakectl_endpoint(monkeypatch):
    monkeypatch.setenv("LAKECTL_SERVER_ENDPOINT_URL", "http://lakefs:8000/api/v1/")
    monkeypatch.setenv("LAKECTL_CREDENTIALS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY", "very-secret")
    settings = LakeFSSettings.from_environment()
    assert settings.endpoint == "http://lakefs:8000"
    assert settings.api_url == "http://lakefs:8000/api/v1"
    assert "very-secret" not in repr(settings) and "AKIAEXAMPLE" in repr(settings)


def test_settings_from_lakectl_yaml():
    versioning_settings.lakectl_config_path().write_text(
        "server:\n  endpoint_url: http://example:8000\ncredentials:\n  access_key_id: AK\n  secret_access_key: SK\n")
    settings = LakeFSSettings.from_environment()
    assert (settings.endpoint, settings.access_key_id, settings.secret_access_key) == ("http://example:8000", "AK", "SK")


def test_settings_endpoint_without_credentials_is_an_error(monkeypatch):
    monkeypatch.setenv("LAKECTL_SERVER_ENDPOINT_URL", "http://lakefs:8000")
    with pytest.raises(LakeFSError, match="without credentials"):
        LakeFSSettings.from_environment()


def test_settings_reject_non_http_endpoint():
    with pytest.raises(LakeFSError, match="must start with http"):
        LakeFSSettings("lakefs:8000", "a", "b")


@pytest.mark.parametrize("text, parsed", [
    ("lakefs://repo/main/data/images/a.png", LakeFSUri("repo", "main", "data/images/a.png")),
    ("lakefs://repo/abc123", LakeFSUri("repo", "abc123", "")),
    ("lakefs://repo/main~2/x", LakeFSUri("repo", "main~2", "x")),
])
def test_uri_roundtrip(text, parsed):
    assert LakeFSUri.parse(text) == parsed
    assert str(parsed) == text


@pytest.mark.parametrize("text", ["s3://repo/main", "lakefs://repo", "lakefs:///main/x", "lakefs://"])
def test_uri_rejects_malformed(text):
    with pytest.raises(LakeFSError, match="lakeFS URI"):
        LakeFSUri.parse(text)


# -- repositories, branches, refs --------------------------------------------------------------------------------
def test_ensure_repository_and_branch_are_idempotent(lakefs: LakeFS, repo_name):
    lakefs.ensure_repository(repo_name)
    lakefs.ensure_repository(repo_name)
    lakefs.ensure_branch(repo_name, "dev")
    lakefs.ensure_branch(repo_name, "dev")
    assert lakefs.resolve_commit(repo_name, "dev") == lakefs.resolve_commit(repo_name, "main")


def test_resolve_unknown_ref_names_it(lakefs: LakeFS, repo_name):
    lakefs.ensure_repository(repo_name)
    with pytest.raises(LakeFSError, match=f"{repo_name}/no-such-ref"):
        lakefs.resolve_commit(repo_name, "no-such-ref")


def test_unreachable_endpoint_error_names_it(tmp_path):
    client = LakeFS(LakeFSSettings("http://127.0.0.1:9", "a", "b"), home=tmp_path, attempts=2, backoff=0.01)
    with pytest.raises(LakeFSError, match=r"http://127\.0\.0\.1:9.*unreachable after 2 attempts"):
        client.ensure_repository("anything")


def test_wrong_secret_is_a_clear_error(lakefs_server, tmp_path):
    client = LakeFS(LakeFSSettings(lakefs_server.endpoint, lakefs_server.access_key_id, "wrong"), home=tmp_path)
    with pytest.raises(LakeFSError, match="HTTP 401"):
        client.ensure_repository("anything")


# -- transfers ---------------------------------------------------------------------------------------------------
def test_upload_directory_skips_identical_and_deletes_missing(lakefs: LakeFS, repo_name, tmp_path):
    lakefs.ensure_repository(repo_name)
    src = write_tree(tmp_path / "src", {"a.txt": b"alpha", "sub/b.bin": os.urandom(3000), "sub/c.txt": b"c"})
    first = lakefs.upload_directory(repo_name, "main", src, prefix="data")
    assert (first.files, first.skipped, first.bytes) == (3, 0, 5 + 3000 + 1)
    (src / "a.txt").write_bytes(b"changed")
    (src / "sub" / "c.txt").unlink()
    second = lakefs.upload_directory(repo_name, "main", src, prefix="data/", delete_missing=True)
    assert (second.files, second.skipped, second.deleted) == (1, 1, 1)
    paths = sorted(o.path for o in lakefs.list_objects(repo_name, "main", "data/"))
    assert paths == ["data/a.txt", "data/sub/b.bin"]


def test_upload_directory_md5_index_skips_rereading_unchanged_files(lakefs: LakeFS, repo_name, tmp_path,
                                                                    monkeypatch):
    from segmodels.versioning import client as client_module
    from segmodels.versioning import hashing

    lakefs.ensure_repository(repo_name)
    src = write_tree(tmp_path / "src", {"a.bin": os.urandom(4000), "sub/b.bin": os.urandom(5000)})
    old = 1_600_000_000_000_000_000  # mtimes well in the past: entries are not "racy"
    for i, path in enumerate(sorted(p for p in src.rglob("*") if p.is_file())):
        os.utime(path, ns=(old + i, old + i))
    first = lakefs.upload_directory(repo_name, "main", src, prefix="data")
    assert (first.files, first.skipped) == (2, 0)
    index_file = lakefs.home / "cache" / "md5-index.json"
    assert str((src / "a.bin").absolute()) in json.loads(index_file.read_text())["entries"]

    hashed: list[Path] = []
    real_md5 = hashing.file_md5

    def counting_md5(path):
        hashed.append(Path(path))
        return real_md5(path)
    monkeypatch.setattr(hashing, "file_md5", counting_md5)
    reads: list[Path] = []
    real_chunks = client_module.file_chunks

    def counting_chunks(path, digest=None):
        reads.append(Path(path))
        return real_chunks(path, digest)
    monkeypatch.setattr(client_module, "file_chunks", counting_chunks)

    second = lakefs.upload_directory(repo_name, "main", src, prefix="data")  # a new index instance, from disk
    assert (second.files, second.skipped) == (0, 2)
    assert hashed == [] and reads == []

    changed = os.urandom(4000)  # same size, other content, other mtime
    (src / "a.bin").write_bytes(changed)
    os.utime(src / "a.bin", ns=(old + 100, old + 100))
    third = lakefs.upload_directory(repo_name, "main", src, prefix="data")
    assert (third.files, third.skipped) == (1, 1)
    assert hashed == [src / "a.bin"]
    lakefs.commit(repo_name, "main", "changed")
    assert (lakefs.download_prefix(repo_name, "main", "data") / "a.bin").read_bytes() == changed

    index_file.write_text("{not json")  # a corrupt index only means hashing again
    hashed.clear()
    fourth = lakefs.upload_directory(repo_name, "main", src, prefix="data")
    assert (fourth.files, fourth.skipped) == (0, 2)
    assert sorted(hashed) == sorted([src / "a.bin", src / "sub" / "b.bin"])
    assert len(json.loads(index_file.read_text())["entries"]) == 2


def test_download_prefix_is_verified_cached_and_keyed_by_commit(lakefs: LakeFS, repo_name, tmp_path):
    lakefs.ensure_repository(repo_name)
    files = {"x/1.bin": os.urandom(2048), "x/deep/2.bin": os.urandom(10), "y/3.bin": b"3"}
    lakefs.upload_directory(repo_name, "main", write_tree(tmp_path / "src", files))
    commit = lakefs.commit(repo_name, "main", "data")
    folder = lakefs.download_prefix(repo_name, "main", "x")
    assert folder == lakefs.home / "cache" / repo_name / commit.id / "x"
    assert (folder / "1.bin").read_bytes() == files["x/1.bin"]
    assert (folder / "deep" / "2.bin").read_bytes() == files["x/deep/2.bin"]
    assert not (folder.parent / "y").exists()
    (folder / "1.bin").write_bytes(b"tampered")  # a completed prefix is served from the cache as is
    assert lakefs.download_prefix(repo_name, commit.id, "x/") == folder
    assert (folder / "1.bin").read_bytes() == b"tampered"
    everything = lakefs.download_prefix(repo_name, commit.id)  # the wider prefix re-verifies and repairs
    assert (everything / "x" / "1.bin").read_bytes() == files["x/1.bin"]
    copy = lakefs.download_prefix(repo_name, "main", "y", dest=tmp_path / "out")
    assert (copy / "3.bin").read_bytes() == b"3"


def test_atomic_write_commits_and_merges_in_one_step(lakefs: LakeFS, repo_name, tmp_path):
    lakefs.ensure_repository(repo_name)
    before = lakefs.resolve_commit(repo_name, "main")
    src = write_tree(tmp_path / "src", {"model.pt": b"weights", "model.yaml": b"arch: unet"})
    with lakefs.atomic_write(repo_name, "main", "register model", {"run_id": "r1"}) as write:
        lakefs.upload_directory(repo_name, write.branch, src, prefix="models/unet")
        assert lakefs.resolve_commit(repo_name, "main") == before
        assert list(lakefs.list_objects(repo_name, "main", "models/")) == []
    assert write.changed and write.commit_id == lakefs.resolve_commit(repo_name, "main")
    head = lakefs.get_commit(repo_name, "main")
    assert head.metadata["run_id"] == "r1" and before in head.parents
    assert sorted(o.path for o in lakefs.list_objects(repo_name, "main", "models/")) == [
        "models/unet/model.pt", "models/unet/model.yaml"]
    branches = [b.id for b in lakefs.sdk.branches_api.list_branches(repo_name).results]
    assert branches == ["main"]


def test_atomic_write_without_changes_makes_no_commit(lakefs: LakeFS, repo_name):
    lakefs.ensure_repository(repo_name)
    head = lakefs.resolve_commit(repo_name, "main")
    with lakefs.atomic_write(repo_name, "main", "nothing") as write:
        pass
    assert (write.changed, write.commit_id) == (False, head)
    assert lakefs.resolve_commit(repo_name, "main") == head


def test_atomic_write_error_leaves_target_untouched(lakefs: LakeFS, repo_name, tmp_path):
    lakefs.ensure_repository(repo_name)
    head = lakefs.resolve_commit(repo_name, "main")
    src = write_tree(tmp_path / "src", {"partial.bin": b"half"})
    with pytest.raises(RuntimeError, match="boom"):
        with lakefs.atomic_write(repo_name, "main", "broken") as write:
            lakefs.upload_directory(repo_name, write.branch, src)
            raise RuntimeError("boom")
    assert lakefs.resolve_commit(repo_name, "main") == head
    assert list(lakefs.list_objects(repo_name, "main")) == []
    assert [b.id for b in lakefs.sdk.branches_api.list_branches(repo_name).results] == ["main"]


# -- the auto-started embedded server ----------------------------------------------------------------------------
@pytest.fixture
def spawned_home(tmp_path):
    """A segmodels home whose auto-started server is killed at teardown."""
    home = tmp_path / "home"
    yield home
    state = home / "lakefs" / "server.json"
    if state.exists():
        try:
            os.kill(json.loads(state.read_text())["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass


def test_ensure_embedded_server_spawns_once_and_is_reused(spawned_home):
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(ensure_embedded_server(spawned_home)))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({r.endpoint for r in results}) == 1
    credentials = spawned_home / "lakefs" / "credentials.json"
    assert credentials.stat().st_mode & 0o777 == 0o600
    assert json.loads((spawned_home / "lakefs" / "server.json").read_text())["endpoint"] == results[0].endpoint
    assert ensure_embedded_server(spawned_home) == results[0]
    client = connect(home=spawned_home)
    client.ensure_repository("spawned")
    assert client.resolve_commit("spawned", "main")


def test_connect_uses_segmodels_home_by_default(spawned_home, monkeypatch):
    monkeypatch.setenv("SEGMODELS_HOME", str(spawned_home))
    client = connect()
    assert client.settings == ensure_embedded_server()
    assert (spawned_home / "lakefs" / "server.log").exists()
