"""The embedded lakeFS-compatible server: a threaded HTTP server over one data directory."""

from __future__ import annotations

import email.errors
import fcntl
import json
import logging
import math
import os
import re
import signal
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .api import LakeFSApi
from .auth import check_authorization
from .blockstore import BlobStore
from .catalog import Catalog
from .connections import Connections
from .datadir import (
    CLIENTS_LOCK_FILE,
    SERVER_LOCK_FILE,
    Credentials,
    ServerState,
    clients_connected,
    load_or_create_credentials,
    remove_server_state,
    spawn_lock,
    write_server_state,
)
from .errors import ApiError, NotFound
from .s3 import S3Gateway
from .transport import BodyFraming, Limits, Request, Response, body_framing

API_PREFIX = "/api/v1"  # other paths are S3 gateway requests
S3_UPLOADS_DIR = "s3-uploads"  # multipart uploads in progress, in the data directory
LOCK_WAIT_SECONDS = 0.5
LINGER_SECONDS = 1.0  # closing after an error: how long to drain what the client still sends
LINGER_BYTES = 1 << 20
LOG = logging.getLogger("embedded_lakefs")
_REQUEST_TARGET = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces or control characters
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # in a header value: all but horizontal tab
_HEADER_DEFECTS = (
    email.errors.MissingHeaderBodySeparatorDefect,
    email.errors.InvalidHeaderDefect,  # no name
    email.errors.FirstHeaderLineIsContinuationDefect,
)  # lines the parser drops
METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "HEAD"})
MAX_ERROR_MESSAGE = 120  # characters of an error message (the stdlib's quote the request line)
_REFUSAL_BODY = json.dumps({"message": "too many connections, retry later"}).encode()
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: " + str(len(_REFUSAL_BODY)).encode() + b"\r\n\r\n" + _REFUSAL_BODY
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: EmbeddedLakeFSServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        LOG.debug("%s %s", self.address_string(), format % args)

    def finish(self) -> None:
        super().finish()
        if self.close_connection:
            self._linger()

    def _linger(self) -> None:
        """Half-close, then read and drop what the client still sends (briefly): closing a socket with unread
        bytes sends a reset, which can destroy the error response before the client reads it."""
        sock = self.connection
        try:
            sock.shutdown(socket.SHUT_WR)
            deadline, drained = time.monotonic() + LINGER_SECONDS, 0
            while drained < LINGER_BYTES:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                sock.settimeout(left)
                data = sock.recv(65536)
                if not data:
                    break
                drained += len(data)
        except OSError:
            pass

    def handle_one_request(self) -> None:
        """Read a request's head within ``header_timeout``: on a new connection counted from the connection, on
        a kept-alive one from the request's first byte, which must come within ``idle_timeout``."""
        limits, connections = self.server.limits, self.server.connections
        self.connection.settimeout(None)  # the watchdog bounds the wait and the head
        first = not hasattr(self, "state")
        if first:
            self.state = connections.get(self.connection)
        connections.wait_head(self.state, limits.header_timeout if first else limits.idle_timeout, idle=not first)
        if not first:
            try:
                if not self.rfile.peek(1):
                    self.close_connection = True
                    return
            except OSError:
                self.close_connection = True
                return
            connections.wait_head(self.state, limits.header_timeout)
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        finally:
            connections.busy(self.state)

    def parse_request(self) -> bool:
        ok = super().parse_request()
        in_time = self.server.connections.busy(self.state)
        self.connection.settimeout(self.server.limits.body_timeout)  # bodies: no progress for this long ends them
        if not in_time:  # the head was cut off by its deadline: never act on part of a request
            self.close_connection = True
            return False
        if not ok:
            return False
        problem = None
        payload = self.headers.get_payload()  # header lines the parser could not read land in the "payload"
        if (isinstance(payload, str) and payload) or any(isinstance(d, _HEADER_DEFECTS) for d in self.headers.defects):
            problem = "malformed request header"
        elif any("\r" in value or "\n" in value for value in self.headers.values()):
            problem = "malformed request header (line folding)"
        elif not all(_HEADER_NAME.fullmatch(name) for name in self.headers):
            problem = "malformed request header name"
        elif any(_CONTROL.search(value) for value in self.headers.values()):
            problem = "malformed request header value (control character)"
        elif self.command not in METHODS:
            self.send_error(501, "unsupported method")
            return False
        elif not _REQUEST_TARGET.fullmatch(self.path):
            problem = "malformed request target"
        elif self.request_version != "HTTP/1.0" and len(self.headers.get_all("Host") or []) != 1:
            problem = "missing or repeated Host header"
        if problem:
            self.send_error(400, problem)
            return False
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors found while parsing (before any handler) as lakeFS-style JSON, closing the connection."""
        self.close_connection = True
        if message and len(message) > MAX_ERROR_MESSAGE:
            message = message[: MAX_ERROR_MESSAGE - 3] + "..."
        if self.request_version not in ("HTTP/1.0", "HTTP/1.1"):
            self.request_version = "HTTP/1.1"  # answer with a status line even to an unparsable request line
        body = json.dumps({"message": message or HTTPStatus(code).phrase}).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            pass

    def _dispatch(self) -> None:
        self.server.request_started()
        request = None
        framing = BodyFraming()
        framing_known = False
        try:
            framing = body_framing(self.headers)
            framing_known = True
            raw_path, _, query = self.path.partition("?")
            if not raw_path.startswith(API_PREFIX + "/"):  # the S3 gateway
                request = Request(self.command, query, self.headers, self.rfile, {}, framing, self.server.limits)
                if framing.has_body:
                    self.server.connections.read_body(self.state, request)
                authenticated = lambda: self._authenticated(framing.has_body)  # noqa: E731
                response = self.server.gateway.handle(request, raw_path, query, authenticated)
            else:
                path = raw_path[len(API_PREFIX) :]
                handler, params, path_exists = self.server.api.router.match(self.command, path)
                if handler is None:
                    raise ApiError("method not allowed", 405) if path_exists else NotFound("path not found")
                request = Request(self.command, query, self.headers, self.rfile, params, framing, self.server.limits)
                if framing.has_body:
                    self.server.connections.read_body(self.state, request)
                if path not in self.server.api.PUBLIC_PATHS:
                    request.user = check_authorization(self.server.credentials, self.headers.get("Authorization"))
                    self._authenticated(framing.has_body)
                self.server.api.check_params(params)
                response = handler(request)
        except ApiError as exc:
            response = Response(exc.status, {"message": exc.message})
        except ConnectionError:  # the client went away mid-request
            self.close_connection = True
            return
        except Exception as exc:  # an internal error answered as lakeFS does, never as a dropped connection
            LOG.exception("internal error on %s %s", self.command, self.path)
            response = Response(500, {"message": f"internal error: {exc}"})
        finally:
            self.server.connections.busy(self.state)
            self.server.request_finished()
        if not framing_known or (framing.has_body and (request is None or not request.body_complete)):
            self.close_connection = True  # where this request's body ends (so the next request starts) is unknown
        try:
            self._send(response)
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    def _authenticated(self, has_body: bool) -> None:
        """Move this connection to the authenticated pool; when it is full, a request without a body is answered
        from the unauthenticated place it holds (then closed), one with a body is refused."""
        if not self.server.connections.authenticate(self.state):
            self.close_connection = True
            if has_body:
                raise ApiError("too many connections, retry later", 503)

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
    request_queue_size = 128

    def __init__(
        self,
        data_dir: Path,
        host: str,
        port: int,
        credentials: Credentials,
        fsync: bool = True,
        limits: Limits | None = None,
    ):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.data_dir / SERVER_LOCK_FILE, "a+")  # noqa: SIM115 (held while serving)
        if not _lock_exclusively(self._lock_file, LOCK_WAIT_SECONDS):
            self._lock_file.close()
            raise RuntimeError(f"{self.data_dir}: another embedded lakeFS server is using this data directory")
        try:
            self.credentials = credentials
            self.limits = limits or Limits()
            blobs = BlobStore(self.data_dir / "blobs", fsync=fsync)
            blobs.remove_interrupted_uploads()
            self.api = LakeFSApi(Catalog(self.data_dir / "lakefs.db", "FULL" if fsync else "NORMAL"), blobs)
            self.gateway = S3Gateway(self.api.catalog, blobs, credentials, self.data_dir / S3_UPLOADS_DIR)
            self._activity = threading.Condition()
            self._active_requests = 0
            self._last_activity = time.monotonic()
            self._thread: threading.Thread | None = None
            self._serving = threading.Event()
            super().__init__((host, port), _Handler)
        except BaseException:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            raise
        self.connections = Connections(self.limits)

    def process_request(self, request, client_address) -> None:
        """A thread per connection, in bounded pools (see :mod:`~.connections`): with no place, 503 and close."""
        state = self.connections.admit(request)
        if state is None:
            LOG.warning(
                "refusing a connection from %s: no place among %d connections",
                client_address,
                self.limits.max_connections,
            )
            try:
                request.setblocking(False)
                request.send(_REFUSAL)
            except OSError:
                pass
            self.connections.close_later(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.connections.release(state)
            raise

    def process_request_thread(self, request, client_address) -> None:
        state = self.connections.get(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release(state)

    def handle_error(self, request, client_address) -> None:
        LOG.debug("error on a connection from %s", client_address, exc_info=True)

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
        clients = open(self.data_dir / CLIENTS_LOCK_FILE, "a+")  # noqa: SIM115 (the watcher thread holds it)

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

    def start_in_thread(self) -> EmbeddedLakeFSServer:
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
        self.connections.stop()
        if not self._lock_file.closed:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()


def create_server(
    data_dir,
    host: str = "127.0.0.1",
    port: int = 0,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    fsync: bool = True,
    limits: Limits | None = None,
) -> EmbeddedLakeFSServer:
    """An embedded server over ``data_dir``, bound but not yet serving.

    Without keys, they are read from (or generated once into) ``data_dir/credentials.json`` (mode 0600).
    ``limits`` bounds body sizes, timeouts and open connections (see :class:`~.transport.Limits`).
    """
    data_dir = Path(data_dir)
    if (access_key_id is None) != (secret_access_key is None):
        raise ValueError("give both access_key_id and secret_access_key, or neither")
    if access_key_id is None:
        credentials = load_or_create_credentials(data_dir)
    else:
        credentials = Credentials(access_key_id, secret_access_key)
    return EmbeddedLakeFSServer(data_dir, host, port, credentials, fsync=fsync, limits=limits)


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
