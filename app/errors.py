"""Domain errors. Code below the handlers raises these; one middleware turns them into HTTP."""

from __future__ import annotations


class AppError(Exception):
    """A failure the client should hear about, with its status and a stable code."""

    status = 500
    code = "internal_error"
    retry_after: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
