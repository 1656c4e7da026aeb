"""FEED_MODE=push|hybrid: fan-out on write into timelines in a real Redis, follows and
unfollows, whales crossing the threshold, and Redis restarted empty or down. Whatever happens,
a reader sees exactly the pages the pull model serves, once the fan-out has caught up."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import valkey.asyncio as valkey

from app.cursors import NEWEST
from app.devstack.redis import EmbeddedRedis
from app.fanout import serve_fanout
from app.keys import DATABASE, METRICS, SETTINGS, TIMELINES
from app.main import create_app
from app.queue import open_fanout_queue
from app.settings import Settings
from app.timelines import BUILT, key, member, open_timelines
from tests.helpers import (
    AiohttpClient,
    Client,
    User,
    feed_pages,
    free_port,
    publish,
    sign_up,
    until,
)


@pytest.fixture
def own_redis(redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of the test's own, free to be stopped, emptied and restarted."""
    del redis_server  # skips with the shared one when no server binary is installed
    server = EmbeddedRedis(tmp_path / "redis", free_port(), secrets.token_urlsafe(16))
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def pages(client: Client, user: User, limit: int = 2) -> list[list[int]]:
    return await feed_pages(client, user, limit)


async def counter(client: Client, name: str) -> dict[str, float]:
    text = await (await client.get("/metrics")).text()
    return {
        labels: float(value)
        for labels, value in re.findall(rf"^{name}_total\{{(.*?)\}} (\S+)$", text, re.M)
    }


@contextlib.asynccontextmanager
async def fan_out_worker(client: Client) -> AsyncIterator[None]:
    """The fan-out loop of `python -m app worker`, on the app's own resources."""
    app = client.app
    stop = asyncio.Event()
    async with open_fanout_queue(app[SETTINGS]) as queue:
        timelines = app[TIMELINES]
        assert timelines is not None
        loop = serve_fanout(app[SETTINGS], app[DATABASE], timelines, queue, app[METRICS], stop)
        task = asyncio.create_task(loop)
        try:
            yield
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)


async def in_timeline(client: Client, reader: User, post: dict[str, Any]) -> bool:
    timelines = client.app[TIMELINES]
    assert timelines is not None
    return await timelines.client.zscore(key(reader.id), member(post["id"])) is not None


@pytest.fixture
def modes(
    aiohttp_client: AiohttpClient, settings: Settings, redis_url: str
) -> Callable[..., Awaitable[tuple[Client, Client]]]:
    """(an app in the mode asked, a pull app): the same database, for comparing pages."""

    async def make(mode: str, **overrides: Any) -> tuple[Client, Client]:
        timed = settings.with_overrides(feed_mode=mode, redis_url=redis_url, **overrides)
        return await aiohttp_client(create_app(timed)), await aiohttp_client(create_app(settings))

    return make


async def test_a_post_is_fanned_out_to_built_timelines_and_read_from_them(
    modes: Callable[..., Awaitable[tuple[Client, Client]]],
) -> None:
    push, pull = await modes("push")
    reader, author, stranger = [await sign_up(push, n) for n in ("reader", "author", "stranger")]
    await push.put(f"/v1/following/{author.id}", headers=reader.auth)
    first = await publish(push, author, "before the timeline")
    assert await pages(push, reader) == await pages(pull, reader) == [[first["id"]]]
    assert await in_timeline(push, reader, first)  # built from the pull query at the read

    async with fan_out_worker(push):
        later = [await publish(push, author, f"post {i}") for i in range(3)]
        await publish(push, stranger, "nobody follows me")
        for post in later:
            await until(lambda post=post: in_timeline(push, reader, post))
    reads = await counter(push, "monogram_timeline_reads")
    assert await pages(push, reader) == await pages(pull, reader)
    assert flat(await pages(push, reader)) == [p["id"] for p in reversed([first, *later])]
    after = await counter(push, "monogram_timeline_reads")
    assert after['outcome="hit"'] > reads.get('outcome="hit"', 0)  # read from the timeline
    metrics = await (await push.get("/metrics")).text()
    assert 'monogram_feed_mode{mode="push"} 1.0' in metrics
    # The three posts' fan-outs, and maybe the stranger's (no followers: no writes).
    lagged = re.search(r"^monogram_fanout_lag_seconds_count (\S+)$", metrics, re.M)
    assert lagged is not None
    assert float(lagged.group(1)) >= 3


def flat(found: list[list[int]]) -> list[int]:
    return [post_id for page in found for post_id in page]


async def test_follow_adds_the_followees_posts_and_unfollow_takes_them_out(
    modes: Callable[..., Awaitable[tuple[Client, Client]]],
) -> None:
    push, pull = await modes("push")
    reader, old, new = [await sign_up(push, n) for n in ("reader", "old", "new")]
    await push.put(f"/v1/following/{old.id}", headers=reader.auth)
    kept = await publish(push, old)
    joined = [await publish(push, new), await publish(push, new)]
    await pages(push, reader)  # the timeline is built: only the old followee's post
    assert not await in_timeline(push, reader, joined[0])

    await push.put(f"/v1/following/{new.id}", headers=reader.auth)
    assert all([await in_timeline(push, reader, p) for p in joined])
    assert await pages(push, reader) == await pages(pull, reader)
    assert sorted(flat(await pages(push, reader))) == sorted(
        [kept["id"], *(p["id"] for p in joined)]
    )

    await push.delete(f"/v1/following/{new.id}", headers=reader.auth)
    assert not any([await in_timeline(push, reader, p) for p in joined])
    assert await pages(push, reader) == await pages(pull, reader) == [[kept["id"]]]


