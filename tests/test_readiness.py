"""/readyz tells a load balancer the truth fast, and outages become 503s, never hangs or 500s."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import aiohttp
from aiohttp import web

from app.auth import public
from app.devstack.postgres import EmbeddedPostgres
from app.devstack.s3 import EmbeddedS3
from app.keys import DATABASE
from app.main import create_app
from app.migrations import migrate
from app.settings import Settings
from app.storage import ensure_bucket
from tests.helpers import (
    AiohttpClient,
    assert_error_shape,
    free_port,
    refuses_connections,
    service_process,
    settings_for,
)


@public
async def count_users(request: web.Request) -> web.Response:
    """A route that needs the database, as every API route will."""
    async with request.app[DATABASE].connection() as conn:
        count = await conn.fetchval("SELECT count(*) FROM users")
    return web.json_response({"users": count})


def app_with_db_route(settings: Settings) -> web.Application:
    app = create_app(settings)
    app.router.add_get("/test/users", count_users)
    return app


async def test_ready_when_postgresql_and_s3_answer(client: AiohttpClient) -> None:
    response = await client.get("/readyz")  # type: ignore[attr-defined]
    assert response.status == 200
    assert await response.json() == {"status": "ready", "checks": {"postgresql": "ok", "s3": "ok"}}


async def test_probes_that_arrive_together_share_one_check(
    aiohttp_client: AiohttpClient, settings: Settings, clean_database: str
) -> None:
    """Thirty probes at once on a cold pool: one connection opened, not thirty racing to
    open within READINESS_TIMEOUT on a loaded machine (a fresh-clone CI run saw one lose)."""
    quiet = settings.with_overrides(sweep_interval=0, deletion_retry_interval=0)
    client = await aiohttp_client(create_app(quiet))
    pool = client.app[DATABASE].pool
    answers = await asyncio.gather(*(client.get("/readyz") for _ in range(30)))
    assert [a.status for a in answers] == [200] * 30
    # The probes' one, and at most one for each of the two /metrics samplers (each probe on
    # its own opened 32, the pool's whole size).
    assert pool.get_size() <= 3
    # Shared while under way, never kept: the next probe asks again.
    again = await client.get("/readyz")
    assert again.status == 200


async def test_postgresql_stopped_gives_fast_503s_and_the_pool_recovers_after(
    aiohttp_client: AiohttpClient,
    fresh_postgres: EmbeddedPostgres,
    s3_server: EmbeddedS3,
    bucket: str,
) -> None:
    await migrate(fresh_postgres.dsn)
    client = await aiohttp_client(
        app_with_db_route(settings_for(fresh_postgres, s3_server, bucket))
    )
    # Warm connections that the stop will break under the pool's feet.
    warm = await asyncio.gather(*(client.get("/test/users") for _ in range(4)))
    assert [r.status for r in warm] == [200] * 4

    fresh_postgres.stop()

    started = time.monotonic()
    ready = await client.get("/readyz")
    assert time.monotonic() - started < 2.0
    assert ready.status == 503
    assert ready.headers["Retry-After"] == "1"
    body = await ready.json()
    assert_error_shape({"error": body["error"]}, "not_ready")
    assert "postgresql" in body["error"]["message"]
    assert body["checks"]["postgresql"] != "ok"
    assert body["checks"]["s3"] == "ok"

    for _ in range(3):  # broken pooled connections and new connects alike
        started = time.monotonic()
        response = await client.get("/test/users")
        assert time.monotonic() - started < 2.0
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        assert_error_shape(await response.json(), "database_unavailable")

    fresh_postgres.start()

    assert (await client.get("/readyz")).status == 200
    recovered = await asyncio.gather(*(client.get("/test/users") for _ in range(4)))
    assert [r.status for r in recovered] == [200] * 4


async def test_s3_down_is_named_by_readyz(
    aiohttp_client: AiohttpClient, clean_database: str, postgres: EmbeddedPostgres
) -> None:
    s3 = EmbeddedS3(free_port())
    s3.start()
    try:
        settings = settings_for(postgres, s3, "photos")
        await ensure_bucket(settings)
        client = await aiohttp_client(create_app(settings))
        assert (await client.get("/readyz")).status == 200
    finally:
        s3.stop()

    started = time.monotonic()
    response = await client.get("/readyz")
    assert time.monotonic() - started < 2.0
    assert response.status == 503
    body = await response.json()
    assert body["error"]["message"] == "not ready: s3 unavailable"
    assert body["checks"]["postgresql"] == "ok"


async def test_a_missing_bucket_is_not_ready(
    aiohttp_client: AiohttpClient,
    clean_database: str,
    postgres: EmbeddedPostgres,
    s3_server: EmbeddedS3,
) -> None:
    client = await aiohttp_client(create_app(settings_for(postgres, s3_server, "never-created")))
    response = await client.get("/readyz")
    assert response.status == 503
    assert (await response.json())["checks"]["s3"] != "ok"


async def test_an_exhausted_pool_answers_503_busy_instead_of_queueing_forever(
    aiohttp_client: AiohttpClient,
    clean_database: str,
    postgres: EmbeddedPostgres,
    s3_server: EmbeddedS3,
    bucket: str,
) -> None:
    settings = settings_for(postgres, s3_server, bucket).with_overrides(
        db_max_connections=12, db_reserved_connections=10, db_acquire_timeout=0.3
    )
    assert settings.db_pool_max == 2
    release = asyncio.Event()

    @public
    async def hold_a_connection(request: web.Request) -> web.Response:
        async with request.app[DATABASE].connection() as conn:
            await conn.fetchval("SELECT 1")
            await release.wait()
        return web.json_response({"held": True})

    app = app_with_db_route(settings)
    app.router.add_get("/test/hold", hold_a_connection)
    client = await aiohttp_client(app)

    holders = [asyncio.create_task(client.get("/test/hold")) for _ in range(2)]
    await asyncio.sleep(0.2)
    started = time.monotonic()
    response = await client.get("/test/users")
    waited = time.monotonic() - started
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert_error_shape(await response.json(), "database_busy")
    assert 0.25 < waited < 1.5

    release.set()
    assert [r.status for r in await asyncio.gather(*holders)] == [200, 200]
    assert (await client.get("/test/users")).status == 200


async def test_a_draining_process_fails_readiness_but_still_serves(settings: Settings) -> None:
    """SIGTERM with SHUTDOWN_DRAIN: /readyz says "draining", other routes answer with
    Connection: close, and only after the drain does the listener close."""
    with service_process(settings, SHUTDOWN_DRAIN="2") as (url, pid):
        signalled = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        async with aiohttp.ClientSession(url) as session:
            await asyncio.sleep(0.2)
            async with session.get("/readyz") as response:
                assert response.status == 503
                assert response.headers["Retry-After"] == "1"
                assert_error_shape(await response.json(), "draining")
            async with session.get("/healthz") as response:
                assert response.status == 200
                assert response.headers["Connection"] == "close"
        # The server itself closes the connection after the response.
        reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: monogram\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), timeout=1.5)  # read() ends at EOF
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200")
        assert await refuses_connections(url, seconds=10)
        assert time.monotonic() - signalled >= 1.9
