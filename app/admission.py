"""Admission control: each class of route admits as many requests at once as its latency allows.

Past capacity, a queue that only grows makes every request slow, not only the excess. So each
route class (reads, writes, uploads) has a concurrency limit that follows the latency it
observes, AIMD against a target:
- each window (WINDOW_SECONDS and at least MIN_SAMPLES answers), the window's 90th percentile
  is compared with the class's target;
- over the target, the limit falls by the ratio target / p90 (at most halved, at least 10%),
  unless fewer than half its places were in use: then concurrency is not what made the
  answers slow (a process just started, a dependency slow for everyone);
- under it, and only if the limit was reached in the window, it rises by one.
A request that finds the limit reached waits in a short FIFO, at most the class's
`max_wait`; one that would not get a place in time by the queue's own arithmetic is refused at
once. A refusal is 503 `overloaded` with Retry-After, answered before authentication, the
body or any query: it costs the service a fraction of a millisecond.

A concurrency limit cannot see the queue a CPU-bound process builds in front of its handlers:
requests waiting in the event loop and the kernel's buffers are in no handler yet. So each
process also measures its event loop's lag (a probe every PROBE_SECONDS, smoothed), as CoDel
measures a queue's sojourn time, and an integral controller turns the lag's excess over
ADMISSION_LOOP_LAG into a pressure from 0 to 1 (LoopLag). New requests are refused at random
in a share that grows with the pressure, uploads first, then writes, reads last: when the
process falls behind, the feed keeps its CPU the longest.

The clock is a parameter so that tests drive the limit with a fake one (tests/test_admission.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from app.db import UNAVAILABLE_ERRORS
from app.errors import DatabaseUnavailable, Overloaded, StorageUnavailable
from app.keys import ADMISSION
from app.metrics import Metrics
from app.settings import Settings

Clock = Callable[[], float]

WINDOW_SECONDS = 0.1
MIN_SAMPLES = 10
# Latencies kept per window for its percentile; the rest of a busy window is not needed.
MAX_SAMPLES = 256
# The limit falls at least this much when the target is missed, and at most to a half.
LEAST_DECREASE = 0.9
MOST_DECREASE = 0.5

# A dependency that is down answers fast or slow whatever the load: its answers' times would
# only teach the limit something false (and keep it low once the dependency is back).
UNRELATED_TO_LOAD: tuple[type[BaseException], ...] = (
    DatabaseUnavailable,
    StorageUnavailable,
    *UNAVAILABLE_ERRORS,
)

PROBE_SECONDS = 0.005
LAG_WEIGHT = 0.3  # the smoothing of the lag's EWMA: a few probes
PUBLISH_EVERY = 20  # probes between updates of the lag and pressure gauges: 100 ms
GAIN = 0.01  # pressure per probe at a lag of twice the threshold: 0 to 1 in half a second

READS, WRITES, UPLOADS = "reads", "writes", "uploads"
# Why a request was refused: its class's limit (and wait), or the event loop's lag.
LIMIT, LOOP_LAG = "limit", "loop_lag"
REASONS = (LIMIT, LOOP_LAG)
CLASSES = (READS, WRITES, UPLOADS)
# The loop-lag pressure at which each class starts to be shed (see shed_share).
SHED_FROM = {UPLOADS: 0.0, WRITES: 0.25, READS: 0.5}
# What is never limited: probes and scrapes must answer while the service sheds load.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
UPLOAD_ROUTES = frozenset(
    {("POST", "/v1/media"), ("POST", "/v1/uploads"), ("POST", "/v1/uploads/{upload_id}/complete")}
)


def route_class(request: web.Request) -> str | None:
    """The class a request is admitted in, or None for the routes that are never limited."""
    if request.path in EXEMPT_PATHS or request.path.startswith("/static/"):
        return None
    resource = request.match_info.route.resource
    template = resource.canonical if resource is not None else request.path
    if (request.method, template) in UPLOAD_ROUTES:
        return UPLOADS
    return READS if request.method in ("GET", "HEAD") else WRITES


class AdaptiveLimit:
    """A concurrency limit moved by observed latency (AIMD against `target` seconds)."""

    def __init__(
        self, *, target: float, initial: int, minimum: int, maximum: int, clock: Clock
    ) -> None:
        self.target = target
        self.minimum = minimum
        self.maximum = maximum
        self.limit = max(minimum, min(initial, maximum))
        self._clock = clock
        self._window_started = clock()
        self._samples: list[float] = []
        self._reached = False  # whether the limit held anyone back in this window
        self._most_in_flight = 0

    def observe(self, latency: float, in_flight: int) -> None:
        """One answered request: its latency, and how many were in flight when it started."""
        if len(self._samples) < MAX_SAMPLES:
            self._samples.append(latency)
        self._reached |= in_flight >= self.limit
        self._most_in_flight = max(self._most_in_flight, in_flight)
        now = self._clock()
        if now - self._window_started >= WINDOW_SECONDS and len(self._samples) >= MIN_SAMPLES:
            self._adjust()
            self._window_started = now
            self._samples.clear()
            self._reached = False
            self._most_in_flight = 0

    def _adjust(self) -> None:
        samples = sorted(self._samples)
        p90 = samples[min(len(samples) - 1, math.ceil(0.9 * len(samples)) - 1)]
        if p90 > self.target and self._most_in_flight * 2 >= self.limit:
            factor = max(MOST_DECREASE, min(LEAST_DECREASE, self.target / p90))
            self.limit = max(self.minimum, math.floor(self.limit * factor))
        elif self._reached:
            self.limit = min(self.maximum, self.limit + 1)


@dataclass(frozen=True, slots=True)
class ClassSettings:
    target: float  # seconds: the p90 a window of admitted requests should stay under
    max_wait: float  # seconds a request may wait for a place before it is refused
    initial: int
    minimum: int
    maximum: int


class AdmissionClass:
    """A route class's limit and its short, bounded FIFO of requests waiting for a place."""

    def __init__(self, name: str, config: ClassSettings, metrics: Metrics, clock: Clock) -> None:
        self.name = name
        self.max_wait = config.max_wait
        self.limit = AdaptiveLimit(
            target=config.target,
            initial=config.initial,
            minimum=config.minimum,
            maximum=config.maximum,
            clock=clock,
        )
        self.in_flight = 0
        self._clock = clock
        self._waiting: deque[asyncio.Future[None]] = deque()
        # A request's usual time in service (EWMA): how long a place takes to come free.
        self._typical = config.target / 2
        self._admitted = metrics.admission_admitted.labels(name)
        self._rejected = {
            reason: metrics.admission_rejected.labels(name, reason) for reason in REASONS
        }
        self._limit_gauge = metrics.admission_limit.labels(name)
        self._in_flight_gauge = metrics.admission_in_flight.labels(name)
        self._limit_gauge.set(self.limit.limit)

    @asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """Runs the block with a place in the class, or raises Overloaded."""
        if self.in_flight < self.limit.limit and not self._waiting:
            self.in_flight += 1
        else:
            await self._wait_for_place()
        self._admitted.inc()
        self._in_flight_gauge.inc()
        started = self._clock()
        in_flight = self.in_flight
        load_told = True
        try:
            yield
        except UNRELATED_TO_LOAD:
            load_told = False
            raise
        finally:
            self.in_flight -= 1
            self._in_flight_gauge.dec()
            if load_told:
                latency = self._clock() - started
                self._typical += 0.1 * (latency - self._typical)
                self.limit.observe(latency, in_flight)
                self._limit_gauge.set(self.limit.limit)
            self._hand_on()

    def predicted_wait(self) -> float:
        """When a request joining the queue now would get its place, by the queue's arithmetic:
        places come free at about limit / typical latency a second."""
        ahead = len(self._waiting) + 1
        return ahead * self._typical / max(1, self.limit.limit)

    async def _wait_for_place(self) -> None:
        if self.predicted_wait() > self.max_wait:
            self.refuse()
        place = asyncio.get_running_loop().create_future()
        self._waiting.append(place)
        try:
            async with asyncio.timeout(self.max_wait):
                await place
        except TimeoutError:
            if place.done() and not place.cancelled():
                return  # the place was handed over just as the wait ran out: take it
            self._leave(place)
            self.refuse()
        except asyncio.CancelledError:
            if place.done() and not place.cancelled():
                self.in_flight -= 1  # handed a place as we were cancelled: pass it on
                self._hand_on()
            else:
                self._leave(place)
            raise

    def _leave(self, place: asyncio.Future[None]) -> None:
        # _hand_on may have dropped it already, cancelled, on its way past.
        with contextlib.suppress(ValueError):
            self._waiting.remove(place)

    def _hand_on(self) -> None:
        while self._waiting and self.in_flight < self.limit.limit:
            place = self._waiting.popleft()
            if not place.done():
                self.in_flight += 1
                place.set_result(None)

    def refuse(self, reason: str = LIMIT) -> None:
        self._rejected[reason].inc()
        raise Overloaded(f"the service is at capacity for {self.name}; try again shortly")


