"""Streaming reads (``data.access=stream``): a data set read from lakeFS on demand through the bounded cache
(``segmodels.versioning.stream``, ``segmodels.versioning.cache`` reservations), against the embedded server."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from segmodels.versioning.cache import CacheFullError, ObjectCache
from segmodels.versioning.client import RemoteObject
from segmodels.versioning.hashing import Md5Index

HOLDER = """
import sys, time
from pathlib import Path
from segmodels.versioning.cache import ObjectCache

with ObjectCache(Path(sys.argv[1]), max_bytes=int(sys.argv[2])).reserved(int(sys.argv[3]), "holder"):
    print("reserved", flush=True)
    time.sleep(60)
"""


def test_room_a_live_process_reserved_is_not_given_to_another_and_a_dead_ones_is(tmp_path):
    root = tmp_path / "cache"
    script = tmp_path / "holder.py"
    script.write_text(textwrap.dedent(HOLDER))
    holder = subprocess.Popen(
        [sys.executable, str(script), str(root), "1000", "700"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "reserved"
        cache = ObjectCache(root, max_bytes=1000)
        with pytest.raises(CacheFullError, match="0.00 GB reserved by downloads running"):
            cache.make_room(400, "second writer")
        cache.make_room(300, "second writer")  # what is left fits
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    cache.make_room(1000, "after the holder died")  # a dead process's reservation is ignored (and removed)
    assert list((root / "reservations").iterdir()) == []


def put_object(cache: ObjectCache, data: bytes, index: Md5Index) -> Path:
    import hashlib

    obj = RemoteObject(f"{len(data)}.bin", hashlib.md5(data).hexdigest(), len(data))
    return cache.fetch_object(obj, lambda _, path: Path(path).write_bytes(data), index)


@pytest.mark.parametrize(
    ("mtime_ns", "racy_ns"),
    [(1_700_000_000_250_000_000, 10**8), (1_700_000_001_000_000_000, 2 * 10**9)],
    ids=["sub-second mtimes: a kernel tick", "whole-second mtimes: a 2-second tick"],
)
def test_usage_lists_a_fan_folder_again_only_while_a_change_may_hide_in_its_timestamp_tick(
    tmp_path, monkeypatch, mtime_ns, racy_ns
):
    import types

    from segmodels.versioning import cache as cache_module

    cache, index = ObjectCache(tmp_path / "cache", max_bytes=10**6), Md5Index(tmp_path / "cache")
    fan = put_object(cache, b"a" * 100, index).parent
    os.utime(fan, ns=(mtime_ns, mtime_ns))
    listed, real_listdir = [], os.listdir
    monkeypatch.setattr(os, "listdir", lambda path: listed.append(path) or real_listdir(path))

    def usage_at(now_ns: int) -> tuple[int, int]:
        with monkeypatch.context() as clock:
            clock.setattr(cache_module, "time", types.SimpleNamespace(time_ns=lambda: now_ns))
            return cache.usage()

    assert [usage_at(mtime_ns + racy_ns // 2) for _ in range(2)] == [(1, 100)] * 2
    assert len(listed) == 2  # listed within the tick: a second object landing in it would not move the mtime
    assert [usage_at(mtime_ns + racy_ns + 1) for _ in range(3)] == [(1, 100)] * 3
    assert len(listed) == 3  # listed once after the tick, then its unchanged mtime tells
    put_object(cache, b"b" * 50, index)  # a change moves the mtime
    assert cache.usage() == (2, 150) and len(listed) == 4


def test_objects_no_view_links_are_evicted_least_recently_used_first_and_never_while_read(tmp_path):
    cache = ObjectCache(tmp_path / "cache", max_bytes=3000)
    index = Md5Index(tmp_path / "cache")
    first, second, third = (put_object(cache, os.urandom(1000), index) for _ in range(3))
    os.utime(first, ns=(1, first.stat().st_mtime_ns))  # least recently used
    os.utime(second, ns=(2, second.stat().st_mtime_ns))
    with cache.open_object(first) as held:  # read now: the next least recently used goes instead
        cache.make_room(1000, "fourth")
        assert held.read() and first.exists() and not second.exists() and third.exists()
    os.utime(first, ns=(3, first.stat().st_mtime_ns))  # reading may have set its atime: older than third's again
    cache.make_room(2000, "fifth")  # one of the two must go: the least recently used
    assert not first.exists() and third.exists()


@pytest.fixture(scope="module")
def streamed_data(tiny_demo_dataset) -> Path:
    return tiny_demo_dataset(16, 3)


def commit_dataset(lakefs, repo: str, root: Path):
    """``root`` committed under ``data/`` of ``repo``'s main; (pinned URI, bytes of the data set)."""
    from segmodels.versioning import LakeFSUri

    lakefs.ensure_repository(repo)
    lakefs.upload_directory(repo, "main", root, prefix="data")
    commit = lakefs.commit(repo, "main", "data").id
    return LakeFSUri(repo, commit, "data"), sum(obj.size for obj in lakefs.list_objects(repo, commit, "data/"))


