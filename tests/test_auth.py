"""Bearer tokens: only ours, HS256, unexpired, with every claim; password hashing off the loop."""

from __future__ import annotations

import asyncio
import base64
import statistics
import time
import uuid
from typing import Any

import jwt
import orjson
import pytest
from aiohttp import web

from app.main import create_app
from app.settings import Settings
from tests.helpers import (
    PASSWORD,
    TEST_JWT_SECRET,
    AiohttpClient,
    Client,
    assert_error_shape,
    sign_up,
)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "sub": "1",
        "key": str(uuid.uuid4()),
        "iat": now,
        "exp": now + 600,
        "iss": "monogram",
        "aud": "monogram-api",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def unsigned(payload: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


async def get_me(client: Client, headers: dict[str, str]) -> web.Response:
    return await client.get("/v1/users/someone", headers=headers)  # type: ignore[return-value]


async def test_a_real_token_is_accepted(client: Client) -> None:
    me = await sign_up(client, "someone")
    response = await get_me(client, me.auth)
    assert response.status == 200


FORGED = {
    "signed with another key": jwt.encode(
        claims(), "another-secret-" + "y" * 40, algorithm="HS256"
    ),
    "alg none": unsigned(claims()),
    "alg none, no signature dot": unsigned(claims())[:-1],
    "expired": jwt.encode(claims(exp=int(time.time()) - 60), TEST_JWT_SECRET, algorithm="HS256"),
    "wrong issuer": jwt.encode(claims(iss="someone-else"), TEST_JWT_SECRET, algorithm="HS256"),
    "wrong audience": jwt.encode(claims(aud="other-api"), TEST_JWT_SECRET, algorithm="HS256"),
    "no exp": jwt.encode(claims(exp=None), TEST_JWT_SECRET, algorithm="HS256"),
    "no iat": jwt.encode(claims(iat=None), TEST_JWT_SECRET, algorithm="HS256"),
    "no sub": jwt.encode(claims(sub=None), TEST_JWT_SECRET, algorithm="HS256"),
    "no iss": jwt.encode(claims(iss=None), TEST_JWT_SECRET, algorithm="HS256"),
    "no aud": jwt.encode(claims(aud=None), TEST_JWT_SECRET, algorithm="HS256"),
    "no key": jwt.encode(claims(key=None), TEST_JWT_SECRET, algorithm="HS256"),
    "key not a key": jwt.encode(claims(key="admin"), TEST_JWT_SECRET, algorithm="HS256"),
    "a key that is not the account's": jwt.encode(claims(), TEST_JWT_SECRET, algorithm="HS256"),
    "sub not a user id": jwt.encode(claims(sub="admin"), TEST_JWT_SECRET, algorithm="HS256"),
    "HS512 with our key": jwt.encode(claims(), TEST_JWT_SECRET, algorithm="HS512"),
    "malformed": "not.a.token",
    "garbage": "%%%%",
    "over-long": "a" * 5000,
}


@pytest.mark.parametrize("kind", list(FORGED))
async def test_bad_tokens_are_401_with_www_authenticate(client: Client, kind: str) -> None:
    await sign_up(client, "someone")
    response = await get_me(client, {"Authorization": f"Bearer {FORGED[kind]}"})
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    body = await response.json()
    assert_error_shape(body, "token_expired" if kind == "expired" else "invalid_token")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer  "},
    ],
)
async def test_missing_or_non_bearer_credentials_are_401(
    client: Client, headers: dict[str, str]
) -> None:
    response = await get_me(client, headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="monogram"')
    assert (await response.json())["error"]["code"] in {"unauthorized", "invalid_token"}


async def test_a_token_within_the_leeway_still_works(client: Client) -> None:
    me = await sign_up(client, "someone")
    key = jwt.decode(me.token, options={"verify_signature": False})["key"]
    late = claims(sub=str(me.id), key=key, exp=int(time.time()) - 3)
    token = jwt.encode(late, TEST_JWT_SECRET, "HS256")
    assert (await get_me(client, {"Authorization": f"Bearer {token}"})).status == 200


async def test_health_and_sign_up_need_no_token(client: Client) -> None:
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200


async def test_unknown_routes_stay_404_without_a_token(client: Client) -> None:
    assert (await client.get("/v1/nothing-here")).status == 404


# --- argon2 off the event loop, at the real cost ----------------------------------------


@pytest.fixture
def real_cost_settings(settings: Settings) -> Settings:
    defaults = Settings()
    return settings.with_overrides(
        password_hash_time_cost=defaults.password_hash_time_cost,
        password_hash_memory_kib=defaults.password_hash_memory_kib,
    )


async def test_hashing_never_blocks_the_event_loop(
    aiohttp_client: AiohttpClient, real_cost_settings: Settings
) -> None:
    client = await aiohttp_client(create_app(real_cost_settings))
    await sign_up(client, "hasher")
    login = {"username": "hasher", "password": PASSWORD}

    started = time.perf_counter()
    await client.post("/v1/auth/token", json=login)
    one_login = time.perf_counter() - started

    gaps: list[float] = []

    async def tick() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    logins = [asyncio.create_task(client.post("/v1/auth/token", json=login)) for _ in range(6)]
    await asyncio.sleep(one_login / 2)
    health = await client.get("/healthz")
    assert health.status == 200
    assert not all(task.done() for task in logins), "logins should still be hashing"
    statuses = [r.status for r in await asyncio.gather(*logins)]
    ticker.cancel()

    assert statuses == [200] * 6
    # Six hashes on the loop would stall it for whole hash times; on threads it keeps ticking.
    assert max(gaps) < one_login / 2, (max(gaps), one_login)


async def test_an_unknown_user_costs_what_a_wrong_password_costs(
    aiohttp_client: AiohttpClient, real_cost_settings: Settings
) -> None:
    client = await aiohttp_client(create_app(real_cost_settings))
    await sign_up(client, "victim")

    async def timed(username: str) -> float:
        started = time.perf_counter()
        response = await client.post(
            "/v1/auth/token", json={"username": username, "password": "wrong password"}
        )
        assert response.status == 401
        return time.perf_counter() - started

    wrong_password = statistics.median([await timed("victim") for _ in range(5)])
    unknown_user = statistics.median([await timed("nobody_here") for _ in range(5)])
    # Without the decoy hash an unknown user answers ~100x faster; with it, about the same.
    assert 0.5 < unknown_user / wrong_password < 2.0, (unknown_user, wrong_password)


async def test_too_many_waiting_logins_are_shed_with_503(
    aiohttp_client: AiohttpClient, real_cost_settings: Settings
) -> None:
    settings = real_cost_settings.with_overrides(password_hash_workers=1, password_hash_queue=2)
    client = await aiohttp_client(create_app(settings))
    await sign_up(client, "popular")
    login = {"username": "popular", "password": PASSWORD}
    responses = await asyncio.gather(*(client.post("/v1/auth/token", json=login) for _ in range(6)))
    statuses = sorted(r.status for r in responses)
    assert statuses.count(200) >= 2
    assert 503 in statuses
    shed = next(r for r in responses if r.status == 503)
    assert shed.headers["Retry-After"] == "1"
    assert_error_shape(await shed.json(), "overloaded")
