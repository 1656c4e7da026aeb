"""The bench's scenarios. Each returns a JSON-able dict of what it measured.

Every figure comes from one run on one machine, and the comparisons that matter (our feed
against the seed's JOIN, our thumbnails against a naive decode, the feed during an upload
storm against the feed at rest) are made within the same run, so a noisy machine moves
both sides together.
"""

from __future__ import annotations

import asyncio
import functools
import io
import itertools
import random
import re
import resource
import shutil
import statistics
import subprocess
import time
from collections import Counter, deque
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pillow_heif
from PIL import Image

from app.auth import Tokens
from app.direct_uploads import RENDITION_SIZES
from app.feed import NEWEST, feed_rows
from app.images import make_sizes, make_thumbnail, process_image
from app.settings import Settings
from app.sniff import HEIC, JPEG, PNG
from bench import stack
from bench.data import Graph, Size
from bench.explain import explain, sql_of
from bench.histogram import Histogram
from bench.load import Answer, Operation, burst, open_loop
from bench.photos import CORPUS, PHONE_HEICS

# FEED_QUERY values the celebrity and mix scenarios run under: the seed's JOIN first.
FEED_QUERIES_COMPARED = ("seed", "monogram")
# The seed's SLOs: past these, the mix has found its limit.
FEED_P99_SLO_MS = 500
UPLOAD_P99_SLO_MS = 800


@dataclass
class Context:
    settings: Settings
    graph: Graph
    size: Size
    photos: list[bytes]
    step_seconds: float
    processes: int
    workdir: Path  # the bench's own state (.local/bench)
    feed_rates: tuple[float, ...]  # the feed-only steps' offered rates, until p99 passes 200 ms
    # whose CPU the bench reports: each part's processes
    backend_pids: dict[str, tuple[int, ...]] = field(default_factory=dict)
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    _tokens: dict[int, str] = field(default_factory=dict)

    def auth(self, user_id: int) -> dict[str, str]:
        if user_id not in self._tokens:
            key = self.graph.token_keys[user_id]
            self._tokens[user_id] = Tokens(self.settings).issue(user_id, key)
        return {"Authorization": f"Bearer {self._tokens[user_id]}"}


# --- thumbnail: CPU per image, ours against a naive full decode -----------------------------


def thumbnail(ctx: Context, runs: int) -> dict[str, Any]:
    import pyvips

    pyvips.concurrency_set(1)  # as in the workers: one thread per process
    pyvips.cache_set_max(0)
    pillow_heif.register_heif_opener()
    inputs = {
        "jpeg_12mp": (ctx.photos[0], JPEG),
        "png": ((CORPUS / "sample.png").read_bytes(), PNG),
        "heic_12mp": ((CORPUS / PHONE_HEICS[0]).read_bytes(), HEIC),
    }
    results: dict[str, Any] = {}
    for name, (data, media_type) in inputs.items():
        jobs = [process_image(data, media_type, 50_000_000) for _ in range(runs)]
        thumbnails = [_cpu_of(make_thumbnail, bytes(job.original)) for job in jobs]
        one_decode = [_cpu_of(_v1_sizes, bytes(job.original)) for job in jobs]
        a_decode_each = [_cpu_of(_v1_sizes_decoded_each, bytes(job.original)) for job in jobs]
        naive = [_naive_thumbnail(data) for _ in range(runs)]
        with Image.open(io.BytesIO(data)) as probe:
            megapixels = probe.size[0] * probe.size[1] / 1e6
        ours = statistics.median(thumbnails)
        results[name] = {
            "bytes": len(data),
            "megapixels": round(megapixels, 1),
            "ours_cpu_ms_median": round(ours * 1000, 1),
            "ours_whole_job_cpu_ms_median": round(
                statistics.median(j.cpu_seconds for j in jobs) * 1000, 1
            ),
            "v1_sizes_cpu_ms_median": round(statistics.median(one_decode) * 1000, 1),
            "v1_sizes_decoded_each_cpu_ms_median": round(
                statistics.median(a_decode_each) * 1000, 1
            ),
            "naive_cpu_ms_median": round(statistics.median(naive) * 1000, 1),
            "speedup": round(statistics.median(naive) / ours, 1),
            "runs": runs,
        }
    return {
        "images": results,
        "note": "CPU time in this process, one libvips thread, as in a worker. ours: the "
        "thumbnail from the stored original (shrink-on-load); whole job: everything a worker "
        "does for the upload (checks, metadata cleaning, the HEIC rendition, the thumbnail); "
        "naive: Pillow, full decode then resize, no draft mode. V1 sizes: what V1's media worker "
        "renders, the thumbnail and the 600 and 1080 px renditions, from one decode (as it does) "
        "against a decode of the original for each",
    }


def _v1_sizes(original: bytes) -> object:
    return make_sizes(original, RENDITION_SIZES)


def _v1_sizes_decoded_each(original: bytes) -> object:
    return make_thumbnail(original), *(make_sizes(original, (size,)) for size in RENDITION_SIZES)


def _cpu_of(work: Callable[[bytes], object], data: bytes) -> float:
    started = time.process_time()
    work(data)
    return time.process_time() - started


