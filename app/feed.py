"""The pull-model feed, computed from follows and posts on every request (GET /v1/feed)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import asyncpg
from valkey.exceptions import ValkeyError

from app import db
from app.cursors import NEWEST, Cursors
from app.db import Database
from app.delivery import ImageUrls
from app.metrics import Metrics
from app.posts import post_body
from app.timelines import WARN_EVERY_SECONDS, Entry, Timelines

__all__ = ["NEWEST", "feed_page", "feed_rows", "timeline_rows"]

log = logging.getLogger(__name__)


async def feed_page(
    database: Database,
    urls: ImageUrls,
    cursors: Cursors,
    metrics: Metrics,
    user_id: int,
    limit: int,
    cursor: str | None,
    query: str = "monogram",
    timelines: Timelines | None = None,
) -> dict[str, Any]:
    """One page of the user's feed, newest first, after the post the cursor names.

    `query` is FEED_QUERY: the service's own SQL, or the source design's JOIN. With
    `timelines` (FEED_MODE=push|hybrid) the page comes from the reader's timeline and the
    pulled posts beside it, and from the pull query only when that cannot answer exactly.
    """
    before = cursors.decode_post_position("feed", cursor)
    # One row more than asked tells whether another page exists.
    rows = None
    if timelines is not None:
        rows = await timeline_rows(database, timelines, metrics, user_id, before, limit + 1)
    if rows is None:
        async with database.connection() as conn:
            started = time.perf_counter()
            rows, strategy = await feed_rows(conn, user_id, before, limit + 1, query)
            elapsed = time.perf_counter() - started
            metrics.feed_query_seconds.labels(query, strategy).observe(elapsed)
    items = [post_body(row, urls) for row in rows[:limit]]
    more = len(rows) > limit
    next_cursor = cursors.encode_post_position("feed", rows[limit - 1]) if more else None
    return {"items": items, "next_cursor": next_cursor}


async def feed_rows(
    conn: asyncpg.Connection,
    user_id: int,
    before: tuple[dt.datetime, int],
    page_size: int,
    query: str = "monogram",
) -> tuple[list[asyncpg.Record], str]:
    """The page's rows, and which strategy found them (sql/queries/feed.sql explains each).

    Monogram's strategy 1 reads at most a fixed window of everyone's newest posts (500,
    written in its SQL) and answers when the followed accounts are active; strategy 2 costs
    one index probe per followed account and always answers. The seed's query is one JOIN,
    which reads every followed account's posts newer than the page when they are quiet.
    """
    params = {
        "user_id": user_id,
        "before_time": before[0],
        "before_id": before[1],
        "page_size": page_size,
    }
    if query == "seed":
        return [r async for r in db.queries.feed_seed(conn, **params)], "seed-join"
    rows = [r async for r in db.queries.feed_recent(conn, **params)]
    if len(rows) == page_size:
        return rows, "recent"
    return [r async for r in db.queries.feed_page(conn, **params)], "per-followee"


async def timeline_rows(
    database: Database,
    timelines: Timelines,
    metrics: Metrics,
    user_id: int,
    before: tuple[dt.datetime, int],
    page_size: int,
) -> list[asyncpg.Record] | None:
    """The page's rows from the reader's timeline (rebuilt first if it is missing) merged with
    the pulled posts of the authors they follow; None when only the pull query can answer:
    Redis failed, another process is building the timeline, the page reaches past the
    timeline's length, or posts it named are gone and it may hold more."""
    try:
        page = await timelines.page(user_id, before, page_size)
        outcome = "hit"
        if page is None:
            outcome = "miss"
            await timelines.build(user_id, lambda: _entries(database, user_id, timelines.length))
            page = await timelines.page(user_id, before, page_size)
    except (ValkeyError, OSError, TimeoutError) as error:
        if timelines.time_to_warn():
            log.warning(
                "timelines unavailable (%s): feeds are pulled (at most one such line per %g s)",
                type(error).__name__,
                WARN_EVERY_SECONDS,
            )
        metrics.timeline_reads.labels("fallback").inc()
        return None
    if page is None:
        metrics.timeline_reads.labels("pulled").inc()
        return None
    ids, complete = page
    async with database.connection() as conn:
        rows = [
            row
            async for row in db.queries.feed_timeline_page(
                conn,
                user_id=user_id,
                ids=ids,
                before_time=before[0],
                before_id=before[1],
                page_size=page_size,
            )
        ]
    # A short page is the end of the feed only if the timeline held everything older and
    # every post it named was found.
    named = sum(1 for row in rows if row["from_timeline"])
    if len(rows) < page_size and (not complete or named < len(ids)):
        metrics.timeline_reads.labels("pulled").inc()
        return None
    metrics.timeline_reads.labels(outcome).inc()
    return rows


async def _entries(database: Database, user_id: int, count: int) -> list[Entry]:
    """What a missing timeline is rebuilt from: the pull feed's newest `count` posts."""
    async with database.connection() as conn:
        rows, _ = await feed_rows(conn, user_id, NEWEST, count)
    return [(row["post_id"], row["created_at"]) for row in rows]
