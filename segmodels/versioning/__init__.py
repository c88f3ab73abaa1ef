"""Data and model versioning in lakeFS: settings, the embedded server, URIs and the ``LakeFS`` client."""

from .client import CommitInfo, LakeFS, StagedWrite, TransferStats, connect
from .embedded import ensure_embedded_server
from .errors import LakeFSError
from .settings import LakeFSSettings
from .uri import LakeFSUri

__all__ = [
    "CommitInfo",
    "LakeFS",
    "LakeFSError",
    "LakeFSSettings",
    "LakeFSUri",
    "StagedWrite",
    "TransferStats",
    "connect",
    "ensure_embedded_server",
]
