"""Fan-out on write (FEED_MODE=push|hybrid): a new post goes into its author's followers'
timelines, by a worker, off the request path.

Creating a post decides whether it is fanned out (`fanned_out` on its row). In push mode every
post is; in hybrid mode a post by an author with WHALE_FOLLOWERS or more followers is not, and
readers pull it instead (their author is listed in `pulled_authors`), so a celebrity's post
costs no fan-out at all. Deciding per post keeps every read exact when an author crosses the
threshold either way: a post is in the timelines or pulled, never neither.

The fan-out job (a post id) waits on its own SQS queue (FANOUT_QUEUE_NAME) until a worker has
written it everywhere: if Redis is down the job fails, comes back after the visibility
timeout, and is tried again; it is never lost. Writing a post twice is harmless (a sorted set
holds it once).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
from dataclasses import dataclass

import asyncpg

from app import db
from app.db import Database
from app.metrics import Metrics
from app.queue import Job, JobQueue
from app.settings import Settings
from app.timelines import Entry, Timelines

log = logging.getLogger(__name__)

FOLLOWERS_PER_BATCH = 1000
JOBS_AT_ONCE = 8
RECEIVE_WAIT_SECONDS = 5
MAX_BACKOFF_SECONDS = 60


@dataclass(frozen=True, slots=True)
class FanOut:
    """What creating a post needs to decide its fan-out and ask for it."""

    queue: JobQueue
    mode: str  # push or hybrid
    whale_followers: int

    async def decide(self, conn: asyncpg.Connection, author_id: int) -> bool:
        """Whether the author's new post is fanned out (else: pulled by its readers)."""
        if self.mode != "hybrid":
            return True
        followers: int = await db.queries.follower_count(conn, user_id=author_id)
        if followers < self.whale_followers:
            return True
        await db.queries.mark_pulled_author(conn, author_id=author_id)
        return False

    async def request(self, post_id: int) -> None:
        """Queues the post's fan-out. If the queue
        cannot take it, the post is created all the same and its followers' timelines lack
        it until they are rebuilt: logged, for the operator."""
        try:
            await self.queue.send(post_id)
        except Exception as error:
            log.error("could not queue the fan-out of post %s: %s", post_id, type(error).__name__)


async def fan_out(database: Database, timelines: Timelines, metrics: Metrics, post_id: int) -> int:
    """Writes the post into its author's followers' timelines; how many it wrote."""
    async with database.connection() as conn:
        post = await db.queries.post_to_fan_out(conn, post_id=post_id)
    if post is None or not post["fanned_out"]:
        return 0  # deleted before its turn, or pulled by its readers
    written = 0
    after = 0
    while True:
        async with database.connection() as conn:
            followers = [
                row["follower_id"]
                async for row in db.queries.followers_after(
                    conn, user_id=post["author_id"], after_id=after, batch=FOLLOWERS_PER_BATCH
                )
            ]
        if not followers:
            break
        written += await timelines.add_to_followers(followers, post_id, post["created_at"])
        after = followers[-1]
    metrics.fanout_writes.observe(written)
    lag = dt.datetime.now(dt.UTC) - post["created_at"]
    metrics.fanout_lag_seconds.observe(lag.total_seconds())
    return written


async def followed(
    database: Database, timelines: Timelines | None, follower: int, followee: int
) -> None:
    """A follow: the followee's recent posts join the follower's timeline."""
    if timelines is None:
        return
    async with database.connection() as conn:
        entries = await _recent(conn, followee, timelines.length)
    try:
        await timelines.add(follower, entries)
    except Exception as error:  # the timeline may now lack them: let it be rebuilt
        log.warning("could not add a followee's posts to a timeline: %s", type(error).__name__)
        with contextlib.suppress(Exception):
            await timelines.forget(follower)


async def unfollowed(
    database: Database, timelines: Timelines | None, follower: int, followee: int
) -> None:
    """An unfollow: the followee's posts leave the follower's timeline. (Reads also skip any
    post whose author the reader no longer follows, so a failure here shows nothing wrong.)"""
    if timelines is None:
        return
    async with database.connection() as conn:
        entries = await _recent(conn, followee, timelines.length)
    try:
        await timelines.remove(follower, [post_id for post_id, _ in entries])
    except Exception as error:
        log.warning("could not take posts out of a timeline: %s", type(error).__name__)


async def _recent(conn: asyncpg.Connection, author_id: int, count: int) -> list[Entry]:
    rows = db.queries.author_timeline_entries(conn, author_id=author_id, count=count)
    return [(row["post_id"], row["created_at"]) async for row in rows]


async def serve_fanout(
    settings: Settings,
    database: Database,
    timelines: Timelines,
    queue: JobQueue,
    metrics: Metrics,
    stop: asyncio.Event,
) -> None:
    """Takes fan-out jobs until `stop` is set: a worker's second loop, beside its media jobs."""
    log.info("fan-out worker ready", extra={"mode": settings.feed_mode})
    stopping = asyncio.create_task(stop.wait())
    try:
        while not stop.is_set():
            receiving = asyncio.create_task(queue.receive(JOBS_AT_ONCE, RECEIVE_WAIT_SECONDS))
            await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not receiving.done():  # stopping: a job received now comes back to another
                receiving.cancel()
                break
            try:
                jobs = receiving.result()
            except Exception as error:  # the queue is down: ask again in a moment
                log.warning("could not take fan-out jobs: %s", type(error).__name__)
                await asyncio.wait({stopping}, timeout=1.0)
                continue
            await asyncio.gather(*(_run(database, timelines, queue, metrics, job) for job in jobs))
    finally:
        stopping.cancel()


async def _run(
    database: Database, timelines: Timelines, queue: JobQueue, metrics: Metrics, job: Job
) -> None:
    try:
        await fan_out(database, timelines, metrics, job.subject_id)
    except Exception as error:  # Redis or the database is down: the job comes back later
        pause = min(MAX_BACKOFF_SECONDS, 2**job.attempt) * random.uniform(0.5, 1.0)  # noqa: S311
        log.warning(
            "fan-out of post %s failed (%s); again in %.0f s",
            job.subject_id,
            type(error).__name__,
            pause,
        )
        with contextlib.suppress(Exception):
            await queue.retry_in(job, int(pause) + 1)
        return
    try:
        await queue.done(job)
    except Exception as error:  # delivered again later: writing it twice is harmless
        log.warning("could not delete fan-out job %s: %s", job.subject_id, type(error).__name__)