class LoopLag:
    """How far behind its schedule this process's event loop runs, and the pressure to shed
    that follows from it.

    `pressure` (0 to 1) is an integral controller: each probe moves it up by GAIN times how
    far the lag is over the threshold, in thresholds, and down as far under. It settles where
    the shed share holds the lag at the threshold, however much load that takes off, rather
    than at a fixed share for a given lag.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.lag = 0.0
        self.pressure = 0.0

    def record(self, late: float) -> None:
        self.lag += LAG_WEIGHT * (max(0.0, late) - self.lag)
        if self.threshold > 0:
            error = (self.lag - self.threshold) / self.threshold
            self.pressure = min(1.0, max(0.0, self.pressure + GAIN * max(-1.0, min(1.0, error))))

    async def probe(self, metrics: Metrics) -> None:
        """Forever: sleep PROBE_SECONDS, and record how late the wake-up came; the gauges are
        set every PUBLISH_EVERY probes."""
        for count in itertools.count():
            due = time.perf_counter() + PROBE_SECONDS
            await asyncio.sleep(PROBE_SECONDS)
            self.record(time.perf_counter() - due)
            if count % PUBLISH_EVERY == 0:
                metrics.loop_lag.set(self.lag)
                metrics.admission_pressure.set(self.pressure)


def shed_share(pressure: float, name: str) -> float:
    """The share of a class's new requests refused at this pressure: uploads first (all of
    them at 0.5), then writes (from 0.25, all at 0.75), reads last (from 0.5, all at 1)."""
    return min(1.0, max(0.0, (pressure - SHED_FROM[name]) / 0.5))


class Admission:
    """The classes of one service process (app key ADMISSION), and its loop's lag."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.enabled = settings.admission_control
        self.loop_lag = LoopLag(settings.admission_loop_lag)
        self._rng = rng or random.Random()  # noqa: S311 - a coin to shed by, not a secret
        waits = {
            READS: settings.admission_read_wait,
            WRITES: settings.admission_write_wait,
            UPLOADS: settings.admission_upload_wait,
        }
        targets = {
            READS: settings.admission_read_target,
            WRITES: settings.admission_write_target,
            UPLOADS: settings.admission_upload_target,
        }
        self.classes = {
            name: AdmissionClass(
                name,
                ClassSettings(
                    target=targets[name],
                    max_wait=waits[name],
                    initial=settings.admission_initial_limit,
                    minimum=settings.admission_min_limit,
                    maximum=settings.admission_max_limit,
                ),
                metrics,
                clock,
            )
            for name in CLASSES
        }

    def admitted(self, name: str) -> AbstractAsyncContextManager[None]:
        """A place in class `name`, or Overloaded: at once when the loop is behind, else by
        the class's limit."""
        share = shed_share(self.loop_lag.pressure, name)
        if share and self._rng.random() < share:
            self.classes[name].refuse(LOOP_LAG)
        return self.classes[name].admitted()


@web.middleware
async def admission_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    admission = request.app[ADMISSION]
    name = route_class(request) if admission.enabled else None
    if name is None:
        return await handler(request)
    async with admission.admitted(name):
        return await handler(request)