def objects_bytes(home: Path) -> int:
    """Bytes under the cache's objects, temp files included (what the disk holds)."""
    total = 0
    for path in (home / "cache" / "objects").rglob("*"):
        try:
            total += path.stat().st_size if path.is_file() else 0
        except FileNotFoundError:
            pass
    return total


class DiskSampler:
    """Samples the cache's object bytes on a thread until stopped; ``peak`` and ``samples`` taken. Each listing holds
    the cache's lock, under which evictions and reservations change: a listing that an eviction and a download
    overtook (slow, on a loaded machine) would count an evicted object beside the one that took its room. Bytes that
    land meanwhile are covered by live reservations, so the bound holds at every instant, not only under the lock."""

    def __init__(self, home: Path):
        import threading

        self.home, self.peak, self.samples = home, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        cache = ObjectCache(self.home / "cache", max_bytes=0)  # its lock only
        while not self._stop.wait(0.002):
            with cache._exclusive():
                self.peak = max(self.peak, objects_bytes(self.home))
            self.samples += 1

    def __enter__(self) -> DiskSampler:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()


TINY = [
    "trainer.epochs=2",
    "trainer.batch_size=4",
    "trainer.progress_bar=false",
    "trainer.persistent_workers=false",
    "transforms.image_size=32",
    "model.encoder_name=resnet18",
    "model.decoder_channels=[16,16,16,8,8]",
    "data.prefetch=4",
]


def comparable(history: list[dict]) -> list[dict]:
    """Per-epoch metrics without the wall-clock ones (seconds, images per second)."""
    return [{k: v for k, v in epoch.items() if not k.endswith("_s")} for epoch in history]  # _time_s, _per_s


@pytest.mark.slow
def test_a_data_set_four_times_the_cache_trains_streamed_within_the_bound_as_downloaded(
    lakefs, repo_name, streamed_data, tmp_path, monkeypatch
):
    from segmodels.config import load_config
    from segmodels.training import train
    from segmodels.versioning.cache import MAX_GB_ENV
    from segmodels.versioning.stream import streamed_dataset

    uri, data_bytes = commit_dataset(lakefs, repo_name, streamed_data)
    with lakefs.using_prefix(uri.repo, uri.ref, uri.path) as root:
        downloaded = train(load_config("train", [*TINY, "trainer.num_workers=0"]), root, tmp_path / "work-download")
    ObjectCache(lakefs.home / "cache").gc(max_bytes=0)
    bound = data_bytes // 4
    monkeypatch.setenv(MAX_GB_ENV, str(bound / 1e9))
    for workers in (0, 2):
        cfg = load_config("train", [*TINY, f"trainer.num_workers={workers}", "data.access=stream"])
        with DiskSampler(lakefs.home) as disk, streamed_dataset(lakefs, uri) as (root, reader):
            streamed = train(cfg, root, tmp_path / f"work-stream-{workers}", files=reader)
        assert disk.samples > 10 and 0 < disk.peak <= bound, (workers, disk.peak, bound)
        assert comparable(streamed.history) == comparable(downloaded.history), workers


