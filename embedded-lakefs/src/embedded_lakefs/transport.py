"""HTTP plumbing: requests with streamed bodies (plain, chunked, multipart), responses, routing."""

from __future__ import annotations

import email.utils
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import parse_qs, unquote_to_bytes

from .errors import ApiError, BadRequest, PayloadTooLarge
from .validation import check_amount, parse_json_object

CHUNK_SIZE = 4 << 20  # body reads: large enough that per-chunk Python overhead vanishes
MAX_LINE = 65536  # chunk-size and trailer lines
MAX_TRAILERS = 100
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r?\n")
_CONTENT_LENGTH = re.compile(r"[0-9]{1,19}")
_INTEGER = re.compile(r"[-+]?[0-9]{1,19}")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


@dataclass(frozen=True)
class Limits:
    """What the server accepts from its clients; every value can be given to ``create_server`` (how the
    connection limits act together: :mod:`~.connections`)."""

    max_json_body: int = 8 << 20  # bytes of a JSON request body (413 beyond)
    max_object_body: int = 5 << 40  # bytes of an uploaded object (S3's largest object; 413 beyond)
    idle_timeout: float = 60.0  # seconds a kept-alive connection may wait for its next request
    header_timeout: float = 20.0  # seconds for a request line and headers (a new connection's from connecting)
    body_timeout: float = 60.0  # seconds without a byte received or sent while a body moves
    body_deadline: float = 30.0  # seconds for a request body, plus 1 s per min_body_rate bytes received (408)
    min_body_rate: int = 16 << 10  # bytes/s
    max_connections: int = 160  # open connections, both pools; more are answered 503 and closed
    max_unauthenticated: int = 32  # of which not (yet) authenticated: new ones and public requests

    def __post_init__(self):
        if not 0 < self.max_unauthenticated < self.max_connections:
            raise ValueError(
                f"max_unauthenticated ({self.max_unauthenticated}) must be between 1 and "
                f"max_connections - 1 ({self.max_connections - 1})"
            )
        if self.min_body_rate <= 0 or self.body_deadline <= 0:
            raise ValueError("body_deadline and min_body_rate must be positive")


@dataclass(frozen=True)
class BodyFraming:
    """How a request's body is delimited: ``chunked``, else ``length`` bytes (0: no body)."""

    chunked: bool = False
    length: int = 0

    @property
    def has_body(self) -> bool:
        return self.chunked or self.length > 0


def body_framing(headers) -> BodyFraming:
    """The framing that ``Content-Length`` / ``Transfer-Encoding`` announce; 400 (501) for anything ambiguous.

    Both headers at once (request smuggling), several different lengths, or a length that is not a plain
    decimal number are refused: the connection must then be closed, as where the body ends is unknown."""
    encodings = headers.get_all("Transfer-Encoding") or []
    lengths = headers.get_all("Content-Length") or []
    if encodings:
        if lengths:
            raise BadRequest("invalid request: both Content-Length and Transfer-Encoding")
        codings = [c.strip().lower() for value in encodings for c in value.split(",")]
        if codings != ["chunked"]:
            raise ApiError(f"unsupported transfer encoding: {', '.join(encodings)!r}", 501)
        return BodyFraming(chunked=True)
    if not lengths:
        return BodyFraming()
    values = {v.strip() for value in lengths for v in value.split(",")}
    if len(values) != 1:
        raise BadRequest("invalid request: conflicting Content-Length values")
    value = values.pop()
    if not _CONTENT_LENGTH.fullmatch(value) or int(value) > (1 << 63) - 1:
        raise BadRequest(f"invalid request: bad Content-Length {value!r}")
    return BodyFraming(length=int(value))


def decode_component(text: str, what: str = "path") -> str:
    """Percent-decode ``text`` strictly: every ``%`` starts two hex digits and the bytes are UTF-8."""
    if _BAD_ESCAPE.search(text):
        raise BadRequest(f"invalid URL escape in {what}")
    try:
        decoded = unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"invalid UTF-8 in {what}") from None
    if "\x00" in decoded:
        raise BadRequest(f"invalid NUL byte (%00) in {what}")
    return decoded


