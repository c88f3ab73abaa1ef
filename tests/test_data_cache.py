"""The content-addressed local cache (``segmodels.versioning.cache``) against the embedded lakeFS server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from segmodels.cli import main as cli_main
from segmodels.versioning import LakeFS, LakeFSError
from segmodels.versioning.cache import MAX_GB_ENV, CacheFullError, ObjectCache
from segmodels.versioning.hashing import Md5Index, file_md5


def commit_files(lakefs: LakeFS, repo: str, files: dict[str, bytes], tmp_path: Path, delete: bool = True) -> str:
    """Upload ``files`` as the whole of ``repo``'s main and commit; returns the commit id."""
    src = tmp_path / f"src-{time.monotonic_ns()}"
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    lakefs.ensure_repository(repo)
    lakefs.upload_directory(repo, "main", src, delete_missing=delete)
    return lakefs.commit(repo, "main", "data").id


def objects_on_disk(lakefs: LakeFS) -> dict[str, int]:
    """Cached objects' names and sizes (temp files excluded)."""
    root = lakefs.home / "cache" / "objects"
    return {p.name: p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")}


@pytest.fixture
def downloads(monkeypatch) -> list[str]:
    """Paths of the objects each ``download_object`` call fetched from lakeFS."""
    fetched: list[str] = []
    real = LakeFS.download_object

    def counting(self, repo, ref, obj, local_file):
        fetched.append(obj.path)
        return real(self, repo, ref, obj, local_file)

    monkeypatch.setattr(LakeFS, "download_object", counting)
    return fetched


def test_a_commit_changing_k_of_n_files_downloads_and_stores_k_objects(lakefs, repo_name, tmp_path, downloads):
    files = {f"data/{i:03d}.bin": os.urandom(1000 + i) for i in range(40)}
    first = commit_files(lakefs, repo_name, files, tmp_path)
    view1 = lakefs.download_prefix(repo_name, first, "data")
    assert len(downloads) == 40 and len(objects_on_disk(lakefs)) == 40
    disk_before = sum(objects_on_disk(lakefs).values())

    changed = {f"data/{i:03d}.bin": os.urandom(500) for i in (3, 17, 29)}
    second = commit_files(lakefs, repo_name, {**files, **changed}, tmp_path)
    downloads.clear()
    view2 = lakefs.download_prefix(repo_name, second, "data")
    assert sorted(downloads) == sorted(changed)
    assert sum(objects_on_disk(lakefs).values()) - disk_before == 3 * 500
    for name, data in {**files, **changed}.items():
        assert (view2.parent / name).read_bytes() == data
    unchanged = view2 / "000.bin"
    assert unchanged.stat().st_ino == (view1 / "000.bin").stat().st_ino  # one object, two views
    assert view2 == lakefs.home / "cache" / "views" / repo_name / second / "data"

    downloads.clear()
    assert lakefs.download_prefix(repo_name, second, "data/") == view2  # warm: nothing fetched
    assert downloads == []


def test_the_same_object_under_two_paths_and_in_two_repositories_is_stored_once(lakefs, repo_name, tmp_path, downloads):
    data = os.urandom(3000)
    first = commit_files(lakefs, repo_name, {"a.bin": data}, tmp_path)
    other = repo_name + "-b"
    second = commit_files(lakefs, other, {"x/b.bin": data, "y/c.bin": data}, tmp_path)
    lakefs.download_prefix(repo_name, first)
    view = lakefs.download_prefix(other, second)
    assert len(downloads) == 1 and len(objects_on_disk(lakefs)) == 1
    assert (view / "x" / "b.bin").read_bytes() == (view / "y" / "c.bin").read_bytes() == data


def test_views_are_evicted_least_recently_used_first_under_the_bound(lakefs, repo_name, tmp_path, monkeypatch):
    monkeypatch.setenv(MAX_GB_ENV, str(25_000 / 1e9))  # room for two commits of 10 kB
    commits = [commit_files(lakefs, repo_name, {"d/f.bin": os.urandom(10_000)}, tmp_path) for _ in range(3)]
    views = lakefs.home / "cache" / "views" / repo_name
    lakefs.download_prefix(repo_name, commits[0])
    time.sleep(0.05)
    lakefs.download_prefix(repo_name, commits[1])
    time.sleep(0.05)
    lakefs.download_prefix(repo_name, commits[0])  # used again: commits[1] is now the least recently used
    time.sleep(0.05)
    lakefs.download_prefix(repo_name, commits[2])
    assert sorted(p.name for p in views.iterdir() if p.is_dir()) == sorted([commits[0], commits[2]])
    assert len(objects_on_disk(lakefs)) == 2  # commits[1]'s object went with its view
    assert sum(objects_on_disk(lakefs).values()) <= 25_000


def test_a_locked_view_survives_gc_and_a_view_that_cannot_fit_is_refused(lakefs, repo_name, tmp_path, monkeypatch):
    first = commit_files(lakefs, repo_name, {"f.bin": os.urandom(10_000)}, tmp_path)
    second = commit_files(lakefs, repo_name, {"g.bin": os.urandom(10_000)}, tmp_path)
    cache = ObjectCache(lakefs.home / "cache")
    with lakefs.using_prefix(repo_name, first) as folder:
        lakefs.download_prefix(repo_name, second)
        report = cache.gc(max_bytes=0)
        assert [view.commit for view in report.views] == [second]
        assert file_md5(folder / "f.bin") == next(lakefs.list_objects(repo_name, first)).checksum
        monkeypatch.setenv(MAX_GB_ENV, str(15_000 / 1e9))
        with pytest.raises(CacheFullError) as refused:
            lakefs.download_prefix(repo_name, second)
        message = str(refused.value)
        assert "\n" not in message and MAX_GB_ENV in message and "0.00 GB" in message
        assert f"lakefs://{repo_name}/{second}/" in message
    assert [view.commit for view in cache.gc(max_bytes=0).views] == [first]  # unlocked now
    assert objects_on_disk(lakefs) == {}


def test_a_corrupt_or_truncated_cached_object_is_fetched_again(lakefs, repo_name, tmp_path, downloads):
    data = os.urandom(5000)
    commit = commit_files(lakefs, repo_name, {"img.bin": data, "other.bin": b"other"}, tmp_path)
    folder = lakefs.download_prefix(repo_name, commit)
    (stored,) = [p for p in (lakefs.home / "cache" / "objects").rglob("*-5000")]
    for damage in (b"x" * 5000, data[:100]):  # same size other bytes, then truncated
        os.chmod(stored, 0o644)
        stored.write_bytes(damage)
        downloads.clear()
        assert (lakefs.download_prefix(repo_name, commit) / "img.bin").read_bytes() == data
        assert downloads == ["img.bin"]
        assert (folder / "img.bin").read_bytes() == data and stored.read_bytes() == data


def test_a_bad_bound_is_refused_in_one_line(lakefs, repo_name, tmp_path, monkeypatch):
    commit = commit_files(lakefs, repo_name, {"f.bin": b"f"}, tmp_path)
    monkeypatch.setenv(MAX_GB_ENV, "lots")
    with pytest.raises(LakeFSError, match=rf"^{MAX_GB_ENV}='lots': not a positive number of GB"):
        lakefs.download_prefix(repo_name, commit)


CHILD = """
import os, sys, time
from pathlib import Path
from segmodels.versioning import LakeFS, LakeFSSettings

endpoint, key, secret, home, repo, commit, mode = sys.argv[1:]
lakefs = LakeFS(LakeFSSettings(endpoint, key, secret), home=Path(home))
if mode == "stall":  # write half of each object, then stall: the parent kills us with SIGKILL
    def stalled(self, repo, ref, obj, local_file):
        with open(local_file, "wb") as out:
            out.write(b"h" * (obj.size // 2))
        sys.stdout.write("writing\\n")  # one write: the 4 threads' lines do not interleave
        sys.stdout.flush()
        time.sleep(60)
    LakeFS.download_object = stalled
if mode == "wait":  # start downloading when the parent says so (another process beside us)
    print("ready", flush=True)
    sys.stdin.readline()
folder = lakefs.download_prefix(repo, commit, workers=4)
print("done", sum(1 for p in folder.rglob("*") if p.is_file()), flush=True)
"""


def child(lakefs: LakeFS, repo: str, commit: str, mode: str, tmp_path: Path, **popen) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    settings = lakefs.settings
    args = [settings.endpoint, settings.access_key_id, settings.secret_access_key, str(lakefs.home), repo, commit]
    return subprocess.Popen([sys.executable, str(script), *args, mode], stdout=subprocess.PIPE, text=True, **popen)


def assert_every_object_verifies(lakefs: LakeFS) -> None:
    for path in (lakefs.home / "cache" / "objects").rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            checksum, size = path.name.rsplit("-", 1)
            assert path.stat().st_size == int(size) and file_md5(path) == checksum


def test_two_processes_downloading_the_same_commit_share_the_cache(lakefs, repo_name, tmp_path):
    files = {f"d/{i}.bin": os.urandom(2000) for i in range(60)}
    commit = commit_files(lakefs, repo_name, files, tmp_path)
    children = [child(lakefs, repo_name, commit, "plain", tmp_path) for _ in range(2)]
    outputs = [c.communicate(timeout=120)[0] for c in children]
    assert [c.returncode for c in children] == [0, 0] and all("done 60" in out for out in outputs)
    assert len(objects_on_disk(lakefs)) == 60
    assert_every_object_verifies(lakefs)
    folder = lakefs.home / "cache" / "views" / repo_name / commit
    assert {f"d/{i}.bin": (folder / "d" / f"{i}.bin").read_bytes() for i in range(60)} == files


def test_two_processes_downloading_other_commits_never_pass_the_bound_together(
    lakefs, repo_name, tmp_path, monkeypatch
):
    from test_data_streaming import DiskSampler

    commits = [
        commit_files(lakefs, repo_name, {f"d/{i}.bin": os.urandom(25_000) for i in range(40)}, tmp_path)
        for _ in range(2)
    ]
    bound = 1_500_000  # either commit (1 MB) fits, both do not
    monkeypatch.setenv(MAX_GB_ENV, str(bound / 1e9))
    children = [
        child(lakefs, repo_name, commit, "wait", tmp_path, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        for commit in commits
    ]
    assert [c.stdout.readline().strip() for c in children] == ["ready", "ready"]
    with DiskSampler(lakefs.home) as disk:
        for c in children:
            c.stdin.write("go\n")
            c.stdin.flush()
        outputs = [c.communicate(timeout=180) for c in children]
    assert disk.samples > 0 and disk.peak <= bound, (disk.peak, bound)
    done = [out for out, _ in outputs if out.strip() == "done 40"]
    refused = [err.strip().splitlines()[-1] for out, err in outputs if out.strip() != "done 40"]
    # the second waits for the first's reservation; it is refused only if it asks while the first one's view is
    # still locked (in use) after its download, where the room is not there
    assert done and all("CacheFullError" in line and MAX_GB_ENV in line for line in refused), [e for _, e in outputs]
    assert_every_object_verifies(lakefs)


def fork_while_a_thread_holds(hold, in_child) -> None:
    """Fork while a thread runs ``hold(taken, release)`` (inside a lock, between ``taken`` and ``release``), run
    ``in_child`` in the child once the thread let go, and fail if the child never finishes: it kept the lock."""
    import threading

    taken, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold, args=(taken, release))
    holder.start()
    assert taken.wait(60), "the thread never took the lock"
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        status = 1
        try:
            in_child()
            status = 0
        finally:
            os._exit(status)
    release.set()
    holder.join()
    deadline = time.monotonic() + 60
    while (waited := os.waitpid(pid, os.WNOHANG)) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked process kept the parent's lock: it waits for it forever")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(waited[1]) == 0, "the forked process failed"


def test_a_process_forked_while_a_thread_holds_the_cache_lock_does_not_keep_it(tmp_path):
    cache = ObjectCache(tmp_path / "cache", max_bytes=1000)

    def hold(taken, release) -> None:  # a prefetch thread inside reserved() (which holds the lock briefly)
        with cache._exclusive():
            taken.set()
            release.wait()

    fork_while_a_thread_holds(hold, lambda: cache.reserved(900, "worker").__enter__())  # the DataLoader worker
    cache.make_room(1000, "after")  # the parent takes it too, and nothing is left reserved


def test_a_process_forked_while_a_thread_saves_the_md5_index_does_not_keep_its_lock(tmp_path, monkeypatch):
    index = Md5Index(tmp_path / "cache")
    (tmp_path / "a").write_bytes(b"a")
    os.utime(tmp_path / "a", (1_000_000_000, 1_000_000_000))  # not fresh: the index records it
    index.record(tmp_path / "a", (tmp_path / "a").stat(), "0cc175b9c0f1b6a831c399e269772661")
    load = Md5Index._load

    def hold(taken, release) -> None:  # a prefetch thread saving the index (under its lock) as DataLoader forks
        def slow_load(self):
            taken.set()
            release.wait()
            return load(self)

        monkeypatch.setattr(Md5Index, "_load", slow_load)
        index.save()

    def save_in_child() -> None:
        monkeypatch.setattr(Md5Index, "_load", load)
        other = Md5Index(tmp_path / "cache")
        other.record(tmp_path / "a", (tmp_path / "a").stat(), "0cc175b9c0f1b6a831c399e269772661")
        other.save()

    fork_while_a_thread_holds(hold, save_in_child)


def test_sigkill_mid_download_leaves_no_half_object_and_a_rerun_completes(lakefs, repo_name, tmp_path):
    files = {f"{i}.bin": os.urandom(4000) for i in range(8)}
    commit = commit_files(lakefs, repo_name, files, tmp_path)
    stalled = child(lakefs, repo_name, commit, "stall", tmp_path)
    assert stalled.stdout.readline().strip() == "writing"
    os.kill(stalled.pid, signal.SIGKILL)
    stalled.wait(timeout=30)
    temps = [p for p in (lakefs.home / "cache" / "objects").rglob(".*") if p.is_file()]
    assert temps and objects_on_disk(lakefs) == {}  # half-written temp files only, no object under its name
    folder = lakefs.download_prefix(repo_name, commit)
    assert {name: (folder / name).read_bytes() for name in files} == files
    assert_every_object_verifies(lakefs)
    report = ObjectCache(lakefs.home / "cache").gc()
    assert report.temp_files == len(temps) and report.views == []
    assert [p for p in (lakefs.home / "cache" / "objects").rglob(".*") if p.is_file()] == []


def test_cache_ls_and_gc_print_views_and_what_they_free(lakefs, repo_name, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEGMODELS_HOME", str(lakefs.home))
    first = commit_files(lakefs, repo_name, {"a/1.bin": os.urandom(1000), "a/2.bin": os.urandom(1000)}, tmp_path)
    lakefs.download_prefix(repo_name, first, "a")
    legacy = lakefs.home / "cache" / repo_name / first  # a commit folder of the earlier layout
    legacy.mkdir(parents=True)
    (legacy / "old.bin").write_bytes(b"o" * 3000)
    cli_main(["cache", "ls"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["REPOSITORY", "COMMIT", "PREFIXES", "FILES", "SIZE", "LAST", "USED", "LOCKED"]
    assert lines[1].split()[:5] == [repo_name, first[:16], "a/", "2", "0.00"] and lines[1].endswith("no")
    assert lines[0].index("FILES") == lines[1].index(" 2 ") + 1  # columns aligned
    assert lines[2].startswith("1 views, 2 objects, 0.00 GB of 50.00 GB (SEGMODELS_CACHE_MAX_GB)")
    assert "1 folders of an earlier cache layout" in lines[3]

    cli_main(["cache", "gc", "--dry-run", "--max-gb", "0"])
    dry = capsys.readouterr().out
    assert "would remove 1 views, 2 objects" in dry and "1 earlier-layout folders" in dry
    assert len(objects_on_disk(lakefs)) == 2 and legacy.exists()
    cli_main(["cache", "gc", "--max-gb", "0"])
    assert "removed 1 views, 2 objects" in capsys.readouterr().out
    assert objects_on_disk(lakefs) == {} and not legacy.exists()
