"""Every request has a total deadline; past it the client hears 503 at once, never a hang.

The waits inside have their own, shorter bounds (a pooled connection, a place in
the thumbnail queue, S3, one SQL statement); this one catches whatever they add
up to. An upload's count starts when its body has arrived, because a body is
held to the upload rate floor instead, and stops before its row is written: a
row is written whole, within the statement timeout, or not at all.

This module is the only one that touches the timer. The middleware sets it for the
request's task; code anywhere below asks for `paused()` or `stop()` and never holds the
timer itself. Outside a request (a worker, a test calling the work) both do nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from app.errors import DeadlineExceeded
from app.keys import SETTINGS


@dataclass(frozen=True, slots=True)
class _Deadline:
    timer: asyncio.Timeout
    seconds: float


_current: ContextVar[_Deadline | None] = ContextVar("request_deadline", default=None)


@web.middleware
async def deadline_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    seconds = request.app[SETTINGS].request_deadline
    timer = asyncio.timeout(seconds)
    token = _current.set(_Deadline(timer, seconds))
    try:
        async with timer:
            return await handler(request)
    except TimeoutError:
        if not timer.expired():
            raise  # an inner timeout, with its own meaning
        raise DeadlineExceeded(
            f"the request did not finish within its {seconds:g} s deadline; try again"
        ) from None
    finally:
        _current.reset(token)


@contextmanager
def paused() -> Iterator[None]:
    """No count while the block runs (a body arriving under its own rate floor); when it ends
    normally, a whole new count starts. A block that raises leaves the count stopped."""
    deadline = _current.get()
    if deadline is None:
        yield
        return
    _reschedule(deadline.timer, None)
    yield
    _reschedule(deadline.timer, asyncio.get_running_loop().time() + deadline.seconds)


def stop() -> None:
    """No cancelling past this point: what follows must not be cut in half."""
    deadline = _current.get()
    if deadline is not None:
        _reschedule(deadline.timer, None)


def expired() -> bool:
    """Whether this request's deadline has fired (its cancellation is on its way)."""
    deadline = _current.get()
    return deadline is not None and deadline.timer.expired()


def _reschedule(timer: asyncio.Timeout, when: float | None) -> None:
    # Once expired, the cancellation is on its way; it lands at the next await.
    if not timer.expired():
        timer.reschedule(when)