def _naive_thumbnail(data: bytes) -> float:
    """Full decode, then resize: what a first version without shrink-on-load does."""
    started = time.process_time()
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # every pixel, no draft mode
        small = image.convert("RGB")
        small.thumbnail((150, 150), Image.Resampling.LANCZOS, reducing_gap=None)
        small.save(io.BytesIO(), "JPEG", quality=80)
    return time.process_time() - started


# --- feed-vs-follows: in the database, ours against the seed's JOIN ---------------------------


async def feed_vs_follows(ctx: Context, runs: int, budget_seconds: float) -> dict[str, Any]:
    assert ctx.settings.database_url
    conn = await asyncpg.connect(ctx.settings.database_url)
    points: list[dict[str, Any]] = []
    try:
        for followed, kind in ctx.size.grid:
            viewer = ctx.graph.viewer(followed, kind)
            seed_sql, seed_args = sql_of("feed_seed_literal", user_id=viewer)
            ours = await _time_calls(
                functools.partial(feed_rows, conn, viewer, NEWEST, 21), runs, budget_seconds
            )
            literal = await _time_calls(
                functools.partial(conn.fetch, seed_sql, *seed_args), runs, budget_seconds
            )
            ours_rows, literal_rows = (
                await _rows_read(conn, viewer),
                (await explain(conn, seed_sql, seed_args))[0],
            )
            points.append(
                {
                    "followed": followed,
                    "kind": kind,
                    "ours": ours.summary_ms(),
                    "literal": literal.summary_ms(),
                    "ours_post_rows": ours_rows,
                    "literal_post_rows": literal_rows,
                    "p99_ratio_literal_over_ours": round(
                        literal.percentile(99) / max(ours.percentile(99), 1e-6), 1
                    ),
                }
            )
    finally:
        await conn.close()
    worst_literal = max(p["literal"]["p99_ms"] for p in points)
    worst_ours = max(p["ours"]["p99_ms"] for p in points)
    return {
        "points": points,
        "worst_literal_p99_ms": worst_literal,
        "worst_ours_p99_ms": worst_ours,
        "worst_vs_worst": round(worst_literal / max(worst_ours, 1e-6), 1),
        "most_ms_slower_than_literal": round(
            max(p["ours"]["p99_ms"] - p["literal"]["p99_ms"] for p in points), 2
        ),
    }


async def _time_calls(call: Callable[[], Any], runs: int, budget_seconds: float) -> Histogram:
    histogram = Histogram()
    await call()  # warm the plan cache and the buffers
    deadline = time.perf_counter() + budget_seconds
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        histogram.record(time.perf_counter() - started)
        if time.perf_counter() > deadline:
            break
    return histogram


async def _rows_read(conn: asyncpg.Connection, viewer: int) -> int:
    params = {"user_id": viewer, "before_time": NEWEST[0], "before_id": NEWEST[1], "page_size": 21}
    recent_sql, recent_args = sql_of("feed_recent", **params)
    rows, _ = await explain(conn, recent_sql, recent_args)
    _, strategy = await feed_rows(conn, viewer, NEWEST, 21)
    if strategy != "recent":
        page_sql, page_args = sql_of("feed_page", **params)
        rows += (await explain(conn, page_sql, page_args))[0]
    return rows


# --- the service under the seed's traffic --------------------------------------------------


class Traffic:
    """The seed's operations as HTTP calls, spread over the service processes."""

    def __init__(
        self,
        ctx: Context,
        urls: list[str],
        spare_media: deque[tuple[int, int]],
        *,
        expect_continue: bool = False,
    ) -> None:
        self.ctx = ctx
        self.urls = itertools.cycle(urls)
        self.spare_media = spare_media
        self.rng = random.Random(3)
        # Uploads ask first (Expect: 100-continue, as curl does): a refusal costs no body.
        self.expect_continue = expect_continue

    async def _call(
        self, session: aiohttp.ClientSession, method: str, path: str, user: int, **kw: Any
    ) -> Answer:
        url = f"{next(self.urls)}{path}"
        async with session.request(method, url, headers=self.ctx.auth(user), **kw) as response:
            return Answer(response.status, 0, len(await response.read()))

    async def feed(self, session: aiohttp.ClientSession, user: int | None = None) -> Answer:
        user = user or self.rng.choice(self.ctx.graph.readers)
        return await self._call(session, "GET", "/v1/feed", user)

    async def detail(self, session: aiohttp.ClientSession) -> Answer:
        post = self.rng.randint(1, self.ctx.size.posts)
        return await self._call(
            session, "GET", f"/v1/posts/{post}", self.rng.choice(self.ctx.graph.readers)
        )

    async def like(self, session: aiohttp.ClientSession) -> Answer:
        post = self.rng.randint(1, self.ctx.size.posts)
        return await self._call(
            session, "PUT", f"/v1/posts/{post}/like", self.rng.choice(self.ctx.graph.readers)
        )

    async def upload(self, session: aiohttp.ClientSession, user: int | None = None) -> Answer:
        photo = self.rng.choice(self.ctx.photos)
        form = aiohttp.FormData()
        form.add_field("file", io.BytesIO(photo), filename="photo.jpg", content_type="image/jpeg")
        answer = await self._call(
            session,
            "POST",
            "/v1/media",
            user or self.rng.choice(self.ctx.graph.readers),
            data=form,
            expect100=self.expect_continue,
        )
        return Answer(answer.status, len(photo), answer.received)

    async def post(self, session: aiohttp.ClientSession) -> Answer:
        if not self.spare_media:
            return Answer(0, 0, 0)
        user, media_id = self.spare_media.popleft()
        body = orjson.dumps({"media_id": media_id, "caption": "bench"})
        headers = {**self.ctx.auth(user), "Content-Type": "application/json"}
        async with session.post(
            f"{next(self.urls)}/v1/posts", data=body, headers=headers
        ) as response:
            return Answer(response.status, len(body), len(await response.read()))

    async def presign(self, session: aiohttp.ClientSession) -> Answer:
        """V1's first call alone: a presigned POST for a 2 MB JPEG (never sent)."""
        user = self.rng.choice(self.ctx.graph.readers)
        body = orjson.dumps({"content_type": "image/jpeg", "bytes": len(self.ctx.photos[0])})
        headers = {**self.ctx.auth(user), "Content-Type": "application/json"}
        async with session.post(
            f"{next(self.urls)}/v1/uploads", data=body, headers=headers
        ) as response:
            return Answer(response.status, len(body), len(await response.read()))

    def mix(self) -> list[tuple[str, float, Operation]]:
        """The seed's mix: 60% feed, 15% post detail, 10% uploads, 10% new posts, 5% likes."""
        return [
            ("feed", 60, self.feed),
            ("detail", 15, self.detail),
            ("upload", 10, self.upload),
            ("post", 10, self.post),
            ("like", 5, self.like),
        ]


