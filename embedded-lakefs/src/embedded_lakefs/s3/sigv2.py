"""AWS Signature Version 2, which lakeFS' gateway also accepts: ``Authorization: AWS key:signature`` and presigned
URLs (``AWSAccessKeyId``, ``Signature``, ``Expires``: what boto3's ``generate_presigned_url`` makes by default)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import unquote

from ..datadir import Credentials
from .xml import S3Error

SUBRESOURCES = frozenset(
    [
        "acl",
        "delete",
        "lifecycle",
        "location",
        "logging",
        "notification",
        "partNumber",
        "policy",
        "requestPayment",
        "tagging",
        "torrent",
        "uploadId",
        "uploads",
        "versionId",
        "versioning",
        "versions",
        "website",
        "response-cache-control",
        "response-content-disposition",
        "response-content-encoding",
        "response-content-language",
        "response-content-type",
        "response-expires",
    ]
)


def is_v2(query: dict, headers) -> bool:
    return "AWSAccessKeyId" in query or (headers.get("Authorization") or "").startswith("AWS ")


def _resource(raw_path: str, query: dict) -> str:
    names = sorted(name for name in query if name in SUBRESOURCES)
    parts = [name if query[name] == [""] else f"{name}={query[name][0]}" for name in names]
    return unquote(raw_path) + ("?" + "&".join(parts) if parts else "")


def verify(method: str, raw_path: str, query: dict, headers, credentials: Credentials) -> None:
    """S3Error (403) unless the request carries a valid, unexpired V2 signature of ``credentials``."""
    if "AWSAccessKeyId" in query:
        key_id, given = query["AWSAccessKeyId"][0], query.get("Signature", [""])[0]
        expires = query.get("Expires", [""])[0]
        if not expires.isdigit():
            raise S3Error("AccessDenied", "Expires must be a number of seconds since the epoch")
        if time.time() > int(expires):
            raise S3Error("AccessDenied", "Request has expired")
        date = expires
    else:
        key_id, _, given = headers["Authorization"][4:].partition(":")
        date = "" if headers.get("x-amz-date") else headers.get("Date", "")
    if not hmac.compare_digest(key_id.encode(), credentials.access_key_id.encode()):
        raise S3Error("InvalidAccessKeyId")
    amz = sorted(
        (name.lower(), ",".join(v.strip() for v in headers.get_all(name)))
        for name in set(headers.keys())
        if name.lower().startswith("x-amz-")
    )
    to_sign = "\n".join(
        [
            method,
            headers.get("Content-MD5", ""),
            headers.get("Content-Type", ""),
            date,
            *(f"{name}:{value}" for name, value in amz),
            _resource(raw_path, query),
        ]
    )
    expected = base64.b64encode(
        hmac.new(credentials.secret_access_key.encode(), to_sign.encode(), hashlib.sha1).digest()
    ).decode()
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise S3Error("SignatureDoesNotMatch")
