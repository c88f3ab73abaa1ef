"""Where a source lives: a local folder or archive, an http(s) archive, an s3:// prefix or a lakefs:// ref.

Each resolves to a local folder that a format reader can read; downloads stream to disk in chunks.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from segmodels.data.errors import DataValidationError
from segmodels.progress import Progress

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")
CHUNK = 1 << 20
DISK_SPARE = 1 << 30  # free space a download or an extraction leaves on its disk, at least
ROOM_CHECK_EVERY = 64  # chunks downloaded between checks of the free space


def redact(source) -> str:
    """The source (or any text naming it) with credentials masked, safe to log and record: each URL's user info
    and secret query parameters become ``***`` (``http://***@host/data.zip``), see :mod:`segmodels.redaction`."""
    from segmodels.redaction import redact_text

    return redact_text(source)


def is_archive(name: str) -> bool:
    """Whether a file name has one of the archive suffixes a source may have."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def resolve_source(source, scratch: Path, *, lakefs, s3_endpoint_url: str | None, max_member_bytes: int | None = None) -> Path:
    """A local folder holding the source's files, downloading/extracting into `scratch` when needed.

    `lakefs` is the client (`segmodels.versioning.LakeFS`) that reads a lakefs:// source (None for other
    sources); `s3_endpoint_url` the endpoint of an s3:// source (None: AWS or `S3_ENDPOINT_URL`);
    `max_member_bytes` refuses archives holding a larger file (`data.max_file_bytes`) before extracting it.
    """
    text = str(source)
    scheme = urlsplit(text).scheme.lower() if "://" in text else ""
    if scheme not in RESOLVERS:
        raise DataValidationError(f"{redact(source)}: unsupported source scheme {scheme!r}; expected a path or {sorted(s for s in RESOLVERS if s)}")
    return RESOLVERS[scheme](text, Path(scratch), lakefs=lakefs, s3_endpoint_url=s3_endpoint_url, max_member_bytes=max_member_bytes)


def _local(source: str, scratch: Path, max_member_bytes: int | None = None, **_) -> Path:
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.is_file() and is_archive(path.name):
        return extract_archive(path, scratch / "extracted", label=redact(source), max_member_bytes=max_member_bytes)
    raise DataValidationError(f"{path}: source not found (expected a folder or an archive {ARCHIVE_SUFFIXES})")


def _http(source: str, scratch: Path, max_member_bytes: int | None = None, **_) -> Path:
    import requests

    name = Path(urlsplit(source).path).name
    if not is_archive(name):
        raise DataValidationError(f"{redact(source)}: an http(s) source must be an archive {ARCHIVE_SUFFIXES}")
    scratch.mkdir(parents=True, exist_ok=True)
    archive = scratch / name
    try:
        with requests.get(source, stream=True, timeout=60) as response:
            response.raise_for_status()
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit():
                check_room(scratch, int(declared), redact(source), "the download")
            total = int(declared) if declared.isdigit() else None
            with open(archive, "wb") as handle, Progress(f"downloading {name}", total, "MB", scale=1e-6) as progress:
                for index, chunk in enumerate(response.iter_content(CHUNK)):
                    if index % ROOM_CHECK_EVERY == ROOM_CHECK_EVERY - 1:
                        check_room(scratch, ROOM_CHECK_EVERY * CHUNK, redact(source), "the download")
                    handle.write(chunk)
                    progress.update(len(chunk))
    except (requests.RequestException, DataValidationError) as error:
        archive.unlink(missing_ok=True)
        if isinstance(error, DataValidationError):
            raise
        raise DataValidationError(f"{redact(source)}: download failed ({error.__class__.__name__}: "
                                  f"{redact(_first_line(error))})") from None
    try:
        return extract_archive(archive, scratch / "extracted", label=redact(source), max_member_bytes=max_member_bytes)
    finally:
        archive.unlink(missing_ok=True)


def _s3(source: str, scratch: Path, s3_endpoint_url: str | None, **_) -> Path:
    import boto3
    import botocore.exceptions

    parts = urlsplit(source)
    bucket, prefix = parts.netloc, parts.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    endpoint = s3_endpoint_url or os.environ.get("S3_ENDPOINT_URL") or None
    client = boto3.client("s3", endpoint_url=endpoint)
    dest = scratch / "s3"
    found = 0
    try:
        with Progress(f"downloading {redact(source)}", None, "files") as progress:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    relative = item["Key"][len(prefix):]
                    if not relative or relative.endswith("/"):
                        continue
                    target = _inside(dest, relative, redact(source))
                    target.parent.mkdir(parents=True, exist_ok=True)
                    client.download_file(bucket, item["Key"], str(target))
                    found += 1
                    progress.update()
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        raise DataValidationError(f"{redact(source)}: s3 read failed ({redact(_first_line(error))})") from None
    if not found:
        raise DataValidationError(f"{redact(source)}: no objects under this prefix")
    return dest


def _lakefs(source: str, scratch: Path, lakefs, **_) -> Path:
    from segmodels.versioning import LakeFSUri

    if lakefs is None:
        raise ValueError(f"{source}: a lakefs:// source is read with a lakeFS client; pass lakefs=<segmodels.versioning.LakeFS>")
    uri = LakeFSUri.parse(source)
    return Path(lakefs.download_prefix(uri.repo, uri.ref, uri.path))


RESOLVERS: dict[str, Callable[..., Path]] = {"": _local, "file": _local, "http": _http, "https": _http, "s3": _s3, "lakefs": _lakefs}


def extract_archive(archive: Path, dest: Path, *, label: str | None = None, max_member_bytes: int | None = None) -> Path:
    """Extract a zip or tar archive into dest (refusing members that escape it, links out of it, FIFOs and devices,
    and members larger than `max_member_bytes`); descend into a single top folder. Errors name the archive as
    `label` (the source as the user gave it, credentials removed), never the file it was downloaded to."""
    label = label or archive.name
    dest.mkdir(parents=True, exist_ok=True)

    def check_size(name: str, size: int) -> None:
        if max_member_bytes is not None and size > max_member_bytes:
            raise DataValidationError(
                f"{label}: member {name!r} of {size} bytes is above data.max_file_bytes={max_member_bytes}"
            )

    def tar_filter(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        member = tarfile.data_filter(member, path)
        check_size(member.name, member.size)
        return member

    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as bundle:
                for member in bundle.infolist():
                    _inside(dest, member.filename, label)
                    check_size(member.filename, member.file_size)
                check_room(dest, sum(member.file_size for member in bundle.infolist()), label, "extracting it")
                bundle.extractall(dest)
        else:
            with tarfile.open(archive) as bundle:
                check_room(dest, sum(member.size for member in bundle.getmembers()), label, "extracting it")
                bundle.extractall(dest, filter=tar_filter)
    except tarfile.FilterError as error:
        raise DataValidationError(f"{label}: archive member refused ({_first_line(error)})") from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as error:
        if isinstance(error, DataValidationError):
            raise
        raise DataValidationError(f"{label}: corrupt or unreadable archive ({_first_line(error)})") from None
    entries = [entry for entry in dest.iterdir() if entry.name not in ("__MACOSX",) and not entry.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return dest


def check_room(folder: Path, needed: int, label: str, what: str) -> None:
    """Refuse (naming ``label``) when writing ``needed`` more bytes into ``folder`` would leave its disk with less
    than ``DISK_SPARE`` free: a download or an archive larger than the disk fails before it fills it."""
    free = shutil.disk_usage(folder).free
    if needed > free - DISK_SPARE:
        raise DataValidationError(f"{label}: {what} needs {needed / 1e6:,.0f} MB and the disk of {folder} has "
                                  f"{free / 1e6:,.0f} MB free (keeping {DISK_SPARE / 1e6:,.0f} MB spare)")


def _inside(dest: Path, relative: str, label: str) -> Path:
    """dest / relative, refused unless it stays inside dest; `label` names the source (credentials removed)."""
    target = (dest / relative).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise DataValidationError(f"{label}: member {relative!r} would be written outside the extraction folder")
    return target


def _first_line(error: Exception) -> str:
    return (str(error).splitlines() or [error.__class__.__name__])[0]