async def spare_media(settings: Settings, users: list[int], each: int) -> deque[tuple[int, int]]:
    """Media rows without a post, for the mix's post creations to publish."""
    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch(
            "INSERT INTO media (user_id, original_key, thumbnail_key, content_type, width,"
            " height, bytes)"
            " SELECT u, 'spare/' || u || '/' || i || '/' || md5(random()::text),"
            "        'spare/' || u || '/' || i || '/t' || md5(random()::text),"
            "        'image/jpeg', 1080, 1350, 2000000"
            " FROM unnest($1::bigint[]) u CROSS JOIN generate_series(1, $2::int) i"
            " RETURNING user_id, media_id",
            users,
            each,
        )
    finally:
        await conn.close()
    spare = [(r["user_id"], r["media_id"]) for r in rows]
    random.Random(5).shuffle(spare)
    return deque(spare)


@dataclass(frozen=True)
class Deployment:
    """The seed's topology: service processes behind the balancer, which takes all the load."""

    services: list[stack.Service]
    balancer: stack.Balancer
    meter: stack.CpuMeter

    @property
    def url(self) -> str:
        return self.balancer.url


def deploy(ctx: Context, exits: ExitStack, **extra: str) -> Deployment:
    env = {
        "SERVICE_PROCESSES": str(ctx.processes),
        "THUMBNAIL_WORKERS": "1",
        "LOG_LEVEL": "WARNING",
        # The bench uploads far more than it posts: the per-user cap on uploads no post uses
        # (50) would turn its uploads into 409s after a few steps.
        "MAX_UNPOSTED_MEDIA": "1000000",
        # The scenarios measure what each architecture can do, so nothing is refused before
        # it has been tried; the overload scenario turns admission control on, and compares.
        "ADMISSION_CONTROL": "false",
        **extra,
    }
    running = [
        exits.enter_context(stack.service(ctx.settings, **env)) for _ in range(ctx.processes)
    ]
    front = exits.enter_context(stack.balancer(ctx.settings, running, ctx.workdir / "caddy"))
    pids = {**ctx.backend_pids, "balancer": (front.process.pid,)}
    return Deployment(running, front, stack.CpuMeter(running, pids))


def _cores(spent: dict[str, float], seconds: float) -> dict[str, float]:
    return {role: round(cpu / seconds, 2) for role, cpu in spent.items()}


def _service_cpu(spent: dict[str, float]) -> float:
    """CPU seconds of the service tier: its event loops and its image workers."""
    return spent["service"] + spent["image_workers"]


async def mix(ctx: Context, start_rate: float, max_steps: int) -> dict[str, Any]:
    """The feed-only and mixed steps under Monogram's query, and the same under the seed's."""
    under = {q: await _mix(ctx, start_rate, max_steps, q) for q in FEED_QUERIES_COMPARED}
    return {**under["monogram"], "seed": under["seed"]}


