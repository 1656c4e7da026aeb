"""`make demo`: people, real photos, follows and likes, made through the API, once."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import aiohttp
import asyncpg
import pytest

from app import demo
from app.main import create_app
from app.settings import Settings
from tests.helpers import ROOT, AiohttpClient


async def counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            table: await conn.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608
            for table in ("users", "media", "posts", "follows", "likes")
        }
    finally:
        await conn.close()


@pytest.mark.slow
async def test_the_demo_makes_a_living_feed_for_the_login_it_prints_and_only_once(
    aiohttp_client: AiohttpClient, settings: Settings, clean_database: str
) -> None:
    client = await aiohttp_client(create_app(settings.with_overrides(thumbnail_warm_start=True)))
    url = str(client.make_url("")).rstrip("/")
    run = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app", "demo", "--url", url],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    password = re.search(r"password (\S+):", run.stdout)
    logins = re.search(r"^  (\w+),", run.stdout, re.MULTILINE)
    assert password, run.stdout
    assert logins, run.stdout
    first = await counts(clean_database)
    assert first["users"] == len(demo.PEOPLE)
    assert first["posts"] == first["media"] == len(demo.POSTS)

    # The printed login sees a feed of real photos, placeholders and all.
    token = await client.post(
        "/v1/auth/token", json={"username": logins.group(1), "password": password.group(1)}
    )
    assert token.status == 200
    auth = {"Authorization": f"Bearer {(await token.json())['access_token']}"}
    feed = await (await client.get("/v1/feed?limit=50", headers=auth)).json()
    assert len(feed["items"]) >= 8
    assert sum(post["like_count"] for post in feed["items"]) > 0
    async with aiohttp.ClientSession() as browser:
        for post in feed["items"][:3]:
            assert post["alt_text"]
            assert post["blurhash"]
            async with browser.get(post["thumbnail_url"]) as image:
                assert image.status == 200
                assert image.content_type == "image/jpeg"

    # Again: nothing new.
    made = await demo.make_demo(url)
    assert made["posts_created"] == 0
    assert await counts(clean_database) == first
