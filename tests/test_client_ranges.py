"""Large objects are downloaded as parallel byte ranges from the embedded lakeFS: each range retried alone, a server
that ignores ranges answered by one whole GET, and what lands verified by size and md5 before it gets its name."""

from __future__ import annotations

import random
import threading

import pytest
import urllib3

from segmodels.versioning import LakeFSError
from segmodels.versioning import client as client_module

RANGE = 1 << 20


@pytest.fixture
def large_object(lakefs, repo_name, tmp_path, monkeypatch):
    """A 5.5-range object committed on ``main`` (ranges shrunk to 1 MiB), and its bytes."""
    monkeypatch.setattr(client_module, "RANGE_BYTES", RANGE)
    data = random.Random(0).randbytes(RANGE * 11 // 2)  # no two ranges alike
    source = tmp_path / "large.bin"
    source.write_bytes(data)
    lakefs.ensure_repository(repo_name)
    lakefs.upload_file(repo_name, "main", "data/large.bin", source)
    lakefs.commit(repo_name, "main", "a large object")
    (obj,) = lakefs.list_objects(repo_name, "main", "data/")
    return obj, data


def requested_ranges(lakefs, monkeypatch) -> list:
    """The byte ranges (or None: the whole object) of every object GET ``lakefs`` makes from now on."""
    seen, lock = [], threading.Lock()
    original = lakefs._object_response

    def recording(repo, ref, path, byte_range=None):
        with lock:
            seen.append(byte_range)
        return original(repo, ref, path, byte_range)

    monkeypatch.setattr(lakefs, "_object_response", recording)
    return seen


def test_a_large_object_comes_down_as_parallel_ranges_that_cover_it_once(
    lakefs, repo_name, large_object, tmp_path, monkeypatch
):
    obj, data = large_object
    seen = requested_ranges(lakefs, monkeypatch)
    inside = {"now": 0, "most": 0}
    lock = threading.Lock()
    original = lakefs._fetch_range

    def counting(*args):
        with lock:
            inside["now"] += 1
            inside["most"] = max(inside["most"], inside["now"])
        try:
            return original(*args)
        finally:
            with lock:
                inside["now"] -= 1

    monkeypatch.setattr(lakefs, "_fetch_range", counting)
    lakefs.download_object(repo_name, "main", obj, tmp_path / "out" / "large.bin")
    assert (tmp_path / "out" / "large.bin").read_bytes() == data
    assert sorted(seen) == [(start, min(start + RANGE, len(data))) for start in range(0, len(data), RANGE)]
    assert inside["most"] > 1  # ranges overlapped in time
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["large.bin"]


def test_a_small_object_is_one_whole_get(lakefs, repo_name, tmp_path, monkeypatch):
    monkeypatch.setattr(client_module, "RANGE_BYTES", RANGE)
    (tmp_path / "small.bin").write_bytes(b"x" * (RANGE + 1))  # under two ranges
    lakefs.ensure_repository(repo_name)
    lakefs.upload_file(repo_name, "main", "small.bin", tmp_path / "small.bin")
    (obj,) = lakefs.list_objects(repo_name, "main")
    seen = requested_ranges(lakefs, monkeypatch)
    lakefs.download_object(repo_name, "main", obj, tmp_path / "got.bin")
    assert seen == [None]
    assert (tmp_path / "got.bin").read_bytes() == b"x" * (RANGE + 1)


def test_a_range_cut_short_is_fetched_again_alone(lakefs, repo_name, large_object, tmp_path, monkeypatch):
    obj, data = large_object
    seen = requested_ranges(lakefs, monkeypatch)
    original, failed = lakefs._fetch_range, []

    def cut_once(repo, ref, obj_, out, byte_range):
        if byte_range[0] == 2 * RANGE and not failed:
            failed.append(byte_range)
            raise urllib3.exceptions.ProtocolError("connection broken: IncompleteRead")
        return original(repo, ref, obj_, out, byte_range)

    monkeypatch.setattr(lakefs, "_fetch_range", cut_once)
    lakefs.download_object(repo_name, "main", obj, tmp_path / "large.bin")
    assert (tmp_path / "large.bin").read_bytes() == data
    assert failed == [(2 * RANGE, 3 * RANGE)]
    assert len(seen) == 6  # the failed range's request never left: only the five others and its retry
    assert seen.count((2 * RANGE, 3 * RANGE)) == 1


def test_a_server_that_ignores_ranges_gets_one_whole_get(lakefs, repo_name, large_object, tmp_path, monkeypatch):
    obj, data = large_object
    original, seen = lakefs._object_response, []

    def without_ranges(repo, ref, path, byte_range=None):
        seen.append(byte_range)
        return original(repo, ref, path)  # as a proxy that drops Range: 200 and the whole object

    monkeypatch.setattr(lakefs, "_object_response", without_ranges)
    lakefs.download_object(repo_name, "main", obj, tmp_path / "large.bin")
    assert (tmp_path / "large.bin").read_bytes() == data
    assert seen[-1] is None and all(r is not None for r in seen[:-1])


def test_ranges_that_land_other_bytes_are_refused_and_nothing_is_left(
    lakefs, repo_name, large_object, tmp_path, monkeypatch
):
    obj, _ = large_object
    original = lakefs._object_response

    def shifted(repo, ref, path, byte_range=None):
        if byte_range is not None and byte_range[0] == RANGE:
            byte_range = (0, RANGE)  # the first range's bytes where the second belongs
        return original(repo, ref, path, byte_range)

    monkeypatch.setattr(lakefs, "_object_response", shifted)
    out = tmp_path / "out"
    with pytest.raises(LakeFSError, match=r"download .*data/large\.bin: got \d+ bytes md5 \w+, expected"):
        lakefs.download_object(repo_name, "main", obj, out / "large.bin")
    assert list(out.iterdir()) == []
