"""``LakeFS``: the segmodels client of lakeFS, over the official ``lakefs_sdk`` (HTTP only)."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar
from urllib.parse import quote, urlencode

import lakefs_sdk
import urllib3
from lakefs_sdk.client import LakeFSClient
from lakefs_sdk.rest import RESTClientObject

from embedded_lakefs.checksums import OverlappedMd5
from segmodels.home import segmodels_home
from segmodels.object_keys import file_and_folder
from segmodels.progress import Progress

from . import ephemeral
from .cache import ObjectCache
from .embedded import ensure_embedded_server
from .errors import LakeFSError
from .hashing import CHUNK_SIZE, Md5Index, file_chunks
from .retry import Retrier, ServerError, error_message
from .settings import LakeFSSettings
from .uri import LakeFSUri

AUTH_SETTINGS = ["basic_auth"]
DELETE_BATCH = 1000
REQUEST_KEY = "segmodels.request"  # commit / merge metadata: a unique id per request, so that a retry whose first
# try landed but whose answer was lost (a timeout, a 5xx from a proxy) finds that commit instead of failing
LANDED_SEARCH = 20  # newest commits of the branch searched for it
LIST_PAGE = 1000
RANGE_BYTES = 8 << 20  # an object of at least two such parts is downloaded as parallel byte ranges
RANGE_WORKERS = 4

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class CommitInfo:
    """A lakeFS commit."""

    id: str
    message: str
    metadata: dict
    parents: list
    creation_date: int


@dataclass(frozen=True)
class TransferStats:
    """Files and bytes transferred, files skipped because already identical, and objects deleted."""

    files: int
    bytes: int
    skipped: int
    deleted: int = 0


@dataclass
class StagedWrite:
    """An atomic write in progress: write into ``branch`` (ephemeral); ``target`` gets it all at once."""

    repo: str
    target: str
    branch: str
    commit_id: str = ""
    changed: bool = False


@dataclass(frozen=True)
class RemoteObject:
    path: str
    checksum: str
    size: int


def _safe_relative(key: str, base: str) -> str:
    relative = key[len(base) :]
    parts = relative.split("/")
    if not relative or relative.startswith("/") or "\x00" in relative or any(p in ("", ".", "..") for p in parts):
        raise LakeFSError(f"object key {key!r} cannot be stored as a local file")
    return relative


def _directory_prefix(prefix: str) -> str:
    prefix = prefix.lstrip("/")
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


class _PartFile:
    """The temp file a download writes beside ``target``, made on the first write: a download that never reaches
    the server leaves none. Threads write it at their offsets; :meth:`rename` gives it ``target``'s name, and
    leaving the block removes it unless renamed."""

    def __init__(self, target: Path):
        self.target = target
        self._fd: int | None = None
        self._name = ""
        self._lock = threading.Lock()

    def _descriptor(self) -> int:
        with self._lock:
            if self._fd is None:
                prefix = f".{self.target.name}."
                self._fd, self._name = tempfile.mkstemp(dir=self.target.parent, prefix=prefix, suffix=".part")
            return self._fd

    def write_at(self, data, offset: int) -> int:
        """Write ``data`` at ``offset``; the offset after it."""
        view, fd = memoryview(data), self._descriptor()
        while view:
            written = os.pwrite(fd, view, offset)
            offset += written
            view = view[written:]
        return offset

    def truncate(self, size: int) -> None:
        os.ftruncate(self._descriptor(), size)

    def read_at(self, offset: int, size: int) -> bytes:
        """``size`` bytes from ``offset`` (fewer only at the end of the file)."""
        return os.pread(self._descriptor(), size, offset)

    def rename(self) -> None:
        os.replace(self._name, self.target)
        self._name = ""

    def __enter__(self) -> _PartFile:
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)
        if self._name:
            Path(self._name).unlink(missing_ok=True)


class _InOrderMd5:
    """The md5 of a file's byte ranges, read back and hashed on a thread of its own in order, each as soon as it and
    every range before it have landed (:meth:`landed`): hashing overlaps the download. Leaving the block stops it."""

    def __init__(self, part: _PartFile, ranges: list[tuple[int, int]]):
        self.part, self.ranges = part, ranges
        self._landed = [threading.Event() for _ in ranges]
        self._stopped = False
        self._digest = hashlib.md5()
        self._thread = threading.Thread(target=self._hash, name="segmodels-md5", daemon=True)

    def landed(self, index: int) -> None:
        self._landed[index].set()

    def _hash(self) -> None:
        for (start, end), landed in zip(self.ranges, self._landed):
            landed.wait()
            for offset in range(start, end, CHUNK_SIZE):
                if self._stopped:
                    return
                self._digest.update(self.part.read_at(offset, min(CHUNK_SIZE, end - offset)))

    def hexdigest(self) -> str:
        return self._digest.hexdigest()

    def __enter__(self) -> _InOrderMd5:
        self._thread.start()
        return self

    def __exit__(self, failed, *_) -> None:
        if failed is not None or not all(event.is_set() for event in self._landed):
            self._stopped = True
            for event in self._landed:
                event.set()
        self._thread.join()


def _parallel(fn: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    """``fn`` over ``items`` on ``workers`` threads, results in order. The first failure is raised as soon as the
    calls already running have ended: calls not yet started are cancelled, not waited for."""
    pool = ThreadPoolExecutor(max(1, workers))
    try:
        futures = [pool.submit(fn, item) for item in items]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            if future in done and future.exception() is not None:
                raise future.exception()
        return [future.result() for future in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class _TimedRESTClient(RESTClientObject):
    """The sdk's REST client; a request that names no ``_request_timeout`` gets ``timeout`` (connect, read): the
    sdk's own default is to wait forever."""

    def __init__(self, configuration, timeout: tuple[float, float]):
        super().__init__(configuration)
        self.timeout = timeout

    def request(self, *args, **kwargs):
        if kwargs.get("_request_timeout") is None and len(args) < 8:
            kwargs["_request_timeout"] = self.timeout
        return super().request(*args, **kwargs)