async def _mix(ctx: Context, start_rate: float, max_steps: int, feed_query: str) -> dict[str, Any]:
    with ExitStack() as exits:
        deployed = deploy(ctx, exits, FEED_QUERY=feed_query)
        traffic = Traffic(
            ctx,
            [deployed.url],
            await spare_media(
                ctx.settings,
                ctx.graph.readers[:200],
                int(start_rate * 2**max_steps * ctx.step_seconds / 100) + 5,
            ),
        )
        meter = deployed.meter
        feed_http = await feed_at_f200(ctx, traffic, meter)
        # The same reads straight to the service processes: what the balancer costs in capacity
        # when it shares the machine's cores (the seed's ALB is a tier of its own).
        direct = []
        if feed_query == "monogram":
            around = Traffic(ctx, [s.url for s in deployed.services], deque())
            direct = await feed_at_f200(ctx, around, meter)
        steps = []
        rate = start_rate
        async with _session() as session:
            for _ in range(max_steps):
                cpu_before = meter.read()
                step = await open_loop(session, traffic.mix(), rate, ctx.step_seconds)
                spent = meter.since(cpu_before)
                cpu = _service_cpu(spent)
                summary = step.summary()
                summary["cpu_cores"] = _cores(spent, step.seconds)
                summary["service_cpu_cores"] = round(cpu / step.seconds, 2)
                ops = summary["operations"]
                summary["api_bytes_in_per_s"] = sum(o["bytes_in_per_s"] for o in ops.values())
                summary["api_bytes_out_per_s"] = sum(o["bytes_out_per_s"] for o in ops.values())
                done = sum(o["ok"] for o in ops.values())
                summary["service_cpu_ms_per_request"] = round(cpu / max(done, 1) * 1000, 2)
                steps.append(summary)
                if (
                    ops["feed"]["p99_ms"] > FEED_P99_SLO_MS
                    or ops["upload"]["p99_ms"] > UPLOAD_P99_SLO_MS
                ):
                    break
                rate *= 1.6
    passed = [s for s in steps if s["operations"]["feed"]["p99_ms"] <= FEED_P99_SLO_MS
              and s["operations"]["upload"]["p99_ms"] <= UPLOAD_P99_SLO_MS]  # fmt: skip
    return {
        "feed_query": feed_query,
        "processes": ctx.processes,
        "steps": steps,
        "highest_rate_within_slo": passed[-1]["offered_rate"] if passed else None,
        "feed_http_f200": feed_http,
        "feed_http_f200_direct": direct,
    }


async def feed_at_f200(
    ctx: Context,
    traffic: Traffic,
    meter: stack.CpuMeter,
    stop_past_ms: float = 200,
    *,
    retry_a_miss: bool = False,
) -> list[dict[str, Any]]:
    """Only feed reads of the F = 200 viewers, at rising rates until p99 passes
    `stop_past_ms`. With `retry_a_miss`, a step past it runs once more at the same rate, and
    keeps the first try's figures beside: the first time a rate is reached, every pool grows
    (PostgreSQL connections open on demand), and that start-up stall is not the rate's
    steady state."""
    followed = _f200(ctx)
    viewers = [ctx.graph.viewer(followed, kind) for kind in ("active", "quiet")]
    cycle = itertools.cycle(viewers)

    async def read(session: aiohttp.ClientSession) -> Answer:
        return await traffic.feed(session, next(cycle))

    async def one_step(session: aiohttp.ClientSession, rate: float) -> dict[str, Any]:
        cpu_before = meter.read()
        step = await open_loop(session, [("feed", 1, read)], rate, ctx.step_seconds)
        summary: dict[str, Any] = step.summary()["operations"]["feed"]
        summary["offered_rate"] = rate
        summary["followed"] = followed
        spent = meter.since(cpu_before)
        summary["cpu_cores"] = _cores(spent, step.seconds)
        summary["service_cpu_cores"] = round(_service_cpu(spent) / step.seconds, 2)
        return summary

    steps = []
    async with _session() as session:
        for rate in ctx.feed_rates:
            summary = await one_step(session, rate)
            if retry_a_miss and summary["p99_ms"] > stop_past_ms:
                first = summary
                summary = await one_step(session, rate)
                summary["first_try"] = {
                    key: first[key] for key in ("p50_ms", "p99_ms", "errors", "throughput_per_s")
                }
            steps.append(summary)
            if summary["p99_ms"] > stop_past_ms:
                break
    return steps


async def upload_storm(ctx: Context, feed_rate: float, upload_rates: list[float]) -> dict[str, Any]:
    with ExitStack() as exits:
        deployed = deploy(ctx, exits)
        traffic = Traffic(ctx, [deployed.url], deque())
        meter = deployed.meter
        async with _session() as session:
            rest = await open_loop(
                session, [("feed", 1, traffic.feed)], feed_rate, ctx.step_seconds
            )
            rest_p99 = rest.operations["feed"].ok_latency.percentile(99) * 1000
            steps = []
            for upload_rate in upload_rates:
                cpu_before = meter.read()
                step = await open_loop(
                    session,
                    [("feed", feed_rate, traffic.feed), ("upload", upload_rate, traffic.upload)],
                    feed_rate + upload_rate,
                    ctx.step_seconds,
                )
                uploads, feed = step.operations["upload"], step.operations["feed"]
                feed_p99 = feed.ok_latency.percentile(99) * 1000
                spent = meter.since(cpu_before)
                cores = _cores(spent, step.seconds)
                steps.append(
                    {
                        "upload_rate": upload_rate,
                        "uploads_stored_per_s": round(uploads.ok_latency.count / step.seconds, 1),
                        "upload_p99_ms": round(uploads.ok_latency.percentile(99) * 1000, 1),
                        "upload_statuses": {str(k): v for k, v in sorted(uploads.statuses.items())},
                        "rejected_503_p99_ms": round(
                            uploads.rejected_latency.percentile(99) * 1000, 1
                        ),
                        "feed_p99_ms": round(feed_p99, 1),
                        "feed_errors": feed.latency.count - feed.ok_latency.count,
                        "feed_p99_vs_rest": round(feed_p99 / max(rest_p99, 1e-3), 2),
                        "cpu_cores": cores,
                        "service_cpu_cores": round(_service_cpu(spent) / step.seconds, 2),
                    }
                )
    return {"feed_rate": feed_rate, "feed_p99_at_rest_ms": round(rest_p99, 1), "steps": steps}


