"""The seed's six signals as Prometheus metrics, served at GET /metrics.

1. API bandwidth: request and response bytes by route.
2. Thumbnails: time in the worker, and time waiting for one.
3. Feed query time (database) and HTTP request duration by route, method, status class.
4. PostgreSQL connections: this pool's size, in use and waiting; the server's, sampled.
5. S3 request duration by operation and outcome.
6. Upload outcomes by result.
And for V1: media jobs by outcome and duration, the time from complete to ready, the queue's
depth and the age of its oldest job.

With several service processes, set PROMETHEUS_MULTIPROC_DIR (an empty directory,
the same for all) before they start: every process writes its samples there and
any one of them serves the sum. Without it, each process serves its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from app import db
from app.keys import METRICS

if TYPE_CHECKING:
    from app.db import Database
    from app.queue import JobQueue

log = logging.getLogger(__name__)

T = TypeVar("T")

# Seconds: fine where the seed's thresholds are (feed 500 ms, thumbnail 800 ms, S3 300 ms).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1, 2, 5, 10)
SERVER_SAMPLE_SECONDS = 5.0


class Metrics:
    """Every metric of the service, registered in a registry of its own."""

    def __init__(self, multiprocess_dir: str | None, process_name: str) -> None:
        # prometheus-client reads PROMETHEUS_MULTIPROC_DIR itself when imported; the same
        # setting tells this class to serve the sum of every process's files.
        self.multiprocess_dir = multiprocess_dir
        self.process_name = process_name
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_bytes = Counter(
            "monogram_http_request_bytes",
            "Request body bytes read, by route",
            ["route"],
            registry=r,
        )
        self.response_bytes = Counter(
            "monogram_http_response_bytes",
            "Response body bytes sent, by route",
            ["route"],
            registry=r,
        )
        self.requests = Counter(
            "monogram_http_requests",
            "Requests answered",
            ["route", "method", "status_class"],
            registry=r,
        )
        # Behind a balancer, the spread of traffic over the processes: the sum over
        # processes hides it. One label value per process name, stable across restarts.
        self.process_requests = Counter(
            "monogram_process_http_requests",
            "Requests answered, by service process (SERVICE_INSTANCE)",
            ["process"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "monogram_http_request_duration_seconds",
            "Time to answer a request",
            ["route", "method", "status_class"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.thumbnail_seconds = Histogram(
            "monogram_thumbnail_duration_seconds",
            "Wall time of one image's work in a worker (decode, clean, render, thumbnail)",
            ["type"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.thumbnail_cpu = Counter(
            "monogram_thumbnail_cpu_seconds",
            "CPU time spent on images in workers",
            ["type"],
            registry=r,
        )
        self.thumbnail_queue_seconds = Histogram(
            "monogram_thumbnail_queue_wait_seconds",
            "Time an image waited for a worker (queue slot and process pool)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.image_pool_rebuilds = Counter(
            "monogram_image_pool_rebuilds",
            "Image workers started in place of one that died (killed, or crashed by a decoder)",
            registry=r,
        )
        self.feed_query_seconds = Histogram(
            "monogram_feed_query_duration_seconds",
            "Database time of one feed page, by the query in force (FEED_QUERY) and its strategy",
            ["query", "strategy"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.s3_seconds = Histogram(
            "monogram_s3_request_duration_seconds",
            "Time of one S3 call",
            ["operation", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.uploads = Counter(
            "monogram_uploads", "Upload attempts by result", ["result"], registry=r
        )
        self.sweep_runs = Counter(
            "monogram_sweep_runs",
            "Scheduled sweeps run by this service, by sweep and result (ok, failed)",
            ["sweep", "result"],
            registry=r,
        )
        self.sweep_deleted = Counter(
            "monogram_sweep_deleted",
            "What the scheduled jobs deleted: orphan objects, unposted media rows, objects S3 "
            "refused to delete before (deletions)",
            ["sweep"],
            registry=r,
        )
        self.pool_connections = Gauge(
            "monogram_db_pool_connections",
            "This process's pool: open connections by state",
            ["state"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.pool_waiting = Gauge(
            "monogram_db_pool_waiting",
            "Requests waiting for a pooled connection",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.server_connections = Gauge(
            "monogram_db_server_connections",
            "Connections on the PostgreSQL server (pg_stat_activity), by state; sampled",
            ["state"],
            multiprocess_mode="max",
            registry=r,
        )
        self.server_max_connections = Gauge(
            "monogram_db_server_max_connections",
            "The server's max_connections",
            multiprocess_mode="max",
            registry=r,
        )

        # V1: the media job queue and its workers.
        self.media_jobs = Counter(
            "monogram_media_jobs",
            "Media jobs handled by the workers, by outcome (ready, failed, retried, already done, "
            "gone: deleted before its turn)",
            ["outcome"],
            registry=r,
        )
        self.media_job_seconds = Histogram(
            "monogram_media_job_duration_seconds",
            "Time a worker spent on one media job",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.media_ready_seconds = Histogram(
            "monogram_media_ready_seconds",
            "Time from a V1 upload's complete (202) to its media being ready",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.media_queue_jobs = Gauge(
            "monogram_media_queue_jobs",
            "Media jobs in the queue, waiting or taken by a worker (SQS's approximate counts); "
            "sampled",
            ["state"],
            multiprocess_mode="max",
            registry=r,
        )
        self.media_backlog_seconds = Gauge(
            "monogram_media_backlog_age_seconds",
            "Age of the oldest media still processing, since its upload was completed; sampled",
            multiprocess_mode="max",
            registry=r,
        )

        # The feed's modes (FEED_MODE): timelines in Redis and their fan-out.
        self.feed_mode = Gauge(
            "monogram_feed_mode",
            "1 for the FEED_MODE this process serves (pull, push or hybrid)",
            ["mode"],
            multiprocess_mode="max",
            registry=r,
        )
        self.timeline_reads = Counter(
            "monogram_timeline_reads",
            "Feed pages by where they came from: hit (the timeline), miss (rebuilt first), "
            "pulled (beyond the timeline's length), fallback (Redis failed: the pull query)",
            ["outcome"],
            registry=r,
        )
        self.timeline_builds = Counter(
            "monogram_timeline_builds",
            "Timelines rebuilt from the pull query (missing: new, evicted, Redis restarted)",
            registry=r,
        )
        self.redis_seconds = Histogram(
            "monogram_redis_duration_seconds",
            "Time of one Redis call, by what it was for",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.fanout_writes = Histogram(
            "monogram_fanout_writes",
            "Timelines one post was written into by its fan-out",
            buckets=(0, 1, 10, 100, 1_000, 10_000, 100_000, 1_000_000),
            registry=r,
        )
        self.fanout_lag_seconds = Histogram(
            "monogram_fanout_lag_seconds",
            "Time from a post's creation to its fan-out reaching the last follower's timeline",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
            registry=r,
        )

        # Overload (app/admission.py): what each route class let in and turned away.
        self.admission_admitted = Counter(
            "monogram_admission_admitted",
            "Requests admitted, by route class (reads, writes, uploads)",
            ["class"],
            registry=r,
        )
        self.admission_rejected = Counter(
            "monogram_admission_rejected",
            "Requests refused with 503 overloaded by admission control, by route class and "
            "reason: limit (the class's limit and wait), loop_lag (the process is behind)",
            ["class", "reason"],
            registry=r,
        )
        self.admission_limit = Gauge(
            "monogram_admission_limit",
            "Requests of a route class admitted at once, summed over the service processes",
            ["class"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.admission_in_flight = Gauge(
            "monogram_admission_in_flight",
            "Requests of a route class admitted and not yet answered, summed over the processes",
            ["class"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.loop_lag = Gauge(
            "monogram_event_loop_lag_seconds",
            "How far behind its schedule the event loop runs (smoothed), the worst process",
            multiprocess_mode="max",
            registry=r,
        )
        self.admission_pressure = Gauge(
            "monogram_admission_pressure",
            "Pressure to shed (0-1) from the event loop's lag, the worst process: uploads are "
            "refused from 0, writes from 0.25, reads from 0.5",
            multiprocess_mode="max",
            registry=r,
        )
        self.image_wait_predicted = Histogram(
            "monogram_image_wait_predicted_seconds",
            "The wait for an image worker predicted for each arriving V0 upload",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def exposition(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(combined)

    async def timed_s3(self, operation: str, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        outcome = "error"
        try:
            result = await call
            outcome = "ok"
            return result
        except TimeoutError:
            outcome = "timeout"
            raise
        finally:
            self.s3_seconds.labels(operation, outcome).observe(time.perf_counter() - started)

    @asynccontextmanager
    async def waiting_for_pool(self) -> AsyncIterator[None]:
        self.pool_waiting.inc()
        try:
            yield
        finally:
            self.pool_waiting.dec()


def route_of(request: web.Request) -> str:
    """The route's template, never the raw path: a bounded set of label values."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app[METRICS]
    started = time.perf_counter()
    response = await handler(
        request
    )  # the error middleware inside has turned errors into responses
    route = route_of(request)
    status_class = f"{response.status // 100}xx"
    metrics.requests.labels(route, request.method, status_class).inc()
    metrics.process_requests.labels(metrics.process_name).inc()
    metrics.request_seconds.labels(route, request.method, status_class).observe(
        time.perf_counter() - started
    )
    metrics.request_bytes.labels(route).inc(request.content.total_bytes)
    body = getattr(response, "body", None)
    metrics.response_bytes.labels(route).inc(len(body) if isinstance(body, bytes) else 0)
    return response


