"""Request ids on everything, and one error shape for every failure."""

from __future__ import annotations

import logging
import re
import time
import uuid

import asyncpg
from aiohttp import web
from aiohttp.typedefs import Handler

from app.db import UNAVAILABLE_ERRORS
from app.errors import AppError, Conflict, DatabaseUnavailable
from app.http import error_response
from app.keys import REQUEST_ID, REQUEST_STARTED
from app.logs import current_request_id

log = logging.getLogger(__name__)

# A client's id is echoed into headers and logs, so only a short, plain one is taken.
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# Codes for the HTTP errors aiohttp raises itself (router, body limits).
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
}


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[REQUEST_STARTED] = time.perf_counter()
    request_id = request_id_for(request)
    request[REQUEST_ID] = request_id
    token = current_request_id.set(request_id)
    try:
        response = await handler(request)
    finally:
        current_request_id.reset(token)
    response.headers["X-Request-ID"] = request_id
    return response


async def no_sniffing(request: web.Request, response: web.StreamResponse) -> None:
    """Every response, errors and aiohttp's own included: its Content-Type is the truth."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


def request_id_for(request: web.Request) -> str:
    """The client's X-Request-ID if it is fit to echo, else a new one."""
    sent = request.headers.get("X-Request-ID", "")
    return sent if _CLIENT_REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http_exception(exc)
    except AppError as exc:
        return app_error_response(exc)
    except asyncpg.ForeignKeyViolationError:
        # A row this request refers to went away meanwhile: the caller's own account within
        # AUTH_CACHE_SECONDS of its deletion, or a post deleted while it was being liked.
        return app_error_response(Conflict("something this request refers to no longer exists"))
    except UNAVAILABLE_ERRORS as exc:
        log.warning("database unavailable: %s", type(exc).__name__)
        return app_error_response(
            DatabaseUnavailable("the database is unavailable, try again shortly")
        )
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal_error", "something went wrong on our side")


def app_error_response(exc: AppError) -> web.Response:
    response = error_response(exc.status, exc.code, exc.message, headers=exc.headers())
    if exc.close_connection:
        response.force_close()  # says Connection: close, so the client does not reuse it
    return response


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    headers = {
        k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After", "WWW-Authenticate")
    }
    code = _HTTP_CODES.get(exc.status, "http_error")
    message = exc.reason if exc.text is None or exc.text.startswith(f"{exc.status}:") else exc.text
    return error_response(exc.status, code, message, headers=headers)
