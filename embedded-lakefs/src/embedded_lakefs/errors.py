"""API errors carrying the HTTP status and message lakeFS returns for them."""

from __future__ import annotations


class ApiError(Exception):
    """An error answered to the client as ``{"message": ...}`` with ``status``."""

    status = 500

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class PreconditionFailed(ApiError):
    status = 412


class PayloadTooLarge(ApiError):
    status = 413


class RangeNotSatisfiable(ApiError):
    status = 416
