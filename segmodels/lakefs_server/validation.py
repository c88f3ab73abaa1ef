"""Validation of names and object paths (lakeFS naming rules, plus paths that must stay inside the store)."""

from __future__ import annotations

import re

from .errors import BadRequest

REPOSITORY_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{2,62}$")
BRANCH_NAME = re.compile(r"^\w[-\w]*$")
TAG_NAME = re.compile(r"^\w[-\w./]*$")


def check_name(kind: str, value: str, pattern: re.Pattern) -> str:
    """Return ``value`` when it matches ``pattern``, else a 400 naming the field."""
    if not isinstance(value, str) or not pattern.match(value):
        raise BadRequest(f"validation error: {kind}: {value!r} is not a valid {kind} name")
    return value


def check_object_path(path: str | None) -> str:
    """Reject empty paths and paths that try to leave a directory (``..`` segments, absolute, NUL)."""
    if path is None or path == "":
        raise BadRequest("validation error: path: path is required")
    if "\x00" in path:
        raise BadRequest(f"validation error: path: {path!r} contains a NUL byte")
    if path.startswith("/"):
        raise BadRequest(f"validation error: path: {path!r} is absolute")
    if any(part == ".." for part in path.split("/")):
        raise BadRequest(f"validation error: path: {path!r} contains a '..' segment")
    return path
