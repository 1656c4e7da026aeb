"""feed-modes: the pull feed against push (fan-out on write) and hybrid, same data, same run.

For each FEED_MODE in turn, on a fresh deployment (and an emptied Redis):
- feed reads by the dedicated viewers of the largest F (quiet and active authors) and of
  F = 200, at rising offered rates until p99 passes 50 ms: the best rate within p99 50 ms,
  and the p99 at 200 reads/s;
- the celebrity (followed by a tenth of all users): its followers' timelines are built by one
  read each, then one post. In push mode, how long its fan-out takes to reach the last
  follower and how many timelines it wrote; then posts at the mix's post rate, each timed to
  its last follower (the fan-out lag). In hybrid mode the celebrity is a whale: no fan-out.
  Then its followers read their feeds at 200/s;
- Redis's memory: per timeline (MEMORY USAGE of the followers' timelines) and in all.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from contextlib import ExitStack
from typing import Any

import aiohttp
import orjson
import valkey.asyncio as valkey

from app.timelines import key, member
from bench import stack
from bench.histogram import Histogram
from bench.load import Answer, open_loop
from bench.scenarios import Context, Traffic, _session, deploy, spare_media

MODES = ("pull", "push", "hybrid")
P99_BOUND_MS = 50
POST_RATE = 10.0  # the mix's new posts at its ~100 requests/s: 10%
LAG_POSTS = 20
BUILDS_AT_ONCE = 32
WARM_READS = 20
FAN_OUT_PATIENCE = 120.0


async def feed_modes(ctx: Context, rates: tuple[float, ...]) -> dict[str, Any]:
    biggest = ctx.size.follow_points[-1]
    middle = 200 if 200 in ctx.size.follow_points else ctx.size.follow_points[1]
    viewers = [(biggest, "quiet"), (biggest, "active"), (middle, "active"), (middle, "quiet")]
    if ctx.size.name == "tiny":  # a first look, and the suite's check that the code runs
        viewers = [(biggest, "quiet"), (middle, "active")]
    whale = whale_followers(ctx)
    media = await spare_media(ctx.settings, [ctx.graph.celebrity], 3 * (LAG_POSTS + 1))
    results: dict[str, Any] = {
        "whale_followers": whale,
        "rates": list(rates),
        "largest_followed": biggest,
        "modes": {},
    }
    for mode in MODES:
        results["modes"][mode] = await _one_mode(ctx, mode, whale, viewers, rates, media)
    return results | _verdicts(results, viewers)


def whale_followers(ctx: Context) -> int:
    """WHALE_FOLLOWERS for hybrid mode: the celebrity is a whale, and nobody else is."""
    return max(2, len(ctx.graph.celebrity_followers) // 2)


async def warm_up(
    ctx: Context, traffic: Traffic, session: aiohttp.ClientSession, viewer: int
) -> None:
    """A viewer's first reads: in push and hybrid they build the timeline, as a first visit
    does, so the steps after them measure reads of a built one."""
    for _ in range(WARM_READS if ctx.step_seconds >= 4 else 2):
        await traffic.feed(session, viewer)


async def _one_mode(
    ctx: Context,
    mode: str,
    whale: int,
    viewers: list[tuple[int, str]],
    rates: tuple[float, ...],
    media: deque[tuple[int, int]],
) -> dict[str, Any]:
    env = {"FEED_MODE": mode, "WHALE_FOLLOWERS": str(whale)}
    redis = valkey.Valkey.from_url(ctx.settings.redis_url or "")
    await redis.flushdb()
    with ExitStack() as exits:
        deployed = deploy(ctx, exits, **env)
        if mode != "pull":
            exits.enter_context(
                stack.media_worker(
                    ctx.settings,
                    **env,
                    THUMBNAIL_WORKERS="1",
                    LOG_LEVEL="WARNING",
                    SERVICE_PROCESSES=str(ctx.processes + 1),
                )
            )
        traffic = Traffic(ctx, [deployed.url], deque())
        result: dict[str, Any] = {"reads": {}}
        await asyncio.sleep(ctx.step_seconds)  # the processes start and settle
        async with _session() as session:
            for followed, kind in viewers:
                viewer = ctx.graph.viewer(followed, kind)
                await warm_up(ctx, traffic, session, viewer)
                result["reads"][f"F{followed}-{kind}"] = await viewer_steps(
                    ctx, traffic, viewer, rates
                )
            result["celebrity"] = await _celebrity(ctx, mode, deployed.url, traffic, redis, media)
        result["redis"] = await _memory(ctx, redis) if mode != "pull" else None
    await redis.aclose()
    return result


async def viewer_steps(
    ctx: Context, traffic: Traffic, viewer: int, rates: tuple[float, ...]
) -> dict[str, Any]:
    """One viewer's reads at each rate in turn, until p99 passes P99_BOUND_MS or one fails."""

    async def read(session: aiohttp.ClientSession) -> Answer:
        return await traffic.feed(session, viewer)

    steps = []
    async with _session() as session:
        for rate in rates:
            step = await open_loop(session, [("feed", 1, read)], rate, ctx.step_seconds)
            summary = step.summary()["operations"]["feed"]
            steps.append({"offered_rate": rate, **summary})
            if summary["p99_ms"] > P99_BOUND_MS or summary["errors"]:
                break
    good = [s for s in steps if s["p99_ms"] <= P99_BOUND_MS and not s["errors"]]
    return {
        "steps": steps,
        "best_rate_within_p99_50ms": max((s["offered_rate"] for s in good), default=0),
        "p99_ms_at_first_rate": steps[0]["p99_ms"],
    }