class Connections:
    """A dataset whose samples are (pid, id of the reader's client, whether that client is the parent's) after
    reading one streamed file. Ids are compared within a process only: a forked worker's new client may sit at the
    address of the parent's."""

    def __init__(self, reader):
        self.reader = reader

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int):
        with self.reader.open("dataset.yaml") as handle:
            assert handle.read(1)
        client = self.reader.connection()
        return os.getpid(), id(client), getattr(client, "made_by_the_parent", False)


def test_each_dataloader_worker_opens_its_own_connection(lakefs, repo_name, streamed_data):
    import pickle

    from torch.utils.data import DataLoader

    from segmodels.versioning.stream import StreamReader

    uri, _ = commit_dataset(lakefs, repo_name, streamed_data)
    reader = StreamReader.at(lakefs, uri)
    reader.connection().made_by_the_parent = True
    assert pickle.loads(pickle.dumps(reader))._client is None  # handed to workers without a live client
    loader = DataLoader(Connections(reader), batch_size=None, num_workers=2)
    seen = {(int(pid), int(client), bool(inherited)) for pid, client, inherited in loader}
    assert len({pid for pid, _, _ in seen}) == 2 and os.getpid() not in {pid for pid, _, _ in seen}
    assert len(seen) == 2, seen  # one client per worker, used for all its samples
    assert not any(inherited for _, _, inherited in seen), "a worker used the parent's client"


def test_a_corrupt_cached_object_is_fetched_again_when_streamed(lakefs, repo_name, streamed_data, monkeypatch):
    from segmodels.versioning import LakeFS
    from segmodels.versioning.stream import StreamReader

    uri, _ = commit_dataset(lakefs, repo_name, streamed_data)
    reader = StreamReader.at(lakefs, uri)
    image = reader.list("images/train")[0]
    expected = reader.local_path(image).read_bytes()
    fetched = []
    real = LakeFS.download_object
    monkeypatch.setattr(
        LakeFS, "download_object", lambda self, *args: fetched.append(args[2].path) or real(self, *args)
    )
    stored = reader.local_path(image)
    for damage in (b"x" * len(expected), expected[:10]):  # same size other bytes, then truncated
        os.chmod(stored, 0o644)
        stored.write_bytes(damage)
        with StreamReader.at(lakefs, uri).open(image) as handle:  # a new process's reader: no md5 in memory
            assert handle.read() == expected
    assert fetched == [f"data/{image}"] * 2


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_lakefs_unreachable_mid_training_fails_in_one_line_leaving_no_half_object(
    streamed_data, tmp_path, monkeypatch, workers
):
    from embedded_lakefs import create_server
    from segmodels.config import load_config
    from segmodels.training import Callback, train
    from segmodels.versioning import LakeFS, LakeFSError, LakeFSSettings
    from segmodels.versioning.cache import MAX_GB_ENV
    from segmodels.versioning.hashing import file_md5
    from segmodels.versioning.stream import streamed_dataset

    monkeypatch.setenv("SEGMODELS_LAKEFS_RETRY_WINDOW", "1")
    monkeypatch.setenv("SEGMODELS_LAKEFS_CONNECT_TIMEOUT", "1")
    server = create_server(tmp_path / "lakefs").start_in_thread()
    lakefs = LakeFS(LakeFSSettings(server.endpoint, server.access_key_id, server.secret_access_key), tmp_path / "home")
    uri, data_bytes = commit_dataset(lakefs, "stream", streamed_data)
    monkeypatch.setenv(MAX_GB_ENV, str(data_bytes / 4 / 1e9))  # the second epoch must fetch again

    class ServerGone(Callback):
        """After the first epoch lakeFS refuses connections (the reader's endpoint becomes a closed port; each
        epoch's workers start anew from the reader, persistent_workers=false)."""

        def on_epoch_end(self, state, metrics) -> None:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
            reader.settings = dataclasses.replace(reader.settings, endpoint=closed)
            reader._client = None

    cfg = load_config("train", [*TINY, f"trainer.num_workers={workers}", "data.access=stream", "data.prefetch=0"])
    with pytest.raises(LakeFSError) as failed, streamed_dataset(lakefs, uri) as (root, reader):
        train(cfg, root, tmp_path / "work", callbacks=[ServerGone()], files=reader)
    server.shutdown()
    message = str(failed.value)
    assert "\n" not in message and "server unreachable after" in message and "Caught" not in message, message
    objects = [p for p in (lakefs.home / "cache" / "objects").rglob("*") if p.is_file()]
    assert not [p for p in objects if p.name.startswith(".")]  # no half-written temp file
    assert all(file_md5(p) == p.name.rsplit("-", 1)[0] for p in objects)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_a_sample_larger_than_the_bound_fails_in_one_line_and_the_bound_it_suggests_trains(
    lakefs, repo_name, tiny_demo_dataset, tmp_path, monkeypatch, workers
):
    import re

    from segmodels.config import load_config
    from segmodels.training import train
    from segmodels.versioning.cache import MAX_GB_ENV
    from segmodels.versioning.stream import streamed_dataset

    uri, _ = commit_dataset(lakefs, repo_name, tiny_demo_dataset(8, 3, 128))  # images of 37 kB, metadata under 2 kB
    monkeypatch.setenv(MAX_GB_ENV, str(10_000 / 1e9))
    cfg = load_config("train", [*TINY, "trainer.epochs=1", f"trainer.num_workers={workers}", "data.access=stream"])
    with pytest.raises(CacheFullError) as refused, streamed_dataset(lakefs, uri) as (root, reader):
        train(cfg, root, tmp_path / "work", files=reader)
    message = str(refused.value)
    assert "\n" not in message, message
    assert re.search(rf"^lakefs://{repo_name}/{uri.ref}/data/images/(train|val)/demo_\d+\.png: needs 0\.00 GB", message)
    assert "bounded at 0.00 GB: raise SEGMODELS_CACHE_MAX_GB (e.g. SEGMODELS_CACHE_MAX_GB=1)" in message, message
    monkeypatch.setenv(MAX_GB_ENV, message.rsplit(f"{MAX_GB_ENV}=", 1)[1].rstrip(")"))  # as printed
    with streamed_dataset(lakefs, uri) as (root, reader):
        assert len(train(cfg, root, tmp_path / "work-again", files=reader).history) == 1


