"""Image delivery: URLs built from IMAGE_BASE_URL when a response is made, and the edge cache
(Varnish, docker/varnish/default.vcl) in front of the S3 origin, with purges on delete."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from app.db import open_database
from app.deletes import retry_deletions
from app.devstack.edge import EdgeCache, varnishd_binary
from app.devstack.s3 import EmbeddedS3
from app.main import create_app
from app.settings import Settings
from app.storage import open_storage
from tests.helpers import (
    CORPUS,
    AiohttpClient,
    Client,
    User,
    free_port,
    publish,
    sign_up,
    upload,
)

needs_varnish = pytest.mark.skipif(
    varnishd_binary() is None, reason="varnishd (Debian: varnish) absent"
)


@pytest.fixture(scope="module")
def edge(s3_server: EmbeddedS3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeCache]:
    if varnishd_binary() is None:
        pytest.skip("varnishd (Debian: varnish) absent")
    cache = EdgeCache(free_port(), s3_server.endpoint_url, tmp_path_factory.mktemp("edge"), "64m")
    cache.start()
    try:
        yield cache
    finally:
        cache.stop()


def through_edge(settings: Settings, edge: EdgeCache, purge: bool = True) -> Settings:
    return settings.with_overrides(
        image_base_url=f"{edge.url}/{settings.s3_bucket}",
        edge_purge_url=edge.url if purge else None,
    )


async def published_through(
    aiohttp_client: AiohttpClient, settings: Settings
) -> tuple[Client, User, dict[str, Any]]:
    """A service with these settings, a user on it, and that user's first post."""
    client = await aiohttp_client(create_app(settings))
    ada = await sign_up(client, "ada")
    return client, ada, await publish(client, ada)


