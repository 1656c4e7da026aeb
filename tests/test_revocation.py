"""A token stops working when its account is gone, when its tokens are revoked, and when the
database is made anew under the same signing secret: 401 everywhere, never a 500."""

from __future__ import annotations

import io

import asyncpg

from app.main import create_app
from app.settings import Settings
from tests.helpers import (
    PASSWORD,
    AiohttpClient,
    Client,
    User,
    assert_error_shape,
    sign_up,
    upload_photo,
)


async def every_kind_of_request(client: Client, user: User, other: User) -> list[int]:
    form_photo = {"file": io.BytesIO(b"not even read")}
    answers = [
        await client.get("/v1/feed", headers=user.auth),
        await client.get(f"/v1/users/{other.username}", headers=user.auth),
        await client.put(f"/v1/following/{other.id}", headers=user.auth),
        await client.put("/v1/posts/1/like", headers=user.auth),
        await client.post("/v1/media", data=form_photo, headers=user.auth),
        await client.post("/v1/posts", json={"media_id": 1}, headers=user.auth),
    ]
    for answer in answers:
        if answer.status == 401:
            assert_error_shape(await answer.json(), "invalid_token")
    return [a.status for a in answers]


async def test_a_deleted_accounts_token_is_401_everywhere(
    aiohttp_client: AiohttpClient, settings: Settings, clean_database: str
) -> None:
    client = await aiohttp_client(create_app(settings.with_overrides(auth_cache_seconds=0)))
    gone, other = await sign_up(client, "gone"), await sign_up(client, "other")
    assert (await client.get("/v1/feed", headers=gone.auth)).status == 200
    conn = await asyncpg.connect(clean_database)
    try:
        await conn.execute("DELETE FROM users WHERE user_id = $1", gone.id)
    finally:
        await conn.close()
    assert await every_kind_of_request(client, gone, other) == [401] * 6


async def test_revoking_ends_every_token_of_the_account_at_once(client: Client) -> None:
    ada, other = await sign_up(client, "ada"), await sign_up(client, "other")
    second = await client.post("/v1/auth/token", json={"username": "ada", "password": PASSWORD})
    second_token = (await second.json())["access_token"]
    assert (await client.get("/v1/feed", headers=ada.auth)).status == 200  # remembered now

    assert (await client.delete("/v1/auth/tokens", headers=ada.auth)).status == 204

    assert await every_kind_of_request(client, ada, other) == [401] * 6
    stale = {"Authorization": f"Bearer {second_token}"}
    assert (await client.get("/v1/feed", headers=stale)).status == 401
    again = await client.post("/v1/auth/token", json={"username": "ada", "password": PASSWORD})
    fresh = {"Authorization": f"Bearer {(await again.json())['access_token']}"}
    assert (await client.get("/v1/feed", headers=fresh)).status == 200
    assert (await client.get("/v1/feed", headers=other.auth)).status == 200  # others untouched


async def test_a_database_made_anew_does_not_hand_old_tokens_to_new_accounts(
    aiohttp_client: AiohttpClient, settings: Settings, clean_database: str
) -> None:
    client = await aiohttp_client(create_app(settings.with_overrides(auth_cache_seconds=0)))
    old = await sign_up(client, "first_owner")
    conn = await asyncpg.connect(clean_database)
    try:
        await conn.execute("TRUNCATE users RESTART IDENTITY CASCADE")
    finally:
        await conn.close()
    new = await sign_up(client, "second_owner")
    assert new.id == old.id  # the same user id, handed to someone else

    response = await client.get("/v1/users/second_owner", headers=old.auth)
    assert response.status == 401
    assert (await client.get("/v1/users/second_owner", headers=new.auth)).status == 200


async def test_a_vanished_user_with_a_remembered_key_still_gets_no_500(
    aiohttp_client: AiohttpClient, settings: Settings, clean_database: str
) -> None:
    """Within AUTH_CACHE_SECONDS another process may still trust the token: writes then fail
    with a clear 4xx, not a foreign-key 500."""
    client = await aiohttp_client(create_app(settings.with_overrides(auth_cache_seconds=60)))
    gone, other = await sign_up(client, "gone"), await sign_up(client, "other")
    await upload_photo(client, other)
    assert (await client.get("/v1/feed", headers=gone.auth)).status == 200  # key remembered
    conn = await asyncpg.connect(clean_database)
    try:
        await conn.execute("DELETE FROM users WHERE user_id = $1", gone.id)
    finally:
        await conn.close()
    statuses = await every_kind_of_request(client, gone, other)
    assert all(s < 500 for s in statuses), statuses
