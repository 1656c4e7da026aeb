"""Every request has a total deadline; past it the client hears 503 at once, never a hang.

The waits inside have their own, shorter bounds (a pooled connection, a place in
the thumbnail queue, S3, one SQL statement); this one catches whatever they add
up to. An upload's count starts when its body has arrived, because a body is
held to the upload rate floor instead, and stops before its row is written: a
row is written whole, within the statement timeout, or not at all.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler

from app.errors import DeadlineExceeded
from app.keys import DEADLINE, SETTINGS


@web.middleware
async def deadline_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    seconds = request.app[SETTINGS].request_deadline
    deadline = asyncio.timeout(seconds)
    request[DEADLINE] = deadline
    try:
        async with deadline:
            return await handler(request)
    except TimeoutError:
        if not deadline.expired():
            raise  # an inner timeout, with its own meaning
        raise DeadlineExceeded(
            f"the request did not finish within its {seconds:g} s deadline; try again"
        ) from None


def pause(request: web.Request) -> None:
    """Stop the count (while a body arrives under its own rate floor)."""
    _reschedule(request[DEADLINE], None)


def restart(request: web.Request) -> None:
    """Start a whole new count from now."""
    seconds = request.app[SETTINGS].request_deadline
    _reschedule(request[DEADLINE], asyncio.get_running_loop().time() + seconds)


def stop(deadline: asyncio.Timeout) -> None:
    """No cancelling past this point: what follows must not be cut in half."""
    _reschedule(deadline, None)


def _reschedule(deadline: asyncio.Timeout, when: float | None) -> None:
    # Once expired, the cancellation is on its way; it lands at the next await.
    if not deadline.expired():
        deadline.reschedule(when)