class LakeFS:
    """A connection to one lakeFS server. ``sdk`` is the ``lakefs_sdk`` client everything goes through.

    Every request waits at most ``settings.connect_timeout`` to connect and ``settings.read_timeout`` for each
    socket read; failures are retried (``attempts``, exponential ``backoff``, none starting later than
    ``settings.retry_window`` after the first) and then raised as one ``LakeFSError`` naming the endpoint.
    """

    def __init__(self, settings: LakeFSSettings, home: Path | None = None, attempts: int = 5, backoff: float = 0.2):
        self.settings = settings
        configuration = lakefs_sdk.Configuration(
            host=settings.api_url, username=settings.access_key_id, password=settings.secret_access_key
        )
        configuration.connection_pool_maxsize = 32
        configuration.retries = False  # no urllib3 retries (nor their "Retrying" warnings): self._call retries
        self.sdk = LakeFSClient(configuration)
        api_client = self.sdk.objects_api.api_client  # shared by every api of the client
        timeouts = (settings.connect_timeout, settings.read_timeout)
        api_client.rest_client = _TimedRESTClient(api_client.configuration, timeouts)
        self._timeout = urllib3.Timeout(connect=settings.connect_timeout, read=settings.read_timeout)
        self.home = segmodels_home(home)
        self._call = Retrier(
            settings.endpoint, attempts=attempts, backoff=backoff, window=settings.retry_window, timeouts=timeouts
        )

    def __repr__(self) -> str:
        return f"LakeFS(endpoint={self.settings.endpoint!r})"

    # -- repositories, branches, commits ---------------------------------------------------------------------
    def ensure_repository(self, repo: str, default_branch: str = "main", storage_namespace: str | None = None) -> None:
        """Create ``repo`` unless it exists. Its storage namespace is ``<prefix>/<repo>`` where the prefix is
        ``$SEGMODELS_STORAGE_NAMESPACE`` (e.g. ``s3://lakefs-data`` on a real lakeFS) or the server's default."""
        try:
            self._call(f"get repository {repo!r}", self.sdk.repositories_api.get_repository, repo)
            return
        except LakeFSError as exc:
            if exc.status != 404:
                raise
        if storage_namespace is None:
            prefix = os.environ.get("SEGMODELS_STORAGE_NAMESPACE")
            if not prefix:
                storage = self._call("get storage config", self.sdk.config_api.get_config).storage_config
                prefix = (storage.default_namespace_prefix if storage else None) or "local://"
            storage_namespace = prefix.rstrip("/") + "/" + repo if not prefix.endswith("://") else prefix + repo
        creation = lakefs_sdk.RepositoryCreation(
            name=repo, storage_namespace=storage_namespace, default_branch=default_branch
        )
        try:
            self._call(f"create repository {repo!r}", self.sdk.repositories_api.create_repository, creation)
        except LakeFSError as exc:
            if exc.status != 409:  # created meanwhile by someone else
                raise

    def is_branch(self, repo: str, ref: str) -> bool:
        """Whether ``ref`` names a branch of ``repo`` (not a tag, commit id or nothing)."""
        try:
            self._call(f"get branch {repo}/{ref}", self.sdk.branches_api.get_branch, repo, ref)
            return True
        except LakeFSError as exc:
            if exc.status != 404:
                raise
        return False

    def ensure_branch(self, repo: str, branch: str, source_ref: str | None = None) -> None:
        """Create ``branch`` from ``source_ref`` (default: the repository's default branch) unless it exists."""
        if self.is_branch(repo, branch):
            return
        if source_ref is None:
            source_ref = self._call(
                f"get repository {repo!r}", self.sdk.repositories_api.get_repository, repo
            ).default_branch
        try:
            self._call(
                f"create branch {repo}/{branch} from {source_ref!r}",
                self.sdk.branches_api.create_branch,
                repo,
                lakefs_sdk.BranchCreation(name=branch, source=source_ref),
            )
        except LakeFSError as exc:
            if exc.status != 409:
                raise

    def delete_branch(self, repo: str, branch: str) -> None:
        self._call(f"delete branch {repo}/{branch}", self.sdk.branches_api.delete_branch, repo, branch)

    def get_commit(self, repo: str, ref: str) -> CommitInfo:
        """The commit ``ref`` (branch, tag, commit id, ``~N``/``^N`` expression) points at."""
        commit = self._call(f"resolve ref {repo}/{ref}", self.sdk.commits_api.get_commit, repo, ref)
        return CommitInfo(
            commit.id, commit.message, dict(commit.metadata or {}), list(commit.parents), commit.creation_date
        )

    def resolve_commit(self, repo: str, ref: str) -> str:
        """Commit id of ``ref``; raises ``LakeFSError`` naming the ref when unknown."""
        return self.get_commit(repo, ref).id

    def commit(self, repo: str, branch: str, message: str, metadata: dict | None = None) -> CommitInfo:
        """Commit the staged changes of ``branch`` (exactly once, also when an answer is lost and retried)."""
        request = _with_request_id(metadata)
        creation = lakefs_sdk.CommitCreation(message=message, metadata=request)
        try:
            commit = self._call(f"commit {repo}/{branch}", self.sdk.commits_api.commit, repo, branch, creation)
        except LakeFSError:
            commit = self._landed(repo, branch, request[REQUEST_KEY])
            if commit is None:
                raise
        return CommitInfo(
            commit.id, commit.message, dict(commit.metadata or {}), list(commit.parents), commit.creation_date
        )

    def merge(
        self, repo: str, source_ref: str, destination: str, message: str | None = None, metadata: dict | None = None
    ) -> str:
        """Merge ``source_ref`` into ``destination``; returns the new head commit id of ``destination``."""
        request = _with_request_id(metadata)
        merge = lakefs_sdk.Merge(message=message, metadata=request)
        try:
            return self._call(
                f"merge {repo}/{source_ref} into {destination}",
                self.sdk.refs_api.merge_into_branch,
                repo,
                source_ref,
                destination,
                merge=merge,
            ).reference
        except LakeFSError:
            landed = self._landed(repo, destination, request[REQUEST_KEY])
            if landed is None:
                raise
            return landed.id

    def _landed(self, repo: str, branch: str, request_id: str):
        """The commit of request ``request_id`` among the newest of ``branch``, or None (also when unreachable)."""
        try:
            log = self._call(f"log {repo}/{branch}", self.sdk.refs_api.log_commits, repo, branch, amount=LANDED_SEARCH)
        except LakeFSError:
            return None
        return next((c for c in log.results if (c.metadata or {}).get(REQUEST_KEY) == request_id), None)

    def has_uncommitted_changes(self, repo: str, branch: str) -> bool:
        diff = self._call(f"diff {repo}/{branch}", self.sdk.branches_api.diff_branch, repo, branch, amount=1)
        return bool(diff.results)

    # -- objects ---------------------------------------------------------------------------------------------
    def list_objects(self, repo: str, ref: str, prefix: str = "") -> Iterator[RemoteObject]:
        """Every object below ``prefix`` at ``ref``."""
        after = ""
        while True:
            page = self._call(
                f"list {repo}/{ref}/{prefix}",
                self.sdk.objects_api.list_objects,
                repo,
                ref,
                prefix=prefix,
                after=after,
                amount=LIST_PAGE,
                user_metadata=False,
            )
            for item in page.results:
                yield RemoteObject(item.path, item.checksum, item.size_bytes or 0)
            if not page.pagination.has_more:
                return
            after = page.pagination.next_offset

    def _raw_request(
        self, method: str, resource_path: str, query: dict, headers: dict, body=None, preload_content: bool = True
    ):
        """A request on the sdk's connection pool with its auth, for streamed bodies (same REST paths)."""
        api_client = self.sdk.objects_api.api_client
        headers = dict(headers)
        api_client.update_params_for_auth(headers, None, AUTH_SETTINGS, resource_path, method, None)
        url = self.settings.api_url + quote(resource_path) + "?" + urlencode(query)
        response = api_client.rest_client.pool_manager.request(
            method,
            url,
            headers=headers,
            body=body,
            preload_content=preload_content,
            redirect=False,
            retries=False,
            timeout=self._timeout,
        )
        if response.status >= 400:
            data = response.data if preload_content else response.read()
            response.release_conn()
            raise ServerError(response.status, error_message(data))
        return response

    def upload_file(
        self, repo: str, branch: str, path: str, local_file: Path, content_type: str = "application/octet-stream"
    ) -> str:
        """Upload one file (streamed) to ``path`` on ``branch``; verifies and returns the stored md5."""
        local_file = Path(local_file)

        def attempt() -> str:
            digest = OverlappedMd5()  # md5 of each chunk runs while the chunk is being sent
            headers = {
                "Content-Type": content_type,
                "Accept": "application/json",
                "Content-Length": str(local_file.stat().st_size),
            }
            response = self._raw_request(
                "POST",
                f"/repositories/{repo}/branches/{branch}/objects",
                {"path": path},
                headers,
                body=file_chunks(local_file, digest),
            )
            stats = lakefs_sdk.ObjectStats.from_json(response.data.decode())
            if stats.checksum != digest.hexdigest():
                raise LakeFSError(
                    f"lakeFS {self.settings.endpoint}: upload {local_file} to {repo}/{branch}/{path}: "
                    f"server checksum {stats.checksum} differs from local {digest.hexdigest()}"
                )
            return stats.checksum

        return self._call(f"upload {local_file} to {repo}/{branch}/{path}", attempt)

    def download_object(
        self, repo: str, ref: str, obj: RemoteObject, local_file: Path, workers: int = RANGE_WORKERS
    ) -> None:
        """Download ``obj`` to ``local_file`` atomically, verifying size and md5 checksum. An object of at least two
        ``RANGE_BYTES`` parts is fetched as byte ranges on ``workers`` threads, each range retried on its own."""
        local_file = Path(local_file)
        local_file.parent.mkdir(parents=True, exist_ok=True)
        what = f"download {repo}/{ref}/{obj.path}"
        with _PartFile(local_file) as part:
            if workers > 1 and obj.size >= 2 * RANGE_BYTES:
                size, md5 = self._fetch_ranges(what, repo, ref, obj, part, workers)
            else:
                size, md5 = self._call(what, self._fetch_whole, repo, ref, obj, part)
            if size != obj.size or md5 != obj.checksum:
                raise LakeFSError(
                    f"lakeFS {self.settings.endpoint}: {what}: got {size} bytes md5 {md5}, expected {obj.size} "
                    f"bytes md5 {obj.checksum}"
                )
            part.rename()

    def _object_response(self, repo: str, ref: str, path: str, byte_range: tuple[int, int] | None = None):
        headers = {"Accept": "application/octet-stream"}
        if byte_range is not None:
            headers["Range"] = f"bytes={byte_range[0]}-{byte_range[1] - 1}"
        query = {"path": path}
        return self._raw_request(
            "GET", f"/repositories/{repo}/refs/{ref}/objects", query, headers, preload_content=False
        )

    def _fetch_whole(self, repo: str, ref: str, obj: RemoteObject, part: _PartFile) -> tuple[int, str]:
        """One GET of the whole object into ``part`` (from its start): (bytes, md5), the md5 of each chunk computed
        while it is written."""
        response = self._object_response(repo, ref, obj.path)
        try:
            digest, size = OverlappedMd5(), 0
            part.truncate(0)
            for chunk in response.stream(CHUNK_SIZE):
                digest.update(chunk)
                size = part.write_at(chunk, size)
            digest.wait()
            return size, digest.hexdigest()
        finally:
            response.release_conn()

    def _fetch_ranges(
        self, what: str, repo: str, ref: str, obj: RemoteObject, part: _PartFile, workers: int
    ) -> tuple[int, str]:
        """``obj`` into ``part`` as ``RANGE_BYTES`` ranges on ``workers`` threads (a range that fails is retried
        alone), hashed in order as they land; (bytes, md5) of what landed. A server that answers a range with the
        whole object (no 206) gets one whole GET instead."""
        ranges = [(start, min(start + RANGE_BYTES, obj.size)) for start in range(0, obj.size, RANGE_BYTES)]
        hashing = _InOrderMd5(part, ranges)

        def fetch(index: int) -> bool:
            start, end = ranges[index]
            landed = self._call(
                f"{what} bytes {start}-{end - 1}", self._fetch_range, repo, ref, obj, part, ranges[index]
            )
            if landed:
                hashing.landed(index)
            return landed

        with hashing:
            whole = all(_parallel(fetch, range(len(ranges)), min(workers, len(ranges))))
        if not whole:
            return self._call(what, self._fetch_whole, repo, ref, obj, part)
        return ranges[-1][1], hashing.hexdigest()

    def _fetch_range(
        self, repo: str, ref: str, obj: RemoteObject, part: _PartFile, byte_range: tuple[int, int]
    ) -> bool:
        """One range written at its offset in ``part``; False when the server ignored the range (answered 200)."""
        start, end = byte_range
        response = self._object_response(repo, ref, obj.path, byte_range)
        try:
            if response.status != 206:
                response.close()  # its body (the whole object) is not read: the connection is not reused
                return False
            offset = start
            for chunk in response.stream(CHUNK_SIZE):
                offset = part.write_at(memoryview(chunk)[: end - offset], offset)
            if offset != end:  # a body cut short: retried as a broken connection is
                raise urllib3.exceptions.ProtocolError(
                    f"range {start}-{end - 1}: got {offset - start} of {end - start} bytes"
                )
            return True
        finally:
            response.release_conn()

    def delete_objects(self, repo: str, branch: str, paths: list[str]) -> None:
        """Delete ``paths`` on ``branch``; lakeFS answers a refused path (a protected branch, a read-only
        repository) inside a 200, so any such refusal is raised here, naming the first path and the count."""
        for start in range(0, len(paths), DELETE_BATCH):
            batch = lakefs_sdk.PathList(paths=paths[start : start + DELETE_BATCH])
            what = f"delete objects on {repo}/{branch}"
            answer = self._call(what, self.sdk.objects_api.delete_objects, repo, branch, batch)
            refused = list(answer.errors or []) if answer is not None else []
            if refused:
                first = refused[0]
                raise LakeFSError(
                    f"{what}: {len(refused)} refused, first {str(first.path)[:80]!r}: "
                    f"{first.message} ({first.status_code})"
                )

    # -- directories -----------------------------------------------------------------------------------------
    def upload_directory(
        self, repo: str, branch: str, local_dir, prefix: str = "", workers: int = 8, delete_missing: bool = False
    ) -> TransferStats:
        """Upload every file below ``local_dir`` to ``prefix/relative/path`` in parallel.

        Objects whose checksum already matches are skipped; with ``delete_missing`` objects below ``prefix``
        without a local file are deleted. Changes are staged on ``branch``, not committed.
        """
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise LakeFSError(f"upload to lakefs://{repo}/{branch}/{prefix}: {local_dir} is not a directory")
        prefix = _directory_prefix(prefix)
        local_files = {
            prefix + p.relative_to(local_dir).as_posix(): p for p in sorted(local_dir.rglob("*")) if p.is_file()
        }
        remote = {obj.path: obj for obj in self.list_objects(repo, branch, prefix)}
        index = Md5Index(self.home / "cache")
        progress = Progress(f"upload to lakefs://{repo}/{branch}/{prefix}", len(local_files), "file")

        def sync(item: tuple[str, Path]) -> tuple[int, int]:
            key, path = item
            existing = remote.get(key)
            stat = path.stat()
            if existing is not None and existing.size == stat.st_size and existing.checksum == index.md5(path, stat):
                progress.update()
                return 0, 0
            checksum = self.upload_file(repo, branch, key, path)
            after = path.stat()
            if (after.st_size, after.st_mtime_ns) == (stat.st_size, stat.st_mtime_ns):
                index.record(path, stat, checksum)
            progress.update()
            return 1, stat.st_size

        try:
            with progress:
                results = _parallel(sync, local_files.items(), workers)
        finally:
            index.save()
        uploaded = sum(r[0] for r in results)
        stale = sorted(set(remote) - set(local_files)) if delete_missing else []
        self.delete_objects(repo, branch, stale)
        return TransferStats(
            files=uploaded, bytes=sum(r[1] for r in results), skipped=len(results) - uploaded, deleted=len(stale)
        )

    def download_prefix(self, repo: str, ref: str, prefix: str = "", dest=None, workers: int = 8) -> Path:
        """Download ``prefix`` at ``ref``'s commit into ``<home>/cache/views/<repo>/<commit_id>/<prefix>``, a view
        of links to objects cached once by checksum (:mod:`.cache`); with ``dest``, the view is then copied to
        ``dest``, which is returned. The view is not locked once this returns: :meth:`using_prefix` holds it."""
        with self.using_prefix(repo, ref, prefix, workers) as folder:
            if dest is None:
                return folder
            dest = Path(dest)
            shutil.copytree(folder, dest, dirs_exist_ok=True, copy_function=shutil.copyfile)  # writable copies
            return dest

    @contextmanager
    def using_prefix(self, repo: str, ref: str, prefix: str = "", workers: int = 8) -> Iterator[Path]:
        """The local folder of ``prefix`` at ``ref``'s commit, share-locked (never evicted) while the block runs.

        Objects already cached (by any commit, path or repository) are linked, not downloaded; every file is
        checked against its md5 (cheaply, through the md5 index) and a corrupt one fetched again."""
        commit_id = self.resolve_commit(repo, ref)
        prefix = _directory_prefix(prefix)
        cache = ObjectCache(self.home / "cache")
        with cache.using_view(repo, commit_id) as view:
            index = Md5Index(self.home / "cache")
            try:
                recorded = view.recorded(prefix)
                objects = self._listed_objects(repo, commit_id, prefix) if recorded is None else recorded
                stale = view.stale(objects, index)
                copied = self._fill_view(cache, view, prefix, stale, index, workers) if stale else 0
                if stale or recorded is None:
                    cache.record_prefix(repo, commit_id, prefix, objects, copied)
            finally:
                index.save()
            folder = view.root / prefix if prefix else view.root
            folder.mkdir(parents=True, exist_ok=True)
            yield folder

    def _listed_objects(self, repo: str, commit_id: str, prefix: str) -> list[RemoteObject]:
        objects = list(self.list_objects(repo, commit_id, prefix))
        clash = file_and_folder(obj.path for obj in objects)
        if clash:
            raise LakeFSError(
                f"lakefs://{repo}/{commit_id}/{prefix}: object {clash[0][:80]!r} is also the folder "
                f"of {clash[1][:80]!r}; both cannot be files: delete one of them"
            )
        for obj in objects:
            _safe_relative(obj.path, "")
        return objects

    def _fill_view(self, cache: ObjectCache, view, prefix: str, objects: list, index: Md5Index, workers: int) -> int:
        """Place ``objects`` into ``view``: each object not cached is downloaded once, in room reserved for them all
        (given back object by object as each is linked into the view), then the other paths are linked. Returns
        the bytes copied where no link could be made."""
        missing = {}
        for obj in objects:
            if not cache.object_ok(cache.object_path(obj.checksum, obj.size), obj, index):
                missing[(obj.checksum, obj.size)] = obj
        total = sum(obj.size for obj in missing.values())
        progress = Progress(f"download lakefs://{view.repo}/{view.commit[:12]}/{prefix}", total, "MB", scale=1e-6)
        download = functools.partial(self.download_object, view.repo, view.commit)
        label = f"lakefs://{view.repo}/{view.commit}/{prefix}"
        with cache.reserved(total, label) as landed, progress:

            def fetch(obj) -> int:
                copied = view.place(obj, download, index)  # in the room reserved above
                landed(obj.size)
                progress.update(obj.size)
                return copied

            copied = sum(_parallel(fetch, missing.values(), workers))
        fetched = {id(obj) for obj in missing.values()}
        rest = [obj for obj in objects if id(obj) not in fetched]  # cached: linked (fetched again if evicted since)
        return copied + sum(_parallel(lambda obj: view.place(obj, download, index, label), rest, workers))

    # -- atomic writes ---------------------------------------------------------------------------------------
    @contextmanager
    def atomic_write(self, repo: str, branch: str, message: str, metadata: dict | None = None) -> Iterator[StagedWrite]:
        """Write into an ephemeral branch; on success commit there and merge into ``branch`` in one step.

        The ephemeral branch is named after this process (:mod:`segmodels.versioning.ephemeral`), so that a
        later write to ``branch`` can delete what a killed writer left (:meth:`remove_stale_ephemeral_branches`).
        """
        head = self.resolve_commit(repo, branch)
        ephemeral_branch = ephemeral.EphemeralBranch.new(branch).name
        ephemeral.mark_open(ephemeral_branch)  # before it exists: no clean-up here may take it for stale
        try:
            self._call(
                f"create branch {repo}/{ephemeral_branch}",
                self.sdk.branches_api.create_branch,
                repo,
                lakefs_sdk.BranchCreation(name=ephemeral_branch, source=head),
            )
            self.remove_stale_ephemeral_branches(repo, branch)
            staged = StagedWrite(repo=repo, target=branch, branch=ephemeral_branch, commit_id=head)
            try:
                yield staged
                if self.has_uncommitted_changes(repo, ephemeral_branch):
                    self.commit(repo, ephemeral_branch, message, metadata)
                    staged.commit_id = self.merge(repo, ephemeral_branch, branch, message=message, metadata=metadata)
                    staged.changed = True
                else:
                    staged.commit_id = self.resolve_commit(repo, branch)
            finally:
                try:
                    self.delete_branch(repo, ephemeral_branch)
                except LakeFSError:
                    pass  # the original error (if any) matters more; the next write to the branch deletes it
        finally:
            ephemeral.mark_closed(ephemeral_branch)

    def remove_stale_ephemeral_branches(self, repo: str, target: str) -> list[str]:
        """Delete the ephemeral branches of atomic writes into ``target`` whose writer is gone (a process of this
        host that died or whose write here has ended) or, when that cannot be told, that are older than
        ``settings.ephemeral_max_age``; never one of a writer known alive. Best effort: failures are logged.
        Returns the names deleted."""
        now, removed = time.time(), []
        key = ephemeral.target_key(target)
        try:
            names = list(self._branch_names(repo, ephemeral.name_prefix(target)))
        except LakeFSError as exc:
            log.warning("not cleaning up ephemeral branches of %s/%s: %s", repo, target, exc)
            return removed
        for name in names:
            parsed = ephemeral.EphemeralBranch.parse(name)
            if parsed is None or parsed.target_key != key:
                continue
            if not parsed.is_stale(now, self.settings.ephemeral_max_age, ephemeral.is_open(name)):
                continue
            try:
                self.delete_branch(repo, name)
            except LakeFSError as exc:
                if exc.status != 404:  # 404: deleted meanwhile by another clean-up
                    log.warning("could not delete stale ephemeral branch %s/%s: %s", repo, name, exc)
                continue
            log.info("deleted ephemeral branch %s/%s left by a writer that is gone", repo, name)
            removed.append(name)
        return removed

    def _branch_names(self, repo: str, prefix: str) -> Iterator[str]:
        after = ""
        while True:
            page = self._call(
                f"list branches {repo}/{prefix}*",
                self.sdk.branches_api.list_branches,
                repo,
                prefix=prefix,
                after=after,
                amount=LIST_PAGE,
            )
            for ref in page.results:
                yield ref.id
            if not page.pagination.has_more:
                return
            after = page.pagination.next_offset

    def commit_directory(
        self,
        repo: str,
        branch: str,
        local_dir,
        path: str,
        message: str,
        metadata: dict | None = None,
        source_ref: str | None = None,
    ) -> LakeFSUri:
        """Make ``lakefs://repo/branch/path`` hold exactly the files of ``local_dir`` in one atomic merge
        (``branch`` is created from ``source_ref`` when given and new); returns the URI pinned to the commit."""
        path = path.strip("/")
        if source_ref is not None:
            self.ensure_branch(repo, branch, source_ref=source_ref)
        with self.atomic_write(repo, branch, message, metadata=metadata) as write:
            self.upload_directory(repo, write.branch, local_dir, prefix=path, delete_missing=True)
        return LakeFSUri(repo, write.commit_id, path)


def connect(settings: LakeFSSettings | None = None, home: Path | None = None) -> LakeFS:
    """A client for ``settings``, else the environment / ``~/.lakectl.yaml``, else the embedded server."""
    settings = settings or LakeFSSettings.from_environment() or ensure_embedded_server(home)
    return LakeFS(settings, home=home)


def _with_request_id(metadata: dict | None) -> dict[str, str]:
    """Commit metadata as strings, with a new ``REQUEST_KEY``."""
    return {**{k: str(v) for k, v in (metadata or {}).items()}, REQUEST_KEY: uuid.uuid4().hex}
