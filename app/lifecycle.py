"""How a service process stops without failing a request.

On SIGTERM (or SIGINT):
1. drain: for SHUTDOWN_DRAIN seconds /readyz answers 503 and every response closes its
   connection, while requests are still served, so a balancer's health check takes the
   process out of rotation and no idle kept-alive connection is left behind;
2. the listener closes, and requests in flight (uploads whose bodies are still arriving
   among them) get SHUTDOWN_TIMEOUT to finish;
3. aiohttp's own shutdown closes the connections, then the pool, the S3 client and the
   image workers close (the app's cleanup contexts).

Step 2 waits for the requests itself because aiohttp's shutdown stops reading from
every connection at once: an upload whose body was still arriving would stall there
until it timed out (aiohttp issue #2298).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web
from aiohttp.typedefs import Handler

from app.keys import LIFECYCLE
from app.logs import JsonAccessLogger
from app.settings import Settings

log = logging.getLogger(__name__)

# What aiohttp's shutdown leaves to requests still running after step 2, before it
# cancels them: step 2 has had the real grace period already.
LAST_GRACE_SECONDS = 1.0


class Lifecycle:
    """Whether the process is draining, and how many requests are in flight."""

    def __init__(self) -> None:
        self.draining = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def request_started(self) -> None:
        self._in_flight += 1
        self._idle.clear()

    def request_finished(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def wait_until_idle(self, seconds: float) -> bool:
        """True once no request is in flight; False if some still are after `seconds`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._idle.wait()
        return self._idle.is_set()


@web.middleware
async def in_flight_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    lifecycle = request.app[LIFECYCLE]
    lifecycle.request_started()
    try:
        return await handler(request)
    finally:
        lifecycle.request_finished()


async def close_connection_while_draining(
    request: web.Request, response: web.StreamResponse
) -> None:
    if request.app[LIFECYCLE].draining:
        # Headers are computed before this hook runs: set the one that tells the client.
        response.force_close()
        response.headers["Connection"] = "close"


async def serve_until_signalled(app: web.Application, settings: Settings) -> None:
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log_class=JsonAccessLogger,
        shutdown_timeout=LAST_GRACE_SECONDS,
        # Counted from the connection's start or its last response: a client that has not
        # sent a whole request head by then (slowloris) is cut off.
        keepalive_timeout=settings.idle_timeout,
    )
    await runner.setup()
    signals = asyncio.Queue[signal.Signals]()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, signals.put_nowait, signum)
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        log.info("listening", extra={"url": f"http://{settings.host}:{settings.port}"})
        received = await signals.get()
        await _drain(app, settings, received, signals)
        await site.stop()
        lifecycle = app[LIFECYCLE]
        log.info(
            "listener closed; finishing requests in flight",
            extra={"in_flight": lifecycle.in_flight, "grace_seconds": settings.shutdown_timeout},
        )
        if not await lifecycle.wait_until_idle(settings.shutdown_timeout):
            log.warning(
                "requests still in flight after the grace period are cut off",
                extra={"in_flight": lifecycle.in_flight},
            )
    finally:
        await runner.cleanup()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("stopped")


async def _drain(
    app: web.Application,
    settings: Settings,
    received: signal.Signals,
    signals: asyncio.Queue[signal.Signals],
) -> None:
    """Stay in service, failing /readyz, for SHUTDOWN_DRAIN; a second signal ends it early."""
    app[LIFECYCLE].draining = True
    log.info("draining", extra={"signal": received.name, "drain_seconds": settings.shutdown_drain})
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(settings.shutdown_drain):
            await signals.get()