@pytest.fixture
def step_data(lakefs, lakefs_settings, repo_name, streamed_data, new_sqlite_store, tmp_path, monkeypatch) -> str:
    """The streamed data set committed to ``repo_name``, the step's lakeFS settings naming the session's server, an
    empty sqlite MLflow store and a segmodels home in ``tmp_path``; the pinned data URI."""
    import mlflow

    from segmodels.versioning import settings as versioning_settings

    monkeypatch.setenv(versioning_settings.ENV_ENDPOINT, lakefs_settings.endpoint)
    monkeypatch.setenv(versioning_settings.ENV_ACCESS_KEY_ID, lakefs_settings.access_key_id)
    monkeypatch.setenv(versioning_settings.ENV_SECRET_ACCESS_KEY, lakefs_settings.secret_access_key)
    monkeypatch.setenv("SEGMODELS_HOME", str(tmp_path / "home"))
    mlflow.set_tracking_uri(new_sqlite_store(tmp_path / "mlflow.db"))
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("stream", artifact_location=(tmp_path / "a").as_uri()))
    uri, _ = commit_dataset(lakefs, repo_name, streamed_data)
    return str(uri)


def train_step_args(data_uri: str, *overrides: str) -> list[str]:
    return [
        "--data_ref",
        data_uri,
        *[o for o in TINY if not o.startswith("trainer.epochs")],
        "trainer.epochs=1",
        *overrides,
    ]