def parse_query(query: str) -> dict[str, list[str]]:
    """Query parameters, strictly decoded (see :func:`decode_component`); 400 for a bad escape, UTF-8 or NUL."""
    if _BAD_ESCAPE.search(query):
        raise BadRequest("invalid URL escape in query")
    try:
        params = parse_qs(query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("invalid UTF-8 in query") from None
    if any("\x00" in name or any("\x00" in value for value in values) for name, values in params.items()):
        raise BadRequest("invalid NUL byte (%00) in query")
    return params


class Request:
    """One API call: path parameters, query, headers and a body read on demand."""

    def __init__(
        self,
        method: str,
        query: str,
        headers,
        rfile,
        params: dict[str, str],
        framing: BodyFraming | None = None,
        limits: Limits | None = None,
    ):
        self.method = method
        self.query = parse_query(query)
        self.headers = headers
        self.rfile = rfile
        self.params = params
        self.framing = framing if framing is not None else body_framing(headers)
        self.limits = limits or Limits()
        self.user: str | None = None
        self.body_consumed = False  # reading started
        self.body_complete = not self.framing.has_body  # the whole body was read: the connection can go on
        self.received = 0  # body bytes read so far
        self.cut: ApiError | None = None  # set by the server when it shut the body's reading down: raised then

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.arg(name)
        if value is None or value == "":
            return default
        if value.lower() not in ("true", "false"):
            raise BadRequest(f"validation error: {name}: {value!r} is not a boolean")
        return value.lower() == "true"

    def int_arg(self, name: str) -> int | None:
        value = self.arg(name)
        if value is None or value == "":
            return None
        if not _INTEGER.fullmatch(value) or not -(1 << 63) <= int(value) < (1 << 63):
            raise BadRequest(f"validation error: {name}: {value!r} is not an integer")
        return int(value)

    def amount(self) -> int | None:
        return check_amount(self.int_arg("amount"))

    def body_chunks(self, limit: int | None = None) -> Iterator[bytes]:
        """The request body in chunks, de-chunking ``Transfer-Encoding: chunked``; 413 beyond ``limit`` bytes."""
        if self.body_consumed:
            raise RuntimeError("request body already read")
        self.body_consumed = True
        limit = self.limits.max_object_body if limit is None else limit
        try:
            if self.framing.chunked:
                yield from self._chunked(limit)
            else:
                yield from self._sized(self.framing.length, limit)
        except (BadRequest, TimeoutError, ConnectionError) as error:
            if self.cut is not None:
                raise self.cut from None
            if isinstance(error, TimeoutError):
                raise ApiError("timed out reading the request body", 408) from None
            raise
        self.body_complete = True

    def _sized(self, remaining: int, limit: int) -> Iterator[bytes]:
        if remaining > limit:
            raise PayloadTooLarge(f"request body too large: {remaining} bytes, at most {limit}")
        yield from self._exactly(remaining, "truncated request body")

    def _exactly(self, size: int, truncated: str) -> Iterator[bytes]:
        """The next ``size`` bytes of the body in pieces; BadRequest(``truncated``) when the client stops short."""
        while size:
            data = self.rfile.read1(min(size, CHUNK_SIZE))  # what arrived: the server watches the progress
            if not data:
                raise BadRequest(truncated)
            size -= len(data)
            self.received += len(data)
            yield data

    def _chunked(self, limit: int) -> Iterator[bytes]:
        total = 0
        while True:
            line = self.rfile.readline(MAX_LINE + 1)
            if not line:
                raise BadRequest("truncated chunked body")
            match = _CHUNK_LINE.fullmatch(line)
            if not match:
                raise BadRequest("invalid chunk size line")
            size = int(match.group(1), 16)
            if size > self.limits.max_object_body:
                raise BadRequest("invalid chunk size: too large")
            if size == 0:
                for _ in range(MAX_TRAILERS + 1):
                    trailer = self.rfile.readline(MAX_LINE + 1)
                    if trailer in (b"\r\n", b"\n"):
                        return
                    if not trailer.endswith(b"\n"):
                        raise BadRequest("truncated or invalid chunked body trailer")
                raise BadRequest("too many trailer lines")
            total += size
            if total > limit:
                raise PayloadTooLarge(f"request body too large: more than {limit} bytes")
            yield from self._exactly(size, "truncated chunked body")
            end = self.rfile.readline(3)
            if end not in (b"\r\n", b"\n"):
                raise BadRequest("invalid chunked body: chunk data not followed by CRLF")

    def json(self) -> dict:
        """The body as a JSON object (at most ``limits.max_json_body`` bytes)."""
        return parse_json_object(b"".join(self.body_chunks(self.limits.max_json_body)))


@dataclass
class Response:
    """What to answer: JSON, text, nothing (``body=None``), or a byte range of a file."""

    status: int
    body: object = None
    content_type: str = "application/json"
    headers: dict = field(default_factory=dict)
    file: Path | None = None
    offset: int = 0
    length: int = 0

    def encoded(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


def http_date(timestamp: int) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)


DEFAULT_CONTENT_TYPE = "application/octet-stream"


def etag_matches(header: str, checksum: str) -> bool:
    """Whether an ``If-Match`` / ``If-None-Match`` header names the object's ETag (weak or strong) or is ``*``."""
    tags = [tag.strip().removeprefix("W/").strip('"') for tag in header.split(",")]
    return "*" in tags or checksum in tags


def object_response(
    content: Path, size: int, content_type: str, headers: dict, range_header: str | None, unsatisfiable: Exception
) -> Response:
    """An object's bytes from its ``content`` file: all of them (200), or the single range ``range_header`` asks for
    (206 with ``Content-Range``); ``unsatisfiable`` is raised for a range outside the object."""
    offset, length, status = 0, size, 200
    if range_header:
        byte_range = parse_range(range_header, size)
        if byte_range is None:
            raise unsatisfiable
        offset, length, status = byte_range[0], byte_range[1], 206
        headers["Content-Range"] = f"bytes {offset}-{offset + length - 1}/{size}"
    return Response(
        status,
        content_type=content_type or DEFAULT_CONTENT_TYPE,
        headers=headers,
        file=content,
        offset=offset,
        length=length,
    )


class Router:
    """Maps (method, path template) to handlers; templates use ``{name}`` for one path segment."""

    def __init__(self):
        self._routes: list[tuple[str, re.Pattern, Callable]] = []

    def add(self, method: str, template: str, handler: Callable) -> None:
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
        self._routes.append((method, re.compile(f"^{pattern}$"), handler))

    def match(self, method: str, path: str) -> tuple[Callable | None, dict[str, str], bool]:
        """Handler and decoded path parameters; the flag says whether the path exists for another method."""
        path_exists = False
        for route_method, pattern, handler in self._routes:
            found = pattern.match(path)
            if found:
                if route_method == method:
                    return handler, {k: decode_component(v) for k, v in found.groupdict().items()}, True
                path_exists = True
        return None, {}, path_exists


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(offset, length) of a single ``bytes=`` range, or None when unsatisfiable."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not match or (match.group(1) == "" and match.group(2) == ""):
        return None
    first, last = match.group(1), match.group(2)
    if first == "":
        length = min(int(last), size)
        return (size - length, length) if length > 0 else None
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return None
    return start, end - start + 1


def multipart_content(chunks: Iterator[bytes], boundary: str) -> tuple[str, Iterator[bytes]]:
    """Content type and streamed bytes of the part named ``content`` of a multipart/form-data body."""
    reader = _MultipartReader(chunks, boundary.encode())
    while reader.next_part():
        headers = reader.part_headers
        disposition = headers.get("content-disposition", "")
        name = re.search(r'name="([^"]*)"', disposition)
        if name and name.group(1) == "content":
            return headers.get("content-type", ""), reader.part_data()
        for _ in reader.part_data():
            pass
    raise BadRequest("multipart upload missing key 'content'")


class _MultipartReader:
    def __init__(self, chunks: Iterator[bytes], boundary: bytes):
        self._chunks = iter(chunks)
        self._buffer = b""
        self._delimiter = b"\r\n--" + boundary
        self._started = False
        self._done = False
        self.part_headers: dict[str, str] = {}

    def _fill(self) -> bool:
        chunk = next(self._chunks, b"")
        self._buffer += chunk
        return bool(chunk)

    def next_part(self) -> bool:
        if self._done:
            return False
        if not self._started:
            self._buffer = b"\r\n" + self._buffer
            self._started = True
            self._skip_to_delimiter()
        while len(self._buffer) < 2 and self._fill():
            pass
        if self._buffer.startswith(b"--"):
            self._done = True
            return False
        while b"\r\n\r\n" not in self._buffer:
            if not self._fill():
                raise BadRequest("malformed multipart body")
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        self.part_headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            if ":" in line:
                key, value = line.split(":", 1)
                self.part_headers[key.strip().lower()] = value.strip()
        return True

    def _skip_to_delimiter(self) -> None:
        while self._delimiter not in self._buffer:
            self._buffer = self._buffer[-len(self._delimiter) :]
            if not self._fill():
                raise BadRequest("malformed multipart body")
        self._buffer = self._buffer.split(self._delimiter, 1)[1]

    def part_data(self) -> Iterator[bytes]:
        """Bytes of the current part, up to the next delimiter (consumed)."""
        keep = len(self._delimiter)
        while True:
            index = self._buffer.find(self._delimiter)
            if index >= 0:
                data, self._buffer = self._buffer[:index], self._buffer[index + keep :]
                if data:
                    yield data
                return
            if len(self._buffer) > keep:
                data, self._buffer = self._buffer[:-keep], self._buffer[-keep:]
                yield data
            if not self._fill():
                raise BadRequest("malformed multipart body")
