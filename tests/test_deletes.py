"""Deleting posts, uploads and accounts: the rows and the bytes go, and nothing is left pointing
at anything missing, with S3 up, S3 down, or the database down."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest

from app.deletes import OBJECT_DELETE_WAIT
from app.devstack.postgres import EmbeddedPostgres
from app.devstack.s3 import EmbeddedS3
from app.main import create_app
from app.settings import Settings
from tests.faultproxy import fault_proxy
from tests.helpers import (
    AiohttpClient,
    Client,
    User,
    assert_error_shape,
    bucket_keys,
    publish,
    sign_up,
    stored_keys,
    upload_photo,
)


def object_keys(item: dict[str, Any]) -> set[str]:
    """The bucket keys a post's or an upload's URLs name."""
    urls = [item.get(name) for name in ("image_url", "thumbnail_url", "original_url")]
    return {url.split("/", 4)[4] for url in urls if url}


async def rows(dsn: str, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def feed_ids(client: Client, user: User) -> list[int]:
    response = await client.get("/v1/feed", headers=user.auth)
    assert response.status == 200
    return [post["id"] for post in (await response.json())["items"]]


async def assert_no_row_names_a_missing_object(settings: Settings) -> None:
    assert settings.database_url is not None
    media = await rows(settings.database_url, "SELECT original_key, thumbnail_key FROM media")
    named = {key for row in media for key in row.values()}
    assert named <= await stored_keys(settings)


async def test_deleting_a_post_takes_its_likes_upload_and_objects(
    client: Client, settings: Settings, clean_database: str
) -> None:
    ada, bob = await sign_up(client, "ada"), await sign_up(client, "bob")
    assert (await client.put(f"/v1/following/{ada.id}", headers=bob.auth)).status == 204
    kept = await publish(client, ada, "stays")
    post = await publish(client, ada, "goes")
    assert (await client.put(f"/v1/posts/{post['id']}/like", headers=bob.auth)).status == 200
    assert await feed_ids(client, bob) == [post["id"], kept["id"]]
    keys = object_keys(post)
    assert keys <= set(await bucket_keys(client))

    response = await client.delete(f"/v1/posts/{post['id']}", headers=ada.auth)
    assert response.status == 204
    # Gone from S3 by the time the delete answers, and from every table and listing.
    assert not keys & set(await bucket_keys(client))
    assert object_keys(kept) <= set(await bucket_keys(client))
    assert await feed_ids(client, bob) == [kept["id"]]
    assert (await client.get(f"/v1/posts/{post['id']}", headers=bob.auth)).status == 404
    for query in (
        "SELECT 1 FROM posts WHERE post_id = $1",
        "SELECT 1 FROM likes WHERE post_id = $1",
    ):
        assert await rows(clean_database, query, post["id"]) == [], query
    assert await rows(clean_database, "SELECT * FROM object_deletions") == []
    profile = await (await client.get("/v1/users/ada", headers=bob.auth)).json()
    assert profile["posts_count"] == 1
    await assert_no_row_names_a_missing_object(settings)

    # Idempotent for its author; still nothing for anyone else.
    again = await client.delete(f"/v1/posts/{post['id']}", headers=ada.auth)
    assert again.status == 204
    stranger = await client.delete(f"/v1/posts/{post['id']}", headers=bob.auth)
    assert stranger.status == 404
    assert_error_shape(await stranger.json(), "not_found")


async def test_delete_errors_change_nothing(client: Client, clean_database: str) -> None:
    ada, bob = await sign_up(client, "ada"), await sign_up(client, "bob")
    post = await publish(client, ada)
    unposted = await upload_photo(client, ada)
    before = set(await bucket_keys(client))
    (posted,) = await rows(
        clean_database, "SELECT media_id FROM posts WHERE post_id = $1", post["id"]
    )

    not_yours = await client.delete(f"/v1/posts/{post['id']}", headers=bob.auth)
    assert not_yours.status == 403
    assert_error_shape(await not_yours.json(), "forbidden")
    for path in ("/v1/posts/999999", "/v1/posts/abc", "/v1/posts/0", "/v1/media/999999"):
        unknown = await client.delete(path, headers=ada.auth)
        assert unknown.status == 404, path
        assert_error_shape(await unknown.json(), "not_found")
    in_a_post = await client.delete(f"/v1/media/{posted['media_id']}", headers=ada.auth)
    assert in_a_post.status == 409
    assert_error_shape(await in_a_post.json(), "conflict")
    someone_elses = await client.delete(f"/v1/media/{unposted['media_id']}", headers=bob.auth)
    assert someone_elses.status == 403
    anonymous = await client.delete(f"/v1/posts/{post['id']}")
    assert anonymous.status == 401
    assert set(await bucket_keys(client)) == before
    assert (await client.get(f"/v1/posts/{post['id']}", headers=bob.auth)).status == 200

    for _ in range(2):  # an upload no post uses; idempotent
        gone = await client.delete(f"/v1/media/{unposted['media_id']}", headers=ada.auth)
        assert gone.status == 204
    assert set(await bucket_keys(client)) == before - object_keys(unposted)
    media = await rows(clean_database, "SELECT media_id FROM media")
    assert [row["media_id"] for row in media] == [posted["media_id"]]


async def test_concurrent_deletes_of_one_post_all_answer_204(
    client: Client, clean_database: str
) -> None:
    ada = await sign_up(client, "ada")
    post = await publish(client, ada)
    responses = await asyncio.gather(
        *(client.delete(f"/v1/posts/{post['id']}", headers=ada.auth) for _ in range(8))
    )
    assert [r.status for r in responses] == [204] * 8
    assert await bucket_keys(client) == []
    assert await rows(clean_database, "SELECT * FROM posts") == []


async def test_deleting_an_account_takes_everything_it_owns_and_its_tokens(
    client: Client, settings: Settings, clean_database: str
) -> None:
    ada, bob = await sign_up(client, "ada"), await sign_up(client, "bob")
    for follower, followee in ((ada, bob), (bob, ada)):
        follow = await client.put(f"/v1/following/{followee.id}", headers=follower.auth)
        assert follow.status == 204
    ada_posts = [await publish(client, ada) for _ in range(2)]
    unposted = await upload_photo(client, ada)
    bob_post = await publish(client, bob)
    for liker, post in ((ada, bob_post), (bob, ada_posts[0]), (ada, ada_posts[1])):
        assert (await client.put(f"/v1/posts/{post['id']}/like", headers=liker.auth)).status == 200
    ada_keys = set().union(*map(object_keys, [*ada_posts, unposted]))
    assert {key for key in await bucket_keys(client) if key.startswith(f"media/{ada.id}/")} == (
        ada_keys
    )

    response = await client.delete("/v1/me", headers=ada.auth)
    assert response.status == 204
    after = await client.get("/v1/me", headers=ada.auth)
    assert after.status == 401
    assert_error_shape(await after.json(), "invalid_token")
    assert not ada_keys & set(await bucket_keys(client))
    assert object_keys(bob_post) <= set(await bucket_keys(client))

    # Bob's post lost Ada's like, and his counts lost her.
    post = await (await client.get(f"/v1/posts/{bob_post['id']}", headers=bob.auth)).json()
    assert post["like_count"] == 0
    likes = await rows(clean_database, "SELECT * FROM likes")
    assert likes == []
    profile = await (await client.get("/v1/users/bob", headers=bob.auth)).json()
    assert (profile["followers_count"], profile["following_count"]) == (0, 0)
    assert await feed_ids(client, bob) == []
    for query in (
        "SELECT 1 FROM users WHERE user_id = $1",
        "SELECT 1 FROM posts WHERE author_id = $1",
        "SELECT 1 FROM media WHERE user_id = $1",
        "SELECT 1 FROM follows WHERE $1 IN (follower_id, followee_id)",
        "SELECT 1 FROM tombstones WHERE owner_id = $1",
        "SELECT 1 FROM upload_idempotency WHERE user_id = $1",
    ):
        assert await rows(clean_database, query, ada.id) == [], query
    assert (await client.get("/v1/users/ada", headers=bob.auth)).status == 404
    await assert_no_row_names_a_missing_object(settings)
    # The name is free again; the new account is a stranger to Bob.
    again = await sign_up(client, "ada")
    profile = await (await client.get("/v1/users/ada", headers=bob.auth)).json()
    assert (profile["id"], profile["followed_by"], profile["posts_count"]) == (again.id, False, 0)


@pytest.mark.slow
async def test_with_s3_down_the_rows_go_at_once_and_the_objects_at_the_next_retry(
    aiohttp_client: AiohttpClient, settings: Settings, s3_server: EmbeddedS3, clean_database: str
) -> None:
    async with fault_proxy(s3_server.port) as proxy:
        through_proxy = settings.with_overrides(
            s3_endpoint_url=f"http://{proxy.host_port}",
            # Long enough for the upload that sets the test up on a loaded machine; the refused
            # connections below fail at once whatever the timeout.
            s3_timeout=1.0,
            s3_deadline=3.0,
            deletion_retry_interval=0.5,
        )
        client = await aiohttp_client(create_app(through_proxy))
        ada = await sign_up(client, "ada")
        post = await publish(client, ada)
        keys = object_keys(post)

        proxy.refusing = True
        proxy.cut()
        started = time.monotonic()
        response = await client.delete(f"/v1/posts/{post['id']}", headers=ada.auth)
        assert response.status == 204
        assert time.monotonic() - started < OBJECT_DELETE_WAIT + 1
        # The rows are gone at once; the objects are queued, and still stored.
        assert await rows(clean_database, "SELECT * FROM media") == []
        queued = await rows(clean_database, "SELECT object_key FROM object_deletions")
        assert {row["object_key"] for row in queued} == keys
        assert keys <= await stored_keys(settings)

        proxy.heal()
        deadline = time.monotonic() + 15
        while await rows(clean_database, "SELECT 1 FROM object_deletions"):
            assert time.monotonic() < deadline, "the retry did not delete the objects"
            await asyncio.sleep(0.2)
        assert not keys & await stored_keys(settings)
        metrics = await (await client.get("/metrics")).text()
        assert 'monogram_sweep_deleted_total{sweep="deletions"} 2.0' in metrics


@pytest.mark.slow
async def test_with_the_database_down_a_delete_is_refused_whole(
    aiohttp_client: AiohttpClient, settings: Settings, postgres: EmbeddedPostgres
) -> None:
    ada_client = await aiohttp_client(create_app(settings))
    ada = await sign_up(ada_client, "ada")
    post = await publish(ada_client, ada)
    async with fault_proxy(postgres.port) as proxy:
        assert settings.database_url is not None
        through_proxy = settings.with_overrides(
            database_url=settings.database_url.replace(f":{postgres.port}/", f":{proxy.port}/")
        )
        client = await aiohttp_client(create_app(through_proxy))
        assert (await client.get(f"/v1/posts/{post['id']}", headers=ada.auth)).status == 200
        proxy.refusing = True
        proxy.cut()
        response = await client.delete(f"/v1/posts/{post['id']}", headers=ada.auth)
        assert response.status == 503
        assert_error_shape(await response.json(), "database_unavailable")
    # Nothing happened: the post, its row and its objects are all there.
    assert (await ada_client.get(f"/v1/posts/{post['id']}", headers=ada.auth)).status == 200
    assert object_keys(post) <= set(await bucket_keys(ada_client))
