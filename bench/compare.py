"""compare: the seed's closing table, measured. V0, V1 and V2, the same workload, one run.

The seed ends with a table of its three architectures (upload, feed and image latency,
throughput, cost), all estimates. Here each architecture runs as a whole deployment on this
machine, with the same data, and the same steps measure each:

- V0: proxied uploads thumbnailed in the request, the pull feed, images from the S3 origin;
- V1: presigned uploads processed by a media worker, the push feed, images through the edge;
- V2: V1 with the hybrid feed (the celebrity is a whale: its posts are pulled at read time).

On a fresh deployment and an emptied Redis, for each:
- uploads alone at a light rate: the time to the answer (acknowledged) and to a ready
  thumbnail; the API tier's CPU and bytes per upload, every part's CPU, the bytes stored;
- feed reads at 200/s by one dedicated viewer per F (200 and the largest; active and quiet
  authors);
- feed reads by the F = 200 viewers ramped until p99 passes the seed's 500 ms;
- uploads ramped under 100 feed reads/s until their p99 passes the seed's 800 ms (or 5% fail),
  and, in V1 and V2, whether the media worker kept up.

The far user's image latency is the images scenario's (run here unless it ran already in this
run): the origin for V0, the warm edge for V1 and V2, which deliver images the same way.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import valkey.asyncio as valkey

from app.storage import s3_client
from bench import images, stack
from bench.claims import SEED_BANDWIDTH_BYTES, SEED_CORES
from bench.feed_modes import viewer_steps, warm_up, whale_followers
from bench.histogram import Histogram
from bench.load import Answer, open_loop
from bench.scenarios import (
    DRAIN_PATIENCE_SECONDS,
    FEED_P99_SLO_MS,
    UPLOAD_P99_SLO_MS,
    V1_IMAGE_WORKERS,
    Context,
    DirectUploads,
    Traffic,
    _f200,
    _session,
    cpu_ms_each,
    deploy,
    feed_at_f200,
    idle_cores,
    until_processed,
)

# Whether a ramp step met the SLO it is judged by.
Within = Callable[[dict[str, Any]], bool]


@dataclass(frozen=True)
class Architecture:
    name: str
    what: str
    feed_mode: str
    presigned: bool  # uploads straight to S3, processed by a media worker; images via the edge


ARCHITECTURES = (
    Architecture(
        "V0", "proxied upload, thumbnail in the request, origin images, pull feed", "pull", False
    ),
    Architecture("V1", "presigned upload, media worker, edge cache, push feed", "push", True),
    Architecture("V2", "V1 with the hybrid feed", "hybrid", True),
)


@dataclass(frozen=True)
class SeedRow:
    """The seed's closing table, and what its text says per upload."""

    upload: str
    feed: str
    image: str
    api_per_upload: str
    throughput: str
    cost: str


SEED_TABLE = {
    "V0": SeedRow(
        "500-800 ms",
        "200-500 ms",
        "50-200 ms",
        "~400 ms of thumbnail CPU; 2 MB",
        "~1K RPS in all; ~250 uploads/s by CPU, ~200 by bandwidth",
        "$1,130/month; $0.011/upload",
    ),
    "V1": SeedRow(
        "<200 ms",
        "<500 ms",
        "<100 ms (CDN)",
        "~2 ms to sign; ~500 bytes",
        "100K RPS peak; 5K uploads/s",
        "$3,000/month; $0.0006/upload",
    ),
    "V2": SeedRow(
        "<150 ms", "<200 ms", "<50 ms (CDN)", "as V1", "1M RPS peak", "$15,000/month; not given"
    ),
}

