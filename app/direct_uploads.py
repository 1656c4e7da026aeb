"""V1 uploads, the API's part: presign a direct upload to S3, then complete it.

The client declares what it will send (`presign`) and gets a presigned POST for one fresh,
private key under `incoming/`; S3 takes the bytes, never the API. `complete` then checks what S3
holds without fetching it: its size, its type and its pixel count from its first bytes
(ranged GETs: the first answers the size too), and records a media row in state
`processing` and a job for the media workers (app/media_jobs.py). Anything wrong is answered
with V0's codes, and the object is deleted.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import asyncpg

from app import db
from app.db import Database
from app.delivery import ImageUrls
from app.dimensions import NeedMore, NoDimensions, dimensions
from app.errors import (
    ImageRejected,
    ImageTooLarge,
    NotFound,
    SizeMismatch,
    TooLarge,
    UnpostedLimit,
    UnsupportedMediaType,
    UploadExpired,
    UploadNotReceived,
)
from app.queue import JobQueue
from app.settings import Settings
from app.sniff import HEIC, JPEG, PNG, sniff
from app.storage import PUBLIC_PREFIX, Storage

log = logging.getLogger(__name__)

INCOMING_PREFIX = "incoming/"
ACCEPTED = (JPEG, PNG, HEIC)
# The first read of a completed upload, and the most its header may take.
FIRST_RANGE = 64 * 1024
HEADER_CAP = 1024 * 1024
# The sizes of the renditions a worker writes besides the 150 px thumbnail (the seed's).
RENDITION_SIZES = (600, 1080)


async def presign(
    database: Database,
    storage: Storage,
    settings: Settings,
    user_id: int,
    content_type: str,
    size: int,
) -> dict[str, Any]:
    """A presigned POST for one upload of `size` bytes of `content_type`; nothing is signed
    for a type the service does not take or a size over its limit."""
    if content_type not in ACCEPTED:
        raise UnsupportedMediaType("only image/jpeg, image/png and image/heic are accepted")
    if size > settings.max_upload_bytes:
        raise TooLarge(f"the upload is over the limit of {settings.max_upload_bytes:,} bytes")
    # Unguessable, and never public: only this form may write it, only the service reads it.
    key = f"{INCOMING_PREFIX}{user_id}/{secrets.token_urlsafe(18)}"
    async with database.connection() as conn:
        row = await db.queries.insert_direct_upload(
            conn,
            user_id=user_id,
            object_key=key,
            content_type=content_type,
            declared_bytes=size,
            ttl_seconds=settings.upload_url_ttl,
            max_unposted=settings.max_unposted_media,
        )
    if row["upload_id"] is None:
        raise UnpostedLimit(
            f"you have {row['unposted']} uploads no post uses yet, the most allowed: "
            "post some first"
        )
    form = await storage.presigned_post(
        key, content_type, settings.max_upload_bytes, settings.upload_url_ttl
    )
    return {
        "upload_id": row["upload_id"],
        "url": form["url"],
        "fields": form["fields"],
        "expires_at": row["expires_at"],
        "max_bytes": settings.max_upload_bytes,
    }


async def complete(
    database: Database,
    storage: Storage,
    queue: JobQueue,
    settings: Settings,
    urls: ImageUrls,
    user_id: int,
    upload_id: int,
) -> tuple[bool, dict[str, Any]]:
    """(created, the media's JSON): checks the stored file, records the media as processing
    and queues its job. Completing again answers with the same media."""
    async with database.connection() as conn:
        upload = await db.queries.direct_upload(conn, upload_id=upload_id, user_id=user_id)
    if upload is None:
        raise NotFound(f"no upload with id {upload_id}")
    if upload["media_id"] is not None:
        return False, await media_status(database, urls, user_id, upload["media_id"])
    if upload["abandoned_at"] is not None:
        raise UploadExpired("this upload expired before it was completed; start a new one")
    key = upload["object_key"]
    stored = await storage.read_head(key, FIRST_RANGE)  # its size and first bytes at once
    if stored is None:
        if upload["expired"]:
            raise UploadExpired("this upload expired before its file arrived; start a new one")
        raise UploadNotReceived("the file has not reached the store yet: send it first")
    size, head = stored
    try:
        width, height = await _check_stored(storage, settings, key, size, head, upload)
    except (ImageRejected, TooLarge, SizeMismatch, UnsupportedMediaType):
        await storage.delete_all([key])  # refused: nothing of it stays
        raise
    media_type = upload["content_type"]
    name = secrets.token_urlsafe(18)
    extension = "png" if media_type == PNG else "jpg"  # a HEIC is served as a JPEG rendition
    async with database.connection() as conn:
        row = await db.queries.complete_direct_upload(
            conn,
            upload_id=upload_id,
            user_id=user_id,
            original_key=f"{PUBLIC_PREFIX}{user_id}/{name}.{extension}",
            thumbnail_key=f"{PUBLIC_PREFIX}{user_id}/{name}_thumb.jpg",
            source_key=f"sources/{user_id}/{name}.heic" if media_type == HEIC else None,
            incoming_key=key,
            content_type=media_type,
            width=width,
            height=height,
            bytes=size,
        )
        if row is None:  # a concurrent complete recorded it first
            media_id = await db.queries.completed_media(conn, upload_id=upload_id)
    if row is None:
        return False, await media_status(database, urls, user_id, media_id)
    try:
        await queue.send(row["media_id"])
    except Exception as exc:  # recorded: the stuck-job sweep queues it again
        log.error(
            "could not queue media %s (%s); the sweep will", row["media_id"], type(exc).__name__
        )
    return True, _status_body(row)


async def _check_stored(
    storage: Storage, settings: Settings, key: str, size: int, head: bytes, upload: Any
) -> tuple[int, int]:
    """The stored file's width and height, once its size, type and pixel count pass."""
    if size > settings.max_upload_bytes:
        raise TooLarge(f"the upload is over the limit of {settings.max_upload_bytes:,} bytes")
    if size != upload["declared_bytes"]:
        raise SizeMismatch(
            f"the stored file is {size:,} bytes, not the {upload['declared_bytes']:,} declared"
        )
    found = sniff(head[:4096])
    if found is None:
        raise UnsupportedMediaType("only JPEG, PNG and HEIC images are accepted")
    if found != upload["content_type"]:
        raise UnsupportedMediaType(
            f"the file is {found}, not the {upload['content_type']} declared"
        )
    while True:
        try:
            width, height = dimensions(head, found)
            break
        except NeedMore as more:
            if more.size > min(HEADER_CAP, size):
                raise ImageRejected(
                    "the image's size is not in its first "
                    f"{min(HEADER_CAP, size):,} bytes: it is truncated or corrupt"
                ) from None
            head += await storage.read_range(key, len(head), min(more.size + FIRST_RANGE, size))
        except NoDimensions as exc:
            raise ImageRejected(f"the image cannot be decoded: {exc}") from None
    if width * height > settings.max_image_pixels:
        raise ImageTooLarge(
            f"the image is {width}x{height}, over the limit of {settings.max_image_pixels:,} pixels"
        )
    return width, height


async def media_status(
    database: Database, urls: ImageUrls, user_id: int, media_id: int
) -> dict[str, Any]:
    """A media as its owner sees it: its status, and its URLs once it is ready."""
    async with database.connection() as conn:
        row = await db.queries.owned_media(conn, media_id=media_id, user_id=user_id)
    if row is None:
        raise NotFound(f"no upload with id {media_id}")
    body = _status_body(row)
    if row["status"] == "failed":
        body["failure"] = row["failure"]
    if row["status"] != "ready":
        return body
    return {
        **body,
        "width": row["width"],
        "height": row["height"],
        "original_url": urls(row["original_key"]),
        "thumbnail_url": urls(row["thumbnail_key"]),
        "thumbnail_width": row["thumbnail_width"],
        "thumbnail_height": row["thumbnail_height"],
        "blurhash": row["blurhash"],
        "renditions": [
            {"width": r["width"], "height": r["height"], "url": urls(r["key"])}
            for r in row["renditions"]
        ],
        "ready_at": row["ready_at"],
    }


def _status_body(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "media_id": row["media_id"],
        "status": row["status"],
        "content_type": row["content_type"],
        "bytes": row["bytes"],
        "created_at": row["created_at"],
    }
