"""Step caching's pure parts: the cache key, which steps a force reruns, source fingerprints, code versions."""

from __future__ import annotations

import os
import subprocess

import pytest

from segmodels.config import ConfigError
from segmodels.pipeline.cache import CodeVersion, cache_key, code_version, forced_steps, source_fingerprint
from segmodels.pipeline.params import CHAIN

CLEAN = CodeVersion("a" * 40, False)
BASE = dict(
    entry_point="train",
    params={"data_ref": "lakefs://r/c1/data", "epochs": "2"},
    config_sha256="f" * 64,
    code=CLEAN,
    inputs={},
)


@pytest.mark.parametrize(
    "change",
    [
        {"entry_point": "infer"},
        {"params": {"data_ref": "lakefs://r/c2/data", "epochs": "2"}},  # another data commit
        {"params": {"data_ref": "lakefs://r/c1/data", "epochs": "3"}},  # another param value
        {"params": {"data_ref": "lakefs://r/c1/data"}},  # a param not given
        {"config_sha256": "e" * 64},
        {"code": CodeVersion("b" * 40, False)},  # other code
        {"code": CodeVersion("a" * 40, True, "d" * 64)},  # the same commit with changes
        {"inputs": {"source": "folder:1"}},
    ],
)
def test_any_input_changes_the_key(change):
    assert cache_key(**{**BASE, **change}) != cache_key(**BASE)


def test_the_key_does_not_depend_on_param_order():
    reordered = {**BASE, "params": dict(reversed(list(BASE["params"].items())))}
    assert cache_key(**reordered) == cache_key(**BASE)


@pytest.mark.parametrize(
    "force, expected",
    [
        ("false", set()),
        ("", set()),
        ("true", set(CHAIN)),
        ("all", set(CHAIN)),
        ("train", {"train", "register", "infer"}),
        ("infer", {"infer"}),
        ("register,ingest", set(CHAIN)),
    ],
)
def test_force_reruns_the_named_step_and_every_step_after_it(force, expected):
    assert forced_steps(force, CHAIN) == expected


def test_an_unknown_step_to_force_is_one_line_naming_it():
    with pytest.raises(ConfigError, match=r"force='trian': expected true, false or steps of .*unknown trian"):
        forced_steps("trian", CHAIN)


def test_dirty_code_is_reused_only_when_asked_and_unknown_code_never():
    assert CLEAN.reuse_blocker(reuse_dirty=False) is None
    dirty = CodeVersion("a" * 40, True, "d" * 64)
    assert "uncommitted changes" in dirty.reuse_blocker(reuse_dirty=False)
    assert dirty.reuse_blocker(reuse_dirty=True) is None
    assert "not a git checkout" in CodeVersion(None, False).reuse_blocker(reuse_dirty=True)


def test_code_version_reads_git_and_digests_the_diff(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, timeout=60)

    assert code_version(tmp_path) == CodeVersion(None, False)
    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "one")
    clean = code_version(tmp_path)
    assert clean.commit and not clean.dirty
    (tmp_path / "a.py").write_text("x = 2\n")
    first = code_version(tmp_path)
    (tmp_path / "a.py").write_text("x = 3\n")
    second = code_version(tmp_path)
    assert first.dirty and second.dirty and first.commit == clean.commit
    assert first.diff_sha256 != second.diff_sha256, "two different changes are two different codes"


def test_source_fingerprint_of_odd_folders(tmp_path):
    """Names that are not UTF-8, dangling links and linked folders are fingerprinted (a change behind a link
    counts, as ingest reads through it); a folder that cannot be read whole gives None (ingest runs and says why)."""
    folder = tmp_path / "data"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / os.fsdecode(b"caf\xe9.png")).write_bytes(b"latin-1 name")
    (folder / "images" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    outside = tmp_path / "more"
    outside.mkdir()
    (outside / "x.png").write_bytes(b"1")
    (folder / "linked").symlink_to(outside)
    (folder / "again").symlink_to(folder / "images")
    first = source_fingerprint(str(folder))
    assert first is not None and first == source_fingerprint(str(folder))
    (outside / "x.png").write_bytes(b"22")
    second = source_fingerprint(str(folder))
    assert second != first, "a change behind a linked folder counts"
    (tmp_path / "nowhere.png").write_bytes(b"now it exists")
    assert source_fingerprint(str(folder)) != second, "a dangling link's target appearing counts"
    (folder / "loop").symlink_to(folder / "loop")
    assert source_fingerprint(str(folder)) is None


def test_source_fingerprint_follows_a_folders_files(tmp_path):
    folder = tmp_path / "data"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "a.png").write_bytes(b"1")
    first = source_fingerprint(str(folder))
    assert first == source_fingerprint(str(folder))
    (folder / "images" / "b.png").write_bytes(b"2")
    second = source_fingerprint(str(folder))
    assert second != first
    os.utime(folder / "images" / "a.png", ns=(1, 1))
    assert source_fingerprint(str(folder)) != second, "a rewritten file counts"
    assert source_fingerprint("demo") == "demo"
    for remote in (
        "https://example.com/data.zip",
        "s3://bucket/data",
        "lakefs://repo/main/data",
        str(tmp_path / "missing"),
    ):
        assert source_fingerprint(remote) is None