# The seed's prices (its V0 deployment at 100 uploads/s), per unit of what an upload uses.
SECONDS_PER_MONTH = 30 * 86_400
FARGATE_MONTH, FARGATE_VCPUS = 250.0, 12  # ECS Fargate, 3 pods x 4 vCPU
RDS_MONTH, RDS_VCPUS = 350.0, 4  # RDS db.r7g.xlarge (4 vCPU, AWS's size for it)
S3_MONTH, S3_BYTES = 500.0, 500e12  # S3 Standard, 500 TB
PRICE_COMPUTE_VCPU_S = FARGATE_MONTH / (FARGATE_VCPUS * SECONDS_PER_MONTH)
PRICE_DATABASE_VCPU_S = RDS_MONTH / (RDS_VCPUS * SECONDS_PER_MONTH)
PRICE_BYTE_MONTH = S3_MONTH / S3_BYTES
COST_FORMULA = (
    "cost per upload = (API tier + media worker CPU seconds) x $250 / (12 vCPU x 2,592,000 s) "
    "+ PostgreSQL CPU seconds x $350 / (4 vCPU x 2,592,000 s) "
    "+ bytes stored x $500 / 500 TB (one month)"
)

# Uploads/s of the light step: V1's media worker (a thumbnail and two renditions per upload)
# keeps up with it on two shared cores; at 10/s its backlog grows and "ready" measures the queue.
LIGHT_UPLOAD_RATE = 5.0
FIXED_FEED_RATE = 200.0  # reads/s for the latency at each F
BACKGROUND_FEED_RATE = 100.0  # reads/s beside the upload ramp, as in upload-storm
MIN_ACKNOWLEDGED = 0.95  # of the offered uploads, for a step within the SLO
MAX_FEED_ERRORS = 0.01  # of the reads, for a step within the SLO
KEPT_UP = 0.9  # the media worker made ready this share of the arrival rate, drain included


async def compare(
    ctx: Context,
    upload_rates: tuple[float, ...],
    image_pages: int,
    image_rounds: int,
    earlier_images: dict[str, Any] | None,
) -> dict[str, Any]:
    measured = {arch.name: await _architecture(ctx, arch, upload_rates) for arch in ARCHITECTURES}
    delivered = earlier_images or await images.images(ctx, image_pages, image_rounds)
    for arch in ARCHITECTURES:
        measured[arch.name]["far_images"] = _far_images(delivered, arch)
        measured[arch.name]["cost_per_upload"] = _cost_per_upload(measured[arch.name]["light"])
        measured[arch.name]["seed_deployment"] = _seed_deployment(measured[arch.name])
    return {
        "slo": {"upload_p99_ms": UPLOAD_P99_SLO_MS, "feed_p99_ms": FEED_P99_SLO_MS},
        "images_from": "this run's images scenario" if earlier_images else "run by compare",
        "cost_formula": COST_FORMULA,
        "architectures": measured,
    }


async def _architecture(
    ctx: Context, arch: Architecture, upload_rates: tuple[float, ...]
) -> dict[str, Any]:
    env = {
        "FEED_MODE": arch.feed_mode,
        "WHALE_FOLLOWERS": str(whale_followers(ctx)),
        "SQS_QUEUE_NAME": f"bench-compare-{arch.name.lower()}",
    }
    redis = valkey.Valkey.from_url(ctx.settings.redis_url or "")
    await redis.flushdb()  # no timeline an earlier architecture built
    await redis.aclose()
    with ExitStack() as exits:
        deployed = deploy(ctx, exits, **env)
        meter = deployed.meter
        if arch.presigned:  # its uploads' processing, and push's fan-out
            worker = exits.enter_context(
                stack.media_worker(
                    ctx.settings,
                    **env,
                    THUMBNAIL_WORKERS=str(V1_IMAGE_WORKERS),
                    LOG_LEVEL="WARNING",
                    SERVICE_PROCESSES=str(ctx.processes + 1),
                )
            )
            meter = stack.CpuMeter(
                deployed.services, {**meter.other_pids, "media_workers": (worker.pid,)}
            )
        await _first_uploads(ctx, deployed.url, arch.presigned)
        idle = await idle_cores(meter, ctx.step_seconds)
        uploads = Uploads(ctx, deployed.url, arch.presigned)
        light = await _light_uploads(ctx, uploads, meter, idle)
        traffic = Traffic(ctx, [deployed.url], deque())
        feeds = await _feed_latency(ctx, traffic)
        feed_ramp = await feed_at_f200(
            ctx, traffic, meter, stop_past_ms=FEED_P99_SLO_MS, retry_a_miss=True
        )
        upload_ramp = await _upload_ramp(ctx, deployed.url, arch.presigned, meter, upload_rates)
    return {
        "what": arch.what,
        "feed_mode": arch.feed_mode,
        "light": light,
        "feed_at_200_per_s": feeds,
        "feed_ramp": feed_ramp,
        "best_feed_rate": _best(feed_ramp, _feed_within_slo),
        "feed_ran_out": _ran_out(feed_ramp, _feed_within_slo),
        "upload_ramp": upload_ramp,
        "best_upload_rate": _best(upload_ramp, _acknowledged_within_slo),
        "best_ready_rate": _best(upload_ramp, _ready_within_slo),
        "uploads_ran_out": _ran_out(upload_ramp, _ready_within_slo),
    }


