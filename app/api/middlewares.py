"""Request ids on every response and log line, and nosniff on every response."""

from __future__ import annotations

import re
import time
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler

from app.keys import REQUEST_ID, REQUEST_STARTED
from app.logs import current_request_id

# A client's id is echoed into headers and logs, so only a short, plain one is taken.
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


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
