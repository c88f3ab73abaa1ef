"""AWS Signature Version 4 as S3 checks it: the ``Authorization`` header, presigned URLs (``X-Amz-Signature``) and
aws-chunked bodies (``STREAMING-*`` payloads, each chunk signed after the previous one)."""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from typing import Iterable, Iterator
from urllib.parse import quote, unquote

from ..datadir import Credentials
from .xml import S3Error

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"  # also with "-TRAILER"
STREAMING_PREFIX = "STREAMING-"
MAX_SKEW_SECONDS = 15 * 60  # S3's clock-skew rule
MAX_PRESIGN_EXPIRES = 7 * 24 * 3600  # S3's bound on X-Amz-Expires
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_HEADER_AUTH = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=([^,\s]+)\s*,\s*SignedHeaders=([^,\s]+)\s*,\s*Signature=([0-9a-f]{64})\s*"
)
_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")
_SPACES = re.compile(r"\s+")
_CHUNK_HEADER = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;chunk-signature=([0-9a-f]{64}))?\r\n")
MAX_CHUNK_HEADER = 256


@dataclass(frozen=True)
class Signature:
    """A verified request: how its payload is given (``payload``: a hex sha256, ``UNSIGNED-PAYLOAD`` or a
    ``STREAMING-*`` mode) and what chunk signatures chain from."""

    payload: str
    key: bytes = b""
    scope: str = ""
    amz_date: str = ""
    seed: str = ""

    @property
    def streaming(self) -> bool:
        return self.payload.startswith(STREAMING_PREFIX)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    return _hmac(_hmac(_hmac(_hmac(("AWS4" + secret).encode(), date), region), service), "aws4_request")


def _encode(text: str, safe: str) -> str:
    return quote(text, safe=safe + "-_.~")


def canonical_query(raw_query: str, drop: str = "") -> str:
    pairs = []
    for part in raw_query.split("&") if raw_query else []:
        name, _, value = part.partition("=")
        name, value = unquote(name), unquote(value)
        if name != drop:
            pairs.append((_encode(name, ""), _encode(value, "")))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def canonical_request(method, raw_path, query, headers, signed_headers, payload) -> str:
    lines = [method, _encode(unquote(raw_path), "/"), query]
    for name in signed_headers:
        values = headers.get_all(name) or []
        lines.append(f"{name}:{','.join(_SPACES.sub(' ', v.strip()) for v in values)}")
    return "\n".join([*lines, "", ";".join(signed_headers), payload])


def _parse_time(amz_date: str | None) -> int:
    if not amz_date or not _AMZ_DATE.fullmatch(amz_date):
        raise S3Error("AccessDenied", "X-Amz-Date missing or malformed")
    return calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))


