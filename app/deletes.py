"""Deleting posts, media and accounts, with their objects in S3.

Rows first, objects after. One transaction deletes the rows and queues every object key they
named in `object_deletions`; after the commit the objects are deleted and their keys
forgotten. If S3 fails then, the rows are gone all the same and the keys stay queued: the
scheduled retry (`retry_on_schedule`, every DELETION_RETRY_INTERVAL) deletes them. So no row
ever names a missing object, and every object of a deleted row goes, now or at the next retry.

Deleting what you deleted before answers as the first delete did (a tombstone remembers it),
so a client may retry a delete whose answer it lost.
"""

from __future__ import annotations

import asyncio
import logging
import random

import asyncpg

from app import db, deadlines
from app.auth import TokenKeys
from app.db import Connect, Database
from app.errors import Conflict, Forbidden, NotFound
from app.metrics import Metrics
from app.settings import Settings
from app.storage import Storage

log = logging.getLogger(__name__)

# Seconds a delete waits for S3 after its commit before leaving the objects to the retry.
OBJECT_DELETE_WAIT = 5.0
RETRY_BATCH = 1000
RETRY_BATCHES_PER_RUN = 20


async def delete_post(database: Database, storage: Storage, user_id: int, post_id: int) -> None:
    """The author's post goes, with its likes, its media row and its objects."""
    deadlines.stop()  # a delete cut off mid-commit would not know whether it happened
    async with database.connection() as conn, conn.transaction():
        post = await db.queries.lock_post(conn, post_id=post_id)
        if post is None:
            await _deleted_before(conn, "post", post_id, user_id)
            return
        if post["author_id"] != user_id:
            raise Forbidden("that post belongs to someone else")
        await db.queries.delete_post(conn, post_id=post_id)
        keys = await _delete_media_row(conn, post["media_id"])
        await db.queries.bury(conn, kind="post", id=post_id, owner_id=user_id)
        await db.queries.bury(conn, kind="media", id=post["media_id"], owner_id=user_id)
    await delete_objects(database.connection, storage, keys)


async def delete_media(database: Database, storage: Storage, user_id: int, media_id: int) -> None:
    """An upload no post uses goes, with its objects; one in a post goes with its post."""
    deadlines.stop()
    async with database.connection() as conn, conn.transaction():
        media = await db.queries.lock_media(conn, media_id=media_id)
        if media is None:
            await _deleted_before(conn, "media", media_id, user_id)
            return
        if media["user_id"] != user_id:
            raise Forbidden("that upload belongs to someone else")
        if media["posted"]:
            raise Conflict("that upload is in a post: delete the post, and the upload goes too")
        keys = await _delete_media_row(conn, media_id)
        await db.queries.bury(conn, kind="media", id=media_id, owner_id=user_id)
    await delete_objects(database.connection, storage, keys)


async def delete_account(
    database: Database, storage: Storage, token_keys: TokenKeys, user_id: int
) -> None:
    """The account goes with everything it owns; its tokens stop working.

    The likes it gave are taken off other people's posts' counts first. Follows both ways,
    likes, uploads and posts go with it.
    """
    deadlines.stop()
    async with database.connection() as conn, conn.transaction():
        # Locked first: a like or follow by this account in flight waits, then finds it gone.
        if await db.queries.lock_user(conn, user_id=user_id) is None:
            return  # deleted by a request that ran at the same time
        await db.queries.unlike_everything(conn, user_id=user_id)
        keys = [row["key"] async for row in db.queries.delete_user(conn, user_id=user_id)]
    token_keys.forget(user_id)
    await delete_objects(database.connection, storage, keys)


async def _delete_media_row(conn: asyncpg.Connection, media_id: int) -> list[str]:
    return [row["key"] async for row in db.queries.delete_media(conn, media_id=media_id)]


async def _deleted_before(conn: asyncpg.Connection, kind: str, item_id: int, user_id: int) -> None:
    """Returns if the caller deleted this before; NotFound otherwise (never someone else's)."""
    if await db.queries.tombstone_owner(conn, kind=kind, id=item_id) != user_id:
        raise NotFound(f"no {kind} with id {item_id}")


async def delete_objects(connect: Connect, storage: Storage, keys: list[str]) -> list[str]:
    """Deletes queued objects and forgets the keys S3 confirmed; the keys left queued.

    Never raises: the rows are already gone, and what is left is the retry's.
    """
    if not keys:
        return []
    try:
        async with asyncio.timeout(OBJECT_DELETE_WAIT):
            failed = list(await storage.delete_objects(keys))
    except TimeoutError:
        failed = keys
    refused = set(failed)
    deleted = [key for key in keys if key not in refused]
    try:
        async with connect() as conn:
            if deleted:
                await db.queries.forget_deletions(conn, keys=deleted)
            if failed:
                await db.queries.count_failed_deletions(conn, keys=failed)
    except Exception as error:  # they stay queued: deleting them again is harmless
        log.warning("could not update the deletion queue: %s", type(error).__name__)
    if failed:
        log.warning("S3 did not delete %d objects; the deletion retry will", len(failed))
    return failed


async def retry_deletions(database: Database, storage: Storage) -> tuple[int, int]:
    """One pass over the queue, oldest first: (objects deleted, objects S3 refused)."""
    deleted = refused = 0
    for _ in range(RETRY_BATCHES_PER_RUN):
        async with database.connection() as conn:
            rows = [row async for row in db.queries.queued_deletions(conn, batch=RETRY_BATCH)]
        keys = [row["object_key"] for row in rows]
        failed = await delete_objects(database.connection, storage, keys)
        deleted += len(keys) - len(failed)
        refused += len(failed)
        if failed or len(keys) < RETRY_BATCH:  # S3 is failing, or the queue is empty
            break
    return deleted, refused


async def retry_on_schedule(
    database: Database, storage: Storage, settings: Settings, metrics: Metrics
) -> None:
    """Every DELETION_RETRY_INTERVAL, one process deletes what S3 refused before."""
    interval = settings.deletion_retry_interval
    while True:
        # Spread over the interval, so processes started together do not all wake at once.
        await asyncio.sleep(interval * random.uniform(0.5, 1.0))  # noqa: S311
        try:
            async with database.connection() as conn:
                claimed = await db.queries.claim_job(
                    conn, name="object-deletions", every_seconds=interval * 0.4
                )
            if not claimed:
                continue
            deleted, refused = await retry_deletions(database, storage)
        except Exception as error:  # the database is down: try at the next wake-up
            metrics.sweep_runs.labels("deletions", "failed").inc()
            log.warning("the deletion retry failed: %s", type(error).__name__)
            continue
        metrics.sweep_runs.labels("deletions", "failed" if refused else "ok").inc()
        metrics.sweep_deleted.labels("deletions").inc(deleted)
        if deleted or refused:
            log.info("deletion retry done", extra={"deleted": deleted, "refused": refused})
