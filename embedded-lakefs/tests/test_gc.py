"""``embedded-lakefs gc``: what no branch, tag, staging area or recent commit references goes after the retention;
nothing reachable is touched, also while uploads and commits run beside it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import lakefs_sdk
import pytest
from lakefs_sdk.client import LakeFSClient

from embedded_lakefs import create_server
from embedded_lakefs.catalog import Catalog, Entry
from embedded_lakefs.gc import CollectionReport, collect_garbage

DAY = 86400
REPO = "gc-test"


@pytest.fixture
def served(tmp_path):
    server = create_server(tmp_path / "lakefs", fsync=False).start_in_thread()
    client = LakeFSClient(
        lakefs_sdk.Configuration(
            host=server.endpoint + "/api/v1", username=server.access_key_id, password=server.secret_access_key
        )
    )
    client.repositories_api.create_repository(
        lakefs_sdk.RepositoryCreation(name=REPO, storage_namespace="local://" + REPO, default_branch="main")
    )
    yield tmp_path / "lakefs", client
    server.shutdown()


def upload(client, branch: str, path: str, content: bytes) -> str:
    return client.objects_api.upload_object(REPO, branch, path, content=content).physical_address.rsplit("/", 1)[1]


def commit(client, branch: str, message: str) -> str:
    return client.commits_api.commit(REPO, branch, lakefs_sdk.CommitCreation(message=message)).id


def read(client, ref: str, path: str) -> bytes:
    return bytes(client.objects_api.get_object(REPO, ref, path))


def blob_exists(data_dir, address: str) -> bool:
    return (data_dir / "blobs" / "objects" / address[:2] / address).is_file()


def test_a_deleted_branchs_commits_and_blobs_go_after_the_retention_and_nothing_reachable_is_touched(served):
    data_dir, client = served
    old_version = upload(client, "main", "a.txt", b"a, first version")
    first = commit(client, "main", "first")
    upload(client, "main", "a.txt", b"a, second version")
    commit(client, "main", "second")
    client.tags_api.create_tag(REPO, lakefs_sdk.TagCreation(id="v1", ref=first))
    client.branches_api.create_branch(REPO, lakefs_sdk.BranchCreation(name="exp", source="main"))
    experiment = upload(client, "exp", "exp.txt", b"only on a deleted branch")
    shared = upload(client, "exp", "shared.txt", b"a, second version")  # same content as main's a.txt
    exp_commit = commit(client, "exp", "experiment")
    client.branches_api.delete_branch(REPO, "exp")
    staged = upload(client, "main", "staged.txt", b"staged, not committed")
    client.branches_api.create_branch(REPO, lakefs_sdk.BranchCreation(name="scratch", source="main"))
    orphan = upload(client, "scratch", "orphan.txt", b"uploaded, then reset")
    client.branches_api.reset_branch(REPO, "scratch", lakefs_sdk.ResetCreation(type="reset"))

    within = collect_garbage(data_dir, retention_days=7)
    assert (within.commits, within.blobs) == (0, 0)
    later = time.time() + 8 * DAY
    dry = collect_garbage(data_dir, retention_days=7, dry_run=True, now=later)
    assert (dry.commits, dry.blobs) == (1, 2) and dry.nodes >= 1
    assert blob_exists(data_dir, experiment) and blob_exists(data_dir, orphan)

    report = collect_garbage(data_dir, retention_days=7, now=later)
    assert (report.commits, report.blobs, report.nodes) == (dry.commits, dry.blobs, dry.nodes)
    assert report.blob_bytes == len(b"only on a deleted branch") + len(b"uploaded, then reset")
    assert not blob_exists(data_dir, experiment) and not blob_exists(data_dir, orphan)
    with pytest.raises(lakefs_sdk.exceptions.NotFoundException):
        client.commits_api.get_commit(REPO, exp_commit)
    for address in (old_version, shared, staged):
        assert blob_exists(data_dir, address)
    assert read(client, "main", "a.txt") == b"a, second version"
    assert read(client, "v1", "a.txt") == read(client, first, "a.txt") == b"a, first version"
    assert read(client, "main", "staged.txt") == b"staged, not committed"
    log = client.refs_api.log_commits(REPO, "main").results
    assert [c.message for c in log] == ["second", "first", "Repository created"]
    again = collect_garbage(data_dir, retention_days=7, now=later)
    assert (again.commits, again.nodes, again.blobs) == (0, 0, 0)


@pytest.mark.slow  # 40 rounds of branch, upload, commit under repeated collections: 10-25 s
def test_collection_beside_uploads_commits_and_branch_deletions_loses_nothing(served):
    data_dir, client = served
    errors: list = []
    done = threading.Event()
    contents = [b"pool content %d" % k for k in range(4)]

    def write():
        try:
            for i in range(40):
                content = contents[i % len(contents)]
                branch = f"scratch-{i}"
                client.branches_api.create_branch(REPO, lakefs_sdk.BranchCreation(name=branch, source="main"))
                upload(client, branch, f"s/{i}", content)
                commit(client, branch, f"scratch {i}")
                client.branches_api.delete_branch(REPO, branch)  # its blob is garbage now: unless reused below
                upload(client, "main", f"m/{i:02d}", content)
                if i % 5 == 4:
                    commit(client, "main", f"main {i}")
        except Exception as error:  # noqa: BLE001 - reported by the test below
            errors.append(error)
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    collections = 0
    while not done.is_set():
        collect_garbage(data_dir, retention_days=0)  # everything unreferenced goes, as soon as it is
        collections += 1
    writer.join()
    assert not errors, errors
    assert collections >= 2
    listed = client.objects_api.list_objects(REPO, "main", prefix="m/", amount=1000).results
    assert [o.path for o in listed] == [f"m/{i:02d}" for i in range(40)]
    for i in range(40):
        assert read(client, "main", f"m/{i:02d}") == contents[i % len(contents)]


@pytest.mark.parametrize(
    "delay", [0.5, *(pytest.param(d, marks=pytest.mark.slow) for d in (1.0, 1.5, 2.5))]
)  # 2-3.5 s each
def test_a_collection_killed_at_any_point_loses_nothing_live_and_the_next_one_finishes(served, delay):
    data_dir, client = served
    for i in range(50):
        upload(client, "main", f"live/{i:02d}", b"live %d" % i)
    commit(client, "main", "live")
    client.branches_api.create_branch(REPO, lakefs_sdk.BranchCreation(name="dead", source="main"))
    dead = [upload(client, "dead", f"dead/{i:03d}", b"dead %d" % i) for i in range(200)]
    catalog = Catalog(data_dir / "lakefs.db")  # a large dead tree, so the kill lands in the middle of the work
    catalog.stage_entries(
        REPO, "dead", (Entry(f"bulk/{i:06d}", f"{i:064x}", f"{i:032x}", 1, 1, "x", {}) for i in range(30_000))
    )
    commit(client, "dead", "dead")
    client.branches_api.delete_branch(REPO, "dead")
    process = subprocess.Popen(
        [sys.executable, "-m", "embedded_lakefs", "gc", "--retention-days", "0", "--data-dir", str(data_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(delay)
    process.kill()
    process.wait()
    for i in range(50):
        assert read(client, "main", f"live/{i:02d}") == b"live %d" % i
    collect_garbage(data_dir, retention_days=0)
    assert not any(blob_exists(data_dir, address) for address in dead)
    assert collect_garbage(data_dir, retention_days=0) == CollectionReport(0, 0, 0, 0, 0, False)
    upload(client, "main", "after.txt", b"after")
    commit(client, "main", "after")
    assert [o.path for o in client.objects_api.list_objects(REPO, "main", amount=1000).results][-1] == "live/49"


def test_the_command_reports_and_refuses_bad_input(served):
    data_dir, client = served
    upload(client, "main", "x", b"x")
    commit(client, "main", "x")
    command = [sys.executable, "-m", "embedded_lakefs", "gc", "--data-dir", str(data_dir)]
    done = subprocess.run(command + ["--dry-run"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("embedded-lakefs gc: would free 0 blobs")
    bad = subprocess.run(command + ["--retention-days", "-1"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().endswith("--retention-days -1.0: must not be negative")
    missing = subprocess.run(command[:-1] + [str(data_dir / "nope")], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "lakefs.db is missing" in missing.stderr
    assert not (data_dir / "nope").exists()
    assert read(client, "main", "x") == b"x"
    no_dir = subprocess.run(command[:-2], capture_output=True, text=True, timeout=120)
    assert no_dir.returncode == 2 and "--data-dir" in no_dir.stderr.strip().splitlines()[-1]