async def test_a_whale_is_pulled_and_an_author_crossing_the_threshold_stays_exact(
    modes: Callable[..., Awaitable[tuple[Client, Client]]], settings: Settings
) -> None:
    hybrid, pull = await modes("hybrid", whale_followers=2)
    reader, second, author = [await sign_up(hybrid, n) for n in ("reader", "second", "author")]
    await hybrid.put(f"/v1/following/{author.id}", headers=reader.auth)
    await pages(hybrid, reader)  # built
    async with fan_out_worker(hybrid):
        ordinary = await publish(hybrid, author, "one follower: fanned out")
        await until(lambda: in_timeline(hybrid, reader, ordinary))
        await hybrid.put(f"/v1/following/{author.id}", headers=second.auth)  # now a whale
        whale = await publish(hybrid, author, "two followers: pulled")
        await hybrid.delete(f"/v1/following/{author.id}", headers=second.auth)  # no longer
        again = await publish(hybrid, author, "one follower again: fanned out")
        await until(lambda: in_timeline(hybrid, reader, again))
    assert not await in_timeline(hybrid, reader, whale)  # never written: pulled at read time
    expected = [again["id"], whale["id"], ordinary["id"]]
    assert flat(await pages(hybrid, reader)) == expected
    assert await pages(hybrid, reader) == await pages(pull, reader)
    assert await pages(hybrid, reader, limit=1) == await pages(pull, reader, limit=1)


async def test_a_redis_restarted_empty_rebuilds_every_timeline_from_the_pull_query(
    aiohttp_client: AiohttpClient, settings: Settings, own_redis: EmbeddedRedis
) -> None:
    push = await aiohttp_client(
        create_app(settings.with_overrides(feed_mode="push", redis_url=own_redis.url))
    )
    reader, author = await sign_up(push, "reader"), await sign_up(push, "author")
    await push.put(f"/v1/following/{author.id}", headers=reader.auth)
    posts = [await publish(push, author, f"{i}") for i in range(3)]
    before = await pages(push, reader)
    assert await in_timeline(push, reader, posts[0])

    own_redis.stop()
    for path in own_redis.data_dir.iterdir():  # everything it kept is lost
        if path.is_dir():
            for part in path.iterdir():
                part.unlink()
        elif path.name != "server.conf":
            path.unlink()
    own_redis.start()
    assert await pages(push, reader) == before
    assert await in_timeline(push, reader, posts[0])  # rebuilt at that read
    reads = await counter(push, "monogram_timeline_reads")
    assert reads['outcome="miss"'] >= 2  # the first build, and the one after the loss


async def test_with_redis_down_reads_are_pulled_and_fan_out_waits_in_its_queue(
    aiohttp_client: AiohttpClient, settings: Settings, own_redis: EmbeddedRedis
) -> None:
    push = await aiohttp_client(
        create_app(settings.with_overrides(feed_mode="push", redis_url=own_redis.url))
    )
    pull = await aiohttp_client(create_app(settings))
    reader, author = await sign_up(push, "reader"), await sign_up(push, "author")
    await push.put(f"/v1/following/{author.id}", headers=reader.auth)
    first = await publish(push, author)
    await pages(push, reader)  # built, with `first`

    own_redis.stop()
    during = await publish(push, author, "posted while Redis was down")
    assert await pages(push, reader) == await pages(pull, reader)  # 200, from the pull query
    fallbacks = await counter(push, "monogram_timeline_reads")
    assert fallbacks['outcome="fallback"'] >= 1
    async with fan_out_worker(push):
        await asyncio.sleep(1.0)  # the job fails against the stopped Redis, and stays queued
        own_redis.start()  # with what it had: the timeline without `during`
        await until(lambda: in_timeline(push, reader, during), seconds=30)
    assert flat(await pages(push, reader)) == [during["id"], first["id"]]
    timelines = push.app[TIMELINES]
    assert timelines is not None
    assert await timelines.client.zscore(key(reader.id), BUILT) == 0  # read from it again


async def test_the_valkey_client_is_bounded_and_fails_fast_when_redis_is_gone(
    settings: Settings,
) -> None:
    nowhere = settings.with_overrides(
        feed_mode="push",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        redis_pool_size=3,
        redis_timeout=0.25,
    )
    async with open_timelines(nowhere) as timelines:
        assert timelines is not None
        pool = timelines.client.connection_pool
        assert isinstance(pool, valkey.BlockingConnectionPool)
        assert pool.max_connections == 3
        started = asyncio.get_running_loop().time()
        with pytest.raises((valkey.ConnectionError, OSError, TimeoutError)):
            await timelines.page(1, NEWEST, 5)
        assert asyncio.get_running_loop().time() - started < 5
