"""Posts and likes: every row of the API table, and counts that stay right under concurrency."""

from __future__ import annotations

import asyncio
import datetime as dt
import random

import asyncpg
import pytest

from app import db
from app.keys import CURSORS, TOKENS
from tests.helpers import (
    Client,
    assert_error_shape,
    insert_posts,
    make_users,
    publish,
    sign_up,
    upload_photo,
)


async def test_a_post_is_made_from_an_upload(client: Client) -> None:
    ada = await sign_up(client, "ada")
    media = await upload_photo(client, ada)
    response = await client.post(
        "/v1/posts",
        json={
            "media_id": media["media_id"],
            "caption": "Hello 🌍",
            "alt_text": "A waterfall between mossy rocks",
        },
        headers=ada.auth,
    )
    assert response.status == 201
    post = await response.json()
    assert post == {
        "id": post["id"],
        "author": {"id": ada.id, "username": "ada", "display_name": "ada"},
        "caption": "Hello 🌍",
        "alt_text": "A waterfall between mossy rocks",
        "image_url": media["original_url"],
        "thumbnail_url": media["thumbnail_url"],
        "width": media["width"],
        "height": media["height"],
        "thumbnail_width": media["thumbnail_width"],
        "thumbnail_height": media["thumbnail_height"],
        "blurhash": media["blurhash"],
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

    for alt_text in ["x" * 1501, "a\x00b", 42]:
        bad_alt = await client.post(
            "/v1/posts",
            json={"media_id": media["media_id"], "alt_text": alt_text},
            headers=ada.auth,
        )
        assert bad_alt.status == 422, alt_text
        body = await bad_alt.json()
        assert_error_shape(body, "invalid")
        assert "alt_text" in body["error"]["message"]
    other = await upload_photo(client, ada)
    longest = await client.post(
        "/v1/posts", json={"media_id": other["media_id"], "alt_text": "é" * 1500}, headers=ada.auth
    )
    assert longest.status == 201
    assert (await longest.json())["alt_text"] == "é" * 1500

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


async def test_100_users_liking_at_once_count_100(
    burst_client: Client, clean_database: str
) -> None:
    client = burst_client
    author = await sign_up(client, "author")
    post = await publish(client, author)
    fans = await make_users(client.app[TOKENS], clean_database, 100, prefix="fan")
    responses = await asyncio.gather(
        *(client.put(f"/v1/posts/{post['id']}/like", headers=fan.auth) for fan in fans)
    )
    assert [r.status for r in responses] == [200] * 100
    assert await like_rows(clean_database, post["id"]) == (100, 100)


async def test_one_user_toggling_100_times_at_once_keeps_count_equal_to_rows(
    burst_client: Client, clean_database: str
) -> None:
    client = burst_client
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


# --- GET /v1/users/{username}/posts ----------------------------------------------------------


async def test_a_users_posts_page_newest_first_through_every_post_once(
    client: Client, clean_database: str
) -> None:
    ada, bob = await sign_up(client, "ada"), await sign_up(client, "bob")
    newest = await publish(client, ada, "the newest")
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    # Ties in time are broken by id, so no post is skipped or repeated at a page's edge.
    times = [start - dt.timedelta(minutes=m // 2) for m in range(11)]
    older = await insert_posts(clean_database, ada.id, times)
    await insert_posts(clean_database, bob.id, times[:3])  # someone else's: never listed

    seen: list[int] = []
    cursor = None
    while True:
        query = {"limit": "4"} | ({"cursor": cursor} if cursor else {})
        response = await client.get("/v1/users/ADA/posts", params=query, headers=bob.auth)
        assert response.status == 200
        page = await response.json()
        assert len(page["items"]) <= 4
        assert {post["author"]["username"] for post in page["items"]} <= {"ada"}
        seen += [post["id"] for post in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    by_time = sorted(zip(times, older, strict=True), key=lambda pair: (pair[0], pair[1]))
    assert seen == [newest["id"], *[post_id for _, post_id in reversed(by_time)]]
    assert page["items"], "the last page holds the rest"


async def test_a_users_posts_errors(client: Client) -> None:
    ada = await sign_up(client, "ada")
    empty = await client.get("/v1/users/ada/posts", headers=ada.auth)
    assert await empty.json() == {"items": [], "next_cursor": None}
    for path, status, code in [
        ("/v1/users/nobody/posts", 404, "not_found"),
        ("/v1/users/ada/posts?limit=0", 400, "bad_request"),
        ("/v1/users/ada/posts?cursor=forged.cursor", 400, "invalid_cursor"),
    ]:
        response = await client.get(path, headers=ada.auth)
        assert response.status == status, path
        assert_error_shape(await response.json(), code)
    feed_cursor = client.app[CURSORS].encode("feed", 1, 1)
    foreign = await client.get(f"/v1/users/ada/posts?cursor={feed_cursor}", headers=ada.auth)
    assert foreign.status == 400


async def test_a_users_posts_are_read_from_idx_posts_author_time(clean_database: str) -> None:
    conn = await asyncpg.connect(clean_database)
    try:
        await conn.execute("SET enable_seqscan = off")  # the tables are tiny here
        plan = await conn.fetchval(
            "EXPLAIN (FORMAT JSON) " + db.queries.author_posts.sql,
            1,  # aiosql numbers the parameters in order of appearance: viewer_id first
            "ada",
            dt.datetime.now(dt.UTC),
            2**62,
            21,
        )
    finally:
        await conn.close()
    assert "idx_posts_author_time" in str(plan)
