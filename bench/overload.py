"""overload: past capacity, with admission control and without it (the old behaviour), same run.

1. Feed reads only, F = 200, straight to the service processes (the balancer's CPU would
   share these two cores; the seed's ALB is a tier of its own). Rising rates find the
   capacity: the highest offered rate at which 99% are answered 200 with p99 under 50 ms
   (a ramp ends at its second failing step in a row: one may be a stall of the shared cores).
   Then 1.5x and 3x of it, with admission control and with ADMISSION_CONTROL=false.
2. The upload storm: V0 uploads (2 MB, Expect: 100-continue, as curl sends them) under 100
   feed reads/s. Rising upload rates find the sustainable rate (stored at 95% of offered with
   p99 under the seed's 800 ms), then 2x and 3x of it, with admission control (uploads
   admitted by predicted wait, image workers at nice 10) and the old behaviour (no admission,
   a fixed 2 s wait for a worker). At 2x, the other CPU bulkhead: image workers under
   SCHED_IDLE (IMAGE_WORKER_SCHEDULING=idle).
3. hey, a native client, against one service process as `make run` starts it (per-user limit
   lifted): the calm rate from 8 connections, then 1.5x of it from 128 connections, each paced
   with -q. hey does not honour Retry-After: every refused request is simply counted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import re
import resource
import shutil
import subprocess
from collections import deque
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

from bench.load import Answer, OperationStats, StepResult, open_loop
from bench.scenarios import Context, Traffic, _cores, _f200, _session, deploy

FEED_P99_MS = 50.0
UPLOAD_P99_MS = 800.0
CAPACITY_OK_SHARE = 0.99  # answered 200 at the capacity step
RAMP_MISSES = 2  # steps over the bound, one after the other, that end a ramp
SUSTAINED_SHARE = 0.95  # uploads stored of those offered, at a sustainable rate
FEED_MULTIPLES = (1.5, 3.0)
UPLOAD_MULTIPLES = (2.0, 3.0)
STORM_FEED_RATE = 100.0
HEY_CALM_CONNECTIONS = 8
HEY_BUSY_CONNECTIONS = 128
# Whoever runs the overload steps lifts the per-user limit: two viewers make every read.
UNLIMITED = {"RATE_LIMIT_PER_SECOND": "1000000", "RATE_LIMIT_BURST": "1000000"}
ADMITTED = {"ADMISSION_CONTROL": "true"}
OLD_BEHAVIOUR = {
    "ADMISSION_CONTROL": "false",
    "IMAGE_WORKER_SCHEDULING": "nice",
    "THUMBNAIL_QUEUE_WAIT": "2",
}


@dataclass(frozen=True)
class Shape:
    """What one step of the overload scenario offered, and the report's figures for it."""

    offered: float
    seconds: float
    stats: OperationStats

    def figures(self) -> dict[str, Any]:
        s = self.stats
        other = {str(k): v for k, v in s.statuses.items() if k not in (200, 201, 503)}
        return {
            "offered_per_s": round(self.offered, 1),
            "ok_per_s": round(s.ok_latency.count / self.seconds, 1),
            "ok_p50_ms": _ms(s.ok_latency.percentile(50)) if s.ok_latency.count else None,
            "ok_p99_ms": _ms(s.ok_latency.percentile(99)) if s.ok_latency.count else None,
            "refused_per_s": round(s.rejected_latency.count / self.seconds, 1),
            "refused_p99_ms": _ms(s.rejected_latency.percentile(99))
            if s.rejected_latency.count
            else None,
            "all_p99_ms": _ms(s.latency.percentile(99)) if s.latency.count else None,
            "statuses": {str(k): v for k, v in sorted(s.statuses.items())},
            "other_errors": sum(other.values()),
            "connection_errors": s.statuses.get(0, 0),
        }


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


async def overload(
    ctx: Context, feed_rates: tuple[float, ...], upload_rates: tuple[float, ...]
) -> dict[str, Any]:
    return {
        "feed": await _feed(ctx, feed_rates),
        "uploads": await _uploads(ctx, upload_rates),
        "native": _native(ctx),
    }


