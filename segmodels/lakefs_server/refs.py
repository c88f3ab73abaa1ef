"""Parsing of lakeFS ref expressions: ``name``, ``name@``, ``name~N``, ``name^N`` and chains of them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import BadRequest

_MODIFIER = re.compile(r"([~^])(\d*)|([@$])")
_HASH = re.compile(r"[a-fA-F0-9]{1,64}")


@dataclass(frozen=True)
class RefExpression:
    """A ref name and its modifiers: ``("~", n)`` / ``("^", n)`` ancestry steps, ``("@", 0)`` (the branch's
    committed head, staging excluded) or ``("$", 0)`` (the branch with its staging area)."""

    base: str
    modifiers: tuple[tuple[str, int], ...] = ()

    @property
    def committed_only(self) -> bool:
        return ("@", 0) in self.modifiers

    @property
    def branch_modifier(self) -> str | None:
        """``@`` or ``$`` when the ref carries one of those branch modifiers."""
        return next((kind for kind, _ in self.modifiers if kind in "@$"), None)


def is_a_hash(name: str) -> bool:
    """Whether ``name`` may be a commit id or a prefix of one (lakeFS tries those before branches and tags)."""
    return bool(_HASH.fullmatch(name))


def parse_ref(ref: str) -> RefExpression:
    """Split ``ref`` into its base name and modifiers, as lakeFS' ref parser does."""
    if not ref:
        raise BadRequest("invalid ref: empty ref")
    cut = min((i for i in (ref.find(c) for c in "~^@$") if i >= 0), default=len(ref))
    base, rest = ref[:cut], ref[cut:]
    if not base:
        raise BadRequest(f"invalid ref: {ref!r}")
    modifiers = []
    pos = 0
    while pos < len(rest):
        match = _MODIFIER.match(rest, pos)
        if not match:
            raise BadRequest(f"invalid ref: {ref!r}")
        if match.group(3):
            modifiers.append((match.group(3), 0))
        else:
            modifiers.append((match.group(1), int(match.group(2)) if match.group(2) else 1))
        pos = match.end()
    expression = RefExpression(base, tuple(modifiers))
    if expression.branch_modifier and len(modifiers) != 1:  # "@" / "$" stand alone, as in lakeFS
        raise BadRequest(f"invalid ref: {ref!r}")
    return expression
