"""The local cache of lakeFS objects: every object stored once by its checksum, every downloaded commit a view of
hard links to those objects, all under a size bound with least-recently-used eviction.

``<home>/cache/``::

    objects/<md5[:2]>/<md5>-<size>   verified objects (read-only), written to a temp file, verified, renamed in
    views/<repo>/<commit>/<path>     a commit's files: hard links to objects (copies where no link can be made)
    views/<repo>/<commit>.json       the view's record: its complete prefixes and their objects
    views/<repo>/<commit>.lock       share-locked by every process reading the view: never evicted then
    reservations/<host>-<pid>-<start>  bytes a live process has reserved for objects it is writing
    .lock                            held while records are written, room reserved and views or objects evicted

Room is reserved under ``.lock`` before an object's bytes land (:meth:`ObjectCache.reserved`), so concurrent
writers never take the cache past its bound together; a dead process's reservation is ignored. An object no view
links is evicted least recently used first (its atime is set on every use), never while a reader holds it
share-locked (:meth:`ObjectCache.open_object`).

Folders of earlier versions (``<home>/cache/<repo>/<commit>/`` and ``.complete/``) are never read: ``segmodels
cache ls`` shows their size and ``segmodels cache gc`` removes them.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, Protocol

from .ephemeral import host_id, process_alive, process_start
from .errors import LakeFSError
from .flock import exclusive_lock
from .hashing import Md5Index

MAX_GB_ENV = "SEGMODELS_CACHE_MAX_GB"
DEFAULT_MAX_GB = 50.0
OBJECTS = "objects"
VIEWS = "views"
RESERVATIONS = "reservations"
OWN_ENTRIES = {OBJECTS, VIEWS, RESERVATIONS, ".lock", "md5-index.json", "md5-index.lock"}
RESERVATION_WAIT = 120.0  # seconds a reservation waits for room other downloads hold
# A folder listed this soon after its last change is listed again: a change in the same timestamp tick would not
# move its mtime. Filesystems that keep sub-second mtimes tick with the kernel's clock (milliseconds); others may
# tick in seconds (2 s on FAT), and an mtime on a whole second is taken as one of those.
RACY_NS = 2 * 10**9
FINE_RACY_NS = 10**8
PLACE_TRIES = 3  # links of a cached object into a view, each after reading it again (another writer replaced it)
EVICT_SLACK = 0.05  # share of the bound an eviction frees beyond what is needed, so the next writes need none
# Objects get this mtime once verified: the md5 index then trusts them (its "racy" rule skips fresh mtimes) and a
# write into an object, through any of its links, gives it the current time, so it is hashed again and refused.
VERIFIED_MTIME_NS = 1_000_000_000 * 10**9
TEMP_NAME = re.compile(r"^\.+(\d+)-.*\.(part|link)$")  # .<pid>-...: a writer's temp file, swept once it is gone
RECORD_VERSION = 1
RESERVATION_NAME = re.compile(r"^(?P<host>[0-9a-f]{10})-(?P<pid>\d+)-(?P<start>\d+)$")

# (pid, cache root) -> bytes this process has reserved there; changed only under the cache's lock. Keyed by pid:
# a forked child (a DataLoader worker) starts with its parent's dict but holds none of its reservations.
_reserved_here: dict[tuple[int, str], int] = {}


def worker_reason(message: str) -> str:
    """``message`` without what torch adds when it raises a DataLoader worker's error again in the main process
    (``Caught <Error> in DataLoader worker process N.``, then the worker's traceback): the one-line reason."""
    lines = str(message).strip().splitlines()
    if len(lines) > 1 and lines[0].startswith("Caught "):
        return lines[-1].split(": ", 1)[-1]
    return str(message)


class CacheFullError(LakeFSError):
    """A view or object needed now does not fit under the cache bound beside what is in use (``reserved``: the
    bytes running downloads had reserved). Raised again from a DataLoader worker, it keeps its one line."""

    def __init__(self, message: str, reserved: int = 0):
        super().__init__(worker_reason(message))
        self.reserved = reserved


class Remote(Protocol):
    """What the cache needs of a lakeFS object (``client.RemoteObject``)."""

    path: str
    checksum: str
    size: int


def max_bytes_from_env() -> int:
    """The cache bound: ``$SEGMODELS_CACHE_MAX_GB`` (decimal GB), else ``DEFAULT_MAX_GB``."""
    raw = os.environ.get(MAX_GB_ENV, "").strip()
    if not raw:
        return int(DEFAULT_MAX_GB * 1e9)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise LakeFSError(f"{MAX_GB_ENV}={raw[:40]!r}: not a positive number of GB (e.g. {MAX_GB_ENV}=50)")
    return int(value * 1e9)


def _gb(size: int) -> str:
    return f"{size / 1e9:.2f} GB"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class ViewInfo:
    """One view as ``segmodels cache ls`` shows it."""

    repo: str
    commit: str
    prefixes: list[str]
    files: int
    size: int
    last_used: float
    locked: bool


@dataclass
class GcReport:
    """What a gc removed (or, dry, would remove)."""

    views: list[ViewInfo] = field(default_factory=list)
    objects: int = 0
    object_bytes: int = 0
    legacy: list[Path] = field(default_factory=list)
    legacy_bytes: int = 0
    temp_files: int = 0

    @property
    def freed(self) -> int:
        return self.object_bytes + self.legacy_bytes


class ObjectCache:
    """The cache under ``root`` (``<home>/cache``) with a bound of ``max_bytes`` (default: from the environment)."""

    def __init__(self, root: Path, max_bytes: int | None = None):
        self.root = Path(root)
        self.objects = self.root / OBJECTS
        self.views = self.root / VIEWS
        self.reservations = self.root / RESERVATIONS
        self.max_bytes = max_bytes_from_env() if max_bytes is None else max_bytes
        self._fans: dict[str, tuple[int, int, int, int]] = {}  # fan folder -> (mtime_ns, listed_ns, objects, bytes)
        self._copied: dict[Path, tuple[int, int]] = {}  # view record -> (mtime_ns, bytes copied)

    # -- objects ---------------------------------------------------------------------------------------------
    def object_path(self, checksum: str, size: int) -> Path:
        """Where the object of ``checksum`` and ``size`` is kept."""
        if not re.fullmatch(r"[0-9A-Za-z_-]{8,128}", checksum):
            raise LakeFSError(f"object checksum {checksum[:80]!r} cannot name a cached file")
        return self.objects / checksum[:2].lower() / f"{checksum}-{size}"

    def object_ok(self, path: Path, obj: Remote, index: Md5Index) -> bool:
        """Whether ``path`` holds ``obj``'s bytes (size, then md5 through ``index``)."""
        try:
            stat = os.stat(path)
            return stat.st_size == obj.size and index.md5(path, stat) == obj.checksum
        except FileNotFoundError:
            return False

    def fetch_object(self, obj: Remote, download: Callable[[Remote, Path], None], index: Md5Index) -> Path:
        """The verified cached object of ``obj``; ``download(obj, path)`` writes it (verified) when missing or corrupt.
        It becomes visible under its name only complete: a temp file renamed into place."""
        target = self.object_path(obj.checksum, obj.size)
        if self.object_ok(target, obj, index):
            _mark_used(target)
            return target
        self._land(obj, download, index).close()
        return target

    def _land(self, obj: Remote, download: Callable[[Remote, Path], None], index: Md5Index) -> BinaryIO:
        """Download ``obj`` into a temp file, verified, and rename it into place; returned open and share-locked
        from before it has its name, so no eviction can take it before it is read."""
        target = self.object_path(obj.checksum, obj.size)
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.parent / f".{os.getpid()}-{target.name}.{os.urandom(4).hex()}.part"
        try:
            download(obj, part)
            os.chmod(part, 0o444)
            os.utime(part, ns=(time.time_ns(), VERIFIED_MTIME_NS))
            index.record(target, os.stat(part), obj.checksum)
            handle = open(part, "rb")  # noqa: SIM115 (returned open)
            try:
                fcntl.flock(handle, fcntl.LOCK_SH)
                os.replace(part, target)
            except BaseException:
                handle.close()
                raise
            return handle
        finally:
            if part.exists():
                part.unlink()

    @contextmanager
    def read_object(
        self, obj: Remote, download: Callable[[Remote, Path], None], index: Md5Index, label: str | None
    ) -> Iterator[BinaryIO]:
        """``obj``'s verified bytes open for reading and share-locked (never evicted while read): the cached object,
        else fetched with room reserved first (:meth:`reserved`, ``label`` naming it when it cannot fit; None: the
        caller has reserved it)."""
        target = self.object_path(obj.checksum, obj.size)
        handle = None
        while handle is None:
            if self.object_ok(target, obj, index):
                _mark_used(target)
                handle = _open_shared(target)  # None when evicted meanwhile: checked again
            else:
                with self.reserved(obj.size, label) if label is not None else nullcontext():
                    handle = self._land(obj, download, index)
        with handle:
            yield handle

    @contextmanager
    def open_object(self, path: Path) -> Iterator[BinaryIO]:
        """``path`` (a cached object) open for reading and share-locked, so no eviction removes it while it is read;
        FileNotFoundError when it was evicted before the lock was taken."""
        handle = _open_shared(path)
        if handle is None:
            raise FileNotFoundError(errno.ENOENT, "evicted", str(path))
        with handle:
            yield handle

    def usage(self) -> tuple[int, int]:
        """(objects, bytes) on disk: the objects plus views' copies (where links could not be made). A fan folder
        whose mtime is the one it had when listed is not listed again, unless that listing came so soon after the
        mtime that a change in the same timestamp tick would not show (``RACY_NS``, ``FINE_RACY_NS``)."""
        count, size = 0, 0
        now = time.time_ns()
        for fan in list(os.scandir(self.objects)) if self.objects.is_dir() else []:
            try:
                mtime = fan.stat(follow_symlinks=False).st_mtime_ns
            except FileNotFoundError:
                continue
            known = self._fans.get(fan.name)
            racy = FINE_RACY_NS if mtime % 10**9 else RACY_NS
            if known is None or known[0] != mtime or known[1] - mtime < racy:
                files = [Path(fan.path, name) for name in os.listdir(fan.path) if not name.startswith(".")]
                known = (mtime, now, *_count_bytes(files))
                self._fans[fan.name] = known
            count += known[2]
            size += known[3]
        return count, size + sum(self._view_copied(repo, commit) for repo, commit in self._view_keys())

    def _view_copied(self, repo: str, commit: str) -> int:
        """The bytes a view copied (where no link could be made), read again only when its record changed."""
        path = self._record_path(repo, commit)
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            return 0
        known = self._copied.get(path)
        if known is None or known[0] != mtime:
            known = (mtime, self._record(repo, commit).get("copied", 0))
            self._copied[path] = known
        return known[1]

    # -- views -----------------------------------------------------------------------------------------------
    def view_dir(self, repo: str, commit: str) -> Path:
        return self.views / repo / commit

    def _record_path(self, repo: str, commit: str) -> Path:
        return self.views / repo / f"{commit}.json"

    def _lock_path(self, repo: str, commit: str) -> Path:
        return self.views / repo / f"{commit}.lock"

    def _record(self, repo: str, commit: str) -> dict:
        try:
            record = json.loads(self._record_path(repo, commit).read_text())
            return record if record.get("version") == RECORD_VERSION else {}
        except (OSError, ValueError, AttributeError):
            return {}

    def _view_keys(self) -> list[tuple[str, str]]:
        keys = set()
        if self.views.is_dir():
            for repo_dir in self.views.iterdir():
                if repo_dir.is_dir():
                    keys.update(
                        (repo_dir.name, entry.name.split(".")[0])
                        for entry in repo_dir.iterdir()
                        if not entry.name.startswith(".")
                    )
        return sorted(keys)

    @contextmanager
    def using_view(self, repo: str, commit: str) -> Iterator[View]:
        """The view of ``repo`` at ``commit``, share-locked (never evicted) until the block ends."""
        lock_path = self._lock_path(repo, commit)
        while True:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_SH)
            try:
                if os.fstat(fd).st_ino == os.stat(lock_path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)  # evicted while we waited: lock the new file
        try:
            os.utime(lock_path)  # last used
            yield View(self, repo, commit)
        finally:
            os.close(fd)

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(self.root / ".lock"):
            yield

    def list_views(self) -> list[ViewInfo]:
        """Every view, least recently used first."""
        infos = []
        for repo, commit in self._view_keys():
            record = self._record(repo, commit)
            prefixes = record.get("prefixes", {})
            objects = {path: entry for prefix in prefixes.values() for path, entry in prefix.items()}
            lock_path = self._lock_path(repo, commit)
            try:
                last_used = lock_path.stat().st_mtime
            except FileNotFoundError:
                last_used = 0.0
            infos.append(
                ViewInfo(
                    repo,
                    commit,
                    sorted(prefixes),
                    len(objects),
                    sum(entry[1] for entry in objects.values()),
                    last_used,
                    self._in_use(lock_path),
                )
            )
        return sorted(infos, key=lambda info: info.last_used)

    def _in_use(self, lock_path: Path) -> bool:
        try:
            with open(lock_path) as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        except FileNotFoundError:
            return False

    def _evict(self, repo: str, commit: str, dry_run: bool) -> bool:
        """Remove a view nobody uses (its record first, so a half-removed view is never taken as complete)."""
        lock_path = self._lock_path(repo, commit)
        try:
            fd = os.open(lock_path, os.O_RDONLY)
        except FileNotFoundError:
            fd = None
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
            if not dry_run:
                self._record_path(repo, commit).unlink(missing_ok=True)
                shutil.rmtree(self.view_dir(repo, commit), ignore_errors=True)
                lock_path.unlink(missing_ok=True)
            return True
        finally:
            if fd is not None:
                os.close(fd)

    def _sweep_objects(self, dry_run: bool, report: GcReport, excess: int | None = None, slack: int = 0) -> None:
        """Remove dead writers' temp files and objects no view links (one link: the object's own name) and no
        reader holds, least recently used first; with ``excess``, only until that many bytes are freed, and then
        those that fit in ``slack`` bytes more."""
        unlinked = []
        for fan in list(os.scandir(self.objects)) if self.objects.is_dir() else []:
            for entry in list(os.scandir(fan.path)):
                temp = TEMP_NAME.match(entry.name)
                try:
                    if temp:
                        if not _pid_alive(int(temp.group(1))):
                            report.temp_files += 1
                            if not dry_run:
                                os.unlink(entry.path)
                        continue
                    stat = entry.stat(follow_symlinks=False)
                    if stat.st_nlink == 1:
                        unlinked.append((stat.st_atime_ns, stat.st_size, entry.path))
                except FileNotFoundError:
                    pass
        freed = 0
        for _, size, path in sorted(unlinked):
            if excess is not None and freed >= excess and freed + size > excess + slack:
                return
            if _remove_unread(path, dry_run):
                report.objects += 1
                report.object_bytes += size
                freed += size

    def make_room(self, needed: int, label: str) -> None:
        """Evict objects no view links (least recently used first), then least-recently-used views not in use,
        until ``needed`` more bytes fit under the bound beside every live process's reservation; else a
        ``CacheFullError`` naming the bound and how to raise it."""
        with self._exclusive():
            self._fit(needed, label)

    @contextmanager
    def reserved(self, needed: int, label: str, wait: float = RESERVATION_WAIT) -> Iterator[Callable[[int], None]]:
        """Room for ``needed`` more bytes (as :meth:`make_room`), reserved for this process until the block ends:
        bytes written meanwhile (temp files, then objects) never take the cache past its bound. Room that other
        downloads hold reserved is waited for, up to ``wait`` seconds: they end soon, and free it or leave objects
        that can be evicted. The block gets ``landed(size)``, which gives back ``size`` bytes of the reservation
        once an object of that size is in place and held (counted as used, not evictable)."""
        deadline = time.monotonic() + wait
        while True:
            with self._exclusive():
                try:
                    self._fit(needed, label)
                    self._hold(needed)
                    break
                except CacheFullError as full:
                    if not full.reserved or time.monotonic() > deadline:
                        raise
            time.sleep(0.02)
        held = needed

        def landed(size: int) -> None:
            nonlocal held
            with self._exclusive():  # a lock per call: it also orders this process's threads
                self._hold(-size)
                held -= size

        try:
            yield landed
        finally:
            with self._exclusive():
                self._hold(-held)

    def _fit(self, needed: int, label: str) -> None:
        """make_room's work; the caller holds the cache's lock."""
        reserved = self._reserved_bytes()
        _, used = self.usage()
        if used + reserved + needed <= self.max_bytes:
            return
        limit = self.max_bytes - needed - reserved
        self._shrink(
            limit, dry_run=False, report=GcReport(), all_unlinked=False, slack=int(EVICT_SLACK * self.max_bytes)
        )
        _, used = self.usage()
        if used + reserved + needed > self.max_bytes:
            raise CacheFullError(
                f"{label}: needs {_gb(needed)} more in the cache {self.root}, which holds {_gb(used)} "
                f"in views and objects in use (and {_gb(reserved)} reserved by downloads running) and is bounded "
                f"at {_gb(self.max_bytes)}: raise {MAX_GB_ENV} "
                f"(e.g. {MAX_GB_ENV}={max(1, int((used + reserved + needed) / 1e9 + 1.5))})",
                reserved=reserved,
            )

    def _reservation_file(self) -> Path:
        pid = os.getpid()
        return self.reservations / f"{host_id()}-{pid}-{process_start(pid) or 0}"

    def _hold(self, delta: int) -> None:
        """Change this process's reservation by ``delta`` bytes (caller holds the cache's lock)."""
        key = (os.getpid(), str(self.root))
        total = _reserved_here.get(key, 0) + delta
        _reserved_here[key] = total
        path = self._reservation_file()
        if total <= 0:
            path.unlink(missing_ok=True)
            return
        self.reservations.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f".{path.name}.part")
        part.write_text(str(total))
        os.replace(part, path)

    def _reserved_bytes(self) -> int:
        """Bytes reserved by live processes (caller holds the cache's lock); dead ones' files are removed."""
        total = 0
        for entry in list(os.scandir(self.reservations)) if self.reservations.is_dir() else []:
            match = RESERVATION_NAME.match(entry.name)
            if not match:
                continue
            if process_alive(match["host"], int(match["pid"]), int(match["start"])) is False:
                Path(entry.path).unlink(missing_ok=True)
                continue
            try:
                total += int(Path(entry.path).read_text() or 0)
            except (OSError, ValueError):
                pass
        return total

    def _shrink(self, limit: int, dry_run: bool, report: GcReport, all_unlinked: bool = True, slack: int = 0) -> None:
        """Sweep unlinked objects (all of them, else least recently used first until usage is within ``limit``, and
        then up to ``slack`` bytes below it), then evict views least recently used first until usage is within
        ``limit``."""
        _, used = self.usage()
        self._sweep_objects(dry_run, report, None if all_unlinked else max(0, used - limit), slack)
        _, used = self.usage()
        used -= report.object_bytes if dry_run else 0
        for view in self.list_views():
            if used <= limit:
                return
            objects = self._view_objects(view)
            copied = self._record(view.repo, view.commit).get("copied", 0)
            if view.locked or not self._evict(view.repo, view.commit, dry_run):
                continue
            report.views.append(view)
            used -= copied
            for path, size in objects.items():  # the objects no other view links (now, or once it is evicted)
                try:
                    links = path.stat().st_nlink - (1 if dry_run else 0)
                except FileNotFoundError:
                    continue
                if links == 1:
                    report.objects += 1
                    report.object_bytes += size
                    used -= size
                    if not dry_run:
                        path.unlink(missing_ok=True)

    def _view_objects(self, view: ViewInfo) -> dict[Path, int]:
        """The cached objects ``view``'s record names, with their sizes."""
        record = self._record(view.repo, view.commit)
        entries = {tuple(e) for prefix in record.get("prefixes", {}).values() for e in prefix.values()}
        return {self.object_path(checksum, size): size for checksum, size in entries}

    def legacy_entries(self) -> list[Path]:
        """Folders that earlier versions (a copy per commit) left directly under the cache."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.name not in OWN_ENTRIES and p.is_dir())

    def gc(self, max_bytes: int | None = None, dry_run: bool = False) -> GcReport:
        """Free the cache down to ``max_bytes`` (default: its bound): unlinked objects, dead writers' temp files,
        least-recently-used views not in use, and the folders of earlier versions."""
        report = GcReport()
        with self._exclusive():
            self._shrink(self.max_bytes if max_bytes is None else max_bytes, dry_run, report)
            for path in self.legacy_entries():
                report.legacy.append(path)
                report.legacy_bytes += _tree_bytes(path)
                if not dry_run:
                    shutil.rmtree(path, ignore_errors=True)
        return report

    def record_prefix(self, repo: str, commit: str, prefix: str, objects: Iterable[Remote], copied: int) -> None:
        """Mark ``prefix`` complete in the view's record, with its objects and the bytes copied, not linked."""
        with self._exclusive():
            record = self._record(repo, commit) or {"version": RECORD_VERSION, "repo": repo, "commit": commit}
            record.setdefault("prefixes", {})[prefix] = {obj.path: [obj.checksum, obj.size] for obj in objects}
            record["copied"] = record.get("copied", 0) + copied
            path = self._record_path(repo, commit)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{os.getpid()}-{path.name}.", suffix=".part")
            with os.fdopen(fd, "w") as out:
                json.dump(record, out, separators=(",", ":"))
            os.replace(tmp, path)


