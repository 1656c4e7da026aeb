"""POST /v1/media: the seed's critical path, from the request body to S3 and a media row.

Order matters: objects are stored first, the row is inserted only when every
object is in S3, and if the insert fails the objects are deleted. A 201 means
the row and its objects exist; anything else leaves neither.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import time
from typing import Any

import orjson
from aiohttp import web

from app import db, deadlines, uploads
from app.errors import (
    AppError,
    BadRequest,
    Conflict,
    Invalid,
    UnpostedLimit,
    UnsupportedMediaType,
)
from app.http import json_response
from app.keys import DEADLINE, IMAGES, METRICS, SETTINGS, STORAGE, USER_ID
from app.middlewares import app_error_response, request_id_for
from app.sniff import HEIC, JPEG, sniff
from app.storage import PUBLIC_PREFIX, StoredObject
from app.uploads import Upload

log = logging.getLogger(__name__)

IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII
# How long a retry waits for the first upload with its key to finish (within its deadline).
IDEMPOTENCY_WAIT = 5.0
SNIFF_BYTES = 4096


# Upload results, for the success rate: one label value per way an upload can end.
RESULTS = {
    "payload_too_large": "too_large",
    "unsupported_media_type": "unsupported_type",
    "undecodable_image": "undecodable",
    "image_too_large": "too_many_pixels",
    "request_timeout": "too_slow",
    "overloaded": "overloaded",
    "storage_unavailable": "storage_error",
    "storage_error": "storage_error",
    "storage_timeout": "storage_error",
    "database_unavailable": "database_error",
    "database_busy": "database_error",
    "bad_request": "bad_request",
    "invalid": "idempotency_conflict",
    "conflict": "idempotency_conflict",
    "unposted_limit": "unposted_limit",
}


async def upload_media(request: web.Request) -> web.Response:
    uploads_total = request.app[METRICS].uploads
    try:
        key = request.headers.get("Idempotency-Key")
        if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
            raise BadRequest("Idempotency-Key must be 1 to 255 visible ASCII characters")
        async with uploads.receive(request) as upload:
            body = await create(request.app, request[USER_ID], upload, key, request[DEADLINE])
    except AppError as exc:
        uploads_total.labels(RESULTS.get(exc.code, "error")).inc()
        raise
    except Exception:
        uploads_total.labels("error").inc()
        raise
    uploads_total.labels("created").inc()
    return json_response(body, status=201)


async def create(
    app: web.Application,
    user_id: int,
    upload: Upload,
    idempotency_key: str | None,
    deadline: asyncio.Timeout,
) -> dict[str, Any]:
    media_type = sniff(upload.data[:SNIFF_BYTES])
    if media_type is None:
        raise UnsupportedMediaType("only JPEG, PNG and HEIC images are accepted")
    settings = app[SETTINGS]
    async with db.connection(app) as conn:
        unposted = await db.queries.unposted_media_count(conn, user_id=user_id)
    if unposted >= settings.max_unposted_media:
        hours = settings.unposted_media_retention / 3600
        raise UnpostedLimit(
            f"you have {unposted} uploads no post uses yet, the most allowed: post some first "
            f"(an upload no post uses is deleted after {hours:g} hours)"
        )
    if idempotency_key is None:
        return await _store(app, user_id, upload, media_type, None, deadline)

    # hashlib releases the GIL on large inputs: hash off the event loop.
    digest = await asyncio.to_thread(_sha256, upload.data)
    if (previous := await _claim(app, user_id, idempotency_key, digest)) is not None:
        return previous
    try:
        return await _store(app, user_id, upload, media_type, idempotency_key, deadline)
    except BaseException:
        # Let a retry try again; shielded, so a cancelled request still releases its claim.
        await asyncio.shield(_release(app, user_id, idempotency_key))
        raise


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


async def _claim(
    app: web.Application, user_id: int, key: str, digest: bytes
) -> dict[str, Any] | None:
    """None once this request owns the key; the first answer if the key was used before."""
    deadline = time.monotonic() + IDEMPOTENCY_WAIT
    while True:
        async with db.connection(app) as conn:
            async with conn.transaction():
                await db.queries.forget_stale_idempotency_key(
                    conn, user_id=user_id, idempotency_key=key
                )
                claimed = await db.queries.claim_idempotency_key(
                    conn, user_id=user_id, idempotency_key=key, body_sha256=digest
                )
            if claimed:
                return None
            record = await db.queries.idempotency_record(conn, user_id=user_id, idempotency_key=key)
        if record is None:
            continue  # released between the two statements: claim it again
        if record["body_sha256"] != digest:
            raise Invalid("this Idempotency-Key was already used for a different file")
        if record["response"] is not None:
            answer: dict[str, Any] = orjson.loads(record["response"])
            return answer
        if time.monotonic() > deadline:
            raise Conflict("an upload with this Idempotency-Key is still in progress; retry later")
        await asyncio.sleep(0.1)


async def _release(app: web.Application, user_id: int, key: str) -> None:
    try:
        async with db.connection(app) as conn:
            await db.queries.release_idempotency_key(conn, user_id=user_id, idempotency_key=key)
    except Exception:
        log.warning("could not release idempotency key; it expires in 10 minutes")


async def _store(
    app: web.Application,
    user_id: int,
    upload: Upload,
    media_type: str,
    idempotency_key: str | None,
    deadline: asyncio.Timeout,
) -> dict[str, Any]:
    size = len(upload.data)
    processed = await app[IMAGES].process(upload.data, media_type)
    if media_type != HEIC:
        upload.data = b""  # the cleaned copy replaces the body: hold one, not two
    await upload.hold(len(upload.data) + len(processed.original) + len(processed.thumbnail))
    name = secrets.token_urlsafe(18)  # unguessable: URLs are the only access control on reads
    extension = "jpg" if processed.original_type == JPEG else "png"
    original = StoredObject(
        f"{PUBLIC_PREFIX}{user_id}/{name}.{extension}", processed.original, processed.original_type
    )
    thumbnail = StoredObject(
        f"{PUBLIC_PREFIX}{user_id}/{name}_thumb.jpg", processed.thumbnail, JPEG
    )
    objects = [original, thumbnail]
    source_key = None
    if media_type == HEIC:  # kept as sent, never public: phone HEICs carry GPS
        source_key = f"sources/{user_id}/{name}.heic"
        objects.append(StoredObject(source_key, upload.data, HEIC))

    storage = app[STORAGE]
    await storage.put_all(objects)
    # Cancelled mid-commit, a row could be written while its objects are deleted.
    deadlines.stop(deadline)
    try:
        async with db.connection(app) as conn, conn.transaction():
            row = await db.queries.insert_media(
                conn,
                user_id=user_id,
                original_key=original.key,
                thumbnail_key=thumbnail.key,
                source_key=source_key,
                content_type=media_type,
                width=processed.width,
                height=processed.height,
                bytes=size,
            )
            body = {
                "media_id": row["media_id"],
                "content_type": media_type,
                "width": processed.width,
                "height": processed.height,
                "bytes": size,
                "original_url": storage.public_url(original.key),
                "thumbnail_url": storage.public_url(thumbnail.key),
                "created_at": row["created_at"],
            }
            if idempotency_key is not None:
                await db.queries.complete_idempotency_key(
                    conn,
                    user_id=user_id,
                    idempotency_key=idempotency_key,
                    media_id=row["media_id"],
                    response=orjson.dumps(body).decode(),
                )
    except BaseException:
        await asyncio.shield(storage.delete_all([o.key for o in objects]))
        raise
    log.info(
        "media stored",
        extra={
            "media_id": body["media_id"],
            "type": media_type,
            "cpu_ms": round(processed.cpu_seconds * 1000, 1),
        },
    )
    return body


async def refuse_early(request: web.Request) -> web.Response | None:
    """Expect: 100-continue: refuse what would be refused anyway, before the body is sent.

    aiohttp calls this before any middleware, so it answers in the error shape itself.
    """
    try:
        if request.headers.get("Expect", "").lower() != "100-continue":
            raise ExpectationFailed("only Expect: 100-continue is understood")
        uploads.check_headers(request)
    except AppError as exc:
        response = app_error_response(exc)
        response.force_close()
        response.headers["X-Request-ID"] = request_id_for(request)
        return response
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the 100 is not part of the response
    return None


class ExpectationFailed(AppError):
    status = 417
    code = "expectation_failed"


routes = [web.post("/v1/media", upload_media, expect_handler=refuse_early)]
