"""The one exception the versioning client raises."""

from __future__ import annotations


class LakeFSError(Exception):
    """A lakeFS operation failed; the message names the endpoint / repository / ref / path and the reason.

    ``status`` is the HTTP status of the server's answer, when there was one.
    """

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status
