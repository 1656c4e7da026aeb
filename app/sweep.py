"""The sweeps: objects no row refers to, media that never made it into a post, presigned uploads
never completed, and V1 media whose job went missing.

An upload deletes its objects when it fails after storing them; if that
delete fails too (S3 down at that moment, the process killed), the objects
stay behind. The orphan sweep finds them. Objects younger than `min_age` are
skipped: they may belong to an upload still in flight.

Media no post uses are deleted after UNPOSTED_MEDIA_RETENTION, rows first, then objects, by
the same queue as every other delete (app/deletes.py).

A presigned upload never completed is abandoned ABANDONED_UPLOAD_GRACE after it expires: what
it sent is deleted. A media processing for PROCESSING_TIMEOUT since its job was queued has its
job queued again (the job is idempotent, so a slow job queued twice costs only time).

All run every SWEEP_INTERVAL inside the service (`run_scheduled`): every process wakes up,
and the one that claims the job in `scheduled_jobs` runs it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random

import asyncpg
import orjson

from app import db
from app.db import Connect, Database
from app.deletes import delete_objects
from app.direct_uploads import INCOMING_PREFIX
from app.metrics import Metrics
from app.queue import JobQueue
from app.settings import Settings
from app.storage import PUBLIC_PREFIX, Storage, open_storage

log = logging.getLogger(__name__)

PREFIXES = (PUBLIC_PREFIX, "sources/", INCOMING_PREFIX)
# An upload stores its objects and its row within its deadline (seconds): an object older than
# this with no row is an orphan, not an upload in flight.
SCHEDULED_ORPHAN_MIN_AGE = dt.timedelta(minutes=15)
UNPOSTED_BATCH = 500
ABANDONED_BATCH = 500
STUCK_BATCH = 500


async def find_orphans(
    conn: asyncpg.Connection, storage: Storage, min_age: dt.timedelta
) -> list[str]:
    referenced: set[str] = set()
    async for row in db.queries.media_keys(conn):
        referenced.update(key for key in row.values() if key)
    cutoff = dt.datetime.now(dt.UTC) - min_age
    orphans = []
    paginator = storage.client.get_paginator("list_objects_v2")
    for prefix in PREFIXES:
        async for page in paginator.paginate(Bucket=storage.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                if item["Key"] not in referenced and item["LastModified"] <= cutoff:
                    orphans.append(item["Key"])
    return orphans


async def delete_unposted(connect: Connect, storage: Storage, retention: float) -> int:
    """Deletes media no post uses that are older than `retention` seconds; returns how many."""
    deleted = 0
    while True:
        async with connect() as conn:
            batch = await db.queries.delete_unposted_media(
                conn, older_than_seconds=retention, batch=UNPOSTED_BATCH
            )
        # What S3 refuses stays queued for the deletion retry.
        await delete_objects(connect, storage, batch["keys"] or [])
        count: int = batch["media"]
        deleted += count
        if count < UNPOSTED_BATCH:
            return deleted


async def abandon_expired_uploads(connect: Connect, storage: Storage, grace: float) -> int:
    """Deletes what presigned uploads sent and never completed, `grace` seconds after they
    expired; completing them is 410 from then on. Returns how many uploads."""
    abandoned = 0
    while True:
        async with connect() as conn:
            batch = await db.queries.abandon_expired_uploads(
                conn, grace_seconds=grace, batch=ABANDONED_BATCH
            )
        await delete_objects(connect, storage, batch["keys"] or [])
        count: int = batch["uploads"]
        abandoned += count
        if count < ABANDONED_BATCH:
            return abandoned


async def requeue_stuck_media(connect: Connect, queue: JobQueue, older_than: float) -> int:
    """Queues again the jobs of media processing for longer than `older_than` seconds since
    their last queueing (a lost message, a queue restarted empty); returns how many."""
    async with connect() as conn:
        stuck = [row["media_id"] async for row in db.queries.requeue_stuck_media(
            conn, older_than_seconds=older_than, batch=STUCK_BATCH
        )]  # fmt: skip
    for media_id in stuck:
        await queue.send(media_id)
    return len(stuck)


async def run_due_sweeps(
    connect: Connect,
    storage: Storage,
    queue: JobQueue,
    settings: Settings,
    metrics: Metrics,
    orphan_min_age: dt.timedelta = SCHEDULED_ORPHAN_MIN_AGE,
) -> None:
    """Runs each sweep whose turn it is, unless another process has just run it."""
    for name in ("unposted", "orphans", "abandoned", "stuck"):
        async with connect() as conn:
            claimed = await db.queries.claim_job(
                conn, name=f"sweep-{name}", every_seconds=settings.sweep_interval * 0.9
            )
        if not claimed:
            continue
        try:
            if name == "unposted":
                count = await delete_unposted(connect, storage, settings.unposted_media_retention)
            elif name == "abandoned":
                count = await abandon_expired_uploads(
                    connect, storage, settings.abandoned_upload_grace
                )
            elif name == "stuck":
                count = await requeue_stuck_media(connect, queue, settings.processing_timeout)
            else:
                async with connect() as conn:
                    orphans = await find_orphans(conn, storage, orphan_min_age)
                await storage.delete_all(orphans)
                count = len(orphans)
        except Exception:
            metrics.sweep_runs.labels(name, "failed").inc()
            log.exception(
                "the %s sweep failed; it runs again in %ss", name, settings.sweep_interval
            )
            continue
        metrics.sweep_runs.labels(name, "ok").inc()
        metrics.sweep_deleted.labels(name).inc(count)
        log.info("sweep done", extra={"sweep": name, "deleted": count})


async def run_scheduled(
    database: Database, storage: Storage, queue: JobQueue, settings: Settings, metrics: Metrics
) -> None:
    """Wakes every SWEEP_INTERVAL and runs the sweeps that are due, until cancelled."""
    while True:
        # Spread over the interval, so processes started together do not all wake at once.
        await asyncio.sleep(settings.sweep_interval * random.uniform(0.5, 1.0))  # noqa: S311
        try:
            await run_due_sweeps(database.connection, storage, queue, settings, metrics)
        except Exception as error:  # the database or S3 is down: try at the next wake-up
            log.warning("scheduled sweeps skipped: %s", type(error).__name__)


async def sweep(settings: Settings, min_age: dt.timedelta, delete: bool) -> list[str]:
    """List (and with `delete`, remove) orphans; one JSON line each on stdout."""
    assert settings.database_url, "DATABASE_URL must be set"
    conn = await asyncpg.connect(settings.database_url)
    try:
        async with open_storage(settings) as storage:
            orphans = await find_orphans(conn, storage, min_age)
            for key in orphans:
                print(orjson.dumps({"orphan": key, "deleted": delete}).decode())
            if delete:
                await storage.delete_all(orphans)
    finally:
        await conn.close()
    log.info("orphan sweep done", extra={"orphans": len(orphans), "deleted": delete})
    return orphans
