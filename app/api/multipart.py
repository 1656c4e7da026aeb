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
from contextlib import AbstractContextManager, ExitStack, asynccontextmanager
from typing import TypeVar

from aiohttp import hdrs, web
from aiohttp.helpers import parse_mimetype
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import parse_content_disposition

from app import deadlines
from app.errors import AppError, BadRequest, TooLarge, TooSlow, UnsupportedMediaType
from app.keys import SETTINGS, UPLOAD_BUDGET
from app.settings import Settings
from app.uploads import FRAMING_ALLOWANCE, ByteBudget, Upload

CHUNK = 64 * 1024  # the rate floor allows each read the time of this many bytes
MAX_PARTS = 8
MAX_PART_HEADER = 8 * 1024  # aiohttp's own limit for the request's header fields

T = TypeVar("T")


@asynccontextmanager
async def receive(
    request: web.Request, admission: AbstractContextManager[None]
) -> AsyncIterator[Upload]:
    """The `file` part of a multipart upload, held under the byte budget until the block ends.

    `admission` is entered before a byte of the body is read and held until the block ends;
    a refusal from it (a predicted wait for an image worker) closes the connection unread.
    """
    settings = request.app[SETTINGS]
    budget = request.app[UPLOAD_BUDGET]
    body_limit = settings.max_upload_bytes + FRAMING_ALLOWANCE
    reservation = min(request.content_length or body_limit, body_limit)
    with ExitStack() as admitted:
        try:
            check_headers(request)
            admitted.enter_context(admission)
            await budget.acquire(reservation, settings.upload_budget_wait)
        except AppError as exc:
            _abandon_body(request, exc)
            raise
        async with _held(request, settings, budget, reservation) as upload:
            yield upload


@asynccontextmanager
async def _held(
    request: web.Request, settings: Settings, budget: ByteBudget, reservation: int
) -> AsyncIterator[Upload]:
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


async def _read_file_part(request: web.Request, settings: Settings) -> bytearray:
    """The bytes of the part named file. Its file name and type claims are ignored."""
    boundary = _boundary(request)
    body = await _read_body(request, settings.max_upload_bytes + FRAMING_ALLOWANCE)
    start, end = _file_part(body, boundary, settings.max_upload_bytes)
    # The body becomes the file in place: a bytearray drops its head and tail without a copy
    # (every fresh 2 MB buffer costs the service about 0.7 ms in page faults).
    del body[end:]
    del body[:start]
    return body


def _boundary(request: web.Request) -> bytes:
    boundary = parse_mimetype(request.headers.get(hdrs.CONTENT_TYPE, "")).parameters.get(
        "boundary", ""
    )
    # RFC 2046: 1 to 70 characters, none of them a control or non-ASCII character.
    if not 0 < len(boundary) <= 70 or not boundary.isascii() or not boundary.isprintable():
        raise BadRequest("the multipart/form-data body needs a boundary of 1 to 70 characters")
    return boundary.encode()


async def _read_body(request: web.Request, limit: int) -> bytearray:
    """The whole body, at most `limit` bytes, held to the rate floor."""
    clock = _RateFloor(request.app[SETTINGS])
    chunks: list[bytes] = []
    try:
        while chunk := await clock.within_deadline(request.content.readany()):
            chunks.append(chunk)
            clock.received += len(chunk)
            if clock.received > limit:
                raise TooLarge(
                    f"the upload is over the limit of {limit - FRAMING_ALLOWANCE:,} bytes"
                )
    except HttpProcessingError:
        raise BadRequest("the body is not valid HTTP (chunked encoding)") from None
    return bytearray().join(chunks)


def _file_part(body: bytearray, boundary: bytes, max_file_bytes: int) -> tuple[int, int]:
    """Where the file part's bytes start and end in a multipart/form-data body (RFC 7578).

    At most MAX_PARTS parts, part headers of at most MAX_PART_HEADER bytes, and at most
    FRAMING_ALLOWANCE bytes in the parts other than the file; no nested multipart.
    """
    delimiter = b"--" + boundary
    if body.startswith(delimiter):
        position = len(delimiter)
    else:  # a preamble, which RFC 2046 lets a sender put before the first boundary
        found = body.find(b"\r\n" + delimiter)
        if found < 0:
            raise BadRequest("the body is not valid multipart/form-data: no boundary found")
        position = found + 2 + len(delimiter)
    file: tuple[int, int] | None = None
    other_bytes = 0
    for _ in range(MAX_PARTS + 1):
        if body.startswith(b"--", position):  # the closing delimiter: the body is whole
            break
        position = _skip_line_end(body, position)
        headers, position = _part_headers(body, position)
        end = body.find(b"\r\n" + delimiter, position)
        if end < 0:
            raise BadRequest("the body is not valid multipart/form-data: a part is not closed")
        if headers.get("content-type", "").lower().startswith("multipart/"):
            raise BadRequest("nested multipart bodies are not accepted")
        if _part_name(headers) == "file" and file is None:
            if end - position > max_file_bytes:
                raise TooLarge(f"the upload is over the limit of {max_file_bytes:,} bytes")
            file = (position, end)
        else:
            other_bytes += end - position
            if other_bytes > FRAMING_ALLOWANCE:
                raise TooLarge(
                    f"the parts besides the file are over {FRAMING_ALLOWANCE:,} bytes in all"
                )
        position = end + 2 + len(delimiter)
    else:
        raise BadRequest(f"an upload has at most {MAX_PARTS} parts")
    if file is None:
        raise BadRequest("the upload has no part named file")
    if file[0] == file[1]:
        raise BadRequest("the file part is empty")
    return file


def _skip_line_end(body: bytearray, position: int) -> int:
    """Past the end of a delimiter line: optional spaces or tabs, then CRLF."""
    while position < len(body) and body[position] in b" \t":
        position += 1
    if not body.startswith(b"\r\n", position):
        raise BadRequest("the body is not valid multipart/form-data: a boundary line is broken")
    return position + 2


def _part_headers(body: bytearray, position: int) -> tuple[dict[str, str], int]:
    """A part's headers by lower-case name, and where its content starts."""
    if body.startswith(b"\r\n", position):
        return {}, position + 2
    end = body.find(b"\r\n\r\n", position, position + MAX_PART_HEADER + 4)
    if end < 0:
        raise BadRequest(
            f"the body is not valid multipart/form-data: part headers end within "
            f"{MAX_PART_HEADER:,} bytes"
        )
    headers: dict[str, str] = {}
    for line in body[position:end].decode("utf-8", "replace").split("\r\n"):
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise BadRequest("the body is not valid multipart/form-data: a part header is broken")
        headers[name.lower()] = value.strip()
    return headers, end + 4


def _part_name(headers: dict[str, str]) -> str | None:
    disposition, params = parse_content_disposition(headers.get("content-disposition"))
    if disposition != "form-data":
        raise BadRequest("every part needs Content-Disposition: form-data with a name")
    return params.get("name")


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