# --- costs: what one request of each kind costs each part ----------------------------------

# Light loads, each operation alone: nothing queues, so latency is the request's own, and the
# CPU each part spent over the step is that operation's.
COST_RATES = {
    "feed": 200,
    "detail": 200,
    "like": 100,
    "post": 30,
    "upload": 10,
    "presign": 50,
    "upload_v1": 10,
}
# Before the idle CPU is measured, the processes settle after their start; it is then read
# over at least this long, well above the CPU clock's 10 ms ticks.
IDLE_SETTLE_SECONDS = 2.0
IDLE_MIN_SECONDS = 3.0
# The native client's connections: a closed loop, for the most reads a second it can get.
NATIVE_CONNECTIONS = 8


async def costs(ctx: Context, seconds: float) -> dict[str, Any]:
    """Each of the seed's operations alone through the balancer: per request, the CPU each part
    spent, the bytes through the API and the latency. Then what the balancer adds to a
    request, what verifying a JWT costs, and the feed as a native load client sees it."""
    with ExitStack() as exits:
        # A queue of its own: the V1 uploads here are completed, never processed.
        deployed = deploy(ctx, exits, SQS_QUEUE_NAME="bench-costs")
        writers = ctx.graph.readers[:100]
        posts_needed = int(COST_RATES["post"] * seconds / len(writers)) + 3
        spare = await spare_media(ctx.settings, writers, posts_needed)
        traffic = Traffic(ctx, [deployed.url], spare)
        viewers = itertools.cycle([ctx.graph.viewer(_f200(ctx), k) for k in ("active", "quiet")])

        async def feed(session: aiohttp.ClientSession) -> Answer:
            return await traffic.feed(session, next(viewers))

        operations: dict[str, Operation] = {
            "feed": feed,
            "detail": traffic.detail,
            "like": traffic.like,
            "post": traffic.post,
            "upload": traffic.upload,
            # V1: presign, the file straight to S3, complete (no media worker runs here: what
            # the API spends per upload is what this step measures).
            "presign": traffic.presign,
            "upload_v1": DirectUploads(ctx, deployed.url).upload,
        }
        idle = await idle_cores(deployed.meter, seconds)
        measured = {}
        async with _session() as session:
            for name, rate in COST_RATES.items():
                before = deployed.meter.read()
                step = await open_loop(session, [(name, 1, operations[name])], rate, seconds)
                spent = deployed.meter.since(before)
                stats = step.operations[name]
                done = max(stats.ok_latency.count, 1)
                measured[name] = {
                    "offered_rate": rate,
                    **stats.summary(step.seconds),
                    "cpu_ms_per_request": cpu_ms_each(spent, idle, step.seconds, done),
                    "api_bytes_per_request": round((stats.sent + stats.received) / done),
                }
            balancer = await _balancer_cost(ctx, session, deployed, seconds, idle["balancer"])
        native = await asyncio.to_thread(
            _native_feed, deployed.url, ctx.auth(ctx.graph.viewer(_f200(ctx), "active")), seconds
        )
    return {
        "idle_cpu_cores": {part: round(cores, 3) for part, cores in idle.items()},
        "operations": measured,
        "balancer": balancer,
        "jwt_verify_us": _jwt_verify_us(ctx),
        "native_client": native,
    }


async def idle_cores(meter: stack.CpuMeter, seconds: float) -> dict[str, float]:
    """What each part spends with no request at all (health checks, samplers, sweeps), in
    cores: it is no request's, so it is taken off each step. Measured once the processes have
    settled after their start."""
    await asyncio.sleep(IDLE_SETTLE_SECONDS)
    quiet = max(seconds, IDLE_MIN_SECONDS)
    before = meter.read()
    await asyncio.sleep(quiet)
    return {part: cpu / quiet for part, cpu in meter.since(before).items()}


def cpu_ms_each(
    spent: dict[str, float], idle: dict[str, float], seconds: float, done: int
) -> dict[str, float]:
    """Each part's CPU milliseconds per request: what it spent over `seconds`, less its idle
    share, shared among the `done` requests."""
    return {
        part: round(max(cpu - idle[part] * seconds, 0.0) * 1000 / max(done, 1), 3)
        for part, cpu in spent.items()
    }


def _f200(ctx: Context) -> int:
    """F = 200, or the largest F of a size without it."""
    return 200 if 200 in ctx.size.follow_points else ctx.size.follow_points[-1]


