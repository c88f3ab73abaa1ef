"""Validation of names, refs, object paths and JSON request bodies, as lakeFS validates them.

The name rules follow treeverse/lakeFS (``pkg/graveler`` / ``pkg/validator`` and ``api/swagger.yml``). Go's
regular expressions are ASCII-only for ``\\w`` and ``\\s`` and their ``$`` matches only at the very end, so the
patterns here use ``re.ASCII`` and ``fullmatch`` (Python's ``$`` also matches before a trailing newline).
Paths additionally must stay inside the store (no ``..`` segments, not absolute, no NUL).
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Callable

from .errors import BadRequest

REPOSITORY_NAME = re.compile(r"[a-z0-9][a-z0-9-]{2,62}", re.ASCII)
BRANCH_NAME = re.compile(r"\w[-\w]*", re.ASCII)
REF_NAME = re.compile(r"[^\t\n\f\r ]+")  # lakeFS: ^[^\s]+$ with Go's (ASCII) \s
STORAGE_NAMESPACE = re.compile(r"(s3|gs|https?|mem|local|transient)://.*", re.DOTALL)
MAX_PATH_LENGTH = 1024  # bytes of UTF-8, as lakeFS' validator counts them
MAX_AMOUNT = 1000
MIN_AMOUNT = -1
INT64 = (-(1 << 63), (1 << 63) - 1)
_TAG_FORBIDDEN = set("^:?*[\\")


def _is_valid_tag(value: str) -> bool:
    """lakeFS' ``ValidateTagID`` (git-check-ref-format like; unlike git, ``~`` is allowed)."""
    if not value or value == "@":
        return False
    if value.endswith((".", ".lock", "/")) or value.startswith("/"):
        return False
    if ".." in value or "//" in value or "@{" in value:
        return False
    for char in value:
        if ord(char) < 0x20 or ord(char) == 0x7F or char.isspace() or char in _TAG_FORBIDDEN:
            return False
        if unicodedata.category(char) == "Zs":
            return False
    return True


class _TagRule:
    """Pattern-like object so that tags can be passed where a compiled pattern is expected."""

    def fullmatch(self, value: str):
        return _is_valid_tag(value)

    match = fullmatch


TAG_NAME = _TagRule()


def _show(value) -> str:
    """``value`` for an error message, shortened."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_name(kind: str, value, pattern) -> str:
    """Return ``value`` when it (entirely) matches ``pattern``, else a 400 naming the field."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise BadRequest(f"validation error: {kind}: {_show(value)} is not a valid {kind} name")
    return value


def check_repository(value) -> str:
    return check_name("repository", value, REPOSITORY_NAME)


def check_branch(value) -> str:
    return check_name("branch", value, BRANCH_NAME)


def check_tag(value) -> str:
    return check_name("tag", value, TAG_NAME)


def check_ref(value, kind: str = "ref") -> str:
    if not isinstance(value, str) or not REF_NAME.fullmatch(value):
        raise BadRequest(f"validation error: {kind}: {_show(value)} is not a valid ref")
    return value


def check_object_path(path: str | None, kind: str = "path") -> str:
    """Reject empty and over-long paths and paths that try to leave a directory (``..``, absolute, NUL)."""
    if path is None or path == "":
        raise BadRequest(f"validation error: {kind}: path is required")
    if not isinstance(path, str):
        raise BadRequest(f"validation error: {kind}: must be a string")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_LENGTH:
        raise BadRequest(f"validation error: {kind}: longer than {MAX_PATH_LENGTH} bytes")
    if "\x00" in path:
        raise BadRequest(f"validation error: {kind}: {_show(path)} contains a NUL byte")
    if path.startswith("/"):
        raise BadRequest(f"validation error: {kind}: {_show(path)} is absolute")
    if any(part == ".." for part in path.split("/")):
        raise BadRequest(f"validation error: {kind}: {_show(path)} contains a '..' segment")
    return path


def check_amount(amount: int | None) -> int | None:
    """``amount`` as the swagger's ``PaginationAmount`` allows it: -1 ... 1000 (<= 0: the default)."""
    if amount is not None and not MIN_AMOUNT <= amount <= MAX_AMOUNT:
        raise BadRequest(f"validation error: amount: must be between {MIN_AMOUNT} and {MAX_AMOUNT}")
    return amount


# -- JSON bodies -----------------------------------------------------------------------------------------------
def _string(name: str, value) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"validation error: {name}: must be a string")
    return value


def _boolean(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise BadRequest(f"validation error: {name}: must be a boolean")
    return value


def _integer(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not INT64[0] <= value <= INT64[1]:
        raise BadRequest(f"validation error: {name}: must be a 64-bit integer")
    return value


def _metadata(name: str, value) -> dict:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise BadRequest(f"validation error: {name}: must map strings to strings")
    return value


def _strings(name: str, value) -> list:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"validation error: {name}: must be a list of strings")
    return value


STRING, BOOLEAN, INTEGER, METADATA, STRINGS = _string, _boolean, _integer, _metadata, _strings


def fields(body: dict, spec: dict[str, Callable], required: tuple[str, ...] = ()) -> dict:
    """The fields of ``body`` named in ``spec``, each checked by its type; ``null`` counts as absent (as in Go).

    Unknown fields are ignored, as lakeFS ignores them."""
    result = {}
    for name, check in spec.items():
        value = body.get(name)
        if value is None:
            if name in required:
                raise BadRequest(f"validation error: {name}: required")
            continue
        result[name] = check(name, value)
    return result


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse_json_object(raw: bytes) -> dict:
    """A JSON object from ``raw`` (strict UTF-8, no NaN / Infinity, no lone surrogates), else 400."""
    return parse_json(raw, dict)


def parse_json(raw: bytes, kind: type = dict):
    """A JSON value of type ``kind`` (``dict`` or ``list``) from ``raw``, checked as ``parse_json_object``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("request body is not valid UTF-8") from None
    if not text.strip():
        return kind()
    try:
        body = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(body, kind):
        raise BadRequest("request body must be a JSON " + ("object" if kind is dict else "array"))
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("request body contains an invalid unicode string (lone surrogate)") from None
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None
    return body
