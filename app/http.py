"""JSON responses: orjson for every body, one shape for every error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web


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
