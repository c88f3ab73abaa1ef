"""Where a source lives: a local folder or archive, an http(s) archive, an s3:// prefix or a lakefs:// ref.

Each resolves to a local folder that a format reader can read; downloads stream to disk in chunks.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import shutil
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from segmodels.data.errors import DataValidationError, ValidationReport, clipped
from segmodels.object_keys import file_and_folder
from segmodels.progress import Progress

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")
CHUNK = 1 << 20
DISK_SPARE = 1 << 30  # free space a download or an extraction leaves on its disk, at least
ROOM_CHECK_EVERY = 64  # chunks downloaded between checks of the free space
RATIO_FLOOR = 64 << 20  # an archive may always expand to this many bytes, whatever data.max_compression_ratio says


@dataclass(frozen=True)
class FetchLimits:
    """Bounds on fetching a source (the `data.*` keys of the same names; these defaults are conf/data/auto.yaml's):
    a member of an archive of at most `max_member_bytes` (None: any), at most `max_extracted_bytes` extracted per
    archive and at most `max_compression_ratio` times the archive's size (at least :data:`RATIO_FLOOR`), a download
    of at most `max_download_seconds` in all."""

    max_member_bytes: int | None = None
    max_extracted_bytes: int = 32 << 30
    max_compression_ratio: float = 200.0
    max_download_seconds: float = 3600.0

    def budget(self, archive_bytes: int) -> int:
        """The bytes an archive of `archive_bytes` may expand to."""
        by_ratio = max(int(self.max_compression_ratio * archive_bytes), RATIO_FLOOR)
        return min(self.max_extracted_bytes, by_ratio)


def redact(source) -> str:
    """The source (or any text naming it) with credentials masked, safe to log and record: each URL's user info
    and secret query parameters become ``***`` (``http://***@host/data.zip``), see :mod:`segmodels.redaction`."""
    from segmodels.redaction import redact_text

    return redact_text(source)


def is_archive(name: str) -> bool:
    """Whether a file name has one of the archive suffixes a source may have."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def resolve_source(
    source,
    scratch: Path,
    *,
    lakefs,
    s3_endpoint_url: str | None,
    max_member_bytes: int | None = None,
    limits: FetchLimits = FetchLimits(),
) -> Path:
    """A local folder holding the source's files, downloading/extracting into `scratch` when needed.

    `lakefs` is the client (`segmodels.versioning.LakeFS`) that reads a lakefs:// source (None for other
    sources); `s3_endpoint_url` the endpoint of an s3:// source (None: AWS or `S3_ENDPOINT_URL`); `limits` bound
    downloads and extraction (:func:`fetch_limits` reads them from the data options), `max_member_bytes` (when
    given) replacing theirs: archives holding a larger file (`data.max_file_bytes`) are refused before extracting.
    """
    if max_member_bytes is not None:
        limits = dataclasses.replace(limits, max_member_bytes=max_member_bytes)
    text = str(source)
    scheme = _scheme(text)
    if scheme not in RESOLVERS:
        raise DataValidationError(
            f"{redact(source)}: unsupported source scheme {scheme!r}; expected a path or "
            f"{sorted(s for s in RESOLVERS if s)}"
        )
    return RESOLVERS[scheme](text, Path(scratch), lakefs=lakefs, s3_endpoint_url=s3_endpoint_url, limits=limits)


def _scheme(source: str) -> str:
    """The source's URL scheme, lower-cased ('' for a path); read also where the rest is no valid URL (an unclosed
    [ in a password), so that its resolver refuses it in one line."""
    if "://" not in source:
        return ""
    try:
        return urlsplit(source).scheme.lower()
    except ValueError:
        return source.partition("://")[0].lower()


def fetch_limits(data, max_member_bytes: int | None = None) -> FetchLimits:
    """The fetch limits the data options set (`data.max_extracted_bytes`, `data.max_compression_ratio`,
    `data.max_download_seconds`; a key the options lack keeps its default), each checked to be positive."""
    values = {}
    for key in ("max_extracted_bytes", "max_compression_ratio", "max_download_seconds"):
        value = getattr(data, key, None) if not isinstance(data, dict) else data.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise DataValidationError(f"data.{key}={clipped(value)}: expected a positive number")
        values[key] = value
    return FetchLimits(max_member_bytes=max_member_bytes, **values)


def _local(source: str, scratch: Path, limits: FetchLimits, **_) -> Path:
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.is_file() and is_archive(path.name):
        return extract_archive(path, scratch / "extracted", label=redact(source), limits=limits)
    raise DataValidationError(f"{path}: source not found (expected a folder or an archive {ARCHIVE_SUFFIXES})")


def _http(source: str, scratch: Path, limits: FetchLimits, **_) -> Path:
    import requests
    from urllib3.exceptions import LocationParseError

    label = redact(source)
    _check_authority(source, label)
    name = Path(urlsplit(source).path).name
    if not is_archive(name):
        raise DataValidationError(f"{label}: an http(s) source must be an archive {ARCHIVE_SUFFIXES}")
    scratch.mkdir(parents=True, exist_ok=True)
    archive = scratch / name
    deadline = Deadline(label, limits.max_download_seconds)
    stretch = ROOM_CHECK_EVERY * CHUNK
    try:
        with requests.get(source, stream=True, timeout=60) as response:
            response.raise_for_status()
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit():
                check_room(scratch, int(declared), label, "the download")
            total = int(declared) if declared.isdigit() else None
            with open(archive, "wb") as handle, Progress(f"downloading {name}", total, "MB", scale=1e-6) as progress:
                received = unchecked = 0
                # read1: whatever has arrived, so that a server sending a byte at a time meets the deadline
                while chunk := response.raw.read1(CHUNK, decode_content=True):
                    received += len(chunk)
                    deadline.check(received)
                    unchecked += len(chunk)
                    if unchecked >= stretch:
                        check_room(scratch, stretch, label, "the download")
                        unchecked = 0
                    handle.write(chunk)
                    progress.update(len(chunk))
    except (requests.exceptions.InvalidURL, LocationParseError):  # their messages quote the URL's parts, unmasked
        archive.unlink(missing_ok=True)
        raise DataValidationError(f"{label}: not a valid http(s) URL (requests cannot parse its host)") from None
    except (requests.RequestException, DataValidationError, OSError) as error:
        archive.unlink(missing_ok=True)
        if isinstance(error, DataValidationError):
            raise
        raise DataValidationError(
            f"{label}: download failed ({error.__class__.__name__}: {redact(_first_line(error))})"
        ) from None
    try:
        return extract_archive(archive, scratch / "extracted", label=label, limits=limits)
    finally:
        archive.unlink(missing_ok=True)


def _check_authority(source: str, label: str) -> None:
    """Refuse, in one line naming the redacted source, a URL whose authority is no host[:port] (a password with an
    unencoded / ? # [ cuts it short): requests' own message would quote that authority, user and password start."""
    try:
        parts = urlsplit(source)
        valid = bool(parts.hostname) and (parts.port or 0) >= 0
    except ValueError:  # an unclosed [ (IPv6), a port that is no number or out of range
        valid = False
    if not valid:
        raise DataValidationError(
            f"{label}: not a valid http(s) URL: its authority is no host[:port] (in a user name "
            "or password, write / ? # @ [ ] as %2F %3F %23 %40 %5B %5D)"
        )


class Deadline:
    """The time budget of one download (`data.max_download_seconds`), from its start."""

    def __init__(self, label: str, seconds: float):
        self.label, self.seconds = label, seconds
        self.end = time.monotonic() + seconds

    def check(self, received: int) -> None:
        """Refuse, naming the source, the limit and the key to raise it, once the budget is spent."""
        if time.monotonic() > self.end:
            raise DataValidationError(
                f"{self.label}: download still running after data.max_download_seconds={self.seconds:g} "
                f"({received} bytes received); -P data.max_download_seconds=<seconds> raises the limit"
            )


def _s3(source: str, scratch: Path, s3_endpoint_url: str | None, limits: FetchLimits, **_) -> Path:
    import boto3
    import botocore.exceptions

    label = redact(source)
    parts = urlsplit(source)
    bucket, prefix = parts.netloc, parts.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    endpoint = s3_endpoint_url or os.environ.get("S3_ENDPOINT_URL") or None
    client = boto3.client("s3", endpoint_url=endpoint)
    dest = scratch / "s3"
    deadline = Deadline(label, limits.max_download_seconds)
    try:
        items = [
            item
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for item in page.get("Contents", [])
            if item["Key"][len(prefix) :] and not item["Key"].endswith("/")
        ]
        clash = file_and_folder(item["Key"] for item in items)
        if clash:
            raise DataValidationError(
                f"{label}: object {clipped(clash[0])} is also the folder of {clipped(clash[1])}; "
                "both cannot be files: remove one of them"
            )
        received = 0
        with Progress(f"downloading {label}", len(items), "files") as progress:
            for item in items:
                target = _inside(dest, item["Key"][len(prefix) :], label)
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, item["Key"], str(target))
                received += item.get("Size", 0)
                deadline.check(received)
                progress.update()
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        raise DataValidationError(f"{label}: s3 read failed ({redact(_first_line(error))})") from None
    if not items:
        raise DataValidationError(f"{label}: no objects under this prefix")
    return dest


def _lakefs(source: str, scratch: Path, lakefs, **_) -> Path:
    from segmodels.versioning import LakeFSUri

    if lakefs is None:
        raise ValueError(
            f"{source}: a lakefs:// source is read with a lakeFS client; pass lakefs=<segmodels.versioning.LakeFS>"
        )
    uri = LakeFSUri.parse(source)
    return Path(lakefs.download_prefix(uri.repo, uri.ref, uri.path))


RESOLVERS: dict[str, Callable[..., Path]] = {
    "": _local,
    "file": _local,
    "http": _http,
    "https": _http,
    "s3": _s3,
    "lakefs": _lakefs,
}


def extract_archive(
    archive: Path, dest: Path, *, label: str | None = None, limits: FetchLimits = FetchLimits()
) -> Path:
    """Extract a zip or tar archive into dest; descend into a single top folder. Errors name the archive as `label`
    (the source as the user gave it, credentials removed), never the file it was downloaded to.

    Refused before anything is written: members that escape dest, links out of it, FIFOs and devices, two members
    with one normalised path, a member above `limits.max_member_bytes`, declared sizes above the extraction budget
    (:meth:`FetchLimits.budget`) or the disk's room. While extracting, the bytes actually written are counted
    against the same limits (a header cannot hide a bomb)."""
    label = label or archive.name
    dest.mkdir(parents=True, exist_ok=True)
    budget = _Budget(label, limits, archive.stat().st_size, dest)
    try:
        if archive.name.lower().endswith(".zip"):
            _extract_zip(archive, dest, label, budget)
        else:
            _extract_tar(archive, dest, label, budget)
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


def _extract_zip(archive: Path, dest: Path, label: str, budget: _Budget) -> None:
    with zipfile.ZipFile(archive) as bundle:
        members = bundle.infolist()
        for member in members:
            _inside(dest, member.filename, label)
        budget.check_declared([(member.filename, member.file_size) for member in members if not member.is_dir()])
        for member in members:
            target = _inside(dest, member.filename, label)
            if member.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            with bundle.open(member) as stream:
                budget.copy(stream, target, member.filename)


def _extract_tar(archive: Path, dest: Path, label: str, budget: _Budget) -> None:
    with tarfile.open(archive) as bundle:
        budget.check_declared((member.name, member.size) for member in bundle if not member.isdir())
        for member in bundle.getmembers():
            member = tarfile.data_filter(member, str(dest))  # FilterError: out of dest, links out, devices, FIFOs
            if member.isreg():
                with bundle.extractfile(member) as stream:
                    budget.copy(stream, _inside(dest, member.name, label), member.name)
            else:  # folders and links that stay inside dest: no bytes to count
                bundle.extract(member, dest, filter="data")


class _Budget:
    """What extracting one archive may write; refusals name the archive (`label`), the member and the key to raise."""

    def __init__(self, label: str, limits: FetchLimits, archive_bytes: int, dest: Path):
        self.label, self.limits, self.archive_bytes, self.dest = label, limits, archive_bytes, dest
        self.allowed = limits.budget(archive_bytes)
        self.written = 0

    def check_declared(self, files: Iterable[tuple[str, int]]) -> None:
        """Refuse sizes the headers declare above the limits (as soon as they add up to it: a compressed tar's
        headers are found by decompressing), then duplicate member paths, then sizes above the disk's room."""
        names, total = [], 0
        for name, size in files:
            self.check_member(name, size)
            total += size
            if total > self.allowed:
                raise self.refusal(name, total)
            names.append(name)
        _refuse_duplicates(self.label, names)
        check_room(self.dest, total, self.label, "extracting it")

    def check_member(self, name: str, size: int) -> None:
        limit = self.limits.max_member_bytes
        if limit is not None and size > limit:
            raise DataValidationError(
                f"{self.label}: member {clipped(name)} of {size} bytes is above data.max_file_bytes={limit}"
            )

    def copy(self, stream, target: Path, name: str) -> None:
        """Write `stream` to `target`, counting its bytes against the member and total limits as they come."""
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as out:
                size = 0
                while chunk := stream.read(CHUNK):
                    size += len(chunk)
                    self.written += len(chunk)
                    self.check_member(name, size)
                    if self.written > self.allowed:
                        raise self.refusal(name, self.written)
                    out.write(chunk)
        except OSError as error:
            if not error.strerror:
                raise
            raise DataValidationError(
                f"{self.label}: member {clipped(name)} cannot be extracted ({error.strerror})"
            ) from None

    def refusal(self, name: str, total: int) -> DataValidationError:
        limits = self.limits
        at = f"at member {clipped(name)}"
        if total > limits.max_extracted_bytes:
            return DataValidationError(
                f"{self.label}: archive expands to more than data.max_extracted_bytes={limits.max_extracted_bytes} "
                f"bytes ({at}); -P data.max_extracted_bytes=<bytes> raises the limit"
            )
        return DataValidationError(
            f"{self.label}: archive of {self.archive_bytes} bytes expands to more than "
            f"data.max_compression_ratio={limits.max_compression_ratio:g} times its size ({at}: a compression bomb?); "
            f"-P data.max_compression_ratio=<ratio> raises the limit"
        )


def _refuse_duplicates(label: str, names: list[str]) -> None:
    """Refuse, with a report listing each, files that two members would write (`a/./b//c` is `a/b/c`)."""
    by_path: dict[str, list[str]] = {}
    for name in names:
        by_path.setdefault(posixpath.normpath(name.replace("\\", "/")).lstrip("/"), []).append(name)
    report = ValidationReport()
    for path, copies in by_path.items():
        if len(copies) > 1:
            report.add(
                f"{label}/{path}",
                f"duplicate archive member ({len(copies)} copies: {', '.join(clipped(copy) for copy in copies[:3])})",
            )
    if report:
        raise DataValidationError(
            f"{label}: {len(report)} archive member(s) present more than once, archive refused "
            f"(first: {report.issues[0]}); remove the extra copies",
            report,
        )


def check_room(folder: Path, needed: int, label: str, what: str) -> None:
    """Refuse (naming ``label``) when writing ``needed`` more bytes into ``folder`` would leave its disk with less
    than ``DISK_SPARE`` free: a download or an archive larger than the disk fails before it fills it."""
    free = shutil.disk_usage(folder).free
    if needed > free - DISK_SPARE:
        raise DataValidationError(
            f"{label}: {what} needs {needed / 1e6:,.0f} MB and the disk of {folder} has "
            f"{free / 1e6:,.0f} MB free (keeping {DISK_SPARE / 1e6:,.0f} MB spare)"
        )


def _inside(dest: Path, relative: str, label: str) -> Path:
    """dest / relative, refused unless it stays inside dest; `label` names the source (credentials removed)."""
    target = (dest / relative).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise DataValidationError(f"{label}: member {relative!r} would be written outside the extraction folder")
    return target


def _first_line(error: Exception) -> str:
    return (str(error).splitlines() or [error.__class__.__name__])[0]
