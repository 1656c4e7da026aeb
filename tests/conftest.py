"""Fixtures: a real PostgreSQL (pgserver's binaries) and a real S3 endpoint (moto server over HTTP).

Both start once per session on free ports of 127.0.0.1. Each test gets clean
tables and a bucket of its own.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import hypothesis
import pytest
from aiohttp import web, web_app
from aiohttp.test_utils import TestClient

from app.auth import Tokens
from app.localstack.postgres import EmbeddedPostgres
from app.localstack.runner import answers_ready
from app.localstack.s3 import REGION, EmbeddedS3
from app.main import create_app
from app.migrations import migrate
from app.settings import Settings
from app.storage import ensure_bucket

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "images"  # real images, with their provenance in its README

TEST_JWT_SECRET = "test-secret-" + "x" * 60

AiohttpClient = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("monogram", "budgets of the generated-input tests (`make fuzz`)")
    group.addoption(
        "--schemathesis-seconds",
        type=int,
        default=45,
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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


def settings_for(postgres: EmbeddedPostgres, s3_server: EmbeddedS3, bucket: str) -> Settings:
    """Settings as `make run` would hand them to the service, pointed at the test servers."""
    return Settings.from_env(
        {
            "DATABASE_URL": postgres.dsn,
            "S3_ENDPOINT_URL": s3_server.endpoint_url,
            "S3_BUCKET": bucket,
            "S3_REGION": REGION,
            "S3_ACCESS_KEY_ID": s3_server.access_key_id,
            "S3_SECRET_ACCESS_KEY": s3_server.secret_access_key,
            "JWT_SECRET": TEST_JWT_SECRET,
            # Tests sign up and log in many users from one address; tests of the limits lower them.
            "LOGIN_LIMIT_PER_ADDRESS": "100000",
            "LOGIN_LIMIT_PER_USERNAME": "100000",
            "SIGNUP_LIMIT_PER_ADDRESS": "100000",
            # Cheap hashes keep the suite fast; tests about hashing cost use the defaults.
            "PASSWORD_HASH_TIME_COST": "1",
            "PASSWORD_HASH_MEMORY_KIB": "1024",
            # Most tests never upload: their apps start image workers only if they do.
            "THUMBNAIL_WARM_START": "false",
        }
    )


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


Client = TestClient[web.Request, web.Application]
PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class User:
    id: int
    username: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def sign_up(client: Client, username: str, password: str = PASSWORD) -> User:
    response = await client.post("/v1/users", json={"username": username, "password": password})
    assert response.status == 201, await response.text()
    created = await response.json()
    login = await client.post("/v1/auth/token", json={"username": username, "password": password})
    assert login.status == 200, await login.text()
    return User(created["id"], created["username"], (await login.json())["access_token"])


async def make_users(tokens: Tokens, dsn: str, count: int, prefix: str = "user") -> list[User]:
    """Many users at once, straight into the table, with tokens from the app's own signer."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "INSERT INTO users (username, password_hash) "
            "SELECT $1 || i, 'not-a-hash' FROM generate_series(1, $2::int) i "
            "RETURNING user_id, username, token_key",
            prefix,
            count,
        )
    finally:
        await conn.close()
    return [
        User(r["user_id"], r["username"], tokens.issue(r["user_id"], r["token_key"])) for r in rows
    ]


def wait_until_ready(
    url: str, process: subprocess.Popen[bytes], timeout: float = 90, why: str = ""
) -> None:
    """Poll GET {url}/readyz until it answers 200; fail at once if the process exits."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, f"the process exited with {process.returncode}. {why}"
        assert time.monotonic() < deadline, f"{url} was not ready within {timeout}s. {why}"
        if answers_ready(url):
            return
        time.sleep(0.1)


@contextmanager
def service_process(settings: Settings, **env: str) -> Iterator[tuple[str, int]]:
    """`python -m app serve` in a process of its own, as a deployment runs it; ready on entry."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve"],
        cwd=ROOT,
        env={**os.environ, **settings.to_env(), "PORT": str(port), "LOG_LEVEL": "WARNING", **env},
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)
