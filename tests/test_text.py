"""Every text field refuses what PostgreSQL cannot hold or a reader cannot see, with a 422 naming
the field, and nothing already stored changes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import PASSWORD, Client, assert_error_shape, sign_up, upload_photo

NUL = "\x00"
# Right-to-left override, zero-width space, word joiner, byte order mark, soft hyphen,
# a C1 control (NEL), a line separator.
INVISIBLE = ["\u202e", "\u200b", "\u2060", "\ufeff", "\u00ad", "\x85", "\u2028"]


async def refused(client: Client, path: str, body: dict[str, Any], field: str, **kw: Any) -> None:
    response = await client.post(path, json=body, **kw)
    assert response.status == 422, await response.text()
    payload = await response.json()
    assert_error_shape(payload, "invalid")
    assert field in payload["error"]["message"]


@pytest.mark.parametrize(
    ("field", "body"),
    [
        ("username", {"username": f"nul{NUL}name", "password": PASSWORD}),
        ("password", {"username": "nulpass", "password": f"pass{NUL}word123"}),
        ("display_name", {"username": "nuldisp", "password": PASSWORD, "display_name": f"A{NUL}"}),
    ],
)
async def test_nul_in_any_sign_up_field_is_422(client: Client, field: str, body: Any) -> None:
    await refused(client, "/v1/users", body, field)


@pytest.mark.parametrize(
    ("field", "body"),
    [
        ("username", {"username": f"ada{NUL}", "password": PASSWORD}),
        ("password", {"username": "ada", "password": f"{PASSWORD}{NUL}"}),
    ],
)
async def test_nul_in_a_login_field_is_422_not_a_500(client: Client, field: str, body: Any) -> None:
    await sign_up(client, "ada")
    await refused(client, "/v1/auth/token", body, field)


async def test_a_caption_keeps_line_breaks_but_refuses_nul_and_other_controls(
    client: Client,
) -> None:
    ada = await sign_up(client, "ada")
    for caption in (f"a{NUL}b", "bell\x07", "c1\x85"):
        media = await upload_photo(client, ada)
        await refused(
            client,
            "/v1/posts",
            {"media_id": media["media_id"], "caption": caption},
            "caption",
            headers=ada.auth,
        )
    media = await upload_photo(client, ada)
    kept = "first line\nsecond\tline\r\nשלום עולם"  # right-to-left script is welcome in captions
    response = await client.post(
        "/v1/posts", json={"media_id": media["media_id"], "caption": kept}, headers=ada.auth
    )
    assert response.status == 201
    assert (await response.json())["caption"] == kept


@pytest.mark.parametrize("char", INVISIBLE)
async def test_display_names_refuse_invisible_and_direction_changing_characters(
    client: Client, char: str
) -> None:
    body = {"username": "spoof", "password": PASSWORD, "display_name": f"admin{char}gnp.exe"}
    await refused(client, "/v1/users", body, "display_name")
    login = {"username": "spoof", "password": PASSWORD}
    assert (await client.post("/v1/auth/token", json=login)).status == 401  # nobody was made


@pytest.mark.parametrize(
    "display_name",
    [
        "می\u200cخواهم",  # Persian needs the zero-width non-joiner between letters
        "👩\u200d💻 Ada",  # an emoji sequence joined by the zero-width joiner
        "Zoë Ω 李",
        "عربي",
    ],
)
async def test_display_names_keep_what_languages_and_emoji_need(
    client: Client, display_name: str
) -> None:
    response = await client.post(
        "/v1/users",
        json={"username": "worldly", "password": PASSWORD, "display_name": display_name},
    )
    assert response.status == 201
    assert (await response.json())["display_name"] == display_name


@pytest.mark.parametrize("display_name", ["\u200dAda", "Ada\u200c", "A \u200d b"])
async def test_a_joiner_that_joins_nothing_is_refused(client: Client, display_name: str) -> None:
    body = {"username": "joiner", "password": PASSWORD, "display_name": display_name}
    await refused(client, "/v1/users", body, "display_name")
