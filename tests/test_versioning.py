"""The segmodels versioning client: settings, URIs, embedded server start-up, transfers, atomic writes."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import lakefs_sdk
import pytest

from embedded_lakefs.datadir import (
    CLIENTS_LOCK_FILE,
    CREDENTIALS_FILE,
    LOG_FILE,
    ServerState,
    clients_connected,
    load_or_create_credentials,
    read_server_state,
    write_server_state,
)
from segmodels.versioning import (
    LakeFS,
    LakeFSError,
    LakeFSSettings,
    LakeFSUri,
    connect,
    embedded,
    ensure_embedded_server,
)
from segmodels.versioning import settings as versioning_settings

NO_SUCH_PID = 2**22 + 1  # above Linux' largest pid_max


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
        "server:\n  endpoint_url: http://example:8000\ncredentials:\n  access_key_id: AK\n  secret_access_key: SK\n"
    )
    settings = LakeFSSettings.from_environment()
    assert (settings.endpoint, settings.access_key_id, settings.secret_access_key) == (
        "http://example:8000",
        "AK",
        "SK",
    )


def test_settings_endpoint_without_credentials_is_an_error(monkeypatch):
    monkeypatch.setenv("LAKECTL_SERVER_ENDPOINT_URL", "http://lakefs:8000")
    with pytest.raises(LakeFSError, match="without credentials"):
        LakeFSSettings.from_environment()


def test_settings_reject_non_http_endpoint():
    with pytest.raises(LakeFSError, match="must start with http"):
        LakeFSSettings("lakefs:8000", "a", "b")


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("lakefs://repo/main/data/images/a.png", LakeFSUri("repo", "main", "data/images/a.png")),
        ("lakefs://repo/abc123", LakeFSUri("repo", "abc123", "")),
        ("lakefs://repo/main~2/x", LakeFSUri("repo", "main~2", "x")),
    ],
)
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


def test_upload_directory_md5_index_skips_rereading_unchanged_files(lakefs: LakeFS, repo_name, tmp_path, monkeypatch):
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
    assert folder == lakefs.home / "cache" / "views" / repo_name / commit.id / "x"
    assert (folder / "1.bin").read_bytes() == files["x/1.bin"]
    assert (folder / "deep" / "2.bin").read_bytes() == files["x/deep/2.bin"]
    assert not (folder.parent / "y").exists()
    os.chmod(folder / "1.bin", 0o644)  # cached objects are read-only: a write goes through this, or root
    (folder / "1.bin").write_bytes(b"tampered")  # every use re-verifies (md5 index) and repairs
    assert lakefs.download_prefix(repo_name, commit.id, "x/") == folder
    assert (folder / "1.bin").read_bytes() == files["x/1.bin"]
    everything = lakefs.download_prefix(repo_name, commit.id)
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
        "models/unet/model.pt",
        "models/unet/model.yaml",
    ]
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
    with pytest.raises(RuntimeError, match="boom"), lakefs.atomic_write(repo_name, "main", "broken") as write:
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


def call_at_once(function: Callable, callers: int) -> list:
    """``function()`` from ``callers`` threads released together; every result, or the first exception raised."""
    barrier = threading.Barrier(callers, timeout=60)

    def call():
        barrier.wait()
        return function()

    with ThreadPoolExecutor(callers) as pool:
        futures = [pool.submit(call) for _ in range(callers)]
        return [future.result() for future in futures]


def _call_at_once_per_argument(barrier, function: Callable, arguments: list, callers: int, results) -> None:
    """Process worker: for each argument, once every process is there, ``function(argument)`` from
    ``callers`` threads at once; puts ``(argument, results or the error's repr)`` on ``results``."""
    for argument in arguments:
        barrier.wait()
        try:
            results.put((argument, call_at_once(lambda argument=argument: function(argument), callers)))
        except Exception as exc:  # reported to the test process, which fails on it
            results.put((argument, repr(exc)))


def call_at_once_in_processes(function: Callable, arguments: list, processes: int, callers: int) -> list[list]:
    """For each argument in turn, ``function(argument)`` from ``callers`` threads in each of ``processes``
    spawned processes, all released together; per argument, the results of every call."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes, timeout=120)
    results = context.Queue()
    workers = [
        context.Process(target=_call_at_once_per_argument, args=(barrier, function, arguments, callers, results))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    collected = defaultdict(list)
    try:
        for _ in range(processes * len(arguments)):
            argument, outcome = results.get(timeout=300)
            assert isinstance(outcome, list), f"{function.__name__}({argument}) failed: {outcome}"
            collected[argument].extend(outcome)
    finally:
        for worker in workers:
            worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0] * processes
    return [collected[argument] for argument in arguments]


def assert_all_hold_the_persisted_credentials(data_dir: Path, results: list) -> None:
    """Every result carries the keys of ``data_dir/credentials.json``, a 0600 file with no temp file left."""
    path = data_dir / CREDENTIALS_FILE
    persisted = json.loads(path.read_text())
    assert [(r.access_key_id, r.secret_access_key) for r in results] == [
        (persisted["access_key_id"], persisted["secret_access_key"])
    ] * len(results)
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in data_dir.iterdir() if p.name.endswith(".tmp")] == []


def test_credentials_created_by_concurrent_threads_are_the_persisted_ones(tmp_path):
    for round_ in range(20):
        data_dir = tmp_path / f"round-{round_}"
        results = call_at_once(lambda data_dir=data_dir: load_or_create_credentials(data_dir), callers=16)
        assert_all_hold_the_persisted_credentials(data_dir, results)
        assert load_or_create_credentials(data_dir) == results[0]


def test_credentials_created_by_concurrent_processes_are_the_persisted_ones(tmp_path):
    data_dirs = [tmp_path / f"round-{round_}" for round_ in range(20)]
    per_dir = call_at_once_in_processes(load_or_create_credentials, data_dirs, processes=4, callers=4)
    for data_dir, results in zip(data_dirs, per_dir):
        assert len(results) == 16
        assert_all_hold_the_persisted_credentials(data_dir, results)


def test_credentials_file_without_keys_is_a_clear_error(tmp_path):
    (tmp_path / CREDENTIALS_FILE).write_text(json.dumps({"access_key_id": "AK"}))
    with pytest.raises(ValueError, match="lacks 'secret_access_key'"):
        load_or_create_credentials(tmp_path)


def test_versioning_loads_only_the_data_directory_format_of_the_server_package():
    """The client shares the data directory's files (``datadir``) and the md5 helper with the server, never its code."""
    code = (
        "import sys, segmodels.versioning; "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('embedded_lakefs'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert set(loaded) <= {"embedded_lakefs", "embedded_lakefs.datadir", "embedded_lakefs.checksums"}, loaded
    assert "embedded_lakefs.datadir" in loaded


def stop_server(home: Path) -> None:
    """SIGTERM the server ``<home>/lakefs/server.json`` records, if any."""
    state = read_server_state(home / "lakefs")
    if state is not None:
        try:
            os.kill(state.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def test_ensure_embedded_server_spawns_once_and_is_reused(spawned_home):
    results = call_at_once(lambda: ensure_embedded_server(spawned_home), callers=8)
    assert len({r.endpoint for r in results}) == 1
    assert_all_hold_the_persisted_credentials(spawned_home / "lakefs", results)
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


def test_ensure_embedded_server_from_concurrent_processes_starts_one_server(tmp_path):
    homes = [tmp_path / f"home-{round_}" for round_ in range(3)]
    try:
        per_home = call_at_once_in_processes(ensure_embedded_server, homes, processes=3, callers=2)
        for home, results in zip(homes, per_home):
            assert len(results) == 6 and len(set(results)) == 1
            assert_all_hold_the_persisted_credentials(home / "lakefs", results)
            assert read_server_state(home / "lakefs").endpoint == results[0].endpoint
            assert "another embedded lakeFS server" not in (home / "lakefs" / LOG_FILE).read_text()
    finally:
        for home in homes:
            stop_server(home)


def test_stale_server_json_naming_another_live_server_is_ignored(spawned_home, lakefs_server):
    data_dir = spawned_home / "lakefs"
    data_dir.mkdir(parents=True)
    write_server_state(data_dir, ServerState(NO_SUCH_PID, lakefs_server.endpoint))  # left by a killed server
    settings = ensure_embedded_server(spawned_home)
    assert settings.endpoint != lakefs_server.endpoint
    assert read_server_state(data_dir).endpoint == settings.endpoint
    LakeFS(settings, home=spawned_home).ensure_repository("own-server")


def test_running_server_slow_to_answer_is_waited_for_not_doubled(spawned_home, monkeypatch):
    first = ensure_embedded_server(spawned_home)
    data_dir = spawned_home / "lakefs"
    pid = read_server_state(data_dir).pid
    real_is_healthy = embedded.is_healthy
    timeouts = iter(range(3))  # the first health checks time out, as under heavy load

    def slow_is_healthy(endpoint: str, timeout: float = 2.0) -> bool:
        return next(timeouts, None) is None and real_is_healthy(endpoint, timeout)

    monkeypatch.setattr(embedded, "is_healthy", slow_is_healthy)
    assert ensure_embedded_server(spawned_home) == first
    assert read_server_state(data_dir).pid == pid
    assert "another embedded lakeFS server" not in (data_dir / LOG_FILE).read_text()


def test_a_process_that_got_the_settings_stays_a_client_of_the_server(spawned_home):
    data_dir = spawned_home / "lakefs"
    first = ensure_embedded_server(spawned_home)
    with open(data_dir / CLIENTS_LOCK_FILE, "a+") as clients:
        assert clients_connected(clients)  # as the server's idle check sees this process
    assert ensure_embedded_server(spawned_home) == first
    assert [d for d in embedded._client_locks if d == data_dir] == [data_dir]  # one lock per data dir


QUIET_CLIENT = """
import subprocess, sys
from segmodels.versioning import connect, embedded

mode, idle_timeout = sys.argv[1], float(sys.argv[2])
embedded.IDLE_TIMEOUT_SECONDS = idle_timeout  # what the server this process spawns gets
if mode == "connect":
    client = connect()
    use = client.ensure_repository
else:  # as the main step: start the server, hand its settings to child steps through LAKECTL_* variables
    from segmodels.pipeline.main import export_lakefs_settings
    export_lakefs_settings()
    step = "import sys; from segmodels.versioning import connect; connect().ensure_repository(sys.argv[1])"
    use = lambda name: subprocess.run([sys.executable, "-c", step, name], check=True)
use("before-quiet")
print("connected", flush=True)
sys.stdin.readline()  # quiet (training, or waiting for a step) until the test says go
use("after-quiet")
print("used", flush=True)
sys.stdin.readline()  # until the test closes stdin, or kills this process
"""


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


@pytest.mark.parametrize(
    "mode, ending",
    [
        ("connect", "exit"),
        pytest.param("connect", "sigkill", marks=pytest.mark.slow),  # a kill -9 of the client
        pytest.param("main", "exit", marks=pytest.mark.slow),  # a main step's process and a step child (about 8 s)
    ],
)
def test_embedded_server_outlives_quiet_clients_and_stops_after_them(tmp_path, mode, ending):
    home = tmp_path / "home"
    data_dir = home / "lakefs"
    env = {**os.environ, "SEGMODELS_HOME": str(home), "HOME": str(tmp_path)}  # HOME: no ~/.lakectl.yaml
    client = subprocess.Popen(
        [sys.executable, "-c", QUIET_CLIENT, mode, "1"],
        env=env,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert client.stdout.readline() == "connected\n"
        state = read_server_state(data_dir)
        log = data_dir / LOG_FILE
        wait_until(
            lambda: "staying up while client" in log.read_text() or not embedded._server_running(data_dir),
            "idle time-out of the server",
        )
        assert embedded._server_running(data_dir), f"server stopped while its client lived:\n{log.read_text()}"
        assert read_server_state(data_dir) == state
        client.stdin.write("go\n")
        client.stdin.flush()
        assert client.stdout.readline() == "used\n"
        if ending == "sigkill":
            client.kill()
        else:
            client.stdin.close()
        assert client.wait(timeout=60) == (-signal.SIGKILL if ending == "sigkill" else 0)
        wait_until(lambda: not embedded._server_running(data_dir), "server stop after its last client ended")
        assert read_server_state(data_dir) is None
        assert "with no client connected, shutting down" in log.read_text()
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        stop_server(home)


def test_dataset_source_loads_through_the_given_client(lakefs: LakeFS, repo_name, tmp_path):
    from segmodels.tracking.dataset import LakeFSDatasetSource

    lakefs.ensure_repository(repo_name)
    lakefs.upload_directory(repo_name, "main", write_tree(tmp_path / "src", {"a.txt": b"a"}), prefix="data")
    commit = lakefs.commit(repo_name, "main", "data")
    source = LakeFSDatasetSource(str(LakeFSUri(repo_name, commit.id, "data")))
    folder = source.load(dst_path=tmp_path / "out", lakefs=lakefs)
    assert (Path(folder) / "a.txt").read_bytes() == b"a"


def test_a_deletion_lakefs_refuses_inside_its_answer_is_an_error(lakefs: LakeFS, repo_name, tmp_path):
    """lakeFS answers delete-objects 200 with per-path errors on a protected branch: the client raises them."""
    lakefs.ensure_repository(repo_name)
    (tmp_path / "a.txt").write_text("a")
    lakefs.upload_file(repo_name, "main", "a.txt", tmp_path / "a.txt")
    lakefs.commit(repo_name, "main", "add a")
    lakefs.sdk.repositories_api.set_branch_protection_rules(
        repo_name, [lakefs_sdk.BranchProtectionRule(pattern="main")]
    )
    with pytest.raises(LakeFSError, match=r"delete objects on .*/main: 1 refused, first 'a.txt': .*\(403\)"):
        lakefs.delete_objects(repo_name, "main", ["a.txt"])
    assert [obj.path for obj in lakefs.list_objects(repo_name, "main")] == ["a.txt"]