def _count_bytes(paths: Iterable[Path]) -> tuple[int, int]:
    """(files, bytes) of ``paths``; those gone meanwhile are not counted."""
    count, size = 0, 0
    for path in paths:
        try:
            size += path.stat().st_size
            count += 1
        except FileNotFoundError:
            pass
    return count, size


def _open_shared(path: Path) -> BinaryIO | None:
    """``path`` open and share-locked; None when it is gone (evicted before or while the lock was taken)."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 (returned open)
    except FileNotFoundError:
        return None
    fcntl.flock(handle, fcntl.LOCK_SH)
    if os.fstat(handle.fileno()).st_nlink == 0:
        handle.close()
        return None
    return handle


def _mark_used(path: Path) -> None:
    """Set an object's atime to now (its last use, for least-recently-used eviction); its mtime stays."""
    try:
        os.utime(path, ns=(time.time_ns(), VERIFIED_MTIME_NS))
    except OSError:
        pass  # another user's object in a shared cache: it is only evicted sooner


def _remove_unread(path: str, dry_run: bool) -> bool:
    """Remove an object unless a reader holds it share-locked (:meth:`ObjectCache.open_object`); whether it
    was (or, dry, would be) removed."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    try:
        if not dry_run:
            os.unlink(path)
        return True
    finally:
        os.close(fd)


def _tree_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total


@dataclass(frozen=True)
class RecordedObject:
    path: str
    checksum: str
    size: int


class View:
    """A commit's folder of links to cached objects, held share-locked by :meth:`ObjectCache.using_view`."""

    def __init__(self, cache: ObjectCache, repo: str, commit: str):
        self.cache = cache
        self.repo = repo
        self.commit = commit
        self.root = cache.view_dir(repo, commit)

    def recorded(self, prefix: str) -> list[RecordedObject] | None:
        """The objects of ``prefix`` when an earlier download completed it (or a wider prefix), else None."""
        prefixes = self.cache._record(self.repo, self.commit).get("prefixes", {})
        for done, objects in prefixes.items():
            if prefix.startswith(done):
                return [RecordedObject(p, c, s) for p, (c, s) in objects.items() if p.startswith(prefix)]
        return None

    def file(self, obj: Remote) -> Path:
        return self.root / obj.path

    def stale(self, objects: Iterable[Remote], index: Md5Index) -> list[Remote]:
        """The objects whose file in the view is missing or not their bytes (checked by size and md5)."""
        bad = []
        for obj in objects:
            local = self.file(obj)
            stored = self.cache.object_path(obj.checksum, obj.size)
            try:
                stat = os.stat(local)
                linked = stored.exists() and os.stat(stored).st_ino == stat.st_ino
                ok = stat.st_size == obj.size and index.md5(stored if linked else local, stat) == obj.checksum
            except FileNotFoundError:
                ok = False
            if not ok:
                bad.append(obj)
        return bad

    def place(
        self, obj: Remote, download: Callable[[Remote, Path], None], index: Md5Index, label: str | None = None
    ) -> int:
        """Put ``obj`` into the view as a link to its cached object, fetched when needed (room reserved under
        ``label``, as :meth:`ObjectCache.read_object`); returns the bytes copied because no link could be made (0 when
        linked). The object is held share-locked until it is linked, so no eviction takes it in between."""
        local = self.file(obj)
        local.parent.mkdir(parents=True, exist_ok=True)
        temp = local.parent / f".{os.getpid()}-{local.name}.{os.urandom(4).hex()}.link"
        stored = self.cache.object_path(obj.checksum, obj.size)
        for attempt in range(PLACE_TRIES):
            with self.cache.read_object(obj, download, index, label):
                try:
                    os.link(stored, temp)
                    copied = 0
                    break
                except FileNotFoundError:
                    # the name now holds another writer's copy: link() refuses the inode its rename just unlinked
                    if attempt == PLACE_TRIES - 1:
                        raise
                except OSError as error:
                    if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                        raise
                    shutil.copyfile(stored, temp)
                    copied = obj.size
                    break
        os.replace(temp, local)
        temp.unlink(missing_ok=True)  # rename() leaves both names when local is already a link to that object
        return copied


