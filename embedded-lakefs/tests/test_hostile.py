"""The embedded lakeFS server against hostile or broken clients: body caps, timeouts, a bound on connections,
strict HTTP framing, strictly typed JSON and lakeFS' name rules (``embedded-lakefs serve`` failing cleanly: see
test_command_line.py).

HTTP cases go over raw sockets. After each refused request the tests check the status, whether the connection
was closed (it must be whenever where the body ends is unknown), that the server still answers, and that no
branch head moved.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import uuid
from urllib.parse import quote, urlsplit

import pytest

from embedded_lakefs import create_server
from embedded_lakefs.transport import Limits


# -- raw HTTP ----------------------------------------------------------------------------------------------------
class Conn:
    """One client connection speaking raw bytes."""

    def __init__(self, server, timeout: float = 5.0):
        parts = urlsplit(server.endpoint)
        self.server = server
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def response(self) -> tuple[int, dict, bytes]:
        """Status, headers (lower-case names) and body of the next response."""
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError(f"connection closed before a response: {self.buffer!r}")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        length = int(headers.get("content-length", 0))
        while len(self.buffer) < length:
            if not self._fill():
                raise ConnectionError("connection closed inside a response body")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def closed(self, wait: float = 3.0) -> bool:
        """Whether the server closed the connection (EOF or reset) within ``wait`` seconds, nothing more sent."""
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
        assert not data or data.startswith(b"HTTP/1.1 5"), f"unexpected bytes after the response: {data!r}"
        return True

    def close(self) -> None:
        self.sock.close()


def auth_header(server) -> str:
    token = base64.b64encode(f"{server.access_key_id}:{server.secret_access_key}".encode()).decode()
    return f"Authorization: Basic {token}\r\n"


def head(server, method: str, target: str, extra: str = "") -> bytes:
    return (f"{method} {target} HTTP/1.1\r\nHost: test\r\n{auth_header(server)}{extra}\r\n").encode()


def request(server, method: str, target: str, body: bytes = b"", extra: str = "") -> tuple[int, dict, bytes]:
    """One request on its own connection."""
    conn = Conn(server)
    try:
        conn.send(head(server, method, target, f"Content-Length: {len(body)}\r\n{extra}") + body)
        return conn.response()
    finally:
        conn.close()


def call(server, method: str, target: str, body=None) -> tuple[int, object]:
    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    status, headers, data = request(
        server, method, "/api/v1" + target, raw, "Content-Type: application/json\r\n" if raw else ""
    )
    if headers.get("content-type") != "application/json":
        return status, data.decode()
    return status, (json.loads(data) if data else None)


def assert_healthy(server) -> None:
    """The server answers a normal request (a moment after a test, its connections may still be closing)."""
    for _ in range(10):
        conn = Conn(server)
        try:
            conn.send(b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: test\r\n\r\n")
            status = conn.response()[0]
        except ConnectionError:
            status = None
        finally:
            conn.close()
        if status != 503 and status is not None:
            break
        time.sleep(0.2)
    assert status == 204


def assert_error(status: int, body: bytes, expected: int) -> None:
    assert status == expected, body
    assert json.loads(body)["message"]


def heads(server, repo: str) -> dict:
    status, body = call(server, "GET", f"/repositories/{repo}/branches?amount=1000")
    assert status == 200
    return {b["id"]: b["commit_id"] for b in body["results"]}


# -- fixtures ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(lakefs_server):
    return lakefs_server


@pytest.fixture(scope="module")
def repo(server):
    """A repository with a commit on ``main`` and a branch ``feature`` one commit ahead (mergeable)."""
    name = f"hostile-{uuid.uuid4().hex[:10]}"
    assert call(server, "POST", "/repositories", {"name": name, "storage_namespace": f"local://{name}"})[0] == 201
    assert (
        request(
            server,
            "POST",
            f"/api/v1/repositories/{name}/branches/main/objects?path=a",
            b"a",
            "Content-Type: application/octet-stream\r\n",
        )[0]
        == 201
    )
    assert call(server, "POST", f"/repositories/{name}/branches/main/commits", {"message": "first"})[0] == 201
    assert call(server, "POST", f"/repositories/{name}/branches", {"name": "feature", "source": "main"})[0] == 201
    assert (
        request(
            server,
            "POST",
            f"/api/v1/repositories/{name}/branches/feature/objects?path=b",
            b"b",
            "Content-Type: application/octet-stream\r\n",
        )[0]
        == 201
    )
    assert call(server, "POST", f"/repositories/{name}/branches/feature/commits", {"message": "second"})[0] == 201
    return name


@pytest.fixture
def unmoved(server, repo):
    """Asserts, after the test, that no branch head of ``repo`` moved and the server still answers."""
    before = heads(server, repo)
    yield
    assert_healthy(server)
    assert heads(server, repo) == before


@pytest.fixture(scope="module")
def tight_server(tmp_path_factory):
    """A server with short timeouts and few connections, so that slow clients are quick to test."""
    limits = Limits(
        max_json_body=64 << 10,
        idle_timeout=1.0,
        header_timeout=1.0,
        body_timeout=1.0,
        max_connections=12,
        max_unauthenticated=8,
    )
    server = create_server(tmp_path_factory.mktemp("tight"), limits=limits).start_in_thread()
    yield server
    server.shutdown()


# -- body size caps ----------------------------------------------------------------------------------------------
def test_json_body_over_cap_is_413_before_reading_it(server, repo, unmoved):
    conn = Conn(server)
    conn.send(
        head(
            server,
            "POST",
            f"/api/v1/repositories/{repo}/branches/main/commits",
            "Content-Type: application/json\r\nContent-Length: 200000000\r\n",
        )
    )
    status, headers, body = conn.response()  # answered without the client sending the 200 MB
    assert_error(status, body, 413)
    assert headers.get("connection") == "close" and conn.closed()


def test_chunked_json_body_over_cap_is_413(server, repo, unmoved):
    conn = Conn(server)
    conn.send(
        head(
            server,
            "POST",
            f"/api/v1/repositories/{repo}/branches",
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n",
        )
        + b"900000\r\n"
    )
    status, _, body = conn.response()
    assert_error(status, body, 413)
    assert conn.closed()


def test_json_cap_counts_bytes_not_declared_length(tight_server):
    conn = Conn(tight_server)
    chunk = b" " * (40 << 10)
    conn.send(
        head(tight_server, "POST", "/api/v1/repositories", "Transfer-Encoding: chunked\r\n")
        + (b"%x\r\n%s\r\n" % (len(chunk), chunk)) * 2
    )
    status, _, body = conn.response()
    assert_error(status, body, 413)
    assert conn.closed()


def test_object_uploads_keep_their_own_limit(tight_server):
    """An object far above the JSON cap uploads (and the connection stays usable)."""
    name = f"big-{uuid.uuid4().hex[:8]}"
    assert call(tight_server, "POST", "/repositories", {"name": name, "storage_namespace": f"local://{name}"})[0] == 201
    data = bytes(range(256)) * (4 << 10)  # 1 MiB, 16x the tight server's JSON cap
    conn = Conn(tight_server)
    conn.send(
        head(
            tight_server,
            "POST",
            f"/api/v1/repositories/{name}/branches/main/objects?path=big",
            f"Content-Type: application/octet-stream\r\nContent-Length: {len(data)}\r\n",
        )
        + data
    )
    status, _, body = conn.response()
    assert status == 201 and json.loads(body)["size_bytes"] == len(data)
    conn.send(b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: test\r\n\r\n")
    assert conn.response()[0] == 204
    conn.close()


def test_object_upload_over_its_limit_is_413(tmp_path):
    small = create_server(tmp_path, limits=Limits(max_object_body=1000)).start_in_thread()
    try:
        assert call(small, "POST", "/repositories", {"name": "cap", "storage_namespace": "local://cap"})[0] == 201
        conn = Conn(small)
        conn.send(
            head(small, "POST", "/api/v1/repositories/cap/branches/main/objects?path=x", "Content-Length: 5000\r\n")
        )
        status, _, body = conn.response()
        assert_error(status, body, 413)
        assert conn.closed()
        assert call(small, "GET", "/repositories/cap/branches/main/diff")[1]["results"] == []
    finally:
        small.shutdown()


# -- framing: Content-Length, Transfer-Encoding, chunk sizes, header syntax -------------------------------------
SMUGGLED = b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: test\r\n\r\n"


@pytest.mark.parametrize(
    "lengths",
    [["-1"], ["abc"], ["1.5"], ["0x10"], [""], ["99999999999999999999999"], ["5", "6"], ["5, 6"], ["٣"]],
    ids=["negative", "word", "decimal", "hex", "empty", "huge", "two-headers", "two-values", "arabic-digit"],
)
def test_bad_content_length_is_400_and_closes(server, repo, unmoved, lengths):
    conn = Conn(server)
    extra = "".join(f"Content-Length: {value}\r\n" for value in lengths)
    conn.send(head(server, "POST", f"/api/v1/repositories/{repo}/branches/main/commits", extra) + SMUGGLED)
    status, headers, body = conn.response()
    assert status == 400, body
    assert conn.closed()  # and the smuggled request was not answered


def test_content_length_and_transfer_encoding_together_are_refused(server, repo, unmoved):
    conn = Conn(server)
    conn.send(
        head(
            server,
            "POST",
            f"/api/v1/repositories/{repo}/branches/main/commits",
            "Content-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        )
        + b"0\r\n\r\n"
        + SMUGGLED
    )
    status, _, body = conn.response()
    assert_error(status, body, 400)
    assert conn.closed()


@pytest.mark.parametrize("encoding", ["gzip", "gzip, chunked", "chunked, chunked", "identity"])
def test_unsupported_transfer_encoding_is_refused(server, repo, unmoved, encoding):
    conn = Conn(server)
    conn.send(
        head(server, "POST", f"/api/v1/repositories/{repo}/branches/main/commits", f"Transfer-Encoding: {encoding}\r\n")
        + b"0\r\n\r\n"
        + SMUGGLED
    )
    status, _, body = conn.response()
    assert status in (400, 501), body
    assert conn.closed()


@pytest.mark.parametrize(
    "chunks",
    [
        b"zz\r\nhello\r\n0\r\n\r\n",
        b"-5\r\nhello\r\n0\r\n\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"fffffffffffffffffffff\r\n",
        b"7fffffffffffffff\r\n",
        b"ffffffffffffffff\r\n",
        b"5\r\nhelloXX0\r\n\r\n",
        b" \r\nhello\r\n",
    ],
    ids=["non-hex", "negative", "0x-prefix", "too-many-digits", "huge", "over-int64", "no-crlf-after-data", "blank"],
)
def test_bad_chunk_size_is_400_and_closes(server, repo, unmoved, chunks):
    conn = Conn(server)
    conn.send(
        head(
            server,
            "POST",
            f"/api/v1/repositories/{repo}/branches/main/objects?path=chunked",
            "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n",
        )
        + chunks
        + SMUGGLED
    )
    status, _, body = conn.response()
    assert_error(status, body, 400)
    assert conn.closed()
    assert call(server, "GET", f"/repositories/{repo}/branches/main/diff")[1]["results"] == []


def test_good_chunked_upload_keeps_the_connection(server, repo):
    conn = Conn(server)
    conn.send(
        head(
            server,
            "POST",
            f"/api/v1/repositories/{repo}/branches/main/objects?path=ok-chunked",
            "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n",
        )
        + b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
        + SMUGGLED
    )
    status, _, body = conn.response()
    assert status == 201 and json.loads(body)["size_bytes"] == 11
    assert conn.response()[0] == 204  # the next request on the connection, where it should start
    conn.close()
    assert call(server, "PUT", f"/repositories/{repo}/branches/main", {"type": "reset"})[0] == 204


@pytest.mark.parametrize(
    "raw_head",
    [
        b"POST /api/v1/healthcheck HTTP/1.1\r\nHost: test\r\nContent-Length : 5\r\n\r\nhello",
        b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: test\r\nX-A: 1\r\n folded\r\n\r\n",
        b"GET /api/v1/healthcheck HTTP/1.1\r\n\r\n",
        b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /api/v1/health\xffcheck HTTP/1.1\r\nHost: test\r\n\r\n",
        b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: test\r\nX-A: a\x00b\r\n\r\n",
        b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: te\x00st\r\n\r\n",
        b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: test\r\nX-A: a\x01b\r\n\r\n",
        b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: test\r\nX-A: a\x1bb\r\n\r\n",
        b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: test\r\nX-A: a\x7fb\r\n\r\n",
        b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: test\r\nX-A: a\rb\r\n\r\n",
        b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: test\r\nX-\x00A: 1\r\n\r\n",
        b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: test\r\nX-\rA: 1\r\n\r\n",
        b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: test\r\nX-\xe9A: 1\r\n\r\n",
        b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: test\r\nX(A): 1\r\n\r\n",
        b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: test\r\n: 1\r\n\r\n",
        b"GET /api/v1/healthcheck HTTP/1.1\r\n X-A: 1\r\nHost: test\r\n\r\n",
        b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: test\r\nX-A: 1\r\n\tfolded\r\n\r\n",
        b"GET /api/v1/health\x00check HTTP/1.1\r\nHost: test\r\n\r\n",
        b"GET /api/v1/healthcheck?a=\x00 HTTP/1.1\r\nHost: test\r\n\r\n",
        b"GET /api/v1/healthcheck HTTP/1.1\x00\r\nHost: test\r\n\r\n",
    ],
    ids=[
        "space-before-colon",
        "obs-fold",
        "no-host",
        "two-hosts",
        "non-ascii-target",
        "nul-in-value",
        "nul-in-host",
        "ctrl-in-value",
        "esc-in-value",
        "del-in-value",
        "bare-cr-in-value",
        "nul-in-name",
        "cr-in-name",
        "non-ascii-name",
        "separator-in-name",
        "empty-name",
        "continuation-first",
        "tab-fold",
        "nul-in-target",
        "nul-in-query",
        "nul-in-version",
    ],
)
def test_malformed_request_head_is_400_and_closes(server, raw_head):
    conn = Conn(server)
    conn.send(raw_head + SMUGGLED)
    status, _, body = conn.response()
    assert_error(status, body, 400)
    assert conn.closed()
    assert_healthy(server)


def test_nul_in_the_authorization_header_is_400_not_checked(server, repo, unmoved):
    conn = Conn(server)
    conn.send(
        head(server, "GET", f"/api/v1/repositories/{repo}")
        .replace(b"\r\nHost", b"\x00\r\nHost", 1)
        .replace(b"\r\n\r\n", b"\x00\r\n\r\n")
    )
    status, _, body = conn.response()
    assert_error(status, body, 400)
    assert conn.closed()


@pytest.mark.parametrize(
    "target",
    [
        "/healthcheck?a=%00",
        "/healthcheck?a%00=1",
        "/repositories/{repo}%00",
        "/repositories/{repo}/refs/main/objects?path=a%00b",
        "/repositories/{repo}/refs/main/objects/ls?prefix=%00",
    ],
    ids=["query-value", "query-name", "path-segment", "object-path", "prefix"],
)
def test_percent_encoded_nul_is_400(server, repo, unmoved, target):
    status, _, body = request(server, "GET", "/api/v1" + target.format(repo=repo))
    assert_error(status, body, 400)
    assert "NUL" in json.loads(body)["message"]


@pytest.mark.parametrize(
    "request_line",
    [
        b"G\x00T /api/v1/healthcheck HTTP/1.1",
        b"X" * 60000 + b" / HTTP/1.1",
        b"GET / HTTP/1.1" + b"X" * 60000,
        b"GET " + b"/x " * 20000 + b"HTTP/1.1",
    ],
    ids=["nul-in-method", "long-method", "long-version", "many-words"],
)
def test_bad_request_line_is_refused_without_echoing_it(server, request_line):
    conn = Conn(server)
    conn.send(request_line + b"\r\nHost: test\r\n\r\n")
    status, _, body = conn.response()
    assert status in (400, 501), body
    assert len(json.loads(body)["message"]) <= 120
    assert conn.closed()
    assert_healthy(server)


def test_oversized_header_is_refused(server):
    conn = Conn(server)
    conn.send(b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
    status, _, body = conn.response()
    assert status in (400, 431), body
    assert conn.closed()
    assert_healthy(server)


# -- percent-encoding ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    ["a%ff", "a%fe", "a%zz", "a%4", "a%", "%c3%28", "%ed%a0%80"],
    ids=["ff", "fe", "not-hex", "short", "bare", "bad-utf8", "surrogate"],
)
def test_invalid_percent_encoding_in_query_is_400(server, repo, unmoved, path):
    status, _, body = request(
        server,
        "POST",
        f"/api/v1/repositories/{repo}/branches/main/objects?path={path}",
        b"x",
        "Content-Type: application/octet-stream\r\n",
    )
    assert_error(status, body, 400)
    assert call(server, "GET", f"/repositories/{repo}/branches/main/diff")[1]["results"] == []


@pytest.mark.parametrize("segment", ["main%ff", "main%zz", "ma%in"])
def test_invalid_percent_encoding_in_path_is_400(server, repo, unmoved, segment):
    status, _, body = request(server, "GET", f"/api/v1/repositories/{repo}/branches/{segment}")
    assert_error(status, body, 400)
    status, _, body = request(server, "GET", f"/api/v1/repositories/{repo}%ff/branches/main")
    assert_error(status, body, 400)


def test_valid_percent_encoding_still_works(server, repo):
    path = quote("dir/é ü+%.txt", safe="")
    status, _, body = request(
        server,
        "POST",
        f"/api/v1/repositories/{repo}/branches/main/objects?path={path}",
        b"x",
        "Content-Type: application/octet-stream\r\n",
    )
    assert status == 201 and json.loads(body)["path"] == "dir/é ü+%.txt"
    assert call(server, "PUT", f"/repositories/{repo}/branches/main", {"type": "reset"})[0] == 204


# -- JSON field types ----------------------------------------------------------------------------------------------
BAD_BODIES = {
    "commit": (
        "POST",
        "/branches/main/commits",
        [
            {"message": "m", "date": "2020"},
            {"message": {"a": 1}},
            {"message": ["m"]},
            {"message": 5},
            {"message": "m", "metadata": {"a": 1}},
            {"message": "m", "metadata": {"a": {"x": 1}}},
            {"message": "m", "metadata": ["a"]},
            {"message": "m", "metadata": "a"},
            {"message": "m", "date": 1.5},
            {"message": "m", "date": True},
            {"message": "m", "date": 1 << 70},
            {"message": "m", "allow_empty": "yes"},
            b'{"message": "\\ud800"}',
            b'{"message": "m", "metadata": {"\\udfff": "x"}}',
            b'{"message": "m", "date": NaN}',
            b'{"message": "m", "date": Infinity}',
            b"[1, 2]",
            b'"message"',
            b"null",
            b"\xff\xfe{}",
            b"{" * 100000,
            b"[" * 100000,
            b'{"message": "m"',
            b'{"message": "m"} x',
        ],
    ),
    "merge": (
        "POST",
        "/refs/feature/merge/main",
        [
            {"metadata": {"a": {"x": 1}}},
            {"metadata": {"a": 1}},
            {"metadata": []},
            {"message": 5},
            {"message": {"x": "y"}},
            {"strategy": 1},
            {"squash_merge": "true"},
            {"allow_empty": 1},
            [],
            b'{"message": "\\udc00"}',
        ],
    ),
    "branch": (
        "POST",
        "/branches",
        [
            {"name": 5, "source": "main"},
            {"name": "x", "source": ["main"]},
            {"name": "x", "source": "main", "force": "true"},
            {"name": {"a": 1}, "source": "main"},
            {"name": "x"},
            b'{"name": "\\ud800x", "source": "main"}',
        ],
    ),
    "tag": (
        "POST",
        "/tags",
        [{"id": {}, "ref": "main"}, {"id": "t", "ref": 1}, {"id": "t", "ref": "main", "force": 0}],
    ),
    "delete-objects": (
        "POST",
        "/branches/main/objects/delete",
        [{"paths": "a"}, {"paths": [1]}, {"paths": {"a": 1}}, {"paths": None}],  # force: a query parameter
    ),
    "reset": ("PUT", "/branches/main", [{"type": 5}, {"type": "bogus"}, {"type": "object", "path": 5}, {}]),
    "copy": (
        "POST",
        "/branches/main/objects/copy?dest_path=c",
        [{"src_path": 5}, {"src_path": ["a"]}, {"src_path": "a", "src_ref": 3}],
    ),
}


@pytest.mark.parametrize("endpoint,index", [(k, i) for k, v in BAD_BODIES.items() for i in range(len(v[2]))])
def test_wrongly_typed_json_is_400(server, repo, unmoved, endpoint, index):
    method, path, bodies = BAD_BODIES[endpoint]
    status, body = call(server, method, f"/repositories/{repo}{path}", bodies[index])
    assert status == 400, body
    assert body["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"name": 5, "storage_namespace": "local://x"},
        {"name": "typed-repo", "storage_namespace": 5},
        {"name": "typed-repo", "storage_namespace": "local://x", "read_only": "no"},
        {"name": "typed-repo", "storage_namespace": "nowhere"},
        {"name": "typed-repo", "storage_namespace": "local://x", "default_branch": 1},
    ],
)
def test_wrongly_typed_repository_creation_is_400(server, body):
    status, answer = call(server, "POST", "/repositories", body)
    assert status == 400 and answer["message"]
    assert call(server, "GET", "/repositories/typed-repo")[0] == 404


def test_log_stays_readable_by_the_sdk_after_refused_metadata(server, repo, unmoved):
    import lakefs_sdk
    from lakefs_sdk.client import LakeFSClient

    assert (
        call(server, "POST", f"/repositories/{repo}/refs/feature/merge/main", {"metadata": {"a": {"x": 1}}})[0] == 400
    )
    sdk = LakeFSClient(
        lakefs_sdk.Configuration(
            host=server.endpoint + "/api/v1", username=server.access_key_id, password=server.secret_access_key
        )
    )
    assert sdk.refs_api.log_commits(repo, "main").results


# -- names, refs, paths, amounts -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ab", "Abc", "abc\n", "a" * 64, "abc_d", "-abc", "ａｂｃ", "abc ", "ab.c"])
def test_invalid_repository_names_are_400(server, name):
    status, body = call(server, "POST", "/repositories", {"name": name, "storage_namespace": "local://n"})
    assert status == 400 and body["message"]


def test_repository_name_bounds_are_accepted(server):
    for name in (f"r{uuid.uuid4().hex[:2]}", ("r" + uuid.uuid4().hex * 2)[:63]):
        assert call(server, "POST", "/repositories", {"name": name, "storage_namespace": f"local://{name}"})[0] == 201
        assert call(server, "DELETE", f"/repositories/{name}")[0] == 204


@pytest.mark.parametrize("name", ["bad\n", "é-branch", "-x", "a b", "a/b", "a.b", "", "ß"])
def test_invalid_branch_names_are_400(server, repo, unmoved, name):
    status, body = call(server, "POST", f"/repositories/{repo}/branches", {"name": name, "source": "main"})
    assert status == 400 and body["message"]


@pytest.mark.parametrize(
    "name",
    [
        "v1.lock",
        "a..b",
        "bad\n",
        "x:y",
        "a b",
        "@",
        "t/",
        "/t",
        "x^1",
        "a//b",
        "a@{b",
        "q?",
        "s*",
        "b[",
        "c\\d",
        "end.",
        "tab\tx",
        "nb\u00a0sp",
    ],
)
def test_invalid_tag_names_are_400(server, repo, unmoved, name):
    status, body = call(server, "POST", f"/repositories/{repo}/tags", {"id": name, "ref": "main"})
    assert status == 400 and body["message"]


@pytest.mark.parametrize("name", ["v1.0", "release/2024", "x_y-z", "ü"])
def test_valid_tag_names_are_accepted(server, repo, name):
    assert call(server, "POST", f"/repositories/{repo}/tags", {"id": name, "ref": "main"})[0] == 201
    assert call(server, "DELETE", f"/repositories/{repo}/tags/{quote(name, safe='')}")[0] == 204


@pytest.mark.parametrize(
    "target",
    [
        "/repositories/Bad_Name",
        "/repositories/{repo}/branches/bad%0A",
        "/repositories/{repo}/branches/%C3%A9",
        "/repositories/{repo}/refs/a%20b/commits",
        "/repositories/{repo}/tags/a..b",
        "/repositories/{repo}/commits/a%0Ab",
    ],
)
def test_invalid_names_in_the_path_are_400(server, repo, unmoved, target):
    status, body = call(server, "GET", target.format(repo=repo))
    assert status == 400 and body["message"]


def test_object_path_length(server, repo, unmoved):
    for path, expected in (("p" * 1024, 201), ("p" * 1025, 400), ("é" * 512, 201), ("é" * 513, 400)):
        status, _, body = request(
            server,
            "POST",
            f"/api/v1/repositories/{repo}/branches/main/objects?path=" + quote(path),
            b"x",
            "Content-Type: application/octet-stream\r\n",
        )
        assert status == expected, body
    assert call(server, "PUT", f"/repositories/{repo}/branches/main", {"type": "reset"})[0] == 204


@pytest.mark.parametrize(
    "amount,expected",
    [
        ("1001", 400),
        ("-2", 400),
        ("1e3", 400),
        ("x", 400),
        ("1.0", 400),
        ("99999999999999999999", 400),
        ("-1", 200),
        ("0", 200),
        ("1000", 200),
        ("1", 200),
    ],
)
def test_amount_range_follows_the_swagger(server, repo, amount, expected):
    status, body = call(server, "GET", f"/repositories/{repo}/branches?amount={amount}")
    assert status == expected, body
    if expected == 200:
        assert len(body["results"]) == (1 if amount == "1" else 2)


# -- slow and idle clients, connection bound ----------------------------------------------------------------------
def test_half_open_connections_are_bounded_and_all_closed(tight_server):
    """Beyond the unauthenticated bound, a new connection closes the oldest half-open one (or is refused): at no
    time more threads than the bound, and every half-open connection ends by the header deadline."""
    bound = tight_server.limits.max_unauthenticated  # none of them is authenticated
    conns = [Conn(tight_server) for _ in range(bound * 3)]
    for conn in conns:
        try:
            conn.send(b"GET /api/v1/heal")  # never finished
        except OSError:
            pass
    time.sleep(0.3)
    assert sum("process_request_thread" in t.name for t in threading.enumerate()) <= bound * 2  # + being closed
    start = time.monotonic()
    for conn in conns:
        conn.sock.settimeout(4.0)
        try:
            data = conn.sock.recv(65536)
        except ConnectionResetError:  # refused before the server read what the client sent
            data = b"reset"
        assert data in (b"", b"reset") or data.startswith(b"HTTP/1.1 503"), data  # closed, nothing answered
        conn.close()
    assert time.monotonic() - start < 4.0
    assert_healthy(tight_server)


def test_trickled_request_head_hits_the_header_deadline(tight_server):
    conn = Conn(tight_server)
    start = time.monotonic()
    closed = False
    for byte in b"GET /api/v1/healthcheck HTTP/1.1\r\nX-Slow: " + b"a" * 100:
        try:
            conn.send(bytes([byte]))
        except OSError:
            closed = True
            break
        time.sleep(0.1)
        if time.monotonic() - start > 3:
            break
    assert closed or conn.closed(wait=1.0)
    assert time.monotonic() - start < 3.5
    assert_healthy(tight_server)


def test_silent_new_connection_is_closed(tight_server):
    conn = Conn(tight_server)
    start = time.monotonic()
    assert conn.closed(wait=3.0)
    assert 0.5 < time.monotonic() - start < 3.0
    assert_healthy(tight_server)


def test_idle_keep_alive_connection_is_closed(tight_server):
    conn = Conn(tight_server)
    conn.send(b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: test\r\n\r\n")
    assert conn.response()[0] == 204
    start = time.monotonic()
    assert conn.closed(wait=3.0)
    assert 0.5 < time.monotonic() - start < 3.0


def test_stalled_body_times_out(tight_server):
    name = f"stall-{uuid.uuid4().hex[:8]}"
    assert call(tight_server, "POST", "/repositories", {"name": name, "storage_namespace": f"local://{name}"})[0] == 201
    before = heads(tight_server, name)
    conn = Conn(tight_server)
    conn.send(
        head(
            tight_server,
            "POST",
            f"/api/v1/repositories/{name}/branches/main/commits",
            "Content-Type: application/json\r\nContent-Length: 100\r\n",
        )
        + b'{"message": '
    )
    conn.sock.settimeout(4.0)
    try:
        status = conn.response()[0]  # the whole response, however the bytes arrive
    except (ConnectionError, ConnectionResetError):
        status = None  # closed without an answer
    assert status in (None, 408), status
    assert conn.closed() if status else True
    assert heads(tight_server, name) == before
    assert_healthy(tight_server)
