"""S3 calls on the uploads' hot paths: signed by botocore, sent by aiohttp.

aiobotocore costs the service about 1.7 ms of CPU per put_object here, a third of it resolving
the endpoint ruleset again for every object (its cache is keyed by the object key), and every
V0 upload stores two or three objects, and completing a V1 upload makes a HEAD and a ranged
GET. So those calls are signed with botocore's own SigV4 signer, from the same credentials
and configuration as the S3 client, and sent with aiohttp: about 0.67 ms each. The errors are
botocore's, so callers handle both paths alike; every other call goes through the client
(app/storage.py).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from aiobotocore.config import AioConfig
from aiohttp import payload
from aiohttp.abc import AbstractStreamWriter
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

# As the client's "standard" retry mode: 3 attempts in all, full jitter, 1 then 2 s at most.
ATTEMPTS = 3
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
FAILURES = (ClientError, EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError)


class ObjectPutter:
    """Stores, sizes and reads objects of one bucket, path-style, as the S3 client addresses
    them."""

    def __init__(
        self,
        endpoint_url: str | None,
        region: str,
        bucket: str,
        credentials: Any,  # botocore's (refreshable) credentials: no static types
        config: AioConfig,
        timeout: float,
    ) -> None:
        endpoint = endpoint_url or f"https://s3.{region}.amazonaws.com"
        self._bucket_url = f"{endpoint.rstrip('/')}/{quote(bucket, safe='')}"
        self._region = region
        self._credentials = credentials
        self._config = config  # its s3 settings say whether the body is hashed into the signature
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=config.max_pool_connections),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout),
            auto_decompress=False,
        )

    async def close(self) -> None:
        await self._session.close()

    async def put(self, key: str, body: bytes | bytearray, content_type: str, cache: str) -> None:
        """Raises what the S3 client would: ClientError, EndpointConnectionError, timeouts."""
        headers = {"Content-Type": content_type, "Cache-Control": cache}
        await self._retried("PUT", key, headers, body)

    async def size(self, key: str) -> int | None:
        """The object's size (a HEAD), or None if it does not exist."""
        try:
            answer = await self._retried("HEAD", key, {}, None)
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            raise
        return int(answer.headers["Content-Length"])

    async def read_head(self, key: str, length: int) -> tuple[int, bytes] | None:
        """The object's size and its first `length` bytes, in one ranged GET; None if it does
        not exist."""
        try:
            answer = await self._retried("GET", key, {"Range": f"bytes=0-{length - 1}"}, None)
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            if _status(exc) == 416:  # an empty object has no byte 0
                return 0, b""
            raise
        return whole_size(answer.headers.get("Content-Range"), len(answer.body)), answer.body

    async def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the object (a ranged GET)."""
        answer = await self._retried("GET", key, {"Range": f"bytes={start}-{end - 1}"}, None)
        return answer.body

    async def _retried(
        self, method: str, key: str, headers: dict[str, str], body: bytes | bytearray | None
    ) -> _Answer:
        for attempt in range(ATTEMPTS):
            try:
                return await self._once(method, key, headers, body)
            except FAILURES as exc:
                status = _status(exc)
                if attempt == ATTEMPTS - 1 or (status is not None and status not in RETRY_STATUSES):
                    raise
            await asyncio.sleep(random.uniform(0, 2**attempt))  # noqa: S311 - jitter, not secrets
        raise AssertionError("unreachable: the last attempt raises")

    async def _once(
        self, method: str, key: str, headers: dict[str, str], body: bytes | bytearray | None
    ) -> _Answer:
        url = f"{self._bucket_url}/{quote(key, safe='/~')}"
        if body is not None:
            headers = {**headers, "Content-Length": str(len(body))}
        request = AWSRequest(method=method, url=url, headers=headers)
        request.context["client_config"] = self._config
        frozen = await self._credentials.get_frozen_credentials()
        S3SigV4Auth(frozen, "s3", self._region).add_auth(request)
        signed = dict(request.headers.items())
        try:
            async with self._session.request(method, url, data=body, headers=signed) as response:
                data = await response.read()
                if response.status in (200, 206):
                    return _Answer(response.headers, data)
                raise _client_error(response.status, data.decode("utf-8", "replace"))
        except aiohttp.ConnectionTimeoutError:
            raise ConnectTimeoutError(endpoint_url=url) from None
        except aiohttp.ServerTimeoutError:
            raise ReadTimeoutError(endpoint_url=url) from None
        except aiohttp.ClientConnectionError as exc:
            raise EndpointConnectionError(endpoint_url=url, error=exc) from None


@dataclass(frozen=True, slots=True)
class _Answer:
    headers: Mapping[str, str]
    body: bytes


def whole_size(content_range: str | None, received: int) -> int:
    """The object's size from a ranged answer's `Content-Range: bytes 0-65535/2013311` (an
    answer without one carried the whole object)."""
    if content_range and "/" in content_range:
        return int(content_range.rsplit("/", 1)[1])
    return received


def _status(exc: Exception) -> int | None:
    """The HTTP status S3 answered with; None when it did not answer."""
    if isinstance(exc, ClientError):
        status: int = exc.response["ResponseMetadata"]["HTTPStatusCode"]
        return status
    return None


def _client_error(status: int, text: str) -> ClientError:
    code = "Unknown"
    if "<Code>" in text:
        code = text.split("<Code>", 1)[1].split("</Code>", 1)[0]
    return ClientError(
        {"Error": {"Code": code, "Message": ""}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


# --- sending a bytearray body from its own buffer --------------------------------------------
#
# Upload bodies are bytearrays (app/api/multipart.py). aiohttp joins a request's headers to the
# first piece of its body before writing them, and on CPython before 3.12.9 and 3.13.2 it does
# so by copying both into one new buffer: with a 2 MB body, a fresh 2 MB allocation and copy per
# object. BufferPayload writes a small first piece, then the rest as a view of the buffer.

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
