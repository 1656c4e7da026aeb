"""How a bytearray body goes out through aiohttp's client: from its own buffer, not a copy.

Every upload body goes to S3 as a bytearray (app/storage.py). aiohttp joins a request's
headers to the first piece of its body before writing them, and on CPython before 3.12.9 and
3.13.2 it does so by copying both into one new buffer: with a 2 MB body that is a fresh 2 MB
allocation and copy per object, about 1 ms of the service's CPU per upload. The payload here
writes a small first piece, then the rest as a view of the buffer.
"""

from __future__ import annotations

from typing import Any

from aiohttp import payload
from aiohttp.abc import AbstractStreamWriter

# The first piece of a body, which aiohttp writes joined to the request's headers.
HEAD_PIECE = 16 * 1024


class BufferPayload(payload.BytesPayload):
    """A bytearray request body, written from its own buffer."""

    def __init__(self, value: bytearray, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("content_type", "application/octet-stream")
        # BytesPayload.__init__ would warn that a large body might block the loop: one
        # transport write of a buffer does not.
        payload.Payload.__init__(self, value, *args, **kwargs)
        self._size = len(value)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        body = memoryview(self._value)
        if content_length is not None:
            body = body[:content_length]
        await writer.write(body[:HEAD_PIECE])
        if len(body) > HEAD_PIECE:
            await writer.write(body[HEAD_PIECE:])


# A registration, like a codec's: every bytearray body this process sends with aiohttp (only
# the S3 client's) is written by BufferPayload.
payload.PAYLOAD_REGISTRY.register(BufferPayload, bytearray, order=payload.Order.try_first)