async def _balancer_cost(
    ctx: Context,
    session: aiohttp.ClientSession,
    deployed: Deployment,
    seconds: float,
    idle_cores: float,
) -> dict[str, Any]:
    """The same feed reads through the balancer and straight to a service process, mixed in
    one step: the difference of their latencies is what the balancer adds."""
    viewer = ctx.graph.viewer(_f200(ctx), "active")
    through = Traffic(ctx, [deployed.url], deque())
    straight = Traffic(ctx, [deployed.services[0].url], deque())

    async def balanced(session: aiohttp.ClientSession) -> Answer:
        return await through.feed(session, viewer)

    async def direct(session: aiohttp.ClientSession) -> Answer:
        return await straight.feed(session, viewer)

    before = deployed.meter.read()
    both: list[tuple[str, float, Operation]] = [("balanced", 1, balanced), ("direct", 1, direct)]
    step = await open_loop(session, both, 100, seconds)
    spent = deployed.meter.since(before)
    via, around = step.operations["balanced"].ok_latency, step.operations["direct"].ok_latency
    return {
        "through_the_balancer": via.summary_ms(),
        "straight_to_a_process": around.summary_ms(),
        "adds_p50_ms": round((via.percentile(50) - around.percentile(50)) * 1000, 2),
        "adds_p99_ms": round((via.percentile(99) - around.percentile(99)) * 1000, 2),
        "balancer_cpu_ms_per_request": round(
            max(spent["balancer"] - idle_cores * step.seconds, 0.0) * 1000 / max(via.count, 1), 3
        ),
    }


def _jwt_verify_us(ctx: Context, runs: int = 5000) -> float:
    """CPU microseconds to verify one access token (HS256, with its claims checked)."""
    tokens = Tokens(ctx.settings)
    user = ctx.graph.readers[0]
    token = tokens.issue(user, ctx.graph.token_keys[user])
    started = time.process_time()
    for _ in range(runs):
        tokens.verify(token)
    return round((time.process_time() - started) / runs * 1e6, 1)


