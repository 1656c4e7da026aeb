"""An open-loop load generator: requests start on a schedule, whatever the server is doing.

A closed loop (each client waits for its answer before the next request) slows down with
the server and hides how slow it got. Here arrivals are a Poisson process at the offered
rate, and each latency is counted from the moment the request was due, so time spent
waiting for a free client connection counts too. Every run is bounded in requests, time
and requests in flight.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.histogram import Histogram


@dataclass(frozen=True, slots=True)
class Answer:
    status: int  # 0: no answer (connection failed)
    sent: int  # request body bytes
    received: int  # response body bytes


Operation = Callable[[aiohttp.ClientSession], Awaitable[Answer]]


@dataclass
class OperationStats:
    latency: Histogram = field(default_factory=Histogram)
    ok_latency: Histogram = field(default_factory=Histogram)
    rejected_latency: Histogram = field(default_factory=Histogram)  # the 503s: shed load
    statuses: Counter[int] = field(default_factory=Counter)
    sent: int = 0
    received: int = 0

    def record(self, latency: float, answer: Answer) -> None:
        self.latency.record(latency)
        if 200 <= answer.status < 300:
            self.ok_latency.record(latency)
        elif answer.status == 503:
            self.rejected_latency.record(latency)
        self.statuses[answer.status] += 1
        self.sent += answer.sent
        self.received += answer.received

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)

    def summary(self, seconds: float) -> dict[str, Any]:
        errors = self.errors
        return {
            **self.latency.summary_ms(),
            "ok": self.latency.count - errors,
            "errors": errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "throughput_per_s": round((self.latency.count - errors) / seconds, 1),
            "bytes_in_per_s": round(self.sent / seconds),
            "bytes_out_per_s": round(self.received / seconds),
        }


@dataclass
class StepResult:
    offered_rate: float
    seconds: float
    operations: dict[str, OperationStats]
    dropped: int  # arrivals refused because MAX_IN_FLIGHT requests were already waiting
    # How late after its due time each request left the load generator (its own lag).
    send_lag: Histogram = field(default_factory=Histogram)

    def summary(self) -> dict[str, Any]:
        return {
            "offered_rate": self.offered_rate,
            "seconds": round(self.seconds, 2),
            "dropped": self.dropped,
            "operations": {k: v.summary(self.seconds) for k, v in self.operations.items()},
        }


async def open_loop(
    session: aiohttp.ClientSession,
    mix: list[tuple[str, float, Operation]],
    rate: float,
    seconds: float,
    *,
    max_in_flight: int = 512,
    rng: random.Random | None = None,
) -> StepResult:
    """Offer `rate` requests per second for `seconds`, picking each from the weighted mix."""
    rng = rng or random.Random(1)
    names = [name for name, _, _ in mix]
    weights = [weight for _, weight, _ in mix]
    calls = {name: call for name, _, call in mix}
    stats = {name: OperationStats() for name in names}
    in_flight: set[asyncio.Task[None]] = set()
    dropped = 0
    started = time.perf_counter()
    due = started

    send_lag = Histogram()

    async def one(name: str, due_at: float) -> None:
        # How late the load generator itself sends (its own loop, on cores it shares).
        send_lag.record(time.perf_counter() - due_at)
        try:
            answer = await calls[name](session)
        except (aiohttp.ClientError, TimeoutError):
            answer = Answer(0, 0, 0)
        # From when it was due: queueing counts.
        stats[name].record(time.perf_counter() - due_at, answer)

    end = started + seconds
    progress = asyncio.create_task(_report_progress(stats, rate, started, end))
    while True:
        due += rng.expovariate(rate)
        if due >= end:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(in_flight) >= max_in_flight:
            dropped += 1
            continue
        task = asyncio.create_task(one(rng.choices(names, weights)[0], due))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.wait(in_flight, timeout=30)
        for task in in_flight:
            task.cancel()
    progress.cancel()
    return StepResult(rate, time.perf_counter() - started, stats, dropped, send_lag)


PROGRESS_EVERY = 1.0  # seconds between progress lines


async def _report_progress(
    stats: dict[str, OperationStats], rate: float, started: float, end: float
) -> None:
    """A line a second on stderr while a step runs: a long run never looks hung."""
    while True:
        await asyncio.sleep(PROGRESS_EVERY)
        now = time.perf_counter()
        parts = []
        for name, entry in stats.items():
            if not entry.latency.count:
                continue
            parts.append(
                f"{name} {entry.latency.count / (now - started):.0f}/s "
                f"p99 {entry.latency.percentile(99) * 1000:.0f} ms, {entry.errors} errors"
            )
        left = max(0.0, end - now)
        print(
            f"  {rate:g}/s offered, {left:.0f} s left: {'; '.join(parts) or 'no answer yet'}",
            file=sys.stderr,
            flush=True,
        )


@dataclass
class BurstResult:
    operations: dict[str, OperationStats]
    seconds: float  # until the last answer
    answers: list[tuple[str, float, int]]  # (operation, seconds after the start, status)


async def burst(session: aiohttp.ClientSession, calls: dict[str, list[Operation]]) -> BurstResult:
    """Every call of every operation at once: their stats, and when each was answered."""
    stats = {name: OperationStats() for name in calls}
    answers: list[tuple[str, float, int]] = []
    started = time.perf_counter()

    async def one(name: str, call: Operation) -> None:
        try:
            answer = await call(session)
        except (aiohttp.ClientError, TimeoutError):
            answer = Answer(0, 0, 0)
        latency = time.perf_counter() - started
        stats[name].record(latency, answer)
        answers.append((name, latency, answer.status))

    await asyncio.gather(*(one(name, call) for name, group in calls.items() for call in group))
    return BurstResult(stats, time.perf_counter() - started, sorted(answers, key=lambda a: a[1]))
