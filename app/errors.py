"""Every failure a client can hear about, in one place.

The work below the handlers raises these and knows nothing of HTTP; one middleware
(app/api/responses.py) turns each into `{"error": {"code", "message"}}` with its status.
Each class carries:
- `status`, the HTTP status;
- `code`, the stable machine-readable code clients branch on;
- `label`, the value it adds to the upload outcome metric (`monogram_uploads_total{result}`).
  Several codes can share a label ("storage_error"); tests/test_shape.py fails when a class
  with a code of its own has no label of its own.
"""

from __future__ import annotations


class AppError(Exception):
    """A failure the client should hear about, with its status and a stable code."""

    status = 500
    code = "internal_error"
    label = "error"
    retry_after: int | None = None
    # The request body was not read to its end: the connection cannot carry another request.
    close_connection = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


# --- 4xx: the request cannot succeed as sent ---------------------------------------------


class BadRequest(AppError):
    status = 400
    code = "bad_request"
    label = "bad_request"


class InvalidCursor(BadRequest):
    code = "invalid_cursor"
    label = "bad_request"


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"
    label = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="monogram"'}


class InvalidToken(Unauthorized):
    code = "invalid_token"
    label = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="monogram", error="invalid_token"'}


class TokenExpired(InvalidToken):
    code = "token_expired"
    label = "unauthorized"


class Forbidden(AppError):
    status = 403
    code = "forbidden"
    label = "forbidden"


class NotFound(AppError):
    status = 404
    code = "not_found"
    label = "not_found"


class TooSlow(AppError):
    """The upload's body arrived slower than UPLOAD_MIN_RATE."""

    status = 408
    code = "request_timeout"
    label = "too_slow"


class Conflict(AppError):
    status = 409
    code = "conflict"
    label = "conflict"


class IdempotencyInProgress(Conflict):
    """A first upload with the same Idempotency-Key has not finished yet."""

    label = "idempotency_conflict"


class UnpostedLimit(Conflict):
    code = "unposted_limit"
    label = "unposted_limit"


class UploadNotReceived(Conflict):
    """Completing a presigned upload whose file has not reached the store."""

    code = "upload_not_received"
    label = "not_received"


class MediaNotReady(Conflict):
    """A post of media still processing, or that failed."""

    code = "media_not_ready"
    label = "media_not_ready"


class Gone(AppError):
    status = 410
    code = "gone"
    label = "gone"


class UploadExpired(Gone):
    """Completing a presigned upload after it expired and what it sent was swept."""

    code = "upload_expired"
    label = "expired"


class TooLarge(AppError):
    status = 413
    code = "payload_too_large"
    label = "too_large"


class UnsupportedMediaType(AppError):
    status = 415
    code = "unsupported_media_type"
    label = "unsupported_type"


class ExpectationFailed(AppError):
    status = 417
    code = "expectation_failed"
    label = "bad_request"


class Invalid(AppError):
    """The request is well formed but a field's value is not acceptable."""

    status = 422
    code = "invalid"
    label = "invalid"


class SizeMismatch(Invalid):
    """A presigned upload whose stored file is not the size the client declared."""

    code = "size_mismatch"
    label = "size_mismatch"


class IdempotencyKeyReused(Invalid):
    """The Idempotency-Key was already used for a different file."""

    label = "idempotency_conflict"


class ImageRejected(AppError):
    """The bytes are of an accepted type but cannot be used (corrupt, truncated, too large)."""

    status = 422
    code = "undecodable_image"
    label = "undecodable"


class ImageTooLarge(ImageRejected):
    code = "image_too_large"
    label = "too_many_pixels"


class RateLimited(AppError):
    status = 429
    code = "rate_limited"
    label = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# --- 5xx: the service or what it depends on failed; retrying may succeed -----------------


class StorageRefused(AppError):
    status = 502
    code = "storage_error"
    label = "storage_error"


class ServiceUnavailable(AppError):
    status = 503
    code = "service_unavailable"
    label = "unavailable"
    retry_after = 1


class ImageWorkerFailed(ServiceUnavailable):
    """An image worker process died during the job (the pool is replaced)."""

    label = "worker_failed"


class Overloaded(ServiceUnavailable):
    """A bounded resource is full: the upload byte budget, the image queue, the hashers."""

    code = "overloaded"
    label = "overloaded"


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"
    label = "database_error"


class DatabaseBusy(ServiceUnavailable):
    """Every pooled connection is in use and none came free in time."""

    code = "database_busy"
    label = "database_error"


class StorageUnavailable(ServiceUnavailable):
    code = "storage_unavailable"
    label = "storage_error"


class DeadlineExceeded(ServiceUnavailable):
    code = "deadline_exceeded"
    label = "deadline_exceeded"


class StorageTimeout(ServiceUnavailable):
    status = 504
    code = "storage_timeout"
    label = "storage_error"


class DatabaseTimeout(ServiceUnavailable):
    """A statement ran past DB_COMMAND_TIMEOUT."""

    status = 504
    code = "database_timeout"
    label = "database_error"