async def fetch(url: str) -> tuple[int, str | None, bytes]:
    """An anonymous GET as a browser's: status, X-Cache, body."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, response.headers.get("X-Cache"), await response.read()


async def origin_fetches(edge: EdgeCache) -> int:
    return (await asyncio.to_thread(edge.counters))["backend_req"]


async def test_an_old_posts_urls_follow_the_image_base_url(
    aiohttp_client: AiohttpClient, client: Client, settings: Settings
) -> None:
    ada = await sign_up(client, "ada")
    bob = await sign_up(client, "bob")
    assert (await client.put(f"/v1/following/{ada.id}", headers=bob.auth)).status in {200, 204}
    post = await publish(client, ada, "before the CDN")
    origin = settings.public_base_url
    assert post["image_url"].startswith(f"{origin}/media/")
    keys = {name: post[name].removeprefix(f"{origin}/") for name in ("image_url", "thumbnail_url")}

    cdn = await aiohttp_client(
        create_app(settings.with_overrides(image_base_url="https://images.example.com/m/"))
    )
    read = await (await cdn.get(f"/v1/posts/{post['id']}", headers=bob.auth)).json()
    feed = (await (await cdn.get("/v1/feed", headers=bob.auth)).json())["items"]
    profile = (await (await cdn.get("/v1/users/ada/posts", headers=bob.auth)).json())["items"]
    for seen in (read, feed[0], profile[0]):
        for name, key in keys.items():
            assert seen[name] == f"https://images.example.com/m/{key}"


@needs_varnish
async def test_a_miss_then_hits_with_one_origin_get(
    aiohttp_client: AiohttpClient, settings: Settings, edge: EdgeCache
) -> None:
    _, _, post = await published_through(aiohttp_client, through_edge(settings, edge))
    url = post["thumbnail_url"]
    assert url.startswith(f"{edge.url}/{settings.s3_bucket}/media/")
    origin_url = url.replace(edge.url, settings.s3_endpoint_url or "", 1)
    _, _, original = await fetch(origin_url)

    before = await origin_fetches(edge)
    first = await fetch(url)
    hits = [await fetch(url), await fetch(url + "?bust=1")]
    assert first == (200, "MISS", original)
    assert hits == [(200, "HIT", original)] * 2  # a query string is no new entry
    assert await origin_fetches(edge) - before == 1
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert "immutable" in response.headers["Cache-Control"]
        assert "x-amz-request-id" not in response.headers


@needs_varnish
async def test_private_objects_are_never_fetched_or_kept(
    aiohttp_client: AiohttpClient, settings: Settings, edge: EdgeCache
) -> None:
    client = await aiohttp_client(create_app(through_edge(settings, edge)))
    ada = await sign_up(client, "ada")
    heic = (CORPUS / "Example1.heic").read_bytes()
    response = await upload(client, ada, heic, filename="a.heic", content_type="image/heic")
    assert response.status == 201, await response.text()
    conn = await asyncpg.connect(settings.database_url)
    try:
        source = await conn.fetchval("SELECT source_key FROM media WHERE source_key IS NOT NULL")
    finally:
        await conn.close()
    assert source.startswith("sources/")
    bucket = f"{edge.url}/{settings.s3_bucket}"

    before = await origin_fetches(edge)
    for path in (
        source,
        "incoming/1/anything.jpg",
        f"media/../{source}",
        "media/%2e%2e/" + source,
        "media/1/x.jpg/../../" + source,
    ):
        status, _, _ = await fetch(f"{bucket}/{path}")
        assert status == 404, path
    async with aiohttp.ClientSession() as session:
        for method in ("PUT", "POST", "DELETE"):
            async with session.request(method, f"{bucket}/media/1/x.jpg", data=b"x") as answer:
                assert answer.status == 405, method
    assert await origin_fetches(edge) == before


@needs_varnish
async def test_a_missing_object_is_404_and_kept_only_briefly(
    settings: Settings, edge: EdgeCache
) -> None:
    key = f"media/1/{settings.s3_bucket}-late.jpg"
    url = f"{edge.url}/{settings.s3_bucket}/{key}"
    assert (await fetch(url))[:2] == (404, "MISS")
    assert (await fetch(url))[:2] == (404, "HIT")  # the origin is not asked again at once

    photo = (CORPUS / "sample.jpg").read_bytes()
    async with open_storage(settings) as storage:  # the object appears at the origin
        await storage.client.put_object(
            Bucket=settings.s3_bucket, Key=key, Body=photo, ContentType="image/jpeg"
        )
    await asyncio.sleep(5.5)  # docker/varnish/default.vcl keeps a 404 for 5 s
    assert await fetch(url) == (200, "MISS", photo)


@needs_varnish
async def test_a_deleted_posts_images_are_404_through_the_cache_at_once(
    aiohttp_client: AiohttpClient, settings: Settings, edge: EdgeCache
) -> None:
    client, ada, post = await published_through(aiohttp_client, through_edge(settings, edge))
    urls = [post["image_url"], post["thumbnail_url"]]
    for url in urls:
        await fetch(url)
        assert (await fetch(url))[:2] == (200, "HIT")

    response = await client.delete(f"/v1/posts/{post['id']}", headers=ada.auth)
    assert response.status == 204
    for url in urls:
        assert (await fetch(url))[:2] == (404, "MISS")


@needs_varnish
async def test_a_purge_the_edge_missed_stays_queued_until_the_retry_does_it(
    aiohttp_client: AiohttpClient, settings: Settings, edge: EdgeCache
) -> None:
    # The edge is unreachable for purges during the delete: S3 deletes, the purge fails.
    deaf = settings.with_overrides(
        image_base_url=f"{edge.url}/{settings.s3_bucket}",
        edge_purge_url=f"http://127.0.0.1:{free_port()}",
    )
    client, ada, post = await published_through(aiohttp_client, deaf)
    url = post["thumbnail_url"]
    await fetch(url)
    assert (await client.delete(f"/v1/posts/{post['id']}", headers=ada.auth)).status == 204
    assert (await fetch(url))[:2] == (200, "HIT")  # still at the edge: the purge failed
    conn = await asyncpg.connect(settings.database_url)
    try:
        queued = {
            r["object_key"] for r in await conn.fetch("SELECT object_key FROM object_deletions")
        }
        assert url.rsplit(f"/{settings.s3_bucket}/", 1)[1] in queued

        async with (
            open_database(settings) as database,
            open_storage(through_edge(settings, edge)) as storage,
        ):
            deleted, refused = await retry_deletions(database, storage)
        assert (deleted, refused) == (len(queued), 0)
        assert await conn.fetchval("SELECT count(*) FROM object_deletions") == 0
    finally:
        await conn.close()
    assert (await fetch(url))[:2] == (404, "MISS")
