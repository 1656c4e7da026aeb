"""Every response body: JSON by orjson, and every error in one shape, rendered by one middleware.

`{"error": {"code": "...", "message": "..."}}`, with the status and code the error class
carries (app/errors.py). aiohttp's own HTTP errors (no route, wrong method, body too large) are
given the same shape here; anything else is a 500 whose details stay in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from app.db import UNAVAILABLE_ERRORS
from app.errors import AppError, DatabaseUnavailable

log = logging.getLogger(__name__)

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


def json_response(
    data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_bytes_response(data, status=status, headers=headers, dumps=orjson.dumps)


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> web.Response:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if extra:
        body.update(extra)
    return json_response(body, status=status, headers=headers)


def render_error(exc: AppError) -> web.Response:
    response = error_response(exc.status, exc.code, exc.message, headers=exc.headers())
    if exc.close_connection:
        response.force_close()  # says Connection: close, so the client does not reuse it
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http_exception(exc)
    except AppError as exc:
        return render_error(exc)
    except UNAVAILABLE_ERRORS as exc:
        log.warning("database unavailable: %s", type(exc).__name__)
        return render_error(DatabaseUnavailable("the database is unavailable, try again shortly"))
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal_error", "something went wrong on our side")


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    headers = {
        k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After", "WWW-Authenticate")
    }
    code = _HTTP_CODES.get(exc.status, "http_error")
    message = exc.reason if exc.text is None or exc.text.startswith(f"{exc.status}:") else exc.text
    return error_response(exc.status, code, message, headers=headers)
