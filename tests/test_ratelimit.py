"""Each user has a token bucket; past it, 429 with Retry-After, and other users are unaffected."""

from __future__ import annotations

import asyncio

import pytest

from app import ratelimit
from app.main import create_app
from app.ratelimit import RateLimiter
from app.settings import Settings
from tests.helpers import AiohttpClient, assert_error_shape, sign_up


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_allowed_then_refilled_at_the_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=10.0, burst=5, clock=clock)
    assert [limiter.take(1) for _ in range(5)] == [0.0] * 5
    assert limiter.take(1) == 0.1  # one token comes back every 1/rate seconds
    clock.now += 0.1
    assert limiter.take(1) == 0.0
    assert limiter.take(1) > 0
    clock.now += 60  # idle for long: back to a full burst, never more
    assert [limiter.take(1) for _ in range(5)] == [0.0] * 5
    assert limiter.take(1) > 0


def test_refused_requests_do_not_spend_tokens() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=1.0, burst=1, clock=clock)
    assert limiter.take(7) == 0.0
    for _ in range(50):
        assert limiter.take(7) > 0
    clock.now += 1.0
    assert limiter.take(7) == 0.0


def test_users_have_separate_buckets() -> None:
    limiter = RateLimiter(rate=1.0, burst=2, clock=FakeClock())
    assert [limiter.take(1) for _ in range(3)][-1] > 0
    assert limiter.take(2) == 0.0


def test_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=1.0, burst=1, clock=clock)
    monkeypatch.setattr(ratelimit, "MAX_BUCKETS", 100)
    for user in range(1000):
        limiter.take(user)
        clock.now += 0.001
    assert len(limiter._buckets) <= 101


async def test_a_user_past_the_limit_gets_429_while_another_is_served(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(
        create_app(settings.with_overrides(rate_limit_per_second=2.0, rate_limit_burst=5))
    )
    greedy, patient = await sign_up(client, "greedy"), await sign_up(client, "patient")

    responses = await asyncio.gather(
        *(client.get("/v1/users/greedy", headers=greedy.auth) for _ in range(12))
    )
    statuses = [r.status for r in responses]
    assert statuses.count(200) == 5
    assert statuses.count(429) == 7
    refused = next(r for r in responses if r.status == 429)
    assert int(refused.headers["Retry-After"]) >= 1
    assert_error_shape(await refused.json(), "rate_limited")

    assert (await client.get("/v1/users/greedy", headers=patient.auth)).status == 200
    await asyncio.sleep(0.6)  # one token back for greedy
    assert (await client.get("/v1/users/greedy", headers=greedy.auth)).status == 200


def test_an_allowance_says_what_is_left_and_when_the_bucket_is_full_again() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=2.0, burst=4, clock=clock)
    assert limiter.spend(1) == (0.0, 3.0, 0.5)
    assert limiter.spend(1) == (0.0, 2.0, 1.0)
    clock.now += 0.25
    assert limiter.spend(1) == (0.0, 1.5, 1.25)


async def test_every_authenticated_response_carries_the_rate_limit_headers(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(
        create_app(settings.with_overrides(rate_limit_per_second=1.0, rate_limit_burst=3))
    )
    ada = await sign_up(client, "ada")
    seen = []
    for path in ("/v1/me", "/v1/posts/999", "/v1/me", "/v1/me"):  # a 404 counts too
        response = await client.get(path, headers=ada.auth)
        seen.append(
            (
                response.status,
                response.headers["X-RateLimit-Limit"],
                response.headers["X-RateLimit-Remaining"],
            )
        )
        reset = int(response.headers["X-RateLimit-Reset"])
        assert 1 <= reset <= 3
    assert seen[0] == (200, "3", "2")
    assert seen[1][:2] == (404, "3")
    assert seen[3] == (429, "3", "0")
    assert (await client.get("/healthz")).headers.get("X-RateLimit-Limit") is None
