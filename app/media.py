"""The V0 upload's work, from a received body to S3 and a media row (POST /v1/media).

Order matters: objects are stored first, the row is inserted only when every
object is in S3, and if the insert fails the objects are deleted. A 201 means
the row and its objects exist; anything else leaves neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson

from app import db, deadlines
from app.db import Database
from app.delivery import ImageUrls
from app.errors import (
    IdempotencyInProgress,
    IdempotencyKeyReused,
    UnpostedLimit,
    UnsupportedMediaType,
)
from app.images import ImagePool
from app.settings import Settings
from app.sniff import HEIC, JPEG, sniff
from app.storage import PUBLIC_PREFIX, Storage, StoredObject
from app.uploads import Bytes, Upload

log = logging.getLogger(__name__)

# How long a retry waits for the first upload with its key to finish (within its deadline).
IDEMPOTENCY_WAIT = 5.0
SNIFF_BYTES = 4096


@dataclass(frozen=True, slots=True)
class MediaWork:
    """What an upload's work uses: the database, the bucket, the image workers, the limits."""

    database: Database
    storage: Storage
    images: ImagePool
    settings: Settings
    urls: ImageUrls


async def create(
    work: MediaWork, user_id: int, upload: Upload, idempotency_key: str | None
) -> dict[str, Any]:
    """Stores the upload and its thumbnail and records it; the media's JSON.

    With an Idempotency-Key, a retry of the same file gets the first answer.
    """
    media_type = sniff(bytes(upload.data[:SNIFF_BYTES]))
    if media_type is None:
        raise UnsupportedMediaType("only JPEG, PNG and HEIC images are accepted")
    settings = work.settings
    async with work.database.connection() as conn:
        unposted = await db.queries.unposted_media_count(conn, user_id=user_id)
    if unposted >= settings.max_unposted_media:
        hours = settings.unposted_media_retention / 3600
        raise UnpostedLimit(
            f"you have {unposted} uploads no post uses yet, the most allowed: post some first "
            f"(an upload no post uses is deleted after {hours:g} hours)"
        )
    if idempotency_key is None:
        return _with_urls(await _store(work, user_id, upload, media_type, None), work.urls)

    # hashlib releases the GIL on large inputs: hash off the event loop.
    digest = await asyncio.to_thread(_sha256, upload.data)
    if (previous := await _claim(work.database, user_id, idempotency_key, digest)) is not None:
        return _with_urls(previous, work.urls)
    try:
        stored = await _store(work, user_id, upload, media_type, idempotency_key)
        return _with_urls(stored, work.urls)
    except BaseException:
        # Let a retry try again; shielded, so a cancelled request still releases its claim.
        await asyncio.shield(_release(work.database, user_id, idempotency_key))
        raise


def _with_urls(answer: dict[str, Any], urls: ImageUrls) -> dict[str, Any]:
    """The answer as the client gets it: the keys it was recorded with become URLs."""
    rendered = dict(answer)
    rendered["original_url"] = urls(rendered.pop("original_key"))
    rendered["thumbnail_url"] = urls(rendered.pop("thumbnail_key"))
    return rendered


def _sha256(data: Bytes) -> bytes:
    return hashlib.sha256(data).digest()


async def _claim(
    database: Database, user_id: int, key: str, digest: bytes
) -> dict[str, Any] | None:
    """None once this request owns the key; the first answer if the key was used before."""
    deadline = time.monotonic() + IDEMPOTENCY_WAIT
    while True:
        async with database.connection() as conn:
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
            raise IdempotencyKeyReused("this Idempotency-Key was already used for a different file")
        if record["response"] is not None:
            answer: dict[str, Any] = orjson.loads(record["response"])
            return answer
        if time.monotonic() > deadline:
            raise IdempotencyInProgress(
                "an upload with this Idempotency-Key is still in progress; retry later"
            )
        await asyncio.sleep(0.1)


async def _release(database: Database, user_id: int, key: str) -> None:
    try:
        async with database.connection() as conn:
            await db.queries.release_idempotency_key(conn, user_id=user_id, idempotency_key=key)
    except Exception:
        log.warning("could not release idempotency key; it expires in 10 minutes")


async def _store(
    work: MediaWork, user_id: int, upload: Upload, media_type: str, idempotency_key: str | None
) -> dict[str, Any]:
    size = len(upload.data)
    processed = await work.images.process(upload.data, media_type)
    if media_type != HEIC:
        upload.data = b""  # the cleaned copy replaces the body: hold one, not two
    await upload.hold(len(upload.data) + len(processed.original) + len(processed.thumbnail.data))
    name = secrets.token_urlsafe(18)  # unguessable: URLs are the only access control on reads
    extension = "jpg" if processed.original_type == JPEG else "png"
    original = StoredObject(
        f"{PUBLIC_PREFIX}{user_id}/{name}.{extension}", processed.original, processed.original_type
    )
    thumbnail = StoredObject(
        f"{PUBLIC_PREFIX}{user_id}/{name}_thumb.jpg", processed.thumbnail.data, JPEG
    )
    objects = [original, thumbnail]
    source_key = None
    if media_type == HEIC:  # kept as sent, never public: phone HEICs carry GPS
        source_key = f"sources/{user_id}/{name}.heic"
        objects.append(StoredObject(source_key, upload.data, HEIC))

    storage = work.storage
    await storage.put_all(objects)
    # Cancelled mid-commit, a row could be written while its objects are deleted.
    deadlines.stop()
    try:
        async with work.database.connection() as conn:
            # One INSERT is atomic alone; with an idempotency key its answer is recorded with it.
            transaction = conn.transaction() if idempotency_key else contextlib.nullcontext()
            async with transaction:
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
                    thumbnail_width=processed.thumbnail.width,
                    thumbnail_height=processed.thumbnail.height,
                    blurhash=processed.thumbnail.blurhash,
                )
                body = {
                    "media_id": row["media_id"],
                    "content_type": media_type,
                    "width": processed.width,
                    "height": processed.height,
                    "bytes": size,
                    "original_key": original.key,
                    "thumbnail_key": thumbnail.key,
                    "thumbnail_width": processed.thumbnail.width,
                    "thumbnail_height": processed.thumbnail.height,
                    "blurhash": processed.thumbnail.blurhash,
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