class Uploads:
    """An architecture's uploads as its clients make them, with when each became ready:
    V0's answer carries a ready thumbnail; V1's media is ready when the worker is done."""

    def __init__(self, ctx: Context, url: str, presigned: bool) -> None:
        self.presigned = presigned
        self.direct = DirectUploads(ctx, url)
        self.proxied = Traffic(ctx, [url], deque())
        self.ready = Histogram()  # from the upload's start to its thumbnail's

    async def upload(self, session: aiohttp.ClientSession) -> Answer:
        if self.presigned:
            return await self.direct.upload(session)
        started = time.perf_counter()
        answer = await self.proxied.upload(session)
        if answer.status == 201:
            self.ready.record(time.perf_counter() - started)
        return answer

    async def settle(self, ctx: Context) -> float | None:
        """Wait for the media worker (V1); the seconds it took, None past the patience."""
        if not self.presigned:
            return 0.0
        drained = await until_processed(ctx.settings, self.direct.media_ids)
        for seconds in await _ready_after_begin(ctx, self.direct.begun):
            self.ready.record(seconds)
        return drained

    def media_ids(self) -> list[int]:
        return self.direct.media_ids


async def _first_uploads(ctx: Context, url: str, presigned: bool) -> None:
    """Uploads before anything is measured, one for each image worker: a media worker's start
    and every image worker's first import of libvips are no upload's cost."""
    uploads = Uploads(ctx, url, presigned)
    async with _session() as session:
        await asyncio.gather(
            *(uploads.upload(session) for _ in range(ctx.processes + V1_IMAGE_WORKERS))
        )
    await uploads.settle(ctx)


async def _light_uploads(
    ctx: Context, uploads: Uploads, meter: stack.CpuMeter, idle: dict[str, float]
) -> dict[str, Any]:
    """Uploads alone at a light rate: latency to acknowledged and to ready,
    every part's CPU per upload (the media worker's included, once it is done), the API's
    bytes and the bytes stored."""
    rate = LIGHT_UPLOAD_RATE
    before = meter.read()
    started = time.perf_counter()
    async with _session() as session:
        step = await open_loop(session, [("upload", 1, uploads.upload)], rate, ctx.step_seconds)
    drained = await uploads.settle(ctx)
    spent = meter.since(before)
    elapsed = time.perf_counter() - started
    stats = step.operations["upload"]
    done = stats.ok_latency.count
    cpu = cpu_ms_each(spent, idle, elapsed, done)
    stored = await _stored_bytes(ctx, uploads) if done else 0
    return {
        "offered_rate": rate,
        "statuses": {str(k): v for k, v in sorted(stats.statuses.items())},
        "acknowledged_ms": stats.ok_latency.summary_ms(),
        "ready_ms": uploads.ready.summary_ms(),
        "drain_seconds": drained,
        "cpu_ms_per_upload": cpu,
        "api_tier_cpu_ms": round(cpu["service"] + cpu["image_workers"], 2),
        "api_bytes_per_upload": round((stats.sent + stats.received) / max(done, 1)),
        "bytes_stored_per_upload": round(stored / max(done, 1)),
    }


