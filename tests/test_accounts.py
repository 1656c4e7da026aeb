"""Sign-up, tokens, profiles, and the follow graph: every row of the API table and its errors."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import asyncpg
import pytest

from tests.helpers import PASSWORD, Client, User, assert_error_shape, sign_up


async def profile(client: Client, user: User, username: str) -> dict[str, Any]:
    response = await client.get(f"/v1/users/{username}", headers=user.auth)
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


# --- POST /v1/users ---------------------------------------------------------------------


async def test_sign_up_returns_the_new_user(client: Client) -> None:
    response = await client.post(
        "/v1/users",
        json={"username": "Ada.Lovelace_1", "password": PASSWORD, "display_name": "  Ada  "},
    )
    assert response.status == 201
    body = await response.json()
    assert set(body) == {"id", "username", "display_name", "created_at"}
    assert isinstance(body["id"], int)
    assert body["username"] == "ada.lovelace_1"
    assert body["display_name"] == "Ada"
    assert body["created_at"].endswith("+00:00")


async def test_display_name_defaults_to_the_username(client: Client) -> None:
    response = await client.post("/v1/users", json={"username": "grace", "password": PASSWORD})
    assert (await response.json())["display_name"] == "grace"


async def test_the_password_is_stored_as_an_argon2id_hash(
    client: Client, clean_database: str
) -> None:
    await client.post("/v1/users", json={"username": "hashed", "password": PASSWORD})
    conn = await asyncpg.connect(clean_database)
    try:
        stored = await conn.fetchval("SELECT password_hash FROM users WHERE username = 'hashed'")
    finally:
        await conn.close()
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


@pytest.mark.parametrize("taken_as", ["alan", "ALAN", "Alan"])
async def test_a_taken_username_is_409_whatever_its_case(client: Client, taken_as: str) -> None:
    await sign_up(client, "alan")
    response = await client.post("/v1/users", json={"username": taken_as, "password": PASSWORD})
    assert response.status == 409
    assert_error_shape(await response.json(), "conflict")


async def test_concurrent_sign_ups_for_one_name_make_one_user(client: Client) -> None:
    responses = await asyncio.gather(
        *(
            client.post("/v1/users", json={"username": "race", "password": PASSWORD})
            for _ in range(8)
        )
    )
    assert sorted(r.status for r in responses) == [201] + [409] * 7


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({"username": "ab", "password": PASSWORD}, "username"),
        ({"username": "a" * 31, "password": PASSWORD}, "username"),
        ({"username": "no spaces", "password": PASSWORD}, "username"),
        ({"username": "émile", "password": PASSWORD}, "username"),
        ({"username": "semi;colon", "password": PASSWORD}, "username"),
        ({"username": "short_pw", "password": "1234567"}, "password"),
        ({"username": "long_pw", "password": "x" * 129}, "password"),
        ({"username": "no_pw"}, "password"),
        ({"password": PASSWORD}, "username"),
        ({"username": 42, "password": PASSWORD}, "username"),
        ({"username": "typed_pw", "password": 12345678}, "password"),
        ({"username": "nul_name", "password": PASSWORD, "display_name": "a\x00b"}, "display_name"),
        ({"username": "long_name", "password": PASSWORD, "display_name": "x" * 65}, "display_name"),
        ({"username": "extra", "password": PASSWORD, "is_admin": True}, "is_admin"),
    ],
)
async def test_invalid_sign_ups_are_422_naming_the_field(
    client: Client, body: dict[str, Any], mentions: str
) -> None:
    response = await client.post("/v1/users", json=body)
    assert response.status == 422
    error = await response.json()
    assert_error_shape(error, "invalid")
    assert mentions in error["error"]["message"]


async def test_the_edges_of_the_limits_are_accepted(client: Client) -> None:
    for username, password in [("abc", "x" * 8), ("z" * 30, "y" * 128)]:
        response = await client.post("/v1/users", json={"username": username, "password": password})
        assert response.status == 201, await response.text()


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b'"text"', "application/json", 400),
        (b'{"username": "x"}', "text/plain", 415),
    ],
)
async def test_malformed_bodies_are_refused(
    client: Client, data: bytes, content_type: str, status: int
) -> None:
    response = await client.post("/v1/users", data=data, headers={"Content-Type": content_type})
    assert response.status == status
    assert (await response.json())["error"]["code"] in {"bad_request", "unsupported_media_type"}


# --- POST /v1/auth/token ----------------------------------------------------------------


async def test_a_token_is_issued_for_the_right_password(client: Client) -> None:
    await sign_up(client, "tok")
    response = await client.post("/v1/auth/token", json={"username": "TOK", "password": PASSWORD})
    assert response.status == 200
    body = await response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["access_token"].count(".") == 2


@pytest.mark.parametrize(
    "credentials",
    [
        {"username": "tok", "password": "wrong password"},
        {"username": "nobody", "password": PASSWORD},
        {"username": "tok", "password": ""},
    ],
)
async def test_wrong_credentials_get_one_answer_whatever_was_wrong(
    client: Client, credentials: dict[str, str]
) -> None:
    await sign_up(client, "tok")
    response = await client.post("/v1/auth/token", json=credentials)
    assert response.status == 401
    body = await response.json()
    assert_error_shape(body, "unauthorized")
    assert body["error"]["message"] == "wrong username or password"


# --- GET /v1/users/{username} -----------------------------------------------------------


async def test_a_profile_has_counts_from_the_database(client: Client, clean_database: str) -> None:
    ada, bob, cyd = [await sign_up(client, name) for name in ("ada", "bob", "cyd")]
    for follower in (bob, cyd):
        assert (await client.put(f"/v1/following/{ada.id}", headers=follower.auth)).status == 204
    assert (await client.put(f"/v1/following/{bob.id}", headers=ada.auth)).status == 204
    conn = await asyncpg.connect(clean_database)
    try:
        media = await conn.fetchval(
            "INSERT INTO media (user_id, original_key, thumbnail_key, content_type,"
            " width, height, bytes) VALUES ($1, 'o', 't', 'image/jpeg', 1, 1, 1)"
            " RETURNING media_id",
            ada.id,
        )
        await conn.execute(
            "INSERT INTO posts (author_id, media_id) VALUES ($1, $2)",
            ada.id,
            media,
        )
    finally:
        await conn.close()

    body = await profile(client, bob, "ADA")
    assert body == {
        "id": ada.id,
        "username": "ada",
        "display_name": "ada",
        "created_at": body["created_at"],
        "followers_count": 2,
        "following_count": 1,
        "posts_count": 1,
        "following": True,
        "followed_by": True,
    }


async def test_a_profile_says_who_follows_whom_for_the_caller(client: Client) -> None:
    ada, bob = await sign_up(client, "ada"), await sign_up(client, "bob")
    assert (await client.put(f"/v1/following/{ada.id}", headers=bob.auth)).status == 204

    def relation(body: dict[str, object]) -> tuple[object, object]:
        return body["following"], body["followed_by"]

    assert relation(await profile(client, bob, "ada")) == (True, False)
    assert relation(await profile(client, ada, "bob")) == (False, True)
    assert relation(await profile(client, ada, "ada")) == (False, False)
    assert (await client.delete(f"/v1/following/{ada.id}", headers=bob.auth)).status == 204
    assert relation(await profile(client, bob, "ada")) == (False, False)


async def test_me_is_the_callers_own_profile(client: Client) -> None:
    ada, bob = await sign_up(client, "ada"), await sign_up(client, "bob")
    assert (await client.put(f"/v1/following/{ada.id}", headers=bob.auth)).status == 204
    response = await client.get("/v1/me", headers=ada.auth)
    assert response.status == 200
    me = await response.json()
    assert me == await profile(client, ada, "ada")
    assert (me["username"], me["followers_count"], me["following"]) == ("ada", 1, False)
    anonymous = await client.get("/v1/me")
    assert anonymous.status == 401
    assert_error_shape(await anonymous.json(), "unauthorized")


@pytest.mark.parametrize("username", ["nobody", "x", "a" * 300, "bad%20name"])
async def test_an_unknown_profile_is_404(client: Client, username: str) -> None:
    me = await sign_up(client, "me_")
    response = await client.get(f"/v1/users/{username}", headers=me.auth)
    assert response.status == 404
    assert_error_shape(await response.json(), "not_found")


# --- PUT and DELETE /v1/following/{user_id} ---------------------------------------------


async def test_follow_and_unfollow_are_idempotent(client: Client) -> None:
    ada, bob = await sign_up(client, "ada"), await sign_up(client, "bob")
    for _ in range(2):
        response = await client.put(f"/v1/following/{ada.id}", headers=bob.auth)
        assert response.status == 204
        assert await response.read() == b""
    assert (await profile(client, bob, "ada"))["followers_count"] == 1
    for _ in range(2):
        assert (await client.delete(f"/v1/following/{ada.id}", headers=bob.auth)).status == 204
    assert (await profile(client, bob, "ada"))["followers_count"] == 0


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
@pytest.mark.parametrize("user_id", ["999999", "0", "-1", "abc", "9223372036854775808", "1e3"])
async def test_following_an_unknown_user_is_404(client: Client, method: str, user_id: str) -> None:
    me = await sign_up(client, "me_")
    response = await client.request(method, f"/v1/following/{user_id}", headers=me.auth)
    assert response.status == 404
    assert_error_shape(await response.json(), "not_found")


async def test_following_yourself_is_422(client: Client) -> None:
    me = await sign_up(client, "narcissus")
    response = await client.put(f"/v1/following/{me.id}", headers=me.auth)
    assert response.status == 422
    assert_error_shape(await response.json(), "invalid")


async def test_concurrent_follows_and_unfollows_leave_consistent_counts(
    burst_client: Client, clean_database: str
) -> None:
    client = burst_client
    star = await sign_up(client, "star")
    fans = [await sign_up(client, f"fan{i}") for i in range(10)]
    rng = random.Random(7)
    calls = [(rng.choice(fans), rng.choice(["PUT", "DELETE"])) for _ in range(100)]
    responses = await asyncio.gather(
        *(
            client.request(method, f"/v1/following/{star.id}", headers=fan.auth)
            for fan, method in calls
        )
    )
    assert [r.status for r in responses] == [204] * 100

    conn = await asyncpg.connect(clean_database)
    try:
        rows = await conn.fetchval("SELECT count(*) FROM follows WHERE followee_id = $1", star.id)
        duplicates = await conn.fetchval(
            "SELECT count(*) FROM (SELECT follower_id FROM follows GROUP BY 1, followee_id"
            " HAVING count(*) > 1) d"
        )
    finally:
        await conn.close()
    assert duplicates == 0
    body = await profile(client, star, "star")
    assert body["followers_count"] == rows
    following = sum(
        [(await profile(client, star, fan.username))["following_count"] for fan in fans]
    )
    assert following == rows


# --- GET /v1/users/{username}/followers and /following ---------------------------------


async def walk(client: Client, user: User, path: str, limit: int) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        params = {"limit": str(limit), **({"cursor": cursor} if cursor else {})}
        response = await client.get(path, params=params, headers=user.auth)
        assert response.status == 200, await response.text()
        body = await response.json()
        assert set(body) == {"items", "next_cursor"}
        pages.append([item["username"] for item in body["items"]])
        for item in body["items"]:
            assert set(item) == {"id", "username", "display_name"}
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


async def test_followers_and_following_page_through_every_account_once(client: Client) -> None:
    star = await sign_up(client, "star")
    fans = [await sign_up(client, f"fan{i:02d}") for i in range(7)]
    for fan in fans:
        await client.put(f"/v1/following/{star.id}", headers=fan.auth)
        await client.put(f"/v1/following/{fan.id}", headers=star.auth)

    followers = await walk(client, star, "/v1/users/star/followers", limit=3)
    assert followers == [["fan00", "fan01", "fan02"], ["fan03", "fan04", "fan05"], ["fan06"]]
    following = await walk(client, fans[0], "/v1/users/STAR/following", limit=7)
    assert following == [[f"fan{i:02d}" for i in range(7)]]
    assert await walk(client, star, "/v1/users/fan00/followers", limit=20) == [["star"]]
    assert await walk(client, star, "/v1/users/fan00/following", limit=20) == [["star"]]


async def test_an_empty_list_has_no_next_cursor(client: Client) -> None:
    loner = await sign_up(client, "loner")
    assert await walk(client, loner, "/v1/users/loner/followers", limit=5) == [[]]


@pytest.mark.parametrize("which", ["followers", "following"])
async def test_lists_of_an_unknown_user_are_404(client: Client, which: str) -> None:
    me = await sign_up(client, "me_")
    response = await client.get(f"/v1/users/ghost/{which}", headers=me.auth)
    assert response.status == 404
    assert_error_shape(await response.json(), "not_found")


@pytest.mark.parametrize("limit", ["0", "101", "-1", "ten", "1.5", ""])
async def test_a_limit_outside_1_to_100_is_400(client: Client, limit: str) -> None:
    me = await sign_up(client, "me_")
    response = await client.get("/v1/users/me_/followers", params={"limit": limit}, headers=me.auth)
    assert response.status == 400
    assert_error_shape(await response.json(), "bad_request")


async def test_forged_or_foreign_cursors_are_400(client: Client) -> None:
    star = await sign_up(client, "star")
    for i in range(3):
        fan = await sign_up(client, f"fan{i}")
        await client.put(f"/v1/following/{star.id}", headers=fan.auth)
    first = await client.get("/v1/users/star/followers", params={"limit": "1"}, headers=star.auth)
    cursor = (await first.json())["next_cursor"]
    payload, mac = cursor.split(".")
    tampered = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1] + "." + mac
    for bad in [tampered, "garbage", cursor + "x", "a.b.c", "é.é"]:
        response = await client.get(
            "/v1/users/star/followers", params={"cursor": bad}, headers=star.auth
        )
        assert response.status == 400, bad
        assert_error_shape(await response.json(), "invalid_cursor")
    # A followers cursor does not page the following list.
    response = await client.get(
        "/v1/users/star/following", params={"cursor": cursor}, headers=star.auth
    )
    assert response.status == 400
