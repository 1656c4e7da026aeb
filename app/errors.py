"""Domain errors. Code below the handlers raises these; one middleware turns them into HTTP."""

from __future__ import annotations


class AppError(Exception):
    """A failure the client should hear about, with its status and a stable code."""

    status = 500
    code = "internal_error"
    retry_after: int | None = None
    # The request body was not read to its end: the connection cannot carry another request.
    close_connection = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


class BadRequest(AppError):
    status = 400
    code = "bad_request"


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="monogram"'}


class InvalidToken(Unauthorized):
    code = "invalid_token"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="monogram", error="invalid_token"'}


class NotFound(AppError):
    status = 404
    code = "not_found"


class Conflict(AppError):
    status = 409
    code = "conflict"


class UnpostedLimit(Conflict):
    code = "unposted_limit"


class UnsupportedMediaType(AppError):
    status = 415
    code = "unsupported_media_type"


class Invalid(AppError):
    """The request is well formed but a field's value is not acceptable."""

    status = 422
    code = "invalid"


class RateLimited(AppError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServiceUnavailable(AppError):
    status = 503
    code = "service_unavailable"
    retry_after = 1


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"


class DatabaseBusy(ServiceUnavailable):
    """Every pooled connection is in use and none came free in time."""

    code = "database_busy"


class StorageUnavailable(ServiceUnavailable):
    code = "storage_unavailable"


class StorageRefused(AppError):
    status = 502
    code = "storage_error"


class StorageTimeout(ServiceUnavailable):
    status = 504
    code = "storage_timeout"


class DatabaseTimeout(ServiceUnavailable):
    """A statement ran past DB_COMMAND_TIMEOUT."""

    status = 504
    code = "database_timeout"


class DeadlineExceeded(ServiceUnavailable):
    code = "deadline_exceeded"
