"""What the tests share that is not a fixture: the checkout's paths, clients, users, uploads,
and the checks several modules make. Fixtures live in conftest.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import os
import re
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from app.auth import Tokens
from app.devstack.postgres import EmbeddedPostgres
from app.devstack.runner import answers_ready
from app.devstack.s3 import REGION, EmbeddedS3
from app.keys import STORAGE
from app.settings import Settings
from app.storage import s3_client
from app.sweep import sweep

ROOT = Path(__file__).resolve().parent.parent


CORPUS = ROOT / "tests" / "images"  # real images, with their provenance in its README


TEST_JWT_SECRET = "test-secret-" + "x" * 60


AiohttpClient = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def settings_for(postgres: EmbeddedPostgres, s3_server: EmbeddedS3, bucket: str) -> Settings:
    """Settings as `make run` would hand them to the service, pointed at the test servers."""
    return Settings.from_env(
        {
            "DATABASE_URL": postgres.dsn,
            "S3_ENDPOINT_URL": s3_server.endpoint_url,
            "S3_BUCKET": bucket,
            # One media job queue per test, as one bucket, on the same moto.
            "SQS_QUEUE_NAME": bucket,
            "FANOUT_QUEUE_NAME": f"{bucket}-fanout",
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
            # A test's client runs in the service's own event loop: its work would count as the
            # loop falling behind. tests/test_admission.py tests the lag's shedding itself.
            "ADMISSION_LOOP_LAG": "1.0",
        }
    )


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


def assert_error_shape(body: object, code: str) -> None:
    assert isinstance(body, dict)
    assert set(body) >= {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]


async def upload(
    client: Client | aiohttp.ClientSession,
    user: User,
    data: bytes,
    *,
    filename: str = "photo.jpg",
    content_type: str = "image/jpeg",
    headers: dict[str, str] | None = None,
) -> aiohttp.ClientResponse:
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(data), filename=filename, content_type=content_type)
    return await client.post("/v1/media", data=form, headers={**user.auth, **(headers or {})})


async def presign(
    client: Client, user: User, size: int, content_type: str = "image/jpeg"
) -> dict[str, Any]:
    response = await client.post(
        "/v1/uploads", json={"content_type": content_type, "bytes": size}, headers=user.auth
    )
    assert response.status == 201, await response.text()
    form: dict[str, Any] = await response.json()
    return form


async def send_form(form: dict[str, Any], data: bytes, content_type: str = "image/jpeg") -> int:
    """POSTs the presigned form straight to S3 as a browser does (fields first, then the
    file); S3's status (204 when stored)."""
    body = aiohttp.FormData()
    for name, value in form["fields"].items():
        body.add_field(name, value)
    body.add_field("file", io.BytesIO(data), filename="photo", content_type=content_type)
    async with aiohttp.ClientSession() as session, session.post(form["url"], data=body) as answer:
        await answer.read()
        return answer.status


