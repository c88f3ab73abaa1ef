"""A lakeFS-compatible server (the lakeFS REST API under ``/api/v1``) on one local data directory, for machines
without docker and for tests.

Run it with ``python -m embedded_lakefs --data-dir DIR`` or :func:`create_server`. Importing the package loads
nothing else: clients that only share the data directory's files use :mod:`embedded_lakefs.datadir`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EmbeddedLakeFSServer", "create_server", "serve_until_stopped"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
