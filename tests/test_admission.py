"""Admission control: the adaptive limit under a fake clock, the class's bounded wait, a live burst
refused fast while the admitted reads finish, and uploads refused by their predicted wait before
their body is read."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from pytest_aiohttp import AiohttpClient

from app.admission import (
    GAIN,
    MIN_SAMPLES,
    READS,
    UPLOADS,
    WINDOW_SECONDS,
    WRITES,
    AdaptiveLimit,
    AdmissionClass,
    ClassSettings,
    LoopLag,
    shed_share,
)
from app.errors import Overloaded
from app.keys import IMAGES
from app.main import create_app
from app.metrics import Metrics
from app.settings import Settings
from tests.helpers import Client, assert_error_shape, media_rows, sign_up, until, upload

CORPUS = Path(__file__).parent / "images"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def window(limit: AdaptiveLimit, clock: FakeClock, latency: float, *, in_flight: int) -> None:
    """One window of answers, each `latency` long, with `in_flight` requests at each start."""
    clock.now += WINDOW_SECONDS * 1.5
    for _ in range(MIN_SAMPLES):
        limit.observe(latency, in_flight)


def test_the_limit_falls_when_latency_passes_the_target_and_climbs_back_when_it_clears() -> None:
    clock = FakeClock()
    limit = AdaptiveLimit(target=0.02, initial=40, minimum=4, maximum=100, clock=clock)

    window(limit, clock, 0.022, in_flight=40)  # just over: the least decrease, 10%
    assert limit.limit == 36
    window(limit, clock, 0.2, in_flight=36)  # ten times over: halved, no further
    assert limit.limit == 18
    window(limit, clock, 0.03, in_flight=18)  # 1.5x over: by the ratio, 2/3
    assert limit.limit == 12
    for _ in range(10):
        window(limit, clock, 0.2, in_flight=12)
    assert limit.limit == 4  # never under the minimum

    for expected in range(5, 10):  # under the target while the limit is reached: one more each
        window(limit, clock, 0.005, in_flight=limit.limit)
        assert limit.limit == expected


def test_slow_answers_at_low_concurrency_do_not_cut_the_limit() -> None:
    """A process just started, or a dependency slow for everyone: fewer places would not help."""
    clock = FakeClock()
    limit = AdaptiveLimit(target=0.02, initial=32, minimum=4, maximum=100, clock=clock)
    for _ in range(5):
        window(limit, clock, 0.5, in_flight=10)  # under half the places in use
    assert limit.limit == 32
    window(limit, clock, 0.5, in_flight=16)
    assert limit.limit == 16


def test_the_limit_rises_only_when_it_held_requests_back() -> None:
    clock = FakeClock()
    limit = AdaptiveLimit(target=0.02, initial=10, minimum=1, maximum=11, clock=clock)
    for _ in range(5):
        window(limit, clock, 0.001, in_flight=3)  # fast, but demand is far under the limit
    assert limit.limit == 10
    for _ in range(5):
        window(limit, clock, 0.001, in_flight=10)
    assert limit.limit == 11  # the maximum


def test_the_limit_waits_for_a_whole_window_before_it_moves() -> None:
    clock = FakeClock()
    limit = AdaptiveLimit(target=0.02, initial=10, minimum=1, maximum=100, clock=clock)
    clock.now += WINDOW_SECONDS * 0.9
    for _ in range(100):  # many slow answers, but within one window
        limit.observe(1.0, 10)
    assert limit.limit == 10
    clock.now += WINDOW_SECONDS * 0.2
    limit.observe(1.0, 10)
    assert limit.limit == 5


def test_the_limit_waits_for_enough_answers_to_judge() -> None:
    clock = FakeClock()
    limit = AdaptiveLimit(target=0.02, initial=10, minimum=1, maximum=100, clock=clock)
    clock.now += WINDOW_SECONDS * 3
    for _ in range(MIN_SAMPLES - 1):  # a window's time, but too few answers
        limit.observe(1.0, 10)
    assert limit.limit == 10
    limit.observe(1.0, 10)
    assert limit.limit == 5


def test_one_slow_answer_in_ten_does_not_lower_the_limit() -> None:
    """The judge is the window's 90th percentile, so a single outlier is not overload."""
    clock = FakeClock()
    limit = AdaptiveLimit(target=0.02, initial=10, minimum=1, maximum=100, clock=clock)
    clock.now += WINDOW_SECONDS * 1.5
    for latency in [0.005] * 9 + [1.0]:
        limit.observe(latency, 5)
    assert limit.limit == 10