async def direct_upload(
    client: Client, user: User, data: bytes, content_type: str = "image/jpeg"
) -> dict[str, Any]:
    """Presign, send to S3, complete: the complete's answer (202, processing)."""
    form = await presign(client, user, len(data), content_type)
    assert await send_form(form, data, content_type) == 204
    response = await client.post(f"/v1/uploads/{form['upload_id']}/complete", headers=user.auth)
    assert response.status == 202, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def wait_until_processed(
    client: Client, user: User, media_id: int, seconds: float = 60.0
) -> dict[str, Any]:
    """The media's JSON once it is no longer processing."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        response = await client.get(f"/v1/media/{media_id}", headers=user.auth)
        assert response.status == 200, await response.text()
        media: dict[str, Any] = await response.json()
        if media["status"] != "processing":
            return media
        assert asyncio.get_running_loop().time() < deadline, "still processing"
        await asyncio.sleep(0.1)


def png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


async def refuses_connections(url: str, seconds: float = 5.0) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        try:
            async with aiohttp.ClientSession(url) as other, other.get("/healthz"):
                pass
        except aiohttp.ClientConnectionError:
            return True
        await asyncio.sleep(0.05)
    return False


PHOTO = (CORPUS / "sample.jpg").read_bytes()


async def upload_photo(client: Client, user: User) -> dict[str, Any]:
    response = await upload(client, user, PHOTO)
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def publish(
    client: Client, user: User, caption: str = "", alt_text: str = ""
) -> dict[str, Any]:
    media = await upload_photo(client, user)
    response = await client.post(
        "/v1/posts",
        json={"media_id": media["media_id"], "caption": caption, "alt_text": alt_text},
        headers=user.auth,
    )
    assert response.status == 201, await response.text()
    post: dict[str, Any] = await response.json()
    return post


async def audit(
    settings: Settings, ledger_created: list[int], *, sweep_orphans: bool = False
) -> None:
    """Each 201 has its row and objects; no row without a 201; no object without a row."""
    if sweep_orphans:  # objects an upload could not delete while S3 was failing
        await sweep(settings, dt.timedelta(0), delete=True)
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch("SELECT * FROM media")
    finally:
        await conn.close()
    assert sorted(r["media_id"] for r in rows) == sorted(ledger_created)
    stored = await stored_keys(settings)
    referenced = {
        key for r in rows for key in (r["original_key"], r["thumbnail_key"], r["source_key"]) if key
    }
    assert referenced <= stored, "a 201 without its objects"
    assert stored == referenced, f"objects no row refers to: {sorted(stored - referenced)}"


async def stored_keys(settings: Settings) -> set[str]:
    keys: set[str] = set()
    async with s3_client(settings) as client:
        async for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=settings.s3_bucket
        ):
            keys.update(item["Key"] for item in page.get("Contents", []))
    return keys


async def until(condition: Callable[[], Awaitable[bool]], seconds: float = 30.0) -> None:
    """Wait for a condition, rather than for a time a loaded machine may not keep to."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "it never happened"
        await asyncio.sleep(0.05)


async def rebuilds(client: Client) -> float:
    text = await (await client.get("/metrics")).text()
    found = re.search(r"^monogram_image_pool_rebuilds_total (\S+)$", text, re.MULTILINE)
    assert found, "no rebuild counter in /metrics"
    return float(found.group(1))


async def bucket_keys(client: Client) -> list[str]:
    storage = client.app[STORAGE]
    listing = await storage.client.list_objects_v2(Bucket=storage.bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


async def media_rows(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch("SELECT * FROM media ORDER BY media_id")
    finally:
        await conn.close()


async def insert_posts(dsn: str, author_id: int, times: list[dt.datetime]) -> list[int]:
    """Posts with chosen creation times, straight into the tables (media rows included)."""
    conn = await asyncpg.connect(dsn)
    try:
        ids = []
        for created_at in times:
            media_id = await conn.fetchval(
                "INSERT INTO media (user_id, original_key, thumbnail_key, content_type, width,"
                " height, bytes) VALUES ($1, gen_random_uuid()::text, gen_random_uuid()::text,"
                " 'image/jpeg', 4, 3, 1) RETURNING media_id",
                author_id,
            )
            ids.append(
                await conn.fetchval(
                    "INSERT INTO posts (author_id, media_id, created_at)"
                    " VALUES ($1, $2, $3) RETURNING post_id",
                    author_id,
                    media_id,
                    created_at,
                )
            )
        return ids
    finally:
        await conn.close()


async def feed_pages(
    client: Client, user: User, limit: int, between: Any = None
) -> list[list[int]]:
    """The reader's whole feed, page by page (post ids); `between` runs between pages."""
    pages, cursor = [], None
    while True:
        params = {"limit": str(limit), **({"cursor": cursor} if cursor else {})}
        response = await client.get("/v1/feed", params=params, headers=user.auth)
        assert response.status == 200, await response.text()
        body = await response.json()
        pages.append([item["id"] for item in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        if between is not None:
            await between()
