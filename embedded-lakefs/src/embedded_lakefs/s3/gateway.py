"""S3 operations on repositories (buckets) and ``<ref>/<path>`` keys, over the catalog and the blob store.

Path-style addressing: ``/<repository>/<ref>/<path>``. Reads take any ref (branch, tag, commit id, expression),
writes a branch only (anything else is ``NoSuchBucket``, as lakeFS answers). Listings below a repository without a
ref list the branches as common prefixes ``<branch>/``.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator
from urllib.parse import quote, unquote

from ..blockstore import BlobStore
from ..catalog import Catalog, CommonPrefix, Entry
from ..datadir import Credentials
from ..errors import ApiError, Forbidden, NotFound, PayloadTooLarge, PreconditionFailed
from ..transport import CHUNK_SIZE, DEFAULT_CONTENT_TYPE, Request, Response, etag_matches, http_date, object_response
from ..validation import check_object_path
from . import sigv2
from .multipart import MAX_PART_SIZE, Part, Uploads, multipart_etag, part_number
from .sigv4 import UNSIGNED_PAYLOAD, Signature, aws_chunked, verify
from .xml import S3Error, document, element, error_response, parse, timestamp

MAX_KEYS = 1000  # ListObjects' page, as lakeFS' ListObjectMaxKeys
MAX_DELETE_KEYS = 1000
MAX_XML_BODY = 2 << 20  # DeleteObjects / CompleteMultipartUpload documents
METADATA_PREFIX = "x-amz-meta-"
REGION = "us-east-1"


def _quoted_etag(checksum: str) -> str:
    return f'"{checksum}"'


def _http_time(header: str | None) -> float | None:
    if not header:
        return None
    try:
        return email.utils.parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError):
        return None  # S3 ignores an unreadable date


def _metadata(headers) -> dict:
    return {k[len(METADATA_PREFIX) :].lower(): v for k, v in headers.items() if k.lower().startswith(METADATA_PREFIX)}


def _translated(error: ApiError, missing: str) -> S3Error:
    """The S3 error for a catalog error; ``missing`` is the code for a 404."""
    if isinstance(error, NotFound):
        return S3Error(missing)
    if isinstance(error, Forbidden):
        return S3Error("ErrReadOnlyRepository" if "read-only" in error.message else "ErrWriteToProtectedBranch")
    if isinstance(error, PreconditionFailed):
        return S3Error("PreconditionFailed")
    if isinstance(error, PayloadTooLarge):
        return S3Error("EntityTooLarge", error.message)
    if error.status == 503:
        return S3Error("SlowDown", error.message)
    if error.status >= 500:
        return S3Error("InternalError", error.message)
    translated = S3Error("InvalidRequest", error.message)
    translated.status = error.status
    return translated


class S3Gateway:
    """Answers S3 requests (see the module docstring); ``handle`` is called by the server for non-API paths."""

    def __init__(self, catalog: Catalog, blobs: BlobStore, credentials: Credentials, uploads_root: Path):
        self.catalog = catalog
        self.blobs = blobs
        self.credentials = credentials
        self.uploads = Uploads(uploads_root)

    def handle(self, request: Request, raw_path: str, raw_query: str, authenticated: Callable[[], None]) -> Response:
        """The response to one request; ``authenticated`` is called once its signature holds."""
        try:
            signature = self._verify(request, raw_path, raw_query)
            authenticated()
            return self._route(request, raw_path, signature)
        except S3Error as error:
            return error_response(error, unquote(raw_path))
        except ApiError as error:
            return error_response(_translated(error, "NoSuchKey"), unquote(raw_path))

    def _verify(self, request: Request, raw_path: str, raw_query: str) -> Signature:
        if sigv2.is_v2(request.query, request.headers):
            sigv2.verify(request.method, raw_path, request.query, request.headers, self.credentials)
            return Signature(UNSIGNED_PAYLOAD)
        return verify(request.method, raw_path, raw_query, request.query, request.headers, self.credentials)

    def _route(self, request: Request, raw_path: str, signature: Signature) -> Response:
        bucket, _, key = unquote(raw_path).lstrip("/").partition("/")
        method = request.method
        if not bucket:
            if method != "GET":
                raise S3Error("MethodNotAllowed")
            return self.list_buckets()
        if not key:
            self._repository(bucket)
            return self._bucket_operation(request, bucket, signature)
        try:  # one catalog call per object request: the repository is looked up only to name what is missing
            return self._object_operation(request, bucket, key, signature)
        except NotFound:
            self._repository(bucket)
            raise

    def _object_operation(self, request: Request, bucket: str, key: str, signature: Signature) -> Response:
        method, query = request.method, request.query
        ref, _, path = key.partition("/")
        if method in ("GET", "HEAD"):
            if "uploadId" in query and method == "GET":
                return self.list_parts(request, bucket, ref, path)
            return self.get_object(request, bucket, ref, check_object_path(path), head=method == "HEAD")
        self._writable(bucket, ref)
        path = check_object_path(path)
        if method == "PUT":
            if "uploadId" in query:
                return self.upload_part(request, bucket, ref, path, signature)
            if request.headers.get("x-amz-copy-source"):
                return self.copy_object(request, bucket, ref, path)
            return self.put_object(request, bucket, ref, path, signature)
        if method == "POST":
            if "uploads" in query:
                return self.create_multipart_upload(request, bucket, ref, path)
            if "uploadId" in query:
                return self.complete_multipart_upload(request, bucket, ref, path, signature)
            raise S3Error("NotImplemented", "POST object uploads are not supported")
        if "uploadId" in query:
            return self.abort_multipart_upload(request, bucket, ref, path)
        self.catalog.delete_entries(bucket, ref, [path], missing_ok=True)
        return Response(204)

    def _bucket_operation(self, request: Request, bucket: str, signature: Signature) -> Response:
        method, query = request.method, request.query
        if method == "HEAD":
            return Response(200, headers={"x-amz-bucket-region": REGION})
        if method == "GET" and "location" in query:
            return document(element("LocationConstraint", text=REGION))
        if method == "GET" and "uploads" in query:
            return self.list_multipart_uploads(bucket)
        if method == "GET" and not set(query) - {
            "list-type", "prefix", "delimiter", "max-keys", "continuation-token", "start-after", "marker",
            "encoding-type", "fetch-owner",
        }:  # fmt: skip
            return self.list_objects(request, bucket)
        if method == "POST" and "delete" in query:
            return self.delete_objects(request, bucket, signature)
        raise S3Error("NotImplemented", f"{method} on a bucket with {sorted(query) or 'no'} parameters")

    # -- checks ----------------------------------------------------------------------------------------------
    def _repository(self, bucket: str) -> dict:
        try:
            return self.catalog.get_repository(bucket)
        except NotFound:
            raise S3Error("NoSuchBucket", f"repository {bucket!r} not found") from None

    def _writable(self, bucket: str, ref: str) -> None:
        """Writes go to branches: NoSuchBucket for anything else (a commit id, a tag), as lakeFS answers."""
        try:
            self.catalog.check_writable(bucket, ref)
        except ApiError as error:
            if isinstance(error, NotFound):
                raise S3Error("NoSuchBucket", f"branch {ref!r} not found: writes go to a branch") from None
            raise _translated(error, "NoSuchBucket") from None

    # -- bodies ----------------------------------------------------------------------------------------------
    def _body(self, request: Request, signature: Signature, limit: int | None = None) -> Iterator[bytes]:
        chunks = request.body_chunks(limit)
        return aws_chunked(chunks, signature) if signature.streaming else chunks

    def _store(self, request: Request, signature: Signature, limit: int | None = None):
        """Write the request body as a blob (caller holds ``blobs.referencing()``); checks the signed payload
        hash (the blob's address is its sha256) and ``Content-MD5``."""
        blob = self.blobs.write(self._body(request, signature, limit))
        if len(signature.payload) == 64 and signature.payload != blob.address:
            raise S3Error("XAmzContentSHA256Mismatch")
        self._check_md5(request, bytes.fromhex(blob.checksum))
        return blob

    @staticmethod
    def _check_md5(request: Request, digest: bytes) -> None:
        given = request.headers.get("Content-MD5")
        if given is not None and given.strip() != base64.b64encode(digest).decode():
            raise S3Error("BadDigest")

    def _small_body(self, request: Request, signature: Signature) -> bytes:
        body = b"".join(self._body(request, signature, MAX_XML_BODY))
        if len(signature.payload) == 64 and signature.payload != hashlib.sha256(body).hexdigest():
            raise S3Error("XAmzContentSHA256Mismatch")
        self._check_md5(request, hashlib.md5(body).digest())
        return body

    # -- buckets ---------------------------------------------------------------------------------------------
    def list_buckets(self) -> Response:
        buckets, after = [], ""
        while True:
            page, has_more = self.catalog.list_repositories(after=after, amount=1000)
            buckets.extend(page)
            if not has_more or not page:
                break
            after = page[-1]["id"]
        return document(
            element(
                "ListAllMyBucketsResult",
                element("Owner", element("ID", text="admin"), element("DisplayName", text="admin")),
                element(
                    "Buckets",
                    *(
                        element(
                            "Bucket",
                            element("Name", text=repo["id"]),
                            element("CreationDate", text=timestamp(repo["creation_date"])),
                        )
                        for repo in buckets
                    ),
                ),
            )
        )

    def list_objects(self, request: Request, bucket: str) -> Response:
        """ListObjectsV2 (``list-type=2``) and V1: keys are ``<ref>/<path>``."""
        v2 = request.arg("list-type") == "2"
        prefix, delimiter = request.arg("prefix", ""), request.arg("delimiter", "")
        max_keys_text = request.arg("max-keys", str(MAX_KEYS))
        if not max_keys_text.isdigit():
            raise S3Error("InvalidArgument", "Argument maxKeys must be an integer between 0 and 2147483647")
        max_keys = min(int(max_keys_text), MAX_KEYS)
        after = (
            (request.arg("continuation-token") or request.arg("start-after", "")) if v2 else request.arg("marker", "")
        )
        encode = request.arg("encoding-type") == "url"
        shown = (lambda text: quote(text, safe="/")) if encode else (lambda text: text)
        items, truncated = ([], False) if max_keys == 0 else self._list(bucket, prefix, delimiter, after, max_keys)
        contents = [item for item in items if not isinstance(item[1], CommonPrefix)]
        prefixes = [key for key, item in items if isinstance(item, CommonPrefix)]
        next_after = items[-1][0] if truncated and items else None
        root = element(
            "ListBucketResult",
            element("Name", text=bucket),
            element("Prefix", text=shown(prefix)),
            element("Delimiter", text=shown(delimiter)) if delimiter else None,
            element("MaxKeys", text=max_keys),
            element("EncodingType", text="url") if encode else None,
            element("IsTruncated", text=str(truncated).lower()),
            element("KeyCount", text=len(items)) if v2 else element("Marker", text=shown(after)),
            element("ContinuationToken", text=request.arg("continuation-token"))
            if v2 and request.arg("continuation-token")
            else None,
            element("StartAfter", text=shown(request.arg("start-after")))
            if v2 and request.arg("start-after")
            else None,
            (element("NextContinuationToken", text=next_after) if v2 else element("NextMarker", text=shown(next_after)))
            if next_after
            else None,
            *(
                element(
                    "Contents",
                    element("Key", text=shown(key)),
                    element("LastModified", text=timestamp(entry.mtime)),
                    element("ETag", text=_quoted_etag(entry.checksum)),
                    element("Size", text=entry.size),
                    element("StorageClass", text="STANDARD"),
                )
                for key, entry in contents
            ),
            *(element("CommonPrefixes", element("Prefix", text=shown(key))) for key in prefixes),
        )
        return document(root)

    def _list(self, bucket: str, prefix: str, delimiter: str, after: str, amount: int) -> tuple[list, bool]:
        """``(key, Entry | CommonPrefix)`` pairs after ``after`` and whether more exist; without a ref in
        ``prefix``, the branches as common prefixes."""
        if "/" not in prefix:
            after_branch = after.partition("/")[0] if after > prefix else ""
            branches, has_more = self.catalog.list_branches(bucket, prefix, after_branch, amount)
            return [(f"{name}/", CommonPrefix(f"{name}/")) for name, _ in branches], has_more
        ref, _, path_prefix = prefix.partition("/")
        after_ref, _, after_path = after.partition("/")
        if after and after_ref != ref:
            if after_ref > ref:
                return [], False
            after_path = ""
        items, has_more = self.catalog.list_entries(bucket, ref, path_prefix, after_path, amount, delimiter)
        return [(f"{ref}/{item.path}", item) for item in items], has_more

    def delete_objects(self, request: Request, bucket: str, signature: Signature) -> Response:
        root = parse(self._small_body(request, signature), "Delete")
        keys = [node.findtext("Key") or "" for node in root.findall("Object")]
        if len(keys) > MAX_DELETE_KEYS:
            raise S3Error("MalformedXML", f"at most {MAX_DELETE_KEYS} keys per request")
        quiet = (root.findtext("Quiet") or "").strip().lower() == "true"
        results = []
        for key in keys:
            ref, _, path = key.partition("/")
            try:
                self._writable(bucket, ref)
                self.catalog.delete_entries(bucket, ref, [check_object_path(path)], missing_ok=True)
                if not quiet:
                    results.append(element("Deleted", element("Key", text=key)))
            except (S3Error, ApiError) as error:
                error = error if isinstance(error, S3Error) else _translated(error, "NoSuchKey")
                results.append(
                    element(
                        "Error",
                        element("Key", text=key),
                        element("Code", text=error.code),
                        element("Message", text=error.message),
                    )
                )
        return document(element("DeleteResult", *results))

    # -- objects ---------------------------------------------------------------------------------------------
    def get_object(self, request: Request, bucket: str, ref: str, path: str, head: bool) -> Response:
        entry = self.catalog.get_entry(bucket, ref, path)
        headers = {
            "ETag": _quoted_etag(entry.checksum),
            "Last-Modified": http_date(entry.mtime),
            "Accept-Ranges": "bytes",
            **{METADATA_PREFIX + name: value for name, value in entry.metadata.items()},
        }
        if self._not_modified(request, entry):
            return Response(304, headers=headers)
        return object_response(
            self.blobs.path(entry.address),
            entry.size,
            entry.content_type,
            headers,
            request.headers.get("Range"),
            S3Error("InvalidRange"),
        )

    @staticmethod
    def _not_modified(request: Request, entry: Entry) -> bool:
        """S3's order: If-Match, If-Unmodified-Since (412), then If-None-Match, If-Modified-Since (True: 304)."""
        get = request.headers.get
        if get("If-Match") is not None and not etag_matches(get("If-Match"), entry.checksum):
            raise S3Error("PreconditionFailed")
        unmodified_since = _http_time(get("If-Unmodified-Since"))
        if get("If-Match") is None and unmodified_since is not None and entry.mtime > unmodified_since:
            raise S3Error("PreconditionFailed")
        modified_since = _http_time(get("If-Modified-Since"))
        if get("If-None-Match") is not None:
            return etag_matches(get("If-None-Match"), entry.checksum)
        return modified_since is not None and entry.mtime <= modified_since

    def put_object(self, request: Request, bucket: str, branch: str, path: str, signature: Signature) -> Response:
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match is not None and if_none_match.strip() != "*":
            raise S3Error("NotImplemented", 'If-None-Match: only "*" is supported')
        with self.blobs.referencing():
            blob = self._store(request, signature)
            entry = Entry(
                path,
                blob.address,
                blob.checksum,
                blob.size,
                int(time.time()),
                request.headers.get("Content-Type") or DEFAULT_CONTENT_TYPE,
                _metadata(request.headers),
            )
            self.catalog.put_entry(bucket, branch, entry, if_absent=if_none_match is not None)
        return Response(200, headers={"ETag": _quoted_etag(entry.checksum)})

    def copy_object(self, request: Request, bucket: str, branch: str, path: str) -> Response:
        source = unquote(request.headers["x-amz-copy-source"].partition("?")[0]).lstrip("/")
        source_bucket, _, source_key = source.partition("/")
        source_ref, _, source_path = source_key.partition("/")
        if not source_bucket or not source_ref or not source_path:
            raise S3Error("InvalidArgument", "x-amz-copy-source must be <repository>/<ref>/<path>")
        self._repository(source_bucket)
        replace = request.headers.get("x-amz-metadata-directive", "COPY").upper() == "REPLACE"
        with self.blobs.referencing():
            found = self.catalog.get_entry(source_bucket, source_ref, check_object_path(source_path))
            entry = Entry(
                path,
                found.address,
                found.checksum,
                found.size,
                int(time.time()),
                (request.headers.get("Content-Type") or DEFAULT_CONTENT_TYPE) if replace else found.content_type,
                _metadata(request.headers) if replace else found.metadata,
            )
            self.catalog.put_entry(bucket, branch, entry)
        return document(
            element(
                "CopyObjectResult",
                element("LastModified", text=timestamp(entry.mtime)),
                element("ETag", text=_quoted_etag(entry.checksum)),
            )
        )

    # -- multipart uploads -----------------------------------------------------------------------------------
    def create_multipart_upload(self, request: Request, bucket: str, branch: str, path: str) -> Response:
        content_type = request.headers.get("Content-Type") or DEFAULT_CONTENT_TYPE
        upload = self.uploads.create(bucket, branch, path, content_type, _metadata(request.headers))
        return document(
            element(
                "InitiateMultipartUploadResult",
                element("Bucket", text=bucket),
                element("Key", text=f"{branch}/{path}"),
                element("UploadId", text=upload.id),
            )
        )

    def upload_part(self, request: Request, bucket: str, branch: str, path: str, signature: Signature) -> Response:
        number = part_number(request.arg("partNumber"))
        upload = self.uploads.get(request.arg("uploadId"), bucket, branch, path)
        if request.headers.get("x-amz-copy-source"):
            raise S3Error("NotImplemented", "UploadPartCopy is not supported")
        with self.blobs.referencing():
            try:
                blob = self._store(request, signature, MAX_PART_SIZE)
            except PayloadTooLarge:
                raise S3Error("EntityTooLarge", f"a part is at most {MAX_PART_SIZE} bytes") from None
        self.uploads.add_part(upload, Part(number, blob.address, blob.checksum, blob.size, int(time.time())))
        return Response(200, headers={"ETag": _quoted_etag(blob.checksum)})

    def complete_multipart_upload(
        self, request: Request, bucket: str, branch: str, path: str, signature: Signature
    ) -> Response:
        upload = self.uploads.get(request.arg("uploadId"), bucket, branch, path)
        root = parse(self._small_body(request, signature), "CompleteMultipartUpload")
        requested = []
        for node in root.findall("Part"):
            number = part_number((node.findtext("PartNumber") or "").strip())
            requested.append((number, node.findtext("ETag") or ""))
        parts = self.uploads.chosen_parts(upload, requested)
        etag = multipart_etag([part.etag for part in parts])
        with self.blobs.referencing():
            try:
                blob = self.blobs.write(self._concatenated(parts))
            except FileNotFoundError:
                raise S3Error("InvalidPart", "a part's data is gone (collected as garbage?)") from None
            entry = Entry(path, blob.address, etag, blob.size, int(time.time()), upload.content_type, upload.metadata)
            self.catalog.put_entry(bucket, branch, entry)
        self.uploads.remove(upload)
        return document(
            element(
                "CompleteMultipartUploadResult",
                element("Location", text=f"/{bucket}/{branch}/{path}"),
                element("Bucket", text=bucket),
                element("Key", text=f"{branch}/{path}"),
                element("ETag", text=_quoted_etag(etag)),
            )
        )

    def _concatenated(self, parts: Iterable[Part]) -> Iterator[bytes]:
        for part in parts:
            with open(self.blobs.path(part.address), "rb") as data:
                while chunk := data.read(CHUNK_SIZE):
                    yield chunk

    def abort_multipart_upload(self, request: Request, bucket: str, branch: str, path: str) -> Response:
        self.uploads.remove(self.uploads.get(request.arg("uploadId"), bucket, branch, path))
        return Response(204)

    def list_parts(self, request: Request, bucket: str, ref: str, path: str) -> Response:
        upload = self.uploads.get(request.arg("uploadId"), bucket, ref, path)
        marker = request.arg("part-number-marker", "0")
        max_parts = request.arg("max-parts", str(MAX_KEYS))
        if not marker.isdigit() or not max_parts.isdigit():
            raise S3Error("InvalidArgument", "part-number-marker and max-parts must be integers")
        parts = [part for part in self.uploads.parts(upload) if part.number > int(marker)]
        shown, truncated = parts[: min(int(max_parts), MAX_KEYS)], len(parts) > min(int(max_parts), MAX_KEYS)
        return document(
            element(
                "ListPartsResult",
                element("Bucket", text=bucket),
                element("Key", text=f"{ref}/{path}"),
                element("UploadId", text=upload.id),
                element("PartNumberMarker", text=marker),
                element("NextPartNumberMarker", text=shown[-1].number if shown else marker),
                element("MaxParts", text=max_parts),
                element("IsTruncated", text=str(truncated).lower()),
                *(
                    element(
                        "Part",
                        element("PartNumber", text=part.number),
                        element("LastModified", text=timestamp(part.mtime)),
                        element("ETag", text=_quoted_etag(part.etag)),
                        element("Size", text=part.size),
                    )
                    for part in shown
                ),
            )
        )

    def list_multipart_uploads(self, bucket: str) -> Response:
        uploads = self.uploads.in_progress(bucket)[:MAX_KEYS]
        return document(
            element(
                "ListMultipartUploadsResult",
                element("Bucket", text=bucket),
                element("MaxUploads", text=MAX_KEYS),
                element("IsTruncated", text="false"),
                *(
                    element(
                        "Upload",
                        element("Key", text=f"{upload.branch}/{upload.key}"),
                        element("UploadId", text=upload.id),
                        element("Initiated", text=timestamp(upload.initiated)),
                        element("StorageClass", text="STANDARD"),
                    )
                    for upload in uploads
                ),
            )
        )
