"""Streaming reads: the objects of ``lakefs://<repo>/<commit>/<prefix>`` read on demand through the bounded cache
(:mod:`.cache`), so a data set larger than the cache can be read; an object still cached is read locally.

A :class:`StreamReader` pickles without a live client: every process (each DataLoader worker) connects on its
first read, and prefetches on a small thread pool of its own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from .cache import ObjectCache, worker_reason
from .client import LakeFS, RemoteObject, _directory_prefix
from .errors import LakeFSError
from .hashing import Md5Index
from .settings import LakeFSSettings
from .uri import LakeFSUri

INDEX_SAVE_EVERY = 256  # fetched objects between saves of the md5 index (other processes then skip hashing them)


class StreamError(LakeFSError):
    """A streamed read failed. A DataLoader worker's error is raised again in the main process with its traceback
    as the message: this keeps the one-line reason (the traceback's last line)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(worker_reason(message), status)


class StreamReader:
    """Reads the files below ``prefix`` at ``commit`` (paths relative to ``prefix``) through the cache under
    ``home``; ``objects`` is the listing, made once (:meth:`at`)."""

    def __init__(
        self,
        settings: LakeFSSettings,
        uri: LakeFSUri,
        home: Path,
        objects: dict[str, RemoteObject],
        prefetch_threads: int = 4,
    ):
        self.settings = settings
        self.uri = uri
        self.home = Path(home)
        self.objects = objects
        self.prefetch_threads = prefetch_threads
        self._reset()

    @classmethod
    def at(cls, lakefs: LakeFS, uri: LakeFSUri, prefetch_threads: int = 4) -> StreamReader:
        """A reader of ``uri`` (pinned to its commit) with ``lakefs``'s settings and home."""
        commit = lakefs.resolve_commit(uri.repo, uri.ref)
        prefix = _directory_prefix(uri.path)
        listed = {obj.path[len(prefix) :]: obj for obj in lakefs._listed_objects(uri.repo, commit, prefix)}
        pinned = LakeFSUri(uri.repo, commit, uri.path)
        return cls(lakefs.settings, pinned, lakefs.home, listed, prefetch_threads)

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._client: LakeFS | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pending: dict[str, Future] = {}  # path -> its prefetch, queued or running
        self._cache = ObjectCache(self.home / "cache")
        self._index = Md5Index(self.home / "cache")
        self._fetched = 0

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for name in ("_client", "_pool", "_pending", "_cache", "_index", "_pid", "_fetched"):
            state.pop(name)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    def _own(self) -> None:
        """Forget what a parent process left (a forked worker): clients and pools are per process."""
        if self._pid != os.getpid():
            self._reset()

    def connection(self) -> LakeFS:
        """This process's client, made on first use."""
        self._own()
        if self._client is None:
            self._client = LakeFS(self.settings, home=self.home)
        return self._client

    def list(self, folder: str) -> list[str]:
        """The files directly in ``folder`` (relative), sorted; names starting with a dot are left out."""
        folder = _directory_prefix(folder)
        return sorted(
            path
            for path in self.objects
            if path.startswith(folder) and "/" not in path[len(folder) :] and not path[len(folder) :].startswith(".")
        )

    def exists(self, path: str) -> bool:
        return path in self.objects

    def local_path(self, path: str) -> Path:
        """The verified cached file of ``path``, fetched (room reserved first) when missing or corrupt."""
        obj = self._object(path)
        self._own()
        self._join_prefetch(path)
        return self._fetch(obj)

    def _fetch(self, obj: RemoteObject) -> Path:
        cache = self._cache
        stored = cache.object_path(obj.checksum, obj.size)
        if cache.object_ok(stored, obj, self._index):
            return cache.fetch_object(obj, self._download, self._index)  # marks it used
        with cache.reserved(obj.size, self._label(obj)):
            stored = cache.fetch_object(obj, self._download, self._index)
        self._fetched += 1
        if self._fetched % INDEX_SAVE_EVERY == 0:
            self._index.save()
        return stored

    @contextmanager
    def open(self, path: str) -> Iterator[BinaryIO]:
        """``path`` open for reading from the cache (fetched when needed), held so no eviction removes it meanwhile."""
        obj = self._object(path)
        self._own()
        self._join_prefetch(path)
        with self._cache.read_object(obj, self._download, self._index, self._label(obj)) as handle:
            yield handle

    def copy(self, path: str, dest: Path) -> Path:
        """``path`` copied to the local file ``dest`` (small files: ``dataset.yaml``, ``manifest.csv``)."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self.open(path) as source, open(dest, "wb") as out:
            shutil.copyfileobj(source, out)
        return dest

    def prefetch(self, paths: Iterable[str]) -> None:
        """Fetch ``paths`` into the cache in the background (errors are left to the read that needs them)."""
        self._own()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.prefetch_threads, thread_name_prefix="segmodels-prefetch")
        for path in paths:
            queued = self._pending.get(path)
            if (queued is not None and not queued.done()) or path not in self.objects:
                continue  # a prefetch that ended before its future was recorded here leaves a done one: fetch again
            self._pending[path] = self._pool.submit(self._prefetch_one, path)

    def _join_prefetch(self, path: str) -> None:
        """A read of ``path`` while its prefetch runs waits for it instead of downloading it a second time; a
        prefetch still queued is cancelled (the read fetches it now)."""
        future = self._pending.get(path)
        if future is None:
            return
        if future.cancel():
            self._pending.pop(path, None)
        else:
            future.exception()  # waits; a failure is left to the read, which tries again and raises it

    def close(self) -> None:
        """Stop prefetching in this process: fetches not started are dropped, running ones end (each bounded by the
        retry window) before this returns, so none writes into the cache afterwards."""
        if self._pool is not None and self._pid == os.getpid():
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            self._pending.clear()

    def _prefetch_one(self, path: str) -> None:
        try:
            self._fetch(self.objects[path])
        except Exception:  # noqa: BLE001 (the read that needs it raises the reason)
            pass
        finally:
            self._pending.pop(path, None)

    def _label(self, obj: RemoteObject) -> str:
        return f"lakefs://{self.uri.repo}/{self.uri.ref}/{obj.path}"

    def _object(self, path: str) -> RemoteObject:
        try:
            return self.objects[path]
        except KeyError:
            raise StreamError(f"{self.uri}: no object {path!r} at this commit") from None

    def _download(self, obj: RemoteObject, part: Path) -> None:
        try:
            self.connection().download_object(self.uri.repo, self.uri.ref, obj, part)
        except LakeFSError as error:
            raise StreamError(str(error), error.status) from None


METADATA_FILES = ("dataset.yaml", "manifest.csv")  # read first: small, and all a local root needs


@contextmanager
def streamed_dataset(lakefs: LakeFS, uri: LakeFSUri, prefetch_threads: int = 4) -> Iterator[tuple[Path, StreamReader]]:
    """A local root holding the data set's ``dataset.yaml`` and ``manifest.csv`` (removed after the block) and the
    reader of its other files at ``uri``'s commit (its prefetching stopped after the block)."""
    reader = StreamReader.at(lakefs, uri, prefetch_threads)
    try:
        with tempfile.TemporaryDirectory(prefix="segmodels-stream-") as root:
            for name in METADATA_FILES:
                if reader.exists(name):
                    reader.copy(name, Path(root) / name)
            yield Path(root), reader
    finally:
        reader.close()  # an error (lakeFS gone) must not leave queued prefetches running on
