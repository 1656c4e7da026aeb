"""Every resource the service holds, opened at start and closed at stop, in one place.

Each `*_ctx` plugs into aiohttp's cleanup contexts (app/main.py lists them in order): it
opens the resource with the work module's own opener, which needs no web app, stores it
under its typed key, and closes it when the app stops. Closed in reverse order; a
resource is closed only if it opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from aiohttp import web

from app.db import open_database
from app.deletes import retry_on_schedule
from app.fanout import FanOut
from app.images import open_image_pool
from app.keys import (
    ADMISSION,
    DATABASE,
    FANOUT,
    IMAGES,
    METRICS,
    PASSWORDS,
    QUEUE,
    SETTINGS,
    STORAGE,
    TIMELINES,
    UPLOAD_BUDGET,
)
from app.memory import trim_when_idle
from app.metrics import forget_this_process, sample_database, sample_media_queue
from app.passwords import open_passwords
from app.queue import open_fanout_queue, open_queue
from app.storage import open_storage
from app.sweep import run_scheduled
from app.timelines import open_timelines

log = logging.getLogger(__name__)


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_database(app[SETTINGS], app[METRICS]) as database:
        app[DATABASE] = database
        yield


async def admission_ctx(app: web.Application) -> AsyncIterator[None]:
    """The probe of the event loop's lag that admission control sheds load by."""
    async with _background(app[ADMISSION].loop_lag.probe(app[METRICS]), "loop-lag-probe"):
        yield


async def metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    async with _background(sample_database(app[DATABASE], app[METRICS]), "metrics-sampler"):
        yield
    forget_this_process(app[METRICS])


async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_storage(app[SETTINGS], app[METRICS]) as storage:
        app[STORAGE] = storage
        yield


async def queue_ctx(app: web.Application) -> AsyncIterator[None]:
    """The media job queue V1 completes send to, and its depth sampled for /metrics."""
    async with open_queue(app[SETTINGS]) as queue:
        app[QUEUE] = queue
        sampler = sample_media_queue(app[DATABASE], queue, app[METRICS])
        async with _background(sampler, "queue-sampler"):
            yield


async def feed_ctx(app: web.Application) -> AsyncIterator[None]:
    """FEED_MODE's resources: the timelines in Redis and the fan-out job queue (push and
    hybrid), none in pull mode. The mode is logged and labels a gauge on /metrics."""
    settings = app[SETTINGS]
    mode = settings.feed_mode
    app[METRICS].feed_mode.labels(mode).set(1)
    log.info("feed mode %s", mode, extra={"feed_mode": mode})
    async with contextlib.AsyncExitStack() as stack:
        app[TIMELINES] = await stack.enter_async_context(open_timelines(settings, app[METRICS]))
        app[FANOUT] = None
        if mode != "pull":
            queue = await stack.enter_async_context(open_fanout_queue(settings))
            app[FANOUT] = FanOut(queue, mode, settings.whale_followers)
        yield


async def passwords_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_passwords(app[SETTINGS]) as passwords:
        app[PASSWORDS] = passwords
        yield


async def images_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_image_pool(app[SETTINGS], app[METRICS]) as images:
        app[IMAGES] = images
        yield


async def memory_ctx(app: web.Application) -> AsyncIterator[None]:
    """Memory that finished uploads used, given back once none is under way."""
    trims = trim_when_idle(app[UPLOAD_BUDGET], [app[IMAGES].trim_handoff])
    async with _background(trims, "memory-trim"):
        yield


async def sweeps_ctx(app: web.Application) -> AsyncIterator[None]:
    """The scheduled sweeps and deletion retries, as tasks of the service's own."""
    settings = app[SETTINGS]
    async with contextlib.AsyncExitStack() as stack:
        if settings.sweep_interval > 0:
            sweeps = run_scheduled(app[DATABASE], app[STORAGE], app[QUEUE], settings, app[METRICS])
            await stack.enter_async_context(_background(sweeps, "sweeps"))
        if settings.deletion_retry_interval > 0:
            retries = retry_on_schedule(app[DATABASE], app[STORAGE], settings, app[METRICS])
            await stack.enter_async_context(_background(retries, "deletion-retries"))
        yield


@contextlib.asynccontextmanager
async def _background(work: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    """`work` as a task while the block runs; cancelled and awaited when it ends."""
    task = asyncio.create_task(work, name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