async def _ready_after_begin(ctx: Context, begun: dict[int, float]) -> list[float]:
    """Seconds from each upload's start (the client's clock) to its ready_at (the database's;
    both are this machine's wall clock)."""
    assert ctx.settings.database_url
    conn = await asyncpg.connect(ctx.settings.database_url)
    try:
        rows = await conn.fetch(
            "SELECT media_id, extract(epoch FROM ready_at)::float8 AS ready FROM media "
            "WHERE media_id = ANY($1) AND status = 'ready'",
            list(begun),
        )
    finally:
        await conn.close()
    return [max(0.0, row["ready"] - begun[row["media_id"]]) for row in rows]


async def _stored_bytes(ctx: Context, uploads: Uploads) -> int:
    """Bytes in S3 under the step's media: the original, the thumbnail and any renditions
    share their key's stem (media/7/abc.jpg, media/7/abc_thumb.jpg, media/7/abc_600.jpg)."""
    assert ctx.settings.database_url
    conn = await asyncpg.connect(ctx.settings.database_url)
    try:
        if uploads.presigned:
            keys = await conn.fetch(
                "SELECT original_key FROM media WHERE media_id = ANY($1) AND status = 'ready'",
                uploads.media_ids(),
            )
        else:  # nothing else uploads during the step: its media are the latest rows
            keys = await conn.fetch(
                "SELECT original_key FROM media WHERE original_key LIKE 'media/%' "
                "ORDER BY media_id DESC LIMIT $1",
                uploads.ready.count,
            )
    finally:
        await conn.close()
    total = 0
    async with s3_client(ctx.settings) as client:
        for row in keys:
            stem = row["original_key"].rsplit(".", 1)[0]
            listing = await client.list_objects_v2(Bucket=ctx.settings.s3_bucket, Prefix=stem)
            total += sum(item["Size"] for item in listing.get("Contents", []))
    return total


def _viewers(ctx: Context) -> list[tuple[int, str]]:
    small = 200 if 200 in ctx.size.follow_points else ctx.size.follow_points[1]
    large = ctx.size.follow_points[-1]
    return [(f, kind) for f in (small, large) for kind in ("active", "quiet")]


async def _feed_latency(ctx: Context, traffic: Traffic) -> dict[str, Any]:
    """Each dedicated viewer's reads at FIXED_FEED_RATE, after the first reads built their
    timeline (push, hybrid)."""
    found = {}
    async with _session() as session:
        for followed, kind in _viewers(ctx):
            viewer = ctx.graph.viewer(followed, kind)
            await warm_up(ctx, traffic, session, viewer)
            steps = await viewer_steps(ctx, traffic, viewer, (FIXED_FEED_RATE,))
            found[f"F{followed}-{kind}"] = steps["steps"][0]
    return found


def _feed_within_slo(step: dict[str, Any]) -> bool:
    answered: int = step["ok"] + step["errors"]
    p99: float = step["p99_ms"]
    return p99 <= FEED_P99_SLO_MS and step["errors"] <= MAX_FEED_ERRORS * answered


def _acknowledged_within_slo(step: dict[str, Any]) -> bool:
    return bool(step["acknowledged_within_slo"])


def _ready_within_slo(step: dict[str, Any]) -> bool:
    return bool(step["ready_within_slo"])


async def _upload_ramp(
    ctx: Context,
    url: str,
    presigned: bool,
    meter: stack.CpuMeter,
    rates: tuple[float, ...],
) -> list[dict[str, Any]]:
    """Uploads at rising rates under BACKGROUND_FEED_RATE reads/s, until a step misses the
    seed's upload SLO. After each step, V1's backlog drains before the next begins."""
    traffic = Traffic(ctx, [url], deque())
    # The F = 200 viewers, whose timelines the steps before built: a random reader's first
    # read in push or hybrid mode builds one, and 100 of those a second would measure a cold
    # Redis rather than the uploads.
    viewers = itertools.cycle([ctx.graph.viewer(_f200(ctx), kind) for kind in ("active", "quiet")])

    async def read(session: aiohttp.ClientSession) -> Answer:
        return await traffic.feed(session, next(viewers))

    steps = []
    async with _session() as session:
        for rate in rates:
            uploads = Uploads(ctx, url, presigned)
            before = meter.read()
            step = await open_loop(
                session,
                [("feed", BACKGROUND_FEED_RATE, read), ("upload", rate, uploads.upload)],
                BACKGROUND_FEED_RATE + rate,
                ctx.step_seconds,
            )
            spent = meter.since(before)
            drained = await uploads.settle(ctx)
            stats, feed = step.operations["upload"], step.operations["feed"]
            acknowledged = (
                stats.ok_latency.count >= MIN_ACKNOWLEDGED * (stats.latency.count + step.dropped)
                and stats.ok_latency.percentile(99) * 1000 <= UPLOAD_P99_SLO_MS
            )
            waited = DRAIN_PATIENCE_SECONDS if drained is None else drained
            ready_rate = uploads.ready.count / (step.seconds + waited)
            steps.append(
                {
                    "offered_rate": rate,
                    "statuses": {str(k): v for k, v in sorted(stats.statuses.items())},
                    "acknowledged_ms": stats.ok_latency.summary_ms(),
                    "ready_ms": uploads.ready.summary_ms(),
                    "drain_seconds": None if drained is None else round(drained, 1),
                    "ready_per_s": round(ready_rate, 1),
                    "feed_p99_ms": round(feed.ok_latency.percentile(99) * 1000, 1),
                    "acknowledged_within_slo": acknowledged,
                    "ready_within_slo": acknowledged
                    and ready_rate >= KEPT_UP * stats.latency.count / ctx.step_seconds,
                    "cpu_cores": {p: round(c / step.seconds, 2) for p, c in spent.items()},
                }
            )
            if not acknowledged or drained is None:
                break
    return steps


def _best(steps: list[dict[str, Any]], within: Within) -> float | None:
    """The highest offered rate among the steps within the SLO; None if none was."""
    return max((s["offered_rate"] for s in steps if within(s)), default=None)


def _ran_out(steps: list[dict[str, Any]], within: Within) -> dict[str, Any] | None:
    """At the first step past the SLO (or the last step, if none was), the parts that used
    the most CPU: on two shared cores, the one that ran out first."""
    if not steps:
        return None
    step = next((s for s in steps if not within(s)), steps[-1])
    cores = sorted(step["cpu_cores"].items(), key=lambda item: -item[1])
    return {
        "offered_rate": step["offered_rate"],
        "past_the_slo": not within(step),
        "busiest": cores[:3],
        "all_parts_cores": round(sum(c for _, c in cores), 2),
    }


def _far_images(delivered: dict[str, Any], arch: Architecture) -> dict[str, Any] | None:
    way = "edge_warm" if arch.presigned else "origin"
    found = delivered["ways"].get(way)
    if found is None:
        return None
    return {
        "way": way,
        "page_images_ms": found["images_per_page"],
        "one_image_ms": found["per_image"],
        "origin_gets_per_page": found["origin_gets_per_page"],
    }


def _cost_per_upload(light: dict[str, Any]) -> dict[str, Any]:
    cpu = light["cpu_ms_per_upload"]
    compute_s = (cpu["service"] + cpu["image_workers"] + cpu.get("media_workers", 0.0)) / 1000
    database_s = cpu.get("postgresql", 0.0) / 1000
    stored = light["bytes_stored_per_upload"]
    parts = {
        "compute": compute_s * PRICE_COMPUTE_VCPU_S,
        "database": database_s * PRICE_DATABASE_VCPU_S,
        "storage_first_month": stored * PRICE_BYTE_MONTH,
    }
    return {
        "dollars": sum(parts.values()),
        "parts": parts,
        "compute_cpu_s": round(compute_s, 4),
        "database_cpu_s": round(database_s, 4),
        "bytes_stored": stored,
    }


def _seed_deployment(measured: dict[str, Any]) -> dict[str, Any]:
    """What would run out first on the seed's deployment (12 vCPU of API tier, a 4 vCPU
    database, 10 Gbit/s), from the per-request costs measured here."""
    light = measured["light"]
    cpu = light["cpu_ms_per_upload"]
    uploads = {"API tier CPU": SEED_CORES * 1000 / max(light["api_tier_cpu_ms"], 1e-3)}
    if light["api_bytes_per_upload"] > 100_000:  # in from the client, out again to S3
        uploads["API bandwidth"] = SEED_BANDWIDTH_BYTES / (2 * light["api_bytes_per_upload"])
    uploads["database CPU"] = RDS_VCPUS * 1000 / max(cpu.get("postgresql", 0.0), 1e-3)
    reads: dict[str, float] = {}
    best = next(
        (s for s in measured["feed_ramp"] if s["offered_rate"] == measured["best_feed_rate"]),
        None,
    )
    if best and best["throughput_per_s"]:
        per_read = {p: c / best["throughput_per_s"] for p, c in best["cpu_cores"].items()}
        reads["API tier CPU"] = SEED_CORES / max(per_read["service"], 1e-9)
        reads["database CPU"] = RDS_VCPUS / max(per_read.get("postgresql", 0.0), 1e-9)
        if per_read.get("redis"):
            reads["Redis (one core)"] = 1 / per_read["redis"]
    media_worker_ms = cpu.get("media_workers", 0.0)
    return {
        "uploads_per_s": {k: round(v) for k, v in uploads.items()},
        "upload_limit": min(uploads, key=uploads.__getitem__),
        "reads_per_s": {k: round(v) for k, v in reads.items()},
        "read_limit": min(reads, key=reads.__getitem__) if reads else None,
        "media_worker_vcpus_per_100_uploads_s": round(media_worker_ms * 100 / 1000, 1),
    }


# --- the report's section -------------------------------------------------------------------


