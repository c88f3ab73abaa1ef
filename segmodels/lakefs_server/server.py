"""The embedded lakeFS-compatible server: a threaded HTTP server over one data directory."""

from __future__ import annotations

import fcntl
import logging
import math
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from segmodels.home import (CLIENTS_LOCK_FILE, SERVER_LOCK_FILE, Credentials, ServerState, clients_connected,
                            load_or_create_credentials, remove_server_state, spawn_lock, write_server_state)

from .api import LakeFSApi
from .auth import check_authorization
from .blockstore import BlobStore
from .catalog import Catalog
from .errors import ApiError, NotFound
from .transport import Request, Response

API_PREFIX = "/api/v1"
LOCK_WAIT_SECONDS = 0.5
LOG = logging.getLogger("segmodels.lakefs_server")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "EmbeddedLakeFSServer"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        LOG.debug("%s %s", self.address_string(), format % args)

    def _dispatch(self) -> None:
        self.server.request_started()
        request = None
        try:
            raw_path, _, query = self.path.partition("?")
            if not raw_path.startswith(API_PREFIX + "/"):
                raise NotFound("path not found")
            path = raw_path[len(API_PREFIX):]
            handler, params, path_exists = self.server.api.router.match(self.command, path)
            if handler is None:
                raise ApiError("method not allowed", 405) if path_exists else NotFound("path not found")
            request = Request(self.command, query, self.headers, self.rfile, params)
            if path not in self.server.api.PUBLIC_PATHS:
                request.user = check_authorization(self.server.credentials, self.headers.get("Authorization"))
            response = handler(request)
        except ApiError as exc:
            response = Response(exc.status, {"message": exc.message})
        except Exception as exc:  # an internal error answered as lakeFS does, never as a dropped connection
            LOG.exception("internal error on %s %s", self.command, self.path)
            response = Response(500, {"message": f"internal error: {exc}"})
        finally:
            self.server.request_finished()
        if request is None or not request.body_consumed:
            has_body = self.headers.get("Content-Length") not in (None, "0") or self.headers.get("Transfer-Encoding")
            if has_body:
                self.close_connection = True
        self._send(response)

    def _send(self, response: Response) -> None:
        body = b"" if response.file is not None else response.encoded()
        self.send_response(response.status)
        length = response.length if response.file is not None else len(body)
        if response.status != 204:
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(length))
        for key, value in response.headers.items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD" or response.status == 204:
            return
        if response.file is not None:
            with open(response.file, "rb") as blob:
                self.wfile.flush()
                self.connection.sendfile(blob, response.offset, response.length)
        else:
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _dispatch


