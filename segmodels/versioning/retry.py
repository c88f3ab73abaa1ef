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


def _causes(exc: BaseException):
    """``exc``, then what it wraps (``__cause__``/``__context__`` and exception arguments), depth first."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        inner = [a for a in getattr(current, "args", ()) if isinstance(a, BaseException)]
        inner += [e for e in (current.__cause__, current.__context__) if e is not None]
        stack.extend(reversed(inner))


def describe_failure(exc: BaseException, timeouts: tuple[float, float] | None = None) -> str:
    """A short reason for a transport failure, without urllib3's object reprs; ``timeouts`` (connect, read), when
    given, are named in timeout reasons."""
    for cause in _causes(exc):
        if isinstance(cause, urllib3.exceptions.NameResolutionError):
            return "host name not resolved"
        if isinstance(cause, urllib3.exceptions.NewConnectionError):
            continue  # the OSError it wraps says why
        if isinstance(cause, urllib3.exceptions.ConnectTimeoutError):
            return f"no connection within {timeouts[0]:g} s" if timeouts else "connect timed out"
        if isinstance(cause, urllib3.exceptions.ReadTimeoutError):
            return f"no answer within {timeouts[1]:g} s" if timeouts else "read timed out"
        if isinstance(cause, TimeoutError):  # a socket write (the request body) that did not progress
            return "timed out sending the request"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror[:1].lower() + cause.strerror[1:]
    text = str(exc)
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


class Retrier:
    """Runs calls against ``endpoint``, retrying transient failures: at most ``attempts`` tries, with exponential
    backoff, and no new try later than ``window`` seconds after the first (None: no time limit). Each try is
    bounded by the transport's own timeouts, so a call fails after at most ``window`` + one try."""

    def __init__(
        self,
        endpoint: str,
        attempts: int = 5,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        window: float | None = None,
        timeouts: tuple[float, float] | None = None,
    ):
        self.endpoint = endpoint
        self.timeouts = timeouts
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.window = window

    def __call__(self, what: str, fn: Callable[..., T], *args, **kwargs) -> T:
        """``fn(*args, **kwargs)``; errors become ``LakeFSError("lakeFS <endpoint>: <what>: <reason>")``."""
        start = time.monotonic()
        for attempt in range(1, self.attempts + 1):
            try:
                return fn(*args, **kwargs)
            except (lakefs_sdk.ApiException, ServerError) as exc:
                status = status_of(exc)
                message = exc.message if isinstance(exc, ServerError) else error_message(exc.body) or exc.reason
                if status is not None and status >= 500 and self._may_retry(attempt, start):
                    continue
                raise LakeFSError(f"lakeFS {self.endpoint}: {what}: {message} (HTTP {status})", status=status) from None
            except RETRYABLE_ERRORS as exc:
                if self._may_retry(attempt, start):
                    continue
                raise LakeFSError(
                    f"lakeFS {self.endpoint}: {what}: server unreachable after {attempt} attempt"
                    f"{'s' if attempt > 1 else ''} in {time.monotonic() - start:.1f} s "
                    f"({describe_failure(exc, self.timeouts)})"
                ) from None
        raise AssertionError("unreachable")

    def _may_retry(self, attempt: int, start: float) -> bool:
        """Sleep the backoff and return True when another attempt may start, else False."""
        if attempt >= self.attempts:
            return False
        pause = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        if self.window is not None and time.monotonic() + pause - start > self.window:
            return False
        time.sleep(pause)
        return True
