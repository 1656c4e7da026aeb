"""The pull-model feed, computed from follows and posts on every request (GET /v1/feed)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import asyncpg

from app import db
from app.cursors import Cursors
from app.db import Database
from app.errors import InvalidCursor
from app.metrics import Metrics
from app.posts import post_body
from app.validation import MAX_ID

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MICROSECOND = dt.timedelta(microseconds=1)
# The first page's cursor: after every post there is.
NEWEST = (dt.datetime.max.replace(tzinfo=dt.UTC), MAX_ID)


async def feed_page(
    database: Database,
    cursors: Cursors,
    metrics: Metrics,
    user_id: int,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """One page of the user's feed, newest first, after the post the cursor names."""
    before = _position(cursors, cursor)
    async with database.connection() as conn:
        started = time.perf_counter()
        # One row more than asked tells whether another page exists.
        rows, strategy = await feed_rows(conn, user_id, before, limit + 1)
        metrics.feed_query_seconds.labels(strategy).observe(time.perf_counter() - started)
    items = [post_body(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        micros = (last["created_at"] - EPOCH) // MICROSECOND
        next_cursor = cursors.encode("feed", micros, last["post_id"])
    return {"items": items, "next_cursor": next_cursor}


async def feed_rows(
    conn: asyncpg.Connection, user_id: int, before: tuple[dt.datetime, int], page_size: int
) -> tuple[list[asyncpg.Record], str]:
    """The page's rows, and which strategy found them (sql/queries/feed.sql explains both).

    Strategy 1 reads at most a fixed window of everyone's newest posts (500, written in its
    SQL) and answers when the followed accounts are active; strategy 2 costs one index probe
    per followed account and always answers.
    """
    params = {
        "user_id": user_id,
        "before_time": before[0],
        "before_id": before[1],
        "page_size": page_size,
    }
    rows = [r async for r in db.queries.feed_recent(conn, **params)]
    if len(rows) == page_size:
        return rows, "recent"
    return [r async for r in db.queries.feed_page(conn, **params)], "per-followee"


def _position(cursors: Cursors, cursor: str | None) -> tuple[dt.datetime, int]:
    """(created_at, post_id) of the last post the client saw."""
    if cursor is None:
        return NEWEST
    micros, post_id = cursors.decode("feed", cursor, arity=2)
    if not (isinstance(micros, int) and isinstance(post_id, int) and 0 < post_id <= MAX_ID):
        raise InvalidCursor("the cursor is not one this API handed out")
    try:
        return EPOCH + micros * MICROSECOND, post_id
    except OverflowError:
        raise InvalidCursor("the cursor is not one this API handed out") from None