class EmbeddedLakeFSServer(ThreadingHTTPServer):
    """lakeFS-compatible API over ``data_dir`` (``lakefs.db`` + ``blobs/``), guarded by an exclusive lock."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, data_dir: Path, host: str, port: int, credentials: Credentials, fsync: bool = True):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.data_dir / SERVER_LOCK_FILE, "a+")
        if not _lock_exclusively(self._lock_file, LOCK_WAIT_SECONDS):
            self._lock_file.close()
            raise RuntimeError(f"{self.data_dir}: another embedded lakeFS server is using this data directory")
        self.credentials = credentials
        self.api = LakeFSApi(Catalog(self.data_dir / "lakefs.db", "FULL" if fsync else "NORMAL"),
                             BlobStore(self.data_dir / "blobs", fsync=fsync))
        self._activity = threading.Condition()
        self._active_requests = 0
        self._last_activity = time.monotonic()
        self._thread: threading.Thread | None = None
        self._serving = threading.Event()
        super().__init__((host, port), _Handler)

    @property
    def endpoint(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def access_key_id(self) -> str:
        return self.credentials.access_key_id

    @property
    def secret_access_key(self) -> str:
        return self.credentials.secret_access_key

    def request_started(self) -> None:
        with self._activity:
            self._active_requests += 1

    def request_finished(self) -> None:
        with self._activity:
            self._active_requests -= 1
            self._last_activity = time.monotonic()

    def idle_seconds(self) -> float:
        with self._activity:
            return 0.0 if self._active_requests else time.monotonic() - self._last_activity

    def shutdown_when_idle(self, timeout: float) -> threading.Thread:
        """Stop serving once, for ``timeout`` seconds, no request arrived and no client process was connected.

        Client processes (those that got this server's settings from ``ensure_embedded_server``) hold a shared
        lock on ``clients.lock`` while they live, so a client quiet for longer than ``timeout`` (training, or
        waiting for child steps it handed the settings to) still finds the server.

        The decision is taken holding the data directory's spawn lock, under which clients find the server and
        take their shared lock, and ``server.json`` goes before the lock does: a client that found this server
        keeps it, and a client arriving later finds no state and starts a new server.
        """
        clients = open(self.data_dir / CLIENTS_LOCK_FILE, "a+")

        def watch() -> None:
            last_client = -math.inf  # when a client was last seen connected
            reported = False  # whether this quiet spell was logged as kept up by clients
            try:
                while not self._lock_file.closed:  # until shutdown() releases the data directory
                    time.sleep(min(1.0, timeout / 10))
                    idle = self.idle_seconds()
                    if idle < timeout:
                        reported = False
                    if clients_connected(clients):
                        last_client = time.monotonic()
                        if idle >= timeout and not reported:
                            LOG.info("no request for %.0f s; staying up while client processes are connected", idle)
                            reported = True
                        continue
                    if min(idle, time.monotonic() - last_client) < timeout:
                        continue
                    with spawn_lock(self.data_dir):
                        if self.idle_seconds() < timeout or clients_connected(clients):
                            continue
                        LOG.info("idle for %.0f s with no client connected, shutting down", timeout)
                        remove_server_state(self.data_dir, os.getpid())
                        if self._serving.is_set():
                            ThreadingHTTPServer.shutdown(self)
                        return
            finally:
                clients.close()
        thread = threading.Thread(target=watch, name="lakefs-idle-watch", daemon=True)
        thread.start()
        return thread

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until :meth:`shutdown`."""
        self._serving.set()
        try:
            super().serve_forever(poll_interval)
        finally:
            self._serving.clear()

    def start_in_thread(self) -> "EmbeddedLakeFSServer":
        """Serve from a daemon thread; returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name="lakefs-server", daemon=True)
        self._thread.start()
        self._serving.wait()
        return self

    def shutdown(self) -> None:
        """Stop serving (when running) and release the socket and the data directory lock."""
        if self._serving.is_set():
            super().shutdown()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None
        self.server_close()
        if not self._lock_file.closed:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()


def create_server(data_dir, host: str = "127.0.0.1", port: int = 0, access_key_id: str | None = None,
                  secret_access_key: str | None = None, fsync: bool = True) -> EmbeddedLakeFSServer:
    """An embedded server over ``data_dir``, bound but not yet serving.

    Without keys, they are read from (or generated once into) ``data_dir/credentials.json`` (mode 0600).
    """
    data_dir = Path(data_dir)
    if (access_key_id is None) != (secret_access_key is None):
        raise ValueError("give both access_key_id and secret_access_key, or neither")
    if access_key_id is None:
        credentials = load_or_create_credentials(data_dir)
    else:
        credentials = Credentials(access_key_id, secret_access_key)
    return EmbeddedLakeFSServer(data_dir, host, port, credentials, fsync=fsync)


def _lock_exclusively(lock_file, wait: float) -> bool:
    """Take ``lock_file``'s exclusive flock, retrying for ``wait`` seconds (clients probe it for an instant)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)


def serve_until_stopped(server, data_dir: Path, idle_timeout: float = 0.0) -> None:
    """Serve in the foreground until SIGTERM, Ctrl-C or (when > 0) ``idle_timeout`` seconds without requests
    nor connected client processes, recording ``{pid, endpoint}`` in ``data_dir/server.json`` meanwhile so
    clients find the server."""
    signal.signal(signal.SIGTERM, _interrupt)
    write_server_state(data_dir, ServerState(os.getpid(), server.endpoint))
    LOG.info("serving %s on %s (pid %d)", data_dir, server.endpoint, os.getpid())
    if idle_timeout > 0:
        server.shutdown_when_idle(idle_timeout)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        remove_server_state(data_dir, os.getpid())
        server.shutdown()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