# --- 1. feed reads past capacity ------------------------------------------------------------


async def _feed(ctx: Context, rates: tuple[float, ...]) -> dict[str, Any]:
    followed = _f200(ctx)
    viewers = itertools.cycle([ctx.graph.viewer(followed, kind) for kind in ("active", "quiet")])
    with ExitStack() as exits:
        deployed = deploy(ctx, exits, **UNLIMITED, **ADMITTED)
        urls = [s.url for s in deployed.services]
        traffic = Traffic(ctx, urls, deque())

        async def read(session: aiohttp.ClientSession) -> Answer:
            return await traffic.feed(session, next(viewers))

        ramp: list[dict[str, Any]] = []
        capacity: dict[str, Any] | None = None
        async with _session(2048) as session:
            # New processes open their connections and fill their caches: not a step's work.
            await _reads(session, read, rates[0], ctx.step_seconds / 2)
            misses = 0
            for rate in rates:
                step = _figures(await _reads(session, read, rate, ctx.step_seconds, urls), "feed")
                ramp.append(step)
                if _within_capacity(step):
                    capacity, misses = step, 0
                else:
                    misses += 1  # one step over may be a passing stall of these shared cores
                    if misses == RAMP_MISSES:
                        break
            # No step within the bound (a tiny run on a loaded machine): multiples of the
            # lowest rate all the same, so that every step runs; the targets are not judged.
            base = capacity or ramp[0]
            admitted = await _past_capacity(session, read, base, ctx.step_seconds, urls)
    with ExitStack() as exits:
        deployed = deploy(ctx, exits, **UNLIMITED, **OLD_BEHAVIOUR)
        urls = [s.url for s in deployed.services]
        traffic = Traffic(ctx, urls, deque())
        async with _session(2048) as session:
            old = await _past_capacity(session, read, base, ctx.step_seconds, urls)
    return {
        "followed": followed,
        "ramp": ramp,
        "capacity": capacity,
        "admission": admitted,
        "old": old,
    }


async def _past_capacity(
    session: aiohttp.ClientSession,
    read: Any,
    capacity: dict[str, Any],
    seconds: float,
    services: list[str],
) -> list[dict[str, Any]]:
    """The feed steps at each multiple of the capacity step's offered rate."""
    return [
        _figures(
            await _reads(session, read, capacity["offered_per_s"] * m, seconds, services), "feed"
        )
        | {"multiple": m}
        for m in FEED_MULTIPLES
    ]


async def _reads(
    session: aiohttp.ClientSession,
    read: Any,
    rate: float,
    seconds: float,
    services: list[str] | None = None,
) -> tuple[StepResult, dict[str, Any]]:
    async with _watching(session, services or []) as seen:
        step = await open_loop(session, [("feed", 1, read)], rate, seconds, max_in_flight=4096)
    return step, seen


def _figures(result: tuple[StepResult, dict[str, Any]], name: str) -> dict[str, Any]:
    step, seen = result
    return (
        Shape(step.offered_rate, step.seconds, step.operations[name]).figures()
        | {
            "dropped": step.dropped,
            "load_generator_lag_p50_ms": _ms(step.send_lag.percentile(50)),
            "load_generator_lag_p99_ms": _ms(step.send_lag.percentile(99)),
        }
        | seen
    )


WATCH_EVERY = 0.25
_GAUGES = {
    "loop_lag": re.compile(r"^monogram_event_loop_lag_seconds ([\d.e+-]+)$", re.MULTILINE),
    "pressure": re.compile(r"^monogram_admission_pressure ([\d.e+-]+)$", re.MULTILINE),
    "reads_limit": re.compile(
        r'^monogram_admission_limit\{class="reads"\} ([\d.e+-]+)$', re.MULTILINE
    ),
}


