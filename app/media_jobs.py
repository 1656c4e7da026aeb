"""V1 uploads, the worker's part: one media job, from the uploaded object to a ready media.

What V0 does inside the request, a media worker (app/worker.py) does here, off it: read the
object the client sent under `incoming/` (under a byte cap), validate, clean and render it in an
image worker process, store the public original (a HEIC's JPEG rendition, and the HEIC itself
kept private), the 150 px thumbnail and the 600 and 1080 px renditions, mark the media ready,
and delete the incoming object. Or mark it failed, with V0's error code as the reason.

Delivery is at least once, so a job is idempotent per media id: the keys were fixed when the
upload was completed, so a second run writes the same objects again, and only a row still
processing becomes ready or failed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg

from app import db
from app.db import Database
from app.direct_uploads import RENDITION_SIZES
from app.errors import ImageRejected, TooLarge
from app.images import ImagePool, Processed
from app.metrics import Metrics
from app.settings import Settings
from app.sniff import HEIC, JPEG
from app.storage import Storage, StoredObject

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JobWork:
    """What a media job uses: the database, the bucket, the image workers, the limits."""

    database: Database
    storage: Storage
    images: ImagePool
    settings: Settings
    metrics: Metrics


async def process(work: JobWork, media_id: int) -> str:
    """Processes one media; its outcome: ready, failed, done (by an earlier delivery) or gone.

    Failures of the store, the database or an image worker propagate: the job is tried again.
    """
    async with work.database.connection() as conn:
        job = await db.queries.media_job(conn, media_id=media_id)
    if job is None:
        return "gone"  # deleted before its turn: its keys were queued for deletion with the row
    if job["status"] != "processing":
        return "done"
    incoming = job["incoming_key"]
    try:
        data = await work.storage.read(incoming, work.settings.max_upload_bytes)
    except TooLarge as exc:
        return await fail(work, media_id, exc.code)
    if data is None:
        return await _incoming_missing(work, media_id)
    try:
        processed = await work.images.process(data, job["content_type"], RENDITION_SIZES)
    except ImageRejected as exc:
        return await fail(work, media_id, exc.code)
    objects, renditions = _objects(job, processed, data)
    await work.storage.put_all(objects)
    async with work.database.connection() as conn:
        ready = await db.queries.media_ready(
            conn,
            media_id=media_id,
            width=processed.width,
            height=processed.height,
            thumbnail_width=processed.thumbnail.width,
            thumbnail_height=processed.thumbnail.height,
            blurhash=processed.thumbnail.blurhash,
            renditions=renditions,
        )
    if ready is None:
        # Not processing any more: another delivery finished first (same keys, same objects),
        # or the media was deleted meanwhile, which queued the same keys for deletion.
        return "done"
    await work.storage.delete_all([incoming])  # what fails here, the orphan sweep deletes
    work.metrics.media_ready_seconds.observe(
        (ready["ready_at"] - ready["completed_at"]).total_seconds()
    )
    log.info(
        "media ready",
        extra={"media_id": media_id, "cpu_ms": round(processed.cpu_seconds * 1000, 1)},
    )
    return "ready"


def _objects(
    job: asyncpg.Record, processed: Processed, data: bytes
) -> tuple[list[StoredObject], list[dict[str, object]]]:
    """The objects to store, under the keys fixed at complete, and the renditions' JSON."""
    thumbnail_key = job["thumbnail_key"]
    objects = [
        StoredObject(job["original_key"], processed.original, processed.original_type),
        StoredObject(thumbnail_key, processed.thumbnail.data, JPEG),
    ]
    renditions: list[dict[str, object]] = []
    for rendition in processed.renditions:
        key = rendition_key(thumbnail_key, rendition.size)
        objects.append(StoredObject(key, rendition.data, JPEG))
        renditions.append({"width": rendition.width, "height": rendition.height, "key": key})
    if job["source_key"] is not None:  # a HEIC as sent, never public: phone HEICs carry GPS
        objects.append(StoredObject(job["source_key"], data, HEIC))
    return objects, renditions


def rendition_key(thumbnail_key: str, size: int) -> str:
    """`media/7/abc_thumb.jpg` -> `media/7/abc_600.jpg`."""
    return thumbnail_key.removesuffix("_thumb.jpg") + f"_{size}.jpg"


async def fail(work: JobWork, media_id: int, reason: str) -> str:
    """Marks the media failed with `reason` and deletes what was uploaded."""
    async with work.database.connection() as conn:
        incoming = await db.queries.media_failed(conn, media_id=media_id, failure=reason)
    if incoming is not None:  # what fails here, the orphan sweep deletes
        await work.storage.delete_all([incoming])
    log.info("media failed", extra={"media_id": media_id, "reason": reason})
    return "failed"


async def _incoming_missing(work: JobWork, media_id: int) -> str:
    """The uploaded object is gone: another delivery of this job finished and deleted it, or
    it was lost."""
    async with work.database.connection() as conn:
        job = await db.queries.media_job(conn, media_id=media_id)
    if job is None or job["status"] != "processing":
        return "done"
    return await fail(work, media_id, "upload_missing")
