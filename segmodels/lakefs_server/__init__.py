"""Embedded lakeFS-compatible server (the lakeFS REST API under ``/api/v1``) for users without docker and tests.

Run it with ``python -m segmodels.lakefs_server --data-dir DIR`` or :func:`create_server`.
"""

from .server import EmbeddedLakeFSServer, create_server, serve_until_stopped

__all__ = ["EmbeddedLakeFSServer", "create_server", "serve_until_stopped"]
