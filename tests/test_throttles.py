"""Logins and sign-ups are limited per client address and per username before any hashing, and
each has hashing capacity of its own; behind a trusted balancer the client is the forwarded one."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from app.clients import client_address
from app.keys import CLIENT_ADDRESS, PASSWORDS
from app.logs import JsonAccessLogger
from app.main import create_app
from app.settings import Settings, SettingsError
from tests.helpers import PASSWORD, AiohttpClient, Client, assert_error_shape, sign_up


def limited(settings: Settings, **changes: Any) -> Settings:
    """The documented defaults for the limits, whatever the suite raised them to."""
    defaults = Settings()
    return settings.with_overrides(
        login_limit_per_address=defaults.login_limit_per_address,
        login_limit_per_username=defaults.login_limit_per_username,
        signup_limit_per_address=defaults.signup_limit_per_address,
        **changes,
    )


def count_hashing(client: Client) -> list[str]:
    """Records each password verification the app starts (our own code, wrapped)."""
    passwords = client.app[PASSWORDS]
    started: list[str] = []
    verify = passwords.verify

    async def counted(password_hash: str | None, password: str) -> bool:
        started.append(password)
        return await verify(password_hash, password)

    passwords.verify = counted  # type: ignore[method-assign]
    return started


async def login(client: Client, username: str, password: str, **headers: str) -> Any:
    return await client.post(
        "/v1/auth/token", json={"username": username, "password": password}, headers=headers
    )


async def test_wrong_passwords_for_one_user_hit_429_before_any_hashing(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(limited(settings)))
    await sign_up(client, "target")  # one login of the ten per minute
    hashed = count_hashing(client)

    statuses = [(await login(client, "target", f"guess {i}")).status for i in range(30)]

    assert statuses == [401] * 9 + [429] * 21
    assert len(hashed) == 9
    refused = await login(client, "target", PASSWORD)
    assert refused.status == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert_error_shape(await refused.json(), "rate_limited")


async def test_one_address_trying_many_usernames_is_limited(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(limited(settings)))
    per_address = Settings().login_limit_per_address
    statuses = [(await login(client, f"nobody{i}", "guess guess")).status for i in range(40)]
    assert statuses == [401] * per_address + [429] * (40 - per_address)


async def test_a_spoofed_forwarded_for_does_not_escape_the_limit_without_a_trusted_proxy(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(limited(settings)))
    statuses = [
        (
            await client.post(
                "/v1/users",
                json={"username": f"spoof{i}", "password": PASSWORD},
                headers={"X-Forwarded-For": f"203.0.113.{i}"},
            )
        ).status
        for i in range(12)
    ]
    assert statuses == [201] * 10 + [429] * 2


async def test_behind_a_trusted_balancer_the_forwarded_client_is_the_one_limited(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(limited(settings, trusted_proxies="127.0.0.1")))
    per_address = Settings().login_limit_per_address

    # Each forwarded address has a budget of its own; the peer (the balancer) has none to spend.
    for address in ("198.51.100.1", "198.51.100.2"):
        statuses = [
            (
                await login(client, f"someone{i}", "guess guess", **{"X-Forwarded-For": address})
            ).status
            for i in range(per_address + 1)
        ]
        assert statuses == [401] * per_address + [429]
    assert (await login(client, "someone", "guess guess")).status == 401


def test_the_access_log_names_the_forwarded_client_beside_the_peer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    request = make_mocked_request("POST", "/v1/auth/token")
    request[CLIENT_ADDRESS] = "198.51.100.7"
    caplog.set_level(logging.INFO, logger="test.access")
    JsonAccessLogger(logging.getLogger("test.access"), "").log(
        request, web.Response(status=401), 0.01
    )
    (record,) = caplog.records
    assert getattr(record, "client", None) == "198.51.100.7"
    assert getattr(record, "remote", None) == request.remote


def test_the_client_is_the_rightmost_address_no_trusted_proxy_added() -> None:
    trusted = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"))
    assert client_address("127.0.0.1", ["1.2.3.4, 10.0.0.5"], trusted) == "1.2.3.4"
    # The leftmost hop is whatever the client wrote: never believed past an untrusted hop.
    assert client_address("127.0.0.1", ["6.6.6.6, 1.2.3.4"], trusted) == "1.2.3.4"
    assert client_address("127.0.0.1", ["not-an-address"], trusted) == "127.0.0.1"
    assert client_address("127.0.0.1", [], trusted) == "127.0.0.1"
    assert client_address("5.6.7.8", ["1.2.3.4"], trusted) == "5.6.7.8"
    assert client_address(None, [], trusted) == "unknown"


def test_bad_limits_and_proxies_are_refused_at_start() -> None:
    with pytest.raises(SettingsError, match="TRUSTED_PROXIES"):
        Settings(trusted_proxies="the balancer")
    with pytest.raises(SettingsError, match="LOGIN_LIMIT_PER_USERNAME"):
        Settings(login_limit_per_username=0)


async def test_a_flood_of_sign_ups_does_not_starve_a_login(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    slow = settings.with_overrides(
        password_hash_time_cost=8,
        password_hash_memory_kib=32768,
        password_hash_workers=1,
        password_hash_queue=4,
    )
    client = await aiohttp_client(create_app(slow))
    await sign_up(client, "regular")
    loop = asyncio.get_running_loop()

    async def sign_up_timed(i: int) -> tuple[int, float]:
        answer = await client.post(
            "/v1/users", json={"username": f"flood{i}", "password": PASSWORD}
        )
        return answer.status, loop.time()

    flood = [asyncio.create_task(sign_up_timed(i)) for i in range(20)]
    await asyncio.sleep(0.05)  # the sign-up lane is full and shedding
    response = await login(client, "regular", PASSWORD)
    login_answered = loop.time()
    answers = [await task for task in flood]
    statuses = [status for status, _ in answers]

    assert response.status == 200
    assert 503 in statuses  # the flood was shed on its own lane
    assert statuses.count(201) == 4  # the lane's queue, hashed one after another
    # The login's hash ran on its own lane, not behind the four sign-ups: at least two of them
    # were still being hashed when it was answered. Judged by order, not by time, so that a
    # machine busy with other work slows both lanes alike.
    stored = sorted(at for status, at in answers if status == 201)
    assert login_answered < stored[2]


async def test_the_token_response_is_never_cached(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings))
    await sign_up(client, "cachy")
    response = await login(client, "cachy", PASSWORD)
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
