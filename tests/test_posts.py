"""Posts and likes: every row of the API table, and counts that stay right under concurrency."""

from __future__ import annotations

import asyncio
import random

import asyncpg
import pytest

from app.keys import TOKENS
from tests.helpers import Client, assert_error_shape, make_users, publish, sign_up, upload_photo


async def test_a_post_is_made_from_an_upload(client: Client) -> None:
    ada = await sign_up(client, "ada")
    media = await upload_photo(client, ada)
    response = await client.post(
        "/v1/posts", json={"media_id": media["media_id"], "caption": "Hello 🌍"}, headers=ada.auth
    )
    assert response.status == 201
    post = await response.json()
    assert post == {
        "id": post["id"],
        "author": {"id": ada.id, "username": "ada", "display_name": "ada"},
        "caption": "Hello 🌍",
        "image_url": media["original_url"],
        "thumbnail_url": media["thumbnail_url"],
        "width": media["width"],
        "height": media["height"],
        "like_count": 0,
        "liked_by_me": False,
        "created_at": post["created_at"],
    }
    again = await client.get(f"/v1/posts/{post['id']}", headers=ada.auth)
    assert again.status == 200
    assert await again.json() == post
    assert (await (await client.get("/v1/users/ada", headers=ada.auth)).json())["posts_count"] == 1


async def test_post_errors(client: Client) -> None:
    ada, bob = await sign_up(client, "ada"), await sign_up(client, "bob")
    media = await upload_photo(client, ada)

    unknown = await client.post("/v1/posts", json={"media_id": 999999}, headers=ada.auth)
    assert unknown.status == 404
    assert_error_shape(await unknown.json(), "not_found")

    not_mine = await client.post(
        "/v1/posts", json={"media_id": media["media_id"]}, headers=bob.auth
    )
    assert not_mine.status == 403
    assert_error_shape(await not_mine.json(), "forbidden")

    long = await client.post(
        "/v1/posts", json={"media_id": media["media_id"], "caption": "x" * 2201}, headers=ada.auth
    )
    assert long.status == 422
    assert_error_shape(await long.json(), "invalid")

    for bad in ["12", 1.5, True, None, -3, 2**63]:
        response = await client.post("/v1/posts", json={"media_id": bad}, headers=ada.auth)
        assert response.status == 422, bad

    edge = await client.post(
        "/v1/posts", json={"media_id": media["media_id"], "caption": "x" * 2200}, headers=ada.auth
    )
    assert edge.status == 201
    used = await client.post("/v1/posts", json={"media_id": media["media_id"]}, headers=ada.auth)
    assert used.status == 409
    assert_error_shape(await used.json(), "conflict")


async def test_two_posts_racing_for_one_upload_give_one_201_and_one_409(client: Client) -> None:
    ada = await sign_up(client, "ada")
    media = await upload_photo(client, ada)
    responses = await asyncio.gather(
        *(
            client.post("/v1/posts", json={"media_id": media["media_id"]}, headers=ada.auth)
            for _ in range(2)
        )
    )
    assert sorted(r.status for r in responses) == [201, 409]


@pytest.mark.parametrize("post_id", ["999999", "0", "abc", "9223372036854775808"])
async def test_an_unknown_post_is_404(client: Client, post_id: str) -> None:
    ada = await sign_up(client, "ada")
    for method, path in [
        ("GET", f"/v1/posts/{post_id}"),
        ("PUT", f"/v1/posts/{post_id}/like"),
        ("DELETE", f"/v1/posts/{post_id}/like"),
    ]:
        response = await client.request(method, path, headers=ada.auth)
        assert response.status == 404, (method, path)
        assert_error_shape(await response.json(), "not_found")


async def test_likes_are_idempotent_and_show_as_liked_by_me(client: Client) -> None:
    ada, bob = await sign_up(client, "ada"), await sign_up(client, "bob")
    post = await publish(client, ada)
    path = f"/v1/posts/{post['id']}/like"
    for _ in range(2):
        response = await client.put(path, headers=bob.auth)
        assert response.status == 200
        assert await response.json() == {"post_id": post["id"], "like_count": 1, "liked": True}
    seen_by_bob = await (await client.get(f"/v1/posts/{post['id']}", headers=bob.auth)).json()
    seen_by_ada = await (await client.get(f"/v1/posts/{post['id']}", headers=ada.auth)).json()
    assert (seen_by_bob["liked_by_me"], seen_by_bob["like_count"]) == (True, 1)
    assert (seen_by_ada["liked_by_me"], seen_by_ada["like_count"]) == (False, 1)
    for _ in range(2):
        response = await client.delete(path, headers=bob.auth)
        assert await response.json() == {"post_id": post["id"], "like_count": 0, "liked": False}


async def like_rows(dsn: str, post_id: int) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetchval("SELECT count(*) FROM likes WHERE post_id = $1", post_id)
        count = await conn.fetchval("SELECT like_count FROM posts WHERE post_id = $1", post_id)
    finally:
        await conn.close()
    return rows, count


async def test_100_users_liking_at_once_count_100(client: Client, clean_database: str) -> None:
    author = await sign_up(client, "author")
    post = await publish(client, author)
    fans = await make_users(client.app[TOKENS], clean_database, 100, prefix="fan")
    responses = await asyncio.gather(
        *(client.put(f"/v1/posts/{post['id']}/like", headers=fan.auth) for fan in fans)
    )
    assert [r.status for r in responses] == [200] * 100
    assert await like_rows(clean_database, post["id"]) == (100, 100)


async def test_one_user_toggling_100_times_at_once_keeps_count_equal_to_rows(
    client: Client, clean_database: str
) -> None:
    author = await sign_up(client, "author")
    post = await publish(client, author)
    (fan,) = await make_users(client.app[TOKENS], clean_database, 1, prefix="fan")
    rng = random.Random(11)
    methods = [rng.choice(["PUT", "DELETE"]) for _ in range(100)]
    responses = await asyncio.gather(
        *(client.request(m, f"/v1/posts/{post['id']}/like", headers=fan.auth) for m in methods)
    )
    assert [r.status for r in responses] == [200] * 100
    rows, count = await like_rows(clean_database, post["id"])
    assert rows in (0, 1)
    assert count == rows