def _table(columns: list[str], rows: list[list[str]]) -> list[str]:
    """Rows aligned under upper-case headers, as lakectl prints them."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(columns, *rows)]
    return [
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [columns, *rows]
    ]


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp)) if timestamp else "-"


def format_listing(cache: ObjectCache) -> str:
    """``segmodels cache ls``: every view (least recently used first), then the totals."""
    views = cache.list_views()
    rows = [
        [
            view.repo,
            view.commit[:16],
            ",".join(prefix or "/" for prefix in view.prefixes) or "(incomplete)",
            str(view.files),
            _gb(view.size),
            _when(view.last_used),
            "yes" if view.locked else "no",
        ]
        for view in views
    ]
    lines = _table(["REPOSITORY", "COMMIT", "PREFIXES", "FILES", "SIZE", "LAST USED", "LOCKED"], rows)
    objects, used = cache.usage()
    lines.append(
        f"{len(views)} views, {objects} objects, {_gb(used)} of {_gb(cache.max_bytes)} ({MAX_GB_ENV}) in {cache.root}"
    )
    legacy = cache.legacy_entries()
    if legacy:
        size = sum(_tree_bytes(path) for path in legacy)
        lines.append(f"{len(legacy)} folders of an earlier cache layout, {_gb(size)}: segmodels cache gc removes them")
    return "\n".join(lines)


def format_gc(report: GcReport, dry_run: bool) -> str:
    """``segmodels cache gc``: what was (or would be) freed."""
    verb = "would remove" if dry_run else "removed"
    rows = [[view.repo, view.commit[:16], _gb(view.size), _when(view.last_used)] for view in report.views]
    lines = _table(["REPOSITORY", "COMMIT", "SIZE", "LAST USED"], rows) if rows else []
    lines.append(
        f"{verb} {len(report.views)} views, {report.objects} objects ({_gb(report.object_bytes)}), "
        f"{len(report.legacy)} earlier-layout folders ({_gb(report.legacy_bytes)}), {report.temp_files} temp files: "
        f"{_gb(report.freed)} {'would be ' if dry_run else ''}freed"
    )
    return "\n".join(lines)
