"""Retries with exponential backoff on connection errors and 5xx answers, then one clear :class:`LakeFSError`."""

from __future__ import annotations

import json
import time
from typing import Callable, TypeVar

import lakefs_sdk
import urllib3

from .errors import LakeFSError

T = TypeVar("T")

RETRYABLE_ERRORS = (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)


class ServerError(Exception):
    """A raw HTTP answer with an error status (``status``, lakeFS ``message``)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def error_message(body) -> str:
    """The ``message`` of a lakeFS ``Error`` body, or the body itself."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        return str(json.loads(body)["message"])
    except (TypeError, ValueError, KeyError):
        return (body or "").strip()[:200]


def status_of(exc: BaseException) -> int | None:
    if isinstance(exc, lakefs_sdk.ApiException):
        return exc.status
    if isinstance(exc, ServerError):
        return exc.status
    return None


class Retrier:
    """Runs calls against ``endpoint``, retrying transient failures ``attempts`` times with backoff."""

    def __init__(self, endpoint: str, attempts: int = 5, backoff: float = 0.2, max_backoff: float = 5.0):
        self.endpoint = endpoint
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff

    def __call__(self, what: str, fn: Callable[..., T], *args, **kwargs) -> T:
        """``fn(*args, **kwargs)``; errors become ``LakeFSError("lakeFS <endpoint>: <what>: <reason>")``."""
        for attempt in range(1, self.attempts + 1):
            try:
                return fn(*args, **kwargs)
            except (lakefs_sdk.ApiException, ServerError) as exc:
                status = status_of(exc)
                message = exc.message if isinstance(exc, ServerError) else error_message(exc.body) or exc.reason
                if status is not None and status >= 500 and attempt < self.attempts:
                    self._sleep(attempt)
                    continue
                raise LakeFSError(f"lakeFS {self.endpoint}: {what}: {message} (HTTP {status})",
                                  status=status) from None
            except RETRYABLE_ERRORS as exc:
                if attempt < self.attempts:
                    self._sleep(attempt)
                    continue
                raise LakeFSError(f"lakeFS {self.endpoint}: {what}: server unreachable after {self.attempts} "
                                  f"attempts ({exc.__class__.__name__}: {exc})") from None
        raise AssertionError("unreachable")

    def _sleep(self, attempt: int) -> None:
        time.sleep(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))
