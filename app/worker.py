"""`python -m app worker`: a media worker, taking V1 upload jobs from the queue, and in
FEED_MODE=push|hybrid the feed's fan-out jobs from theirs (app/fanout.py).

Each worker opens the same resources as the service, with the same openers (database,
bucket, image workers, queue), and runs app/media_jobs.py on each job, as many at once as it
has image workers. A job that fails for a passing reason (the store, the database or an image
worker down) is tried again after a growing, jittered pause; after JOB_MAX_ATTEMPTS tries its
media is failed, so a poison job never loops. SIGTERM stops taking jobs and lets the ones under
way finish; a worker killed mid-job has its job delivered again after JOB_VISIBILITY_TIMEOUT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import time

from app import media_jobs
from app.db import open_database
from app.errors import AppError
from app.fanout import serve_fanout
from app.images import open_image_pool
from app.media_jobs import JobWork
from app.memory import tune_allocator
from app.metrics import Metrics, forget_this_process
from app.queue import Job, JobQueue, open_fanout_queue, open_queue
from app.settings import Settings
from app.storage import open_storage
from app.timelines import open_timelines

log = logging.getLogger(__name__)

# Pauses before a job is tried again: 2, 4, 8 ... seconds, at most this, with jitter.
MAX_BACKOFF_SECONDS = 300
# How long one receive waits for a job before the worker looks at its stop signal again.
RECEIVE_WAIT_SECONDS = 5


def run(settings: Settings) -> None:
    tune_allocator()
    asyncio.run(serve_jobs(settings))


async def serve_jobs(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Takes and processes jobs until `stop` is set (or SIGTERM / SIGINT arrives)."""
    stop = stop or _stop_on_signals()
    name = settings.service_instance or f"worker-{os.getpid()}"
    metrics = Metrics(settings.prometheus_multiproc_dir, name)
    async with (
        open_database(settings, metrics) as database,
        open_storage(settings, metrics) as storage,
        open_image_pool(settings, metrics) as images,
        open_queue(settings) as queue,
        open_timelines(settings, metrics) as timelines,
        contextlib.AsyncExitStack() as feed,
    ):
        work = JobWork(database, storage, images, settings, metrics)
        log.info("media worker ready", extra={"jobs_at_once": images.workers})
        if timelines is not None:  # FEED_MODE=push|hybrid: the fan-out jobs too
            fanout_queue = await feed.enter_async_context(open_fanout_queue(settings))
            fanning = serve_fanout(settings, database, timelines, fanout_queue, metrics, stop)
            feed.push_async_callback(_finish, asyncio.create_task(fanning))
        try:
            await _take_jobs(work, queue, images.workers, stop)
        finally:
            forget_this_process(metrics)
    log.info("media worker stopped")


async def _finish(task: asyncio.Task[None]) -> None:
    """The fan-out loop ends with the stop signal; it is awaited, or cancelled on an error."""
    if not task.done():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), RECEIVE_WAIT_SECONDS + 5)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _take_jobs(work: JobWork, queue: JobQueue, at_once: int, stop: asyncio.Event) -> None:
    running: set[asyncio.Task[None]] = set()
    stopping = asyncio.create_task(stop.wait())
    while not stop.is_set():
        if len(running) >= at_once:  # every image worker busy: wait for one to finish
            await asyncio.wait({*running, stopping}, return_when=asyncio.FIRST_COMPLETED)
            continue
        receiving = asyncio.create_task(queue.receive(at_once - len(running), RECEIVE_WAIT_SECONDS))
        await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not receiving.done():
            receiving.cancel()
            break
        try:
            jobs = receiving.result()
        except Exception as exc:  # the queue is down: ask again in a moment
            log.warning("could not take jobs: %s", type(exc).__name__)
            await asyncio.sleep(1)
            continue
        for job in jobs:
            task = asyncio.create_task(_handle(work, queue, job))
            running.add(task)
            task.add_done_callback(running.discard)
    stopping.cancel()
    if running:  # finish what was taken; what does not finish in time is delivered again
        await asyncio.wait(running, timeout=work.settings.shutdown_timeout)


async def _handle(work: JobWork, queue: JobQueue, job: Job) -> None:
    started = time.perf_counter()
    try:
        outcome = await media_jobs.process(work, job.subject_id)
    except Exception as exc:
        outcome = await _after_failure(work, queue, job, exc)
        if outcome == "retried":
            work.metrics.media_jobs.labels(outcome).inc()
            return
    try:
        await queue.done(job)
    except Exception as exc:  # delivered again later, and found done
        log.warning("could not delete job %s: %s", job.subject_id, type(exc).__name__)
    work.metrics.media_jobs.labels(outcome).inc()
    work.metrics.media_job_seconds.observe(time.perf_counter() - started)


async def _after_failure(work: JobWork, queue: JobQueue, job: Job, exc: Exception) -> str:
    """Try the job again later, or fail its media after its last attempt."""
    reason = exc.code if isinstance(exc, AppError) else type(exc).__name__
    if not isinstance(exc, AppError):
        log.exception("media job %s failed unexpectedly", job.subject_id)
    if job.attempt >= work.settings.job_max_attempts:
        log.error(
            "media job %s failed %s times (%s); giving up", job.subject_id, job.attempt, reason
        )
        with contextlib.suppress(Exception):  # if even this fails, the job comes back
            return await media_jobs.fail(work, job.subject_id, "processing_failed")
        return "retried"
    pause = min(MAX_BACKOFF_SECONDS, 2**job.attempt) * random.uniform(0.5, 1.0)  # noqa: S311
    log.warning("media job %s failed (%s); trying again in %.0f s", job.subject_id, reason, pause)
    with contextlib.suppress(Exception):  # else it comes back after the visibility timeout
        await queue.retry_in(job, max(1, round(pause)))
    return "retried"


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop
