"""Receiving an upload: one multipart part, streamed into a capped buffer under a byte budget.

Everything about the body is bounded: its size (from Content-Length before
reading, and while streaming, chunked bodies included), the bytes all uploads
of this process hold at once, the number and size of other parts, and how
slowly it may arrive.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TypeVar

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from app import deadlines
from app.errors import AppError, BadRequest, TooLarge, TooSlow, UnsupportedMediaType
from app.keys import SETTINGS, UPLOAD_BUDGET
from app.settings import Settings
from app.uploads import FRAMING_ALLOWANCE, Upload

CHUNK = 64 * 1024
MAX_PARTS = 8

T = TypeVar("T")


@asynccontextmanager
async def receive(request: web.Request) -> AsyncIterator[Upload]:
    """The `file` part of a multipart upload, held under the byte budget until the block ends."""
    settings = request.app[SETTINGS]
    budget = request.app[UPLOAD_BUDGET]
    body_limit = settings.max_upload_bytes + FRAMING_ALLOWANCE
    reservation = min(request.content_length or body_limit, body_limit)
    try:
        check_headers(request)
        await budget.acquire(reservation, settings.upload_budget_wait)
    except AppError as exc:
        _abandon_body(request, exc)
        raise
    upload: Upload | None = None
    try:
        with deadlines.paused():  # the rate floor bounds the body instead
            try:
                # No local keeps the body: the caller may drop it once it has a replacement.
                upload = Upload(await _read_file_part(request, settings), budget, reservation)
            except AppError as exc:
                _abandon_body(request, exc)
                raise
        await upload.hold(len(upload.data))
        yield upload  # errors of the caller's work come back here: the body was read, keep going
    finally:
        await budget.release(upload.reserved if upload is not None else reservation)


def check_headers(request: web.Request) -> None:
    """Refusals that need no byte of the body (also answered to Expect: 100-continue)."""
    settings = request.app[SETTINGS]
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMediaType(
            "compressed request bodies are not accepted; send the file as is"
        )
    if request.content_type != "multipart/form-data":
        raise UnsupportedMediaType("send the image as multipart/form-data with a part named file")
    declared = request.content_length
    if declared is not None and declared > settings.max_upload_bytes + FRAMING_ALLOWANCE:
        raise TooLarge(f"the upload is over the limit of {settings.max_upload_bytes:,} bytes")


async def _read_file_part(request: web.Request, settings: Settings) -> bytes:
    """The bytes of the part named file. Its file name and type claims are ignored."""
    clock = _RateFloor(settings)
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError, KeyError, HttpProcessingError):
        raise BadRequest("the body is not valid multipart/form-data") from None
    upload: bytes | None = None
    other_bytes = 0
    try:
        for _ in range(MAX_PARTS):
            part = await clock.within_deadline(reader.next())
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise BadRequest("nested multipart bodies are not accepted")
            if part.name == "file" and upload is None:
                upload = await _read_capped(part, settings.max_upload_bytes, clock)
            else:
                other_bytes += len(await _read_capped(part, FRAMING_ALLOWANCE - other_bytes, clock))
        else:
            if await clock.within_deadline(reader.next()) is not None:
                raise BadRequest(f"an upload has at most {MAX_PARTS} parts")
    except (ValueError, AssertionError, HttpProcessingError):
        raise BadRequest("the body is not valid multipart/form-data") from None
    if upload is None:
        raise BadRequest("the upload has no part named file")
    if not upload:
        raise BadRequest("the file part is empty")
    return upload


async def _read_capped(part: BodyPartReader, limit: int, clock: _RateFloor) -> bytes:
    # read_chunk() does not apply client_max_size: the count here is the only cap.
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await clock.within_deadline(part.read_chunk(CHUNK))
        if not chunk:
            return b"".join(chunks)  # one copy, made once
        chunks.append(chunk)
        size += len(chunk)
        clock.received += len(chunk)
        if size > limit:
            raise TooLarge(f"the upload is over the limit of {limit:,} bytes")


class _RateFloor:
    """Cuts off a body that arrives slower than the floor rate, after a grace period."""

    def __init__(self, settings: Settings) -> None:
        self._started = time.monotonic()
        self._grace = settings.upload_rate_grace
        self._rate = settings.upload_min_rate
        self.received = 0

    async def within_deadline(self, read: Awaitable[T]) -> T:
        # Each read must end by the time the bytes so far, plus one chunk, are on time.
        deadline = self._started + self._grace + (self.received + CHUNK) / self._rate
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.01)):
                return await read
        except TimeoutError:
            raise TooSlow(
                f"the upload arrived slower than {self._rate:,} bytes per second"
            ) from None


def _abandon_body(request: web.Request, error: AppError) -> None:
    """The rest of the body will not be read: close the connection after the answer.

    aiohttp normally drains ("lingers on") an unread body for up to 10 s, so
    that a client still sending gets the answer rather than a reset. Past the
    size limit that would mean reading what we refused, so the connection
    closes at once; clients that want a clean 413 send Expect: 100-continue.
    """
    error.close_connection = True
    if isinstance(error, TooLarge):
        request.protocol.force_close()