@asynccontextmanager
async def _watching(
    session: aiohttp.ClientSession, services: list[str]
) -> AsyncIterator[dict[str, Any]]:
    """While the block runs, the service processes' loop lag, shedding pressure and reads
    limit, sampled from /metrics (never refused): their medians and extremes fill `seen`."""
    seen: dict[str, Any] = {}
    samples: dict[str, list[float]] = {name: [] for name in _GAUGES}

    async def sample() -> None:
        while True:
            for url in services:
                try:
                    async with session.get(f"{url}/metrics") as answer:
                        text = await answer.text()
                except (aiohttp.ClientError, TimeoutError):
                    continue
                for name, pattern in _GAUGES.items():
                    if found := pattern.search(text):
                        samples[name].append(float(found.group(1)))
            await asyncio.sleep(WATCH_EVERY)

    task = asyncio.create_task(sample())
    try:
        yield seen
    finally:
        task.cancel()
        for name, values in samples.items():
            if values:
                values.sort()
                scale = 1000 if name == "loop_lag" else 1
                unit = "_ms" if name == "loop_lag" else ""
                seen[f"service_{name}_median{unit}"] = round(values[len(values) // 2] * scale, 2)
                seen[f"service_{name}_max{unit}"] = round(values[-1] * scale, 2)
                seen[f"service_{name}_min{unit}"] = round(values[0] * scale, 2)


def _within_capacity(step: dict[str, Any]) -> bool:
    answered = sum(step["statuses"].values())
    ok = step["statuses"].get("200", 0)
    return (
        answered > 0
        and ok >= CAPACITY_OK_SHARE * answered
        and (step["ok_p99_ms"] or 0) < FEED_P99_MS
        and not step["dropped"]
    )


# --- 2. the upload storm --------------------------------------------------------------------


async def _uploads(ctx: Context, rates: tuple[float, ...]) -> dict[str, Any]:
    with ExitStack() as exits:
        deployed = deploy(ctx, exits, **UNLIMITED, **ADMITTED)
        traffic = Traffic(ctx, [s.url for s in deployed.services], deque(), expect_continue=True)
        async with _session() as session:
            rest = await _at_rest(session, traffic, ctx.step_seconds)
            ramp: list[dict[str, Any]] = []
            sustainable: dict[str, Any] | None = None
            misses = 0
            for rate in rates:
                step = await _storm_step(session, traffic, rate, ctx.step_seconds)
                ramp.append(step)
                if _sustained(step):
                    sustainable, misses = step, 0
                else:
                    misses += 1
                    if misses == RAMP_MISSES:
                        break
            base = (sustainable or ramp[0])["upload"]["offered_per_s"]  # as for the feed
            admitted = [
                await _storm_step(session, traffic, base * m, ctx.step_seconds) | {"multiple": m}
                for m in UPLOAD_MULTIPLES
            ]
    with ExitStack() as exits:
        deployed = deploy(ctx, exits, **UNLIMITED, **ADMITTED, IMAGE_WORKER_SCHEDULING="idle")
        traffic = Traffic(ctx, [s.url for s in deployed.services], deque(), expect_continue=True)
        async with _session() as session:
            idle_rest = await _at_rest(session, traffic, ctx.step_seconds)
            idle = await _storm_step(session, traffic, base * UPLOAD_MULTIPLES[0], ctx.step_seconds)
    with ExitStack() as exits:
        deployed = deploy(ctx, exits, **UNLIMITED, **OLD_BEHAVIOUR)
        traffic = Traffic(ctx, [s.url for s in deployed.services], deque(), expect_continue=True)
        async with _session() as session:
            old_rest = await _at_rest(session, traffic, ctx.step_seconds)
            old = [
                await _storm_step(session, traffic, base * m, ctx.step_seconds) | {"multiple": m}
                for m in UPLOAD_MULTIPLES
            ]
    return {
        "feed_rate": STORM_FEED_RATE,
        "rest": rest,
        "ramp": ramp,
        "sustainable": sustainable,
        "admission": admitted,
        "bulkhead_idle": {"rest": idle_rest, "step": idle | {"multiple": UPLOAD_MULTIPLES[0]}},
        "old_rest": old_rest,
        "old": old,
    }


async def _at_rest(
    session: aiohttp.ClientSession, traffic: Traffic, seconds: float
) -> dict[str, Any]:
    """The feed alone, after as long again to warm the new processes up (their first reads
    open connections and fill caches: a cold p99 would make a lax bound)."""
    await _storm_step(session, traffic, 0.0, seconds)
    return await _storm_step(session, traffic, 0.0, seconds)


async def _storm_step(
    session: aiohttp.ClientSession, traffic: Traffic, upload_rate: float, seconds: float
) -> dict[str, Any]:
    mix: list[tuple[str, float, Any]] = [("feed", STORM_FEED_RATE, traffic.feed)]
    if upload_rate:
        mix.append(("upload", upload_rate, traffic.upload))
    step = await open_loop(session, mix, STORM_FEED_RATE + upload_rate, seconds)
    result = {"feed": _figures((step, {}), "feed")}
    if upload_rate:
        result["upload"] = _figures((step, {}), "upload") | {"offered_per_s": upload_rate}
    return result


def _sustained(step: dict[str, Any]) -> bool:
    """Whether 95% of the uploads sent were stored, within p99 800 ms. (Stored per second
    against the offered rate would judge the Poisson arrivals' luck as well.)"""
    upload = step["upload"]
    sent = sum(upload["statuses"].values())
    return (
        upload["statuses"].get("201", 0) >= SUSTAINED_SHARE * sent
        and (upload["ok_p99_ms"] or 0) < UPLOAD_P99_MS
    )


# --- 3. hey ---------------------------------------------------------------------------------


def _native(ctx: Context) -> dict[str, Any]:
    hey = shutil.which("hey")
    if hey is None:
        return {"available": False, "why": "hey is not installed (apt-get install hey)"}
    seconds = ctx.step_seconds
    viewer = ctx.graph.viewer(_f200(ctx), "active")
    header = f"Authorization: {ctx.auth(viewer)['Authorization']}"
    with ExitStack() as exits:
        deployed = deploy(dataclasses.replace(ctx, processes=1), exits, **UNLIMITED, **ADMITTED)
        url = f"{deployed.services[0].url}/v1/feed"
        before = deployed.meter.read()
        calm = _hey(hey, url, header, seconds, HEY_CALM_CONNECTIONS, None)
        calm["cpu_cores"] = _cores(deployed.meter.since(before), calm["seconds"])
        if not calm["ok_per_s"]:
            return {"available": True, "calm": calm}
        per_connection = calm["ok_per_s"] * 1.5 / HEY_BUSY_CONNECTIONS
        before = deployed.meter.read()
        busy = _hey(hey, url, header, seconds, HEY_BUSY_CONNECTIONS, per_connection)
        busy["cpu_cores"] = _cores(deployed.meter.since(before), busy["seconds"])
    return {"available": True, "calm": calm, "busy": busy}


def _hey(
    hey: str, url: str, header: str, seconds: float, connections: int, per_connection: float | None
) -> dict[str, Any]:
    command = [hey, "-z", f"{seconds:g}s", "-c", str(connections), "-H", header]
    if per_connection is not None:
        command += ["-q", f"{per_connection:.2f}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = subprocess.run(
        [*command, url], capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    hey_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    out = run.stdout
    statuses = {code: int(n) for code, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    errors = re.search(r"Error distribution:(.*)", out, re.DOTALL)
    error_count = sum(int(n) for n in re.findall(r"\[(\d+)\]", errors.group(1))) if errors else 0
    p99 = re.search(r"99%+ in ([\d.]+) secs", out)
    total = re.search(r"Total:\s+([\d.]+) secs", out)
    took = float(total.group(1)) if total else seconds
    return {
        "connections": connections,
        "per_connection_qps": round(per_connection, 2) if per_connection else None,
        "offered_per_s": round(per_connection * connections, 1) if per_connection else None,
        "seconds": took,
        "statuses": statuses,
        "ok_per_s": round(statuses.get("200", 0) / took, 1),
        "refused_per_s": round(statuses.get("503", 0) / took, 1),
        "p99_ms": round(float(p99.group(1)) * 1000, 1) if p99 else None,
        "connection_errors": error_count,
        "hey_cpu_cores": round(hey_cpu / took, 2),
    }