def verify(method: str, raw_path: str, raw_query: str, query: dict, headers, credentials: Credentials) -> Signature:
    """The request's checked signature; S3Error (403) for missing, unknown, wrong or stale credentials."""
    now = time.time()
    if "X-Amz-Signature" in query:
        if query.get("X-Amz-Algorithm", [""])[0] != ALGORITHM:
            raise S3Error("AccessDenied", "X-Amz-Algorithm must be AWS4-HMAC-SHA256")
        credential, signed, given = (
            query.get(k, [""])[0] for k in ("X-Amz-Credential", "X-Amz-SignedHeaders", "X-Amz-Signature")
        )
        amz_date = query.get("X-Amz-Date", [""])[0]
        expires = query.get("X-Amz-Expires", [""])[0]
        if not expires.isdigit() or not 0 < int(expires) <= MAX_PRESIGN_EXPIRES:
            raise S3Error("AccessDenied", f"X-Amz-Expires must be between 1 and {MAX_PRESIGN_EXPIRES} seconds")
        signed_at = _parse_time(amz_date)
        if now > signed_at + int(expires):
            raise S3Error("AccessDenied", "Request has expired")
        if signed_at - now > MAX_SKEW_SECONDS:
            raise S3Error("RequestTimeTooSkewed")
        payload = headers.get("x-amz-content-sha256") or UNSIGNED_PAYLOAD
        canonical_qs = canonical_query(raw_query, drop="X-Amz-Signature")
    else:
        header = headers.get("Authorization")
        if not header:
            raise S3Error("AccessDenied", "anonymous access is not allowed: sign the request with SigV4")
        match = _HEADER_AUTH.fullmatch(header)
        if not match:
            raise S3Error("AccessDenied", "unsupported Authorization header: only AWS4-HMAC-SHA256 is supported")
        credential, signed, given = match.groups()
        amz_date = headers.get("x-amz-date")
        signed_at = _parse_time(amz_date)
        if abs(now - signed_at) > MAX_SKEW_SECONDS:
            raise S3Error("RequestTimeTooSkewed")
        payload = headers.get("x-amz-content-sha256")
        if not payload:
            raise S3Error("InvalidRequest", "missing required header x-amz-content-sha256")
        canonical_qs = canonical_query(raw_query)
    key_id, _, scope = credential.partition("/")
    scope_parts = scope.split("/")
    if len(scope_parts) != 4 or scope_parts[3] != "aws4_request" or scope_parts[0] != amz_date[:8]:
        raise S3Error("AccessDenied", "malformed credential scope")
    if not hmac.compare_digest(key_id.encode(), credentials.access_key_id.encode()):
        raise S3Error("InvalidAccessKeyId")
    signed_headers = signed.split(";")
    if "host" not in signed_headers:
        raise S3Error("AccessDenied", "the host header must be signed")
    request = canonical_request(method, raw_path, canonical_qs, headers, signed_headers, payload)
    key = signing_key(credentials.secret_access_key, *scope_parts[:3])
    to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(request.encode()).hexdigest()])
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise S3Error("SignatureDoesNotMatch")
    return Signature(payload, key, scope, amz_date, given)


def aws_chunked(body: Iterable[bytes], signature: Signature) -> Iterator[bytes]:
    """The data of an aws-chunked body, checking each chunk's signature when the payload is signed."""
    check = signature.payload.startswith(STREAMING_SIGNED)
    previous = signature.seed
    buffer = bytearray()
    source = iter(body)

    def fill(size: int) -> None:
        while len(buffer) < size:
            data = next(source, b"")
            if not data:
                raise S3Error("IncompleteBody")
            buffer.extend(data)

    while True:
        fill(2)
        while (end := buffer.find(b"\r\n")) < 0:
            if len(buffer) > MAX_CHUNK_HEADER:
                raise S3Error("InvalidRequest", "malformed aws-chunked body")
            fill(len(buffer) + 1)
        match = _CHUNK_HEADER.fullmatch(bytes(buffer[: end + 2]))
        if not match or (check and not match.group(2)):
            raise S3Error("InvalidRequest", "malformed aws-chunked chunk header")
        del buffer[: end + 2]
        size = int(match.group(1), 16)
        fill(size + 2 if size else 0)
        data = bytes(buffer[:size])
        if check:
            to_sign = "\n".join(
                [
                    ALGORITHM + "-PAYLOAD",
                    signature.amz_date,
                    signature.scope,
                    previous,
                    EMPTY_SHA256,
                    hashlib.sha256(data).hexdigest(),
                ]
            )
            expected = hmac.new(signature.key, to_sign.encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected.encode(), match.group(2).decode().encode()):
                raise S3Error("SignatureDoesNotMatch", "a chunk's signature does not match")
            previous = expected
        if size == 0:
            for _ in source:  # trailers (checksums): what the connection still carries of this body
                pass
            return
        if buffer[size : size + 2] != b"\r\n":
            raise S3Error("InvalidRequest", "malformed aws-chunked body: chunk not followed by CRLF")
        del buffer[: size + 2]
        yield data
