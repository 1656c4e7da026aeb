"""The pull-model feed, computed from follows and posts on every request (GET /v1/feed)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import asyncpg

from app import db
from app.cursors import NEWEST, Cursors
from app.db import Database
from app.delivery import ImageUrls
from app.metrics import Metrics
from app.posts import post_body

__all__ = ["NEWEST", "feed_page", "feed_rows"]


async def feed_page(
    database: Database,
    urls: ImageUrls,
    cursors: Cursors,
    metrics: Metrics,
    user_id: int,
    limit: int,
    cursor: str | None,
    query: str = "monogram",
) -> dict[str, Any]:
    """One page of the user's feed, newest first, after the post the cursor names.

    `query` is FEED_QUERY: the service's own SQL, or the source design's JOIN.
    """
    before = cursors.decode_post_position("feed", cursor)
    async with database.connection() as conn:
        started = time.perf_counter()
        # One row more than asked tells whether another page exists.
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