def _native_feed(url: str, auth: dict[str, str], seconds: float) -> dict[str, Any]:
    """Feed reads by `hey` (a Go load client, Debian's package), when it is installed: a
    cross-check of what the Python load generator sees, and of what it costs."""
    hey = shutil.which("hey")
    if hey is None:
        return {"available": False, "why": "hey is not installed (apt-get install hey)"}
    header = f"Authorization: {auth['Authorization']}"
    command = [hey, "-z", f"{seconds:g}s", "-c", str(NATIVE_CONNECTIONS), "-H", header]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = subprocess.run(
        [*command, f"{url}/v1/feed"], capture_output=True, text=True, timeout=seconds + 60
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", run.stdout)
    p99 = re.search(r"99%+ in ([\d.]+) secs", run.stdout)
    statuses = {code: int(n) for code, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", run.stdout)}
    return {
        "available": True,
        "connections": NATIVE_CONNECTIONS,
        "seconds": seconds,
        "reads_per_s": float(rate.group(1)) if rate else None,
        "p99_ms": round(float(p99.group(1)) * 1000, 1) if p99 else None,
        "statuses": statuses,
        "client_cpu_cores": round(cpu / seconds, 2),
    }


# --- v1-uploads: presigned straight to S3, processed by media workers -----------------------

# The media workers the scenario runs, each with this many image worker processes.
V1_MEDIA_WORKERS = 1
V1_IMAGE_WORKERS = 2
# The longest a step's backlog may take to drain before the scenario gives up waiting.
DRAIN_PATIENCE_SECONDS = 180.0


@dataclass
class DirectUploads:
    """V1 uploads as a client makes them: presign through the balancer, the 2 MB form straight
    to S3, complete through the balancer. Keeps what was completed, and the API's bytes."""

    ctx: Context
    url: str
    rng: random.Random = field(default_factory=lambda: random.Random(11))
    media_ids: list[int] = field(default_factory=list)
    presign_bodies: list[int] = field(default_factory=list)
    completes: Histogram = field(default_factory=Histogram)  # the complete call alone
    # When each completed upload began, by the wall clock (the database's ready_at is too).
    begun: dict[int, float] = field(default_factory=dict)

    async def upload(self, session: aiohttp.ClientSession) -> Answer:
        begun = time.time()
        user = self.rng.choice(self.ctx.graph.readers)
        photo = self.rng.choice(self.ctx.photos)
        auth = self.ctx.auth(user)
        declared = orjson.dumps({"content_type": "image/jpeg", "bytes": len(photo)})
        headers = {**auth, "Content-Type": "application/json"}
        async with session.post(f"{self.url}/v1/uploads", data=declared, headers=headers) as answer:
            form = await answer.read()
            sent, received = _wire_bytes(answer, len(declared), len(form))
            if answer.status != 201:
                return Answer(answer.status, sent, received)
        self.presign_bodies.append(len(form))
        presigned = orjson.loads(form)
        body = aiohttp.FormData()
        for name, value in presigned["fields"].items():
            body.add_field(name, value)
        body.add_field("file", io.BytesIO(photo), filename="photo.jpg", content_type="image/jpeg")
        async with session.post(presigned["url"], data=body) as stored:  # to S3, not the API
            await stored.read()
            if stored.status != 204:
                return Answer(stored.status, sent, received)
        path = f"{self.url}/v1/uploads/{presigned['upload_id']}/complete"
        started = time.perf_counter()
        async with session.post(path, headers=auth) as answer:
            media = await answer.read()
            self.completes.record(time.perf_counter() - started)
            more_sent, more_received = _wire_bytes(answer, 0, len(media))
            if answer.status == 202:
                media_id = orjson.loads(media)["media_id"]
                self.media_ids.append(media_id)
                self.begun[media_id] = begun
            return Answer(answer.status, sent + more_sent, received + more_received)


def _wire_bytes(answer: aiohttp.ClientResponse, body_out: int, body_in: int) -> tuple[int, int]:
    """Bytes of one API exchange on the wire, headers included: (sent, received)."""
    request = answer.request_info
    sent = len(f"{request.method} {request.url.raw_path_qs} HTTP/1.1\r\n") + body_out + 2
    sent += sum(len(k) + len(v) + 4 for k, v in request.headers.items())
    received = len(f"HTTP/1.1 {answer.status} {answer.reason}\r\n") + body_in + 2
    received += sum(len(k) + len(v) + 4 for k, v in answer.raw_headers)
    return sent, received


async def v1_uploads(ctx: Context, rates: list[float], feed_rate: float) -> dict[str, Any]:
    """V1's uploads at rising rates, with feed reads beside them: the API's bytes per upload,
    the time to the 202 (the whole client flow, and the complete call alone), the time from
    complete to ready, the feed's p99 while the media workers are saturated, and how long the
    backlog takes to drain after each step. The API's CPU per upload is the costs step's."""
    with ExitStack() as exits:
        queue = {"SQS_QUEUE_NAME": "bench-v1-uploads"}
        deployed = deploy(ctx, exits, **queue)
        workers = [
            exits.enter_context(
                stack.media_worker(
                    ctx.settings,
                    THUMBNAIL_WORKERS=str(V1_IMAGE_WORKERS),
                    LOG_LEVEL="WARNING",
                    SERVICE_PROCESSES=str(ctx.processes + V1_MEDIA_WORKERS),
                    **queue,
                )
            )
            for _ in range(V1_MEDIA_WORKERS)
        ]
        await asyncio.sleep(ctx.step_seconds)  # the workers start and warm their image workers
        meter = stack.CpuMeter(
            deployed.services,
            {**deployed.meter.other_pids, "media_workers": tuple(w.pid for w in workers)},
        )
        traffic = Traffic(ctx, [deployed.url], deque())
        async with _session() as session:
            rest = await open_loop(
                session, [("feed", 1, traffic.feed)], feed_rate, ctx.step_seconds
            )
            rest_p99 = rest.operations["feed"].ok_latency.percentile(99) * 1000
            steps = []
            for rate in rates:
                uploads = DirectUploads(ctx, deployed.url)
                before = meter.read()
                step = await open_loop(
                    session,
                    [("feed", feed_rate, traffic.feed), ("upload", rate, uploads.upload)],
                    feed_rate + rate,
                    ctx.step_seconds,
                )
                spent = meter.since(before)
                drained = await until_processed(ctx.settings, uploads.media_ids)
                steps.append(
                    _v1_step(step, spent, rate, rest_p99, drained, uploads)
                    | await _ready_times(ctx.settings, uploads.media_ids)
                )
    return {"feed_rate": feed_rate, "feed_p99_at_rest_ms": round(rest_p99, 1), "steps": steps}


def _v1_step(
    step: Any,
    spent: dict[str, float],
    rate: float,
    rest_p99: float,
    drained: float | None,
    uploads: DirectUploads,
) -> dict[str, Any]:
    stats, feed = step.operations["upload"], step.operations["feed"]
    acknowledged = max(stats.ok_latency.count, 1)
    feed_p99 = feed.ok_latency.percentile(99) * 1000
    return {
        "upload_rate": rate,
        "acknowledged_per_s": round(stats.ok_latency.count / step.seconds, 1),
        "statuses": {str(k): v for k, v in sorted(stats.statuses.items())},
        "acknowledged_ms": stats.ok_latency.summary_ms(),
        "complete_ms": uploads.completes.summary_ms(),
        "api_bytes_per_upload": {
            "sent": round(stats.sent / acknowledged),
            "received": round(stats.received / acknowledged),
        },
        "presign_body_bytes": round(statistics.median(uploads.presign_bodies))
        if uploads.presign_bodies
        else None,
        "feed_p99_ms": round(feed_p99, 1),
        "feed_p99_vs_rest": round(feed_p99 / max(rest_p99, 1e-3), 2),
        "feed_errors": feed.latency.count - feed.ok_latency.count,
        "drain_seconds_after_step": None if drained is None else round(drained, 1),
        "cpu_cores": _cores(spent, step.seconds),
    }


async def until_processed(settings: Settings, media_ids: list[int]) -> float | None:
    """Seconds until none of the media is processing any more; None past the patience."""
    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    started = time.perf_counter()
    try:
        while time.perf_counter() - started < DRAIN_PATIENCE_SECONDS:
            left = await conn.fetchval(
                "SELECT count(*) FROM media WHERE media_id = ANY($1) AND status = 'processing'",
                media_ids,
            )
            if not left:
                return time.perf_counter() - started
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    return None


async def _ready_times(settings: Settings, media_ids: list[int]) -> dict[str, Any]:
    """From complete (202) to ready, p50 and p99, by the database's own clock."""
    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch(
            "SELECT status, extract(epoch FROM ready_at - completed_at)::float8 AS seconds "
            "FROM media WHERE media_id = ANY($1)",
            media_ids,
        )
    finally:
        await conn.close()
    waits = Histogram()
    for row in rows:
        if row["status"] == "ready":
            waits.record(row["seconds"])
    by_status: Counter[str] = Counter(row["status"] for row in rows)
    return {"complete_to_ready_ms": waits.summary_ms(), "media_by_status": dict(by_status)}


# Uploads and post creations that run during the celebrity burst, as the seed's failure
# story has it ("uploads and posts time out").
CELEBRITY_WRITES = 20


async def celebrity(ctx: Context) -> dict[str, Any]:
    """The burst under the seed's JOIN (FEED_QUERY=seed), then under Monogram's query."""
    return {query: await _celebrity_burst(ctx, query) for query in FEED_QUERIES_COMPARED}


async def _celebrity_burst(ctx: Context, feed_query: str) -> dict[str, Any]:
    with ExitStack() as exits:
        deployed = deploy(ctx, exits, FEED_QUERY=feed_query)
        urls = [s.url for s in deployed.services]  # each process's /metrics, for the pool waits
        writers = ctx.graph.readers[:CELEBRITY_WRITES]
        traffic = Traffic(ctx, [deployed.url], await spare_media(ctx.settings, writers, 1))
        async with _session(limit=0) as session:
            stored = await traffic.upload(session, ctx.graph.celebrity)
            media_id = await _latest_media(ctx.settings, ctx.graph.celebrity)
            headers = {**ctx.auth(ctx.graph.celebrity), "Content-Type": "application/json"}
            async with session.post(
                f"{deployed.url}/v1/posts",
                data=orjson.dumps({"media_id": media_id}),
                headers=headers,
            ) as response:
                posted = response.status
                post_id = (await response.json())["id"] if posted == 201 else None
            followers = ctx.graph.celebrity_followers
            waits: list[tuple[float, float]] = []
            sampling = asyncio.create_task(
                _sample_pool_waits(session, urls, waits, time.perf_counter())
            )
            result = await burst(
                session,
                {
                    "feed": [functools.partial(traffic.feed, user=u) for u in followers],
                    "upload": [functools.partial(traffic.upload, user=u) for u in writers],
                    "post": [traffic.post for _ in writers],
                },
            )
            sampling.cancel()
        first_page_has_it = await _first_page_has(ctx, deployed.url, followers[0], post_id)
    feed = result.operations["feed"]
    return {
        "feed_query": feed_query,
        "upload_status": stored.status,
        "post_status": posted,
        "followers_reading_at_once": len(followers),
        "latency": feed.latency.summary_ms(),
        "ok_latency": feed.ok_latency.summary_ms(),
        "statuses": {str(k): v for k, v in sorted(feed.statuses.items())},
        "writes_during_the_burst": {
            name: {
                "latency": result.operations[name].latency.summary_ms(),
                "statuses": {
                    str(k): v for k, v in sorted(result.operations[name].statuses.items())
                },
            }
            for name in ("upload", "post")
        },
        "all_answered_within_s": round(result.seconds, 2),
        "peak_requests_waiting_for_a_connection": max((w for _, w in waits), default=0.0),
        "pool_waits_over_time": [(round(t, 3), w) for t, w in waits],
        "answers_over_time": [(name, round(t, 3), status) for name, t, status in result.answers],
        "pool_connections_per_process": ctx.settings.with_overrides(
            service_processes=ctx.processes
        ).db_pool_max,
        "the_post_is_on_a_follower_first_page": first_page_has_it,
    }


async def _latest_media(settings: Settings, user_id: int) -> int:
    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    try:
        media_id: int = await conn.fetchval(
            "SELECT max(media_id) FROM media WHERE user_id = $1", user_id
        )
    finally:
        await conn.close()
    return media_id


async def _first_page_has(ctx: Context, url: str, user: int, post_id: int | None) -> bool:
    """Whether the post is on the follower's first page (the burst's new posts may top it)."""
    async with (
        _session() as session,
        session.get(f"{url}/v1/feed?limit=50", headers=ctx.auth(user)) as response,
    ):
        items = (await response.json())["items"]
    return any(item["id"] == post_id for item in items)


async def _sample_pool_waits(
    session: aiohttp.ClientSession,
    urls: list[str],
    waits: list[tuple[float, float]],
    started: float,
) -> None:
    """(seconds since `started`, requests waiting for a pooled connection in all processes)."""
    pattern = re.compile(r"^monogram_db_pool_waiting (\S+)$", re.MULTILINE)
    while True:
        waiting = 0.0
        for url in urls:
            async with session.get(f"{url}/metrics") as response:
                found = pattern.search(await response.text())
            waiting += float(found.group(1)) if found else 0.0
        waits.append((time.perf_counter() - started, waiting))
        await asyncio.sleep(0.02)


def _session(limit: int = 512) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit),
        timeout=aiohttp.ClientTimeout(total=30),
    )