async def sample_database(database: Database, metrics: Metrics) -> None:
    """Pool and server connection counts, every few seconds, never per request."""
    pool = database.pool
    while True:
        size, idle = pool.get_size(), pool.get_idle_size()
        metrics.pool_connections.labels("open").set(size)
        metrics.pool_connections.labels("idle").set(idle)
        metrics.pool_connections.labels("in_use").set(size - idle)
        metrics.pool_connections.labels("max").set(pool.get_max_size())
        try:
            async with database.connection() as conn:
                rows = [row async for row in db.queries.server_connections(conn)]
                max_connections = await db.queries.max_connections(conn)
            for row in rows:
                metrics.server_connections.labels(row["state"]).set(row["connections"])
            metrics.server_max_connections.set(int(max_connections))
        except Exception as exc:  # down or busy: /readyz says so, the next sample will tell
            log.debug("connection sample skipped: %s", type(exc).__name__)
        await asyncio.sleep(SERVER_SAMPLE_SECONDS)


async def sample_media_queue(database: Database, queue: JobQueue, metrics: Metrics) -> None:
    """The media queue's depth and the age of its oldest job, every few seconds."""
    while True:
        try:
            waiting, taken = await queue.depth()
            metrics.media_queue_jobs.labels("waiting").set(waiting)
            metrics.media_queue_jobs.labels("in_flight").set(taken)
        except Exception as exc:  # the queue is down: the next sample will tell
            log.debug("queue sample skipped: %s", type(exc).__name__)
        try:
            async with database.connection() as conn:
                age = await db.queries.oldest_processing_seconds(conn)
            metrics.media_backlog_seconds.set(age)
        except Exception as exc:
            log.debug("backlog sample skipped: %s", type(exc).__name__)
        await asyncio.sleep(SERVER_SAMPLE_SECONDS)


def forget_this_process(metrics: Metrics) -> None:
    """With several processes, this one's gauges stop counting when it stops."""
    if metrics.multiprocess_dir is not None:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
