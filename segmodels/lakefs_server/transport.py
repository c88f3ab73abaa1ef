"""HTTP plumbing: requests with streamed bodies (plain, chunked, multipart), responses, routing."""

from __future__ import annotations

import email.utils
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import parse_qs, unquote

from .errors import BadRequest

CHUNK_SIZE = 4 << 20  # body reads: large enough that per-chunk Python overhead vanishes


class Request:
    """One API call: path parameters, query, headers and a body read on demand."""

    def __init__(self, method: str, query: str, headers, rfile, params: dict[str, str]):
        self.method = method
        self.query = parse_qs(query, keep_blank_values=True)
        self.headers = headers
        self.rfile = rfile
        self.params = params
        self.user: str | None = None
        self.body_consumed = False

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
        try:
            return int(value)
        except ValueError:
            raise BadRequest(f"validation error: {name}: {value!r} is not an integer") from None

    def body_chunks(self) -> Iterator[bytes]:
        """The request body in chunks, de-chunking ``Transfer-Encoding: chunked``."""
        self.body_consumed = True
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise BadRequest("truncated chunked body")
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return
                while size:
                    data = self.rfile.read(min(size, CHUNK_SIZE))
                    if not data:
                        raise BadRequest("truncated chunked body")
                    size -= len(data)
                    yield data
                self.rfile.readline(3)
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining:
            data = self.rfile.read(min(remaining, CHUNK_SIZE))
            if not data:
                raise BadRequest("truncated request body")
            remaining -= len(data)
            yield data

    def json(self) -> dict:
        raw = b"".join(self.body_chunks())
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise BadRequest("request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        return body


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
                    return handler, {k: unquote(v) for k, v in found.groupdict().items()}, True
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
            self._buffer = self._buffer[-len(self._delimiter):]
            if not self._fill():
                raise BadRequest("malformed multipart body")
        self._buffer = self._buffer.split(self._delimiter, 1)[1]

    def part_data(self) -> Iterator[bytes]:
        """Bytes of the current part, up to the next delimiter (consumed)."""
        keep = len(self._delimiter)
        while True:
            index = self._buffer.find(self._delimiter)
            if index >= 0:
                data, self._buffer = self._buffer[:index], self._buffer[index + keep:]
                if data:
                    yield data
                return
            if len(self._buffer) > keep:
                data, self._buffer = self._buffer[:-keep], self._buffer[-keep:]
                yield data
            if not self._fill():
                raise BadRequest("malformed multipart body")