def test_loop_lag_pressure_builds_while_the_loop_is_behind_and_drains_when_it_catches_up() -> None:
    lag = LoopLag(threshold=0.01)
    for _ in range(20):
        lag.record(0.002)  # on time: no pressure
    assert lag.pressure == 0.0
    for _ in range(10):
        lag.record(0.03)  # three thresholds behind: the lag's EWMA climbs past it
    rising = lag.pressure
    assert 0 < rising < 10 * GAIN + 1e-9
    for _ in range(200):
        lag.record(0.03)
    assert lag.pressure == 1.0  # held behind: all the way
    for _ in range(50):
        lag.record(0.0)
    assert lag.pressure < 1.0
    for _ in range(200):
        lag.record(0.0)
    assert lag.pressure == 0.0


def test_under_pressure_uploads_are_shed_first_and_reads_last() -> None:
    assert [shed_share(0.0, c) for c in (UPLOADS, WRITES, READS)] == [0.0, 0.0, 0.0]
    assert [shed_share(0.25, c) for c in (UPLOADS, WRITES, READS)] == [0.5, 0.0, 0.0]
    assert [shed_share(0.5, c) for c in (UPLOADS, WRITES, READS)] == [1.0, 0.5, 0.0]
    assert [shed_share(0.75, c) for c in (UPLOADS, WRITES, READS)] == [1.0, 1.0, 0.5]
    assert [shed_share(1.0, c) for c in (UPLOADS, WRITES, READS)] == [1.0, 1.0, 1.0]


def admission_class(limit: int, max_wait: float, clock: FakeClock | None = None) -> AdmissionClass:
    config = ClassSettings(target=0.02, max_wait=max_wait, initial=limit, minimum=1, maximum=limit)
    return AdmissionClass("reads", config, Metrics(None, "test"), clock or FakeClock())


async def test_a_request_past_the_limit_waits_for_a_place_and_gets_the_first_one_freed() -> None:
    reads = admission_class(limit=1, max_wait=5.0)
    first_done = asyncio.Event()
    order: list[str] = []

    async def first() -> None:
        async with reads.admitted():
            order.append("first in")
            await first_done.wait()
        order.append("first out")

    async def second() -> None:
        async with reads.admitted():
            order.append("second in")

    one = asyncio.create_task(first())
    await asyncio.sleep(0)
    two = asyncio.create_task(second())
    await asyncio.sleep(0.01)
    assert order == ["first in"]
    assert reads.in_flight == 1
    first_done.set()
    await asyncio.gather(one, two)
    assert order == ["first in", "first out", "second in"]
    assert reads.in_flight == 0


async def test_a_request_that_cannot_get_a_place_in_time_is_refused_at_once() -> None:
    reads = admission_class(limit=1, max_wait=0.001)  # shorter than a place takes to free
    release = asyncio.Event()

    async def holder() -> None:
        async with reads.admitted():
            await release.wait()

    held = asyncio.create_task(holder())
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(Overloaded) as refused:
        async with reads.admitted():
            pytest.fail("admitted past the limit")
    assert loop.time() - started < 0.001 * 50  # refused by arithmetic, not by waiting
    assert refused.value.status == 503
    assert refused.value.headers() == {"Retry-After": "1"}
    release.set()
    await held
    async with reads.admitted():  # the place came back
        assert reads.in_flight == 1