def report_lines(result: dict[str, Any]) -> list[str]:
    slo = result["slo"]
    archs = result["architectures"]
    lines = [
        "## compare: V0, V1 and V2 side by side, the seed's table beside",
        "",
        f"Each architecture deployed whole in turn, same data, same steps. Latencies are p50 / "
        f"p99. Best rates are within the seed's SLOs (upload p99 {slo['upload_p99_ms']} ms with "
        f"{MIN_ACKNOWLEDGED:.0%} acknowledged; feed p99 {slo['feed_p99_ms']} ms with at most "
        f'{MAX_FEED_ERRORS:.0%} errors); "ready" also needs the media worker to keep up '
        f"({KEPT_UP:.0%} of the arrival rate made ready, the backlog's drain included). Far "
        f"images: {result['images_from']}.",
        "",
        "| | upload: acknowledged | upload: ready | feed at 200/s, F = 200 (active; quiet) "
        "| feed at 200/s, largest F (active; quiet) | far user's 5 images | API CPU; bytes per "
        "upload | best uploads/s (acknowledged; ready); feed reads/s | cost |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in archs.items():
        light, seed = m["light"], SEED_TABLE[name]
        small, large = _feed_cells(m["feed_at_200_per_s"])
        images_cell = "-"
        if m["far_images"]:
            page = m["far_images"]["page_images_ms"]
            images_cell = f"{_ms(page['p50_ms'])} / {_ms(page['p99_ms'])}"
        cost = m["cost_per_upload"]
        lines.append(
            f"| {name} here ({m['what']}) | {_latency(light['acknowledged_ms'])} at "
            f"{light['offered_rate']:g}/s | {_latency(light['ready_ms'])} | {small} | {large} | "
            f"{images_cell} | {light['api_tier_cpu_ms']} ms; {_bytes(light['api_bytes_per_upload'])} | "
            f"{_rate(m['best_upload_rate'])}; {_rate(m['best_ready_rate'])}; "
            f"{_rate(m['best_feed_rate'])} | ${cost['dollars']:.2e} an upload |"
        )
        lines.append(
            f"| {name}, the seed | {seed.upload} | - | {seed.feed} | {seed.feed} | {seed.image} "
            f"| {seed.api_per_upload} | {seed.throughput} | {seed.cost} |"
        )
    retried = [
        f"{name} at {s['offered_rate']:g}/s (p99 {_ms(s['first_try']['p99_ms'])}, then "
        f"{_ms(s['p99_ms'])})"
        for name, m in archs.items()
        for s in m["feed_ramp"]
        if "first_try" in s
    ]
    if retried:
        lines += [
            "",
            "Feed ramp steps that missed the SLO at their first try and ran once more (the "
            "first time a rate is reached, the pools grow): " + "; ".join(retried) + ".",
        ]
    lines += [
        "",
        f"Cost: {result['cost_formula']}, with this run's CPU and bytes per upload:",
        "",
        "| | compute CPU s | PostgreSQL CPU s | bytes stored | compute $ | database $ | storage $ | total $ |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in archs.items():
        c = m["cost_per_upload"]
        p = c["parts"]
        lines.append(
            f"| {name} | {c['compute_cpu_s']} | {c['database_cpu_s']} | {_bytes(c['bytes_stored'])} | "
            f"{p['compute']:.2e} | {p['database']:.2e} | {p['storage_first_month']:.2e} | "
            f"{c['dollars']:.2e} |"
        )
    lines += [
        "",
        "The seed's $0.011 and $0.0006 per upload are its monthly prices divided by its upload "
        "rates per second and by 1,000 ($1,130 / 100 / 1,000; $3,000 / 5,000 / 1,000); a month "
        "of 100 uploads/s is 259 million uploads, $4.4e-06 each at $1,130.",
        "",
        "What ran out first here (the busiest parts, in cores, at the first step past the SLO) "
        "and what would on the seed's deployment (12 vCPU of API tier, a 4 vCPU database, "
        "10 Gbit/s), from the CPU and bytes measured per request:",
        "",
        "| | uploads (ready), here | feed reads, here | uploads/s on the seed's deployment | feed reads/s on the seed's deployment |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, m in archs.items():
        seed = m["seed_deployment"]
        uploads = ", ".join(f"{k} {v:,}" for k, v in seed["uploads_per_s"].items())
        reads = ", ".join(f"{k} {v:,}" for k, v in seed["reads_per_s"].items()) or "-"
        worker = ""
        if seed["media_worker_vcpus_per_100_uploads_s"]:
            worker = (
                f"; media workers need {seed['media_worker_vcpus_per_100_uploads_s']} vCPU "
                "per 100 uploads/s"
            )
        lines.append(
            f"| {name} | {_ran_out_cell(m['uploads_ran_out'])} | {_ran_out_cell(m['feed_ran_out'])} "
            f"| {uploads}: **{seed['upload_limit']}**{worker} | {reads}"
            + (f": **{seed['read_limit']}** |" if seed["read_limit"] else " |")
        )
    return [*lines, ""]


def _feed_cells(feeds: dict[str, Any]) -> tuple[str, str]:
    by_f: dict[int, list[str]] = {}
    for name, step in feeds.items():
        followed = int(name.split("-")[0].removeprefix("F"))
        cell = f"{_ms(step['p50_ms'])} / {_ms(step['p99_ms'])}"
        if step["errors"]:
            cell += f" ({step['errors']} errors)"
        by_f.setdefault(followed, []).append(cell)
    small, large = sorted(by_f)[0], sorted(by_f)[-1]
    return "; ".join(by_f[small]), f"F = {large:,}: " + "; ".join(by_f[large])


def _ran_out_cell(ran_out: dict[str, Any] | None) -> str:
    if ran_out is None:
        return "-"
    busiest = ", ".join(f"{part} {cores}" for part, cores in ran_out["busiest"])
    where = "past the SLO" if ran_out["past_the_slo"] else "the last step, still within"
    return f"at {ran_out['offered_rate']:g}/s ({where}): {busiest} of {ran_out['all_parts_cores']} in all"


def _latency(summary: dict[str, Any]) -> str:
    if not summary["count"]:
        return "-"
    return f"{_ms(summary['p50_ms'])} / {_ms(summary['p99_ms'])}"


def _ms(value: float) -> str:
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _bytes(count: float) -> str:
    return f"{count / 1e6:.2f} MB" if count >= 1e6 else f"{count:,.0f} B"


def _rate(rate: float | None) -> str:
    return "none" if rate is None else f"{rate:g}/s"
