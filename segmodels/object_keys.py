"""Object-store keys as local paths: keys that cannot all become files."""

from __future__ import annotations

from collections.abc import Iterable


def file_and_folder(keys: Iterable[str]) -> tuple[str, str] | None:
    """A key that is also the folder of another key (``a/s0.png`` and ``a/s0.png/evil``) as ``(that key, the key
    below it)``, or None: such keys cannot all be downloaded as files."""
    present = set(keys)
    for key in sorted(present):
        parts = key.split("/")
        for end in range(1, len(parts)):
            folder = "/".join(parts[:end])
            if folder in present:
                return folder, key
    return None