async def test_a_waiter_past_its_wait_is_refused_and_leaves_the_queue() -> None:
    reads = admission_class(limit=1, max_wait=0.02)
    reads._typical = 0.0  # by the arithmetic, a place would come in time: it queues
    release = asyncio.Event()

    async def holder() -> None:
        async with reads.admitted():
            await release.wait()

    held = asyncio.create_task(holder())
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):
        async with reads.admitted():
            pytest.fail("admitted past the limit")
    release.set()
    await held
    assert reads.in_flight == 0
    async with reads.admitted():
        assert reads.in_flight == 1


async def test_a_cancelled_waiter_gives_back_the_place_it_was_handed() -> None:
    reads = admission_class(limit=1, max_wait=5.0)
    reads._typical = 0.0  # so that it queues
    release = asyncio.Event()
    waiting: list[asyncio.Task[None]] = []

    async def holder() -> None:
        async with reads.admitted():
            await release.wait()
        # The place has just been handed to the waiter, which has not run yet.
        waiting[0].cancel()

    async def waiter() -> None:
        async with reads.admitted():
            pytest.fail("a cancelled waiter ran")

    held = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiting.append(asyncio.create_task(waiter()))
    await asyncio.sleep(0)
    assert reads.in_flight == 1
    release.set()
    await held
    with pytest.raises(asyncio.CancelledError):
        await waiting[0]
    assert reads.in_flight == 0
    async with reads.admitted():
        assert reads.in_flight == 1


# --- live: the service under a burst -----------------------------------------------------


@pytest.fixture
def tight(settings: Settings) -> Settings:
    """Four reads at once per process, a 10 ms wait: a burst of 60 is about 3x what gets in."""
    return settings.with_overrides(
        admission_initial_limit=4,
        admission_min_limit=4,
        admission_max_limit=4,
        admission_read_wait=0.01,
        request_deadline=2.0,
    )


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def test_a_3x_burst_of_reads_gets_fast_503s_and_the_admitted_ones_finish(
    aiohttp_client: AiohttpClient, tight: Settings, clean_database: str
) -> None:
    client = await aiohttp_client(create_app(tight))
    reader = await sign_up(client, "reader")
    loop = asyncio.get_running_loop()

    async def read() -> tuple[int, float, aiohttp.ClientResponse, object]:
        started = loop.time()
        response = await client.get("/v1/feed", headers=reader.auth)
        body = await response.json()
        return response.status, loop.time() - started, response, body

    answers = []
    for _ in range(3):  # three bursts of 60 at once
        answers += await asyncio.gather(*(read() for _ in range(60)))

    statuses = [status for status, *_ in answers]
    assert set(statuses) <= {200, 503}
    admitted = statuses.count(200)
    refused = statuses.count(503)
    assert admitted >= 12, statuses
    assert refused >= 60, statuses
    for status, seconds, response, body in answers:
        assert "X-Request-ID" in response.headers
        if status == 503:
            assert_error_shape(body, "overloaded")
            assert response.headers["Retry-After"] == "1"
        else:
            assert seconds < tight.request_deadline
    # A refusal costs no query: the feed ran once per admitted read, never for a refused one.
    scraped = await (await client.get("/metrics")).text()
    assert metric(scraped, "monogram_feed_query_duration_seconds_count") == admitted
    assert metric(scraped, 'monogram_admission_rejected_total{class="reads"') == refused
    # The reads that get in are counted, the sign-up a write.
    assert metric(scraped, 'monogram_admission_admitted_total{class="reads"}') == admitted
    assert metric(scraped, 'monogram_admission_limit{class="reads"}') == 4
    # Once the burst has passed, reads are admitted again.
    status, *_ = await read()
    assert status == 200


async def test_probes_and_scrapes_are_never_refused(
    aiohttp_client: AiohttpClient, tight: Settings, clean_database: str
) -> None:
    app = create_app(tight.with_overrides(admission_initial_limit=1, admission_min_limit=1))
    client = await aiohttp_client(app)

    # Ready first, as a balancer waits for it: a cold pool's first connection, on a machine
    # loaded by the tiny bench, can take longer than READINESS_TIMEOUT, and that 503 would be
    # the truth about readiness, not a refusal.
    async def ready() -> bool:
        return (await client.get("/readyz")).status == 200

    await until(ready)
    answers = await asyncio.gather(
        *(client.get(path) for path in ["/healthz", "/readyz", "/metrics"] * 20)
    )
    refused = [(a.url.path, a.status, await a.text()) for a in answers if a.status != 200]
    assert refused == []


