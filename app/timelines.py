"""Precomputed feeds (FEED_MODE=push|hybrid): each reader's timeline, a sorted set in Redis.

A timeline is `timeline:<user id>`: post ids (zero-padded, so ids of one microsecond sort as
numbers) scored by their creation time in microseconds, at most TIMELINE_LENGTH of them, plus
one marker at score 0 that says what state it is in:
- `~built`: complete as of its build, and kept up to date by fan-out, follows and unfollows;
- `~building`: being rebuilt from the pull query; fan-out already writes into it, readers do
  not read it yet (they pull). It expires if its builder dies.
A timeline that does not exist (a new reader, evicted, Redis restarted empty) is rebuilt once
when it is read; concurrent readers in a process wait for the same rebuild.

Fan-out writes only into timelines that exist: one that does not is rebuilt from PostgreSQL,
where the post already is. A build marks the timeline before it queries, so a post committed
during a build is either in the query's answer or fanned out into the timeline afterwards.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import valkey.asyncio as valkey
from valkey.asyncio.retry import Retry
from valkey.backoff import NoBackoff

from app.cursors import NEWEST
from app.metrics import Metrics
from app.settings import Settings

T = TypeVar("T")

BUILT = "~built"
BUILDING = "~building"
# A build that has not finished within this long is abandoned: the next read starts another.
BUILD_SECONDS = 30
# Redis failing makes every read fall back: said in the log at most this often.
WARN_EVERY_SECONDS = 10.0
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

# Adds one post to every timeline named in KEYS that exists, then trims each to its newest
# ARGV[3] posts (rank 0, the marker at score 0, stays). Returns how many it wrote.
_ADD_TO_EXISTING = """
local written = 0
for _, key in ipairs(KEYS) do
    if redis.call('EXISTS', key) == 1 then
        redis.call('ZADD', key, ARGV[1], ARGV[2])
        redis.call('ZREMRANGEBYRANK', key, 1, -(tonumber(ARGV[3]) + 1))
        written = written + 1
    end
end
return written
"""
# Adds the entries (ARGV[2..]: score, member, ...) to KEYS[1] if it exists, trimmed to its
# newest ARGV[1] posts. Returns whether it existed.
_ADD_ENTRIES = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 2, #ARGV, 2 do
    redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('ZREMRANGEBYRANK', KEYS[1], 1, -(tonumber(ARGV[1]) + 1))
return 1
"""
# Starts a build of KEYS[1] unless it exists: the building marker, which expires.
_BEGIN_BUILD = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('ZADD', KEYS[1], 0, ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
# Finishes a build: the entries (score, member, ...) in, built, trimmed, kept.
_FINISH_BUILD = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false then return 0 end
for i = 4, #ARGV, 2 do
    redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], 0, ARGV[2])