async def _celebrity(
    ctx: Context,
    mode: str,
    url: str,
    traffic: Traffic,
    redis: valkey.Valkey,
    media: deque[tuple[int, int]],
) -> dict[str, Any]:
    followers = ctx.graph.celebrity_followers
    last = max(followers)  # fan-out walks the followers in id order
    slots = asyncio.Semaphore(BUILDS_AT_ONCE)
    async with _session() as session:

        async def build(follower: int) -> None:
            async with slots:
                await traffic.feed(session, follower)

        started = time.perf_counter()
        await asyncio.gather(*(build(f) for f in followers))
        built_seconds = time.perf_counter() - started
        post_id, posted_at = await _post(ctx, session, url, media)
        fan_out_seconds = written = None
        lags = Histogram()
        timing: set[asyncio.Task[None]] = set()
        if mode == "push":
            fan_out_seconds = await _until_in(redis, last, post_id, posted_at)
            written = await _timelines_holding(redis, followers, post_id)
            for _ in range(LAG_POSTS):
                due = time.perf_counter() + 1 / POST_RATE
                post_id, posted_at = await _post(ctx, session, url, media)
                timing.add(asyncio.create_task(_record_lag(redis, last, post_id, posted_at, lags)))
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            await asyncio.gather(*timing)  # each gives up after FAN_OUT_PATIENCE
        elif mode == "hybrid":
            await asyncio.sleep(2.0)  # a fan-out, if one ran, would have written by now
            written = await _timelines_holding(redis, followers, post_id)
        rng = random.Random(9)

        async def read(session: aiohttp.ClientSession) -> Answer:
            return await traffic.feed(session, rng.choice(followers))

        step = await open_loop(session, [("feed", 1, read)], 200, ctx.step_seconds)
    return {
        "followers": len(followers),
        "timelines_built_in_s": round(built_seconds, 2),
        "fan_out_seconds": fan_out_seconds,
        "timelines_written": written,
        "fan_out_lag_ms": lags.summary_ms() if lags.count else None,
        "followers_reading_at_200_per_s": step.summary()["operations"]["feed"],
    }


async def _post(
    ctx: Context, session: aiohttp.ClientSession, url: str, media: deque[tuple[int, int]]
) -> tuple[int, float]:
    user, media_id = media.popleft()
    body = orjson.dumps({"media_id": media_id, "caption": "feed-modes"})
    headers = {**ctx.auth(user), "Content-Type": "application/json"}
    async with session.post(f"{url}/v1/posts", data=body, headers=headers) as answer:
        assert answer.status == 201, await answer.text()
        return int((await answer.json())["id"]), time.perf_counter()


async def _until_in(redis: valkey.Valkey, user: int, post_id: int, since: float) -> float | None:
    deadline = since + FAN_OUT_PATIENCE
    while time.perf_counter() < deadline:
        if await redis.zscore(key(user), member(post_id)) is not None:
            return round(time.perf_counter() - since, 3)
        await asyncio.sleep(0.01)
    return None


async def _record_lag(
    redis: valkey.Valkey, user: int, post_id: int, since: float, lags: Histogram
) -> None:
    seconds = await _until_in(redis, user, post_id, since)
    if seconds is not None:
        lags.record(seconds)


async def _timelines_holding(redis: valkey.Valkey, users: list[int], post_id: int) -> int:
    pipe = redis.pipeline(transaction=False)
    for user in users:
        pipe.zscore(key(user), member(post_id))
    return sum(1 for found in await pipe.execute() if found is not None)


async def _memory(ctx: Context, redis: valkey.Valkey) -> dict[str, Any]:
    sample = ctx.graph.celebrity_followers[:50]
    pipe = redis.pipeline(transaction=False)
    for user in sample:
        pipe.memory_usage(key(user))
        pipe.zcard(key(user))
    answers = await pipe.execute()
    sizes = [(b, n - 1) for b, n in zip(answers[::2], answers[1::2], strict=True) if b and n]
    info = await redis.info("memory")
    keys = await redis.dbsize()
    total_bytes = sum(b for b, _ in sizes)
    total_entries = sum(n for _, n in sizes)
    return {
        "timelines": keys,
        "used_memory_bytes": info["used_memory"],
        "bytes_per_timeline_mean": round(total_bytes / max(len(sizes), 1)),
        "entries_per_timeline_mean": round(total_entries / max(len(sizes), 1), 1),
        "bytes_per_entry": round(total_bytes / max(total_entries, 1), 1),
    }


def _verdicts(results: dict[str, Any], viewers: list[tuple[int, str]]) -> dict[str, Any]:
    modes = results["modes"]
    ratios: dict[str, Any] = {}
    for followed, kind in viewers:
        name = f"F{followed}-{kind}"
        pull = modes["pull"]["reads"][name]["best_rate_within_p99_50ms"]
        ratios[name] = {
            mode: (
                round(modes[mode]["reads"][name]["best_rate_within_p99_50ms"] / pull, 2)
                if pull
                else None
            )
            for mode in ("push", "hybrid")
        }
    return {"best_rate_vs_pull": ratios}