@pytest.mark.slow
def test_the_train_step_streams_its_data_and_records_the_access_mode(step_data):
    import mlflow
    from mlflow.tracking import MlflowClient

    from segmodels.pipeline import run_step_cli

    run_step_cli("train", train_step_args(step_data, "data.access=stream", "trainer.num_workers=0"))
    (run,) = MlflowClient().search_runs([mlflow.get_experiment_by_name("stream").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["data.access"] == "stream"
    assert run.data.params["data_commit"] == step_data.split("/")[3]
    assert "val_miou" in run.data.metrics
    home = Path(os.environ["SEGMODELS_HOME"])
    assert not (home / "cache" / "views").exists() or not any((home / "cache" / "views").iterdir())  # no download


def test_a_bad_data_access_is_refused_in_one_line_before_anything_runs(step_data, capsys):
    import mlflow
    from mlflow.tracking import MlflowClient

    from segmodels.pipeline import run_step_cli

    with pytest.raises(SystemExit) as exited:
        run_step_cli("train", train_step_args(step_data, "data.access=streem"))
    errors = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 2 and errors == [
        "segmodels train: error: data.access='streem': expected download or stream"
    ], errors
    assert MlflowClient().search_runs([mlflow.get_experiment_by_name("stream").experiment_id]) == []


@pytest.mark.parametrize("ahead", [0, 2])
def test_the_sampler_prefetches_only_samples_ahead_of_the_one_it_yields(ahead):
    from segmodels.data.streaming import PrefetchingSampler

    asked: dict[int, int] = {}  # sample -> samples yielded when it was asked for
    yielded: list[int] = []

    class Recording:
        def prefetch(self, indices) -> None:
            asked.update((index, len(yielded)) for index in indices)

    for key in PrefetchingSampler(range(6), Recording(), ahead):
        yielded.append(key)
    assert yielded == list(range(6)) and sorted(asked) == (list(range(1, 6)) if ahead else [])
    assert all(index > before for index, before in asked.items())  # never the one read now: no double fetch


def test_prefetches_queued_when_the_streamed_data_set_closes_are_dropped(lakefs, repo_name, streamed_data, monkeypatch):
    import threading
    import time

    from segmodels.versioning import LakeFS
    from segmodels.versioning.stream import streamed_dataset

    uri, _ = commit_dataset(lakefs, repo_name, streamed_data)
    fetched = []
    real = LakeFS.download_object

    def slow(self, *args):
        time.sleep(0.2)  # lakeFS slow to answer: the prefetch queue is still full when training fails
        fetched.append(args[2].path)
        return real(self, *args)

    monkeypatch.setattr(LakeFS, "download_object", slow)
    with pytest.raises(RuntimeError), streamed_dataset(lakefs, uri, prefetch_threads=2) as (_, reader):
        fetched.clear()  # the metadata files
        reader.prefetch(reader.list("images/train") + reader.list("masks/train"))
        raise RuntimeError("training failed")
    prefetching = [t for t in threading.enumerate() if t.name.startswith("segmodels-prefetch")]
    settled = len(fetched)
    time.sleep(0.5)
    assert prefetching == [] and len(fetched) == settled <= 2, (prefetching, fetched)  # only the 2 running ones ended
    assert not [p for p in (lakefs.home / "cache" / "objects").rglob(".*") if p.is_file()]  # no temp file left


def test_a_read_while_its_prefetch_runs_waits_for_it_and_one_still_queued_is_read_at_once(
    lakefs, repo_name, streamed_data, monkeypatch
):
    import collections
    import threading
    import time

    from segmodels.versioning import LakeFS
    from segmodels.versioning.stream import streamed_dataset

    uri, _ = commit_dataset(lakefs, repo_name, streamed_data)
    fetched, started = collections.Counter(), threading.Event()
    real = LakeFS.download_object

    def slow(self, *args, **kwargs):
        started.set()
        time.sleep(0.3)
        fetched[args[2].path] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LakeFS, "download_object", slow)
    with streamed_dataset(lakefs, uri, prefetch_threads=1) as (_, reader):
        first, second, *_ = reader.list("images/train")
        started.clear()
        fetched.clear()  # the metadata files
        reader.prefetch([first, second])  # one thread: the first runs, the second waits in the queue
        assert started.wait(5)
        with reader.open(first) as handle:  # while its prefetch is downloading it
            assert handle.read() == (streamed_data / first).read_bytes()
        with reader.open(second) as handle:
            assert handle.read() == (streamed_data / second).read_bytes()
        reader.prefetch([second])  # already cached: nothing is fetched
        reader.close()
    assert fetched == {f"data/{first}": 1, f"data/{second}": 1}