redis.call('ZREMRANGEBYRANK', KEYS[1], 1, -(tonumber(ARGV[3]) + 1))
redis.call('PERSIST', KEYS[1])
return 1
"""


def key(user_id: int) -> str:
    return f"timeline:{user_id}"


def member(post_id: int) -> str:
    return f"{post_id:019d}"


def score(created_at: dt.datetime) -> int:
    """Microseconds since 1970: exact in a double (and in Redis's scores) for 285 years."""
    return (created_at - EPOCH) // dt.timedelta(microseconds=1)


Entry = tuple[int, dt.datetime]  # (post id, created at)


class Timelines:
    def __init__(self, client: valkey.Valkey, length: int, metrics: Metrics | None) -> None:
        self.client = client
        self.length = length
        self.metrics = metrics
        self._add = client.register_script(_ADD_TO_EXISTING)
        self._add_entries = client.register_script(_ADD_ENTRIES)
        self._begin = client.register_script(_BEGIN_BUILD)
        self._finish = client.register_script(_FINISH_BUILD)
        self._builds: dict[int, asyncio.Future[bool]] = {}
        self._quiet_until = 0.0

    def time_to_warn(self) -> bool:
        """Whether a failure should be logged now (each kind is counted in the metrics)."""
        now = time.monotonic()
        if now < self._quiet_until:
            return False
        self._quiet_until = now + WARN_EVERY_SECONDS
        return True

    async def _timed(self, operation: str, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await call
        finally:
            if self.metrics is not None:
                elapsed = time.perf_counter() - started
                self.metrics.redis_seconds.labels(operation).observe(elapsed)

    async def page(
        self, user_id: int, before: tuple[dt.datetime, int], count: int
    ) -> tuple[list[int], bool] | None:
        """Up to `count` post ids below the cursor, newest first, and whether the timeline
        holds everything older too (False once it was trimmed: older pages are pulled).
        None when the timeline is missing or being built."""
        before_time, before_id = before
        top: int | str = "+inf" if before == NEWEST else score(before_time)
        pipe = self.client.pipeline(transaction=False)
        pipe.zscore(key(user_id), BUILT)
        pipe.zcard(key(user_id))
        # Enough for the page and every id of the cursor's own microsecond above it.
        pipe.zrevrangebyscore(key(user_id), top, "(0", start=0, num=count + 64, withscores=True)
        built, size, found = await self._timed("page", pipe.execute())
        if built is None:
            return None
        ids = []
        for raw, entry_score in found:
            post_id = int(raw)
            if top != "+inf" and int(entry_score) == top and post_id >= before_id:
                continue  # at the cursor's microsecond: only ids below it come after
            ids.append(post_id)
        complete = size - 1 < self.length
        return ids[:count], complete or len(ids) > count

    async def add_to_followers(self, followers: list[int], post_id: int, at: dt.datetime) -> int:
        """Fan-out of one post into the followers' timelines that exist; how many."""
        keys = [key(f) for f in followers]
        args: list[str | int] = [score(at), member(post_id), self.length]
        written: int = await self._timed("fan_out", self._add(keys=keys, args=args))
        return written

    async def add(self, user_id: int, entries: list[Entry]) -> None:
        """A follow: the followee's recent posts into the follower's timeline, if it exists."""
        if entries:
            args: list[str | int] = [self.length]
            for post_id, at in entries:
                args += [score(at), member(post_id)]
            await self._timed("follow", self._add_entries(keys=[key(user_id)], args=args))

    async def remove(self, user_id: int, post_ids: list[int]) -> None:
        """An unfollow: the followee's posts out of the follower's timeline."""
        if post_ids:
            members = [member(p) for p in post_ids]
            await self._timed("unfollow", self.client.zrem(key(user_id), *members))

    async def build(self, user_id: int, entries: Callable[[], Awaitable[list[Entry]]]) -> bool:
        """Rebuilds a missing timeline from `entries()` (the pull query), once for all the
        readers of this process that find it missing together; whether it is built now."""
        if (running := self._builds.get(user_id)) is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._builds[user_id] = future
        try:
            built = await self._build(user_id, entries)
            future.set_result(built)
            return built
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: the waiters, if any, get it from their await
            raise
        finally:
            del self._builds[user_id]

    async def _build(self, user_id: int, entries: Callable[[], Awaitable[list[Entry]]]) -> bool:
        started = await self._timed(
            "build", self._begin(keys=[key(user_id)], args=[BUILDING, BUILD_SECONDS])
        )
        if not started:
            return False  # built already, or another process is building it
        args: list[Any] = [BUILDING, BUILT, self.length]
        for post_id, at in await entries():
            args += [score(at), member(post_id)]
        finished: int = await self._timed("build", self._finish(keys=[key(user_id)], args=args))
        if self.metrics is not None:
            self.metrics.timeline_builds.inc()
        return bool(finished)

    async def forget(self, user_id: int) -> None:
        await self._timed("forget", self.client.delete(key(user_id)))


@asynccontextmanager
async def open_timelines(
    settings: Settings, metrics: Metrics | None = None
) -> AsyncIterator[Timelines | None]:
    """The timelines for as long as the block runs; None in pull mode (no Redis needed)."""
    if settings.feed_mode == "pull":
        yield None
        return
    if not settings.redis_url:
        raise RuntimeError("FEED_MODE=push or hybrid needs REDIS_URL (`make run` sets it)")
    # A bounded pool whose callers wait (up to REDIS_TIMEOUT) for a connection, never open more.
    pool = valkey.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_pool_size,
        timeout=settings.redis_timeout,
        socket_timeout=settings.redis_timeout,
        socket_connect_timeout=settings.redis_timeout,
        decode_responses=True,
        # A pooled connection to a Redis that restarted fails once: the call is sent again on
        # a fresh one, instead of the read falling back to pull.
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[valkey.ConnectionError],
    )
    client = valkey.Valkey(connection_pool=pool)
    try:
        yield Timelines(client, settings.timeline_length, metrics)
    finally:
        await client.aclose()
        await pool.disconnect()  # a pool given to the client is not the client's to close