# --- uploads: admitted by their predicted wait for an image worker ---------------------


@pytest.fixture
async def one_worker(aiohttp_client: AiohttpClient, settings: Settings) -> Client:
    """One image worker, and no upload may expect to wait for it at all."""
    app = create_app(
        settings.with_overrides(
            thumbnail_workers=1, thumbnail_warm_start=True, image_wait_budget=0.0
        )
    )
    return await aiohttp_client(app)


async def test_an_upload_that_would_wait_for_a_worker_is_refused_before_its_body(
    one_worker: Client, clean_database: str
) -> None:
    client = one_worker
    user = await sign_up(client, "uploader")
    photo = (CORPUS / "sample.jpg").read_bytes()
    boundary = "monogram-admission"
    send_the_rest = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        yield photo[:1024]
        await send_the_rest.wait()
        yield photo[1024:]
        yield f"\r\n--{boundary}--\r\n".encode()

    # The first upload is admitted and holds its place while its body is still arriving.
    first = asyncio.create_task(
        client.post(
            "/v1/media",
            data=slow_body(),
            headers={**user.auth, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
    )
    await asyncio.sleep(0.2)
    assert not first.done()

    # A second that asks first (Expect: 100-continue) is refused without sending a byte.
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(photo), filename="b.jpg", content_type="image/jpeg")
    second = await client.post("/v1/media", data=form, headers=user.auth, expect100=True)
    assert second.status == 503
    assert_error_shape(await second.json(), "overloaded")
    assert "image workers" in (await second.json())["error"]["message"]
    assert second.headers["Retry-After"] == "1"
    assert second.headers["Connection"] == "close"
    assert "X-Request-ID" in second.headers

    # One that just sends is refused too, and its connection closed unread.
    try:
        third = await upload(client, user, photo)
        assert third.status == 503
        assert_error_shape(await third.json(), "overloaded")
    except aiohttp.ClientError:
        pass  # the server may close while the body is still on its way

    send_the_rest.set()
    assert (await first).status == 201
    assert len(await media_rows(clean_database)) == 1  # the refused left nothing behind
    # The worker is free again: the next upload is admitted.
    assert (await upload(client, user, photo)).status == 201
    scraped = await (await client.get("/metrics")).text()
    assert metric(scraped, "monogram_image_wait_predicted_seconds_count") >= 4


async def test_with_admission_control_off_uploads_queue_as_before(
    aiohttp_client: AiohttpClient, settings: Settings, clean_database: str
) -> None:
    app = create_app(
        settings.with_overrides(admission_control=False, thumbnail_workers=1, image_wait_budget=0.0)
    )
    client = await aiohttp_client(app)
    user = await sign_up(client, "queued")
    photo = (CORPUS / "sample.jpg").read_bytes()
    answers = await asyncio.gather(*(upload(client, user, photo) for _ in range(4)))
    assert [a.status for a in answers] == [201] * 4


def test_the_scheduling_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="IMAGE_WORKER_SCHEDULING"):
        Settings.from_env({"IMAGE_WORKER_SCHEDULING": "realtime"})


@pytest.mark.parametrize(
    ("scheduling", "policy", "niceness"), [("nice", "SCHED_OTHER", 10), ("idle", "SCHED_IDLE", 0)]
)
async def test_image_workers_yield_the_cores_as_configured(
    aiohttp_client: AiohttpClient, settings: Settings, scheduling: str, policy: str, niceness: int
) -> None:
    app = create_app(
        settings.with_overrides(
            thumbnail_workers=1, thumbnail_warm_start=True, image_worker_scheduling=scheduling
        )
    )
    await aiohttp_client(app)
    (pid,) = app[IMAGES].worker_pids()
    assert os.sched_getscheduler(pid) == getattr(os, policy)
    assert os.getpriority(os.PRIO_PROCESS, pid) - os.getpriority(os.PRIO_PROCESS, 0) == niceness
