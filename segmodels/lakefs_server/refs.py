"""Parsing of lakeFS ref expressions: ``name``, ``name@``, ``name~N``, ``name^N`` and chains of them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import BadRequest

_MODIFIER = re.compile(r"([~^])(\d*)")


@dataclass(frozen=True)
class RefExpression:
    """A ref name, its ancestry modifiers (``("~", n)`` / ``("^", n)``) and whether staging is excluded."""

    base: str
    modifiers: tuple[tuple[str, int], ...] = ()
    committed_only: bool = False


def parse_ref(ref: str) -> RefExpression:
    """Split ``ref`` into its base name and ancestry modifiers, as lakeFS' ref parser does."""
    if not ref:
        raise BadRequest("invalid ref: empty ref")
    cut = min((i for i in (ref.find("~"), ref.find("^")) if i >= 0), default=len(ref))
    base, rest = ref[:cut], ref[cut:]
    committed_only = False
    if base.endswith("@"):
        base, committed_only = base[:-1], True
    if not base:
        raise BadRequest(f"invalid ref: {ref!r}")
    modifiers = []
    pos = 0
    while pos < len(rest):
        match = _MODIFIER.match(rest, pos)
        if not match:
            raise BadRequest(f"invalid ref: {ref!r}")
        modifiers.append((match.group(1), int(match.group(2)) if match.group(2) else 1))
        pos = match.end()
    return RefExpression(base, tuple(modifiers), committed_only)
