"""V1 uploads against the real protocols: presign, a form POST straight to S3 (moto behind its
gate, over HTTP) as a browser sends it, complete, a media worker, ready, a post."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import asyncpg
import pytest

from app.keys import DATABASE, QUEUE, STORAGE
from app.settings import Settings
from app.sweep import abandon_expired_uploads
from app.worker import serve_jobs
from tests.helpers import (
    CORPUS,
    PHOTO,
    Client,
    User,
    assert_error_shape,
    bucket_keys,
    direct_upload,
    png_claiming,
    presign,
    send_form,
    sign_up,
    wait_until_processed,
)


@asynccontextmanager
async def media_worker(settings: Settings) -> AsyncIterator[None]:
    """A media worker in this process, with its own resources, as `python -m app worker`."""
    stop = asyncio.Event()
    task = asyncio.create_task(serve_jobs(settings.with_overrides(thumbnail_workers=1), stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def anonymous_status(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url) as answer:
        await answer.read()
        return answer.status


@pytest.fixture
async def ada(client: Client) -> User:
    return await sign_up(client, "ada")


# --- the whole flow ------------------------------------------------------------------------


async def test_presign_send_complete_process_and_post(
    client: Client, settings: Settings, ada: User
) -> None:
    form = await presign(client, ada, len(PHOTO))
    assert form["fields"]["key"].startswith(f"incoming/{ada.id}/")
    assert await send_form(form, PHOTO) == 204
    completed = await client.post(f"/v1/uploads/{form['upload_id']}/complete", headers=ada.auth)
    assert completed.status == 202
    media = await completed.json()
    assert media["status"] == "processing"
    assert "original_url" not in media  # nothing to show yet

    early = await client.post("/v1/posts", json={"media_id": media["media_id"]}, headers=ada.auth)
    assert early.status == 409
    assert_error_shape(await early.json(), "media_not_ready")

    async with media_worker(settings):
        ready = await wait_until_processed(client, ada, media["media_id"])
    assert ready["status"] == "ready"
    assert (ready["width"], ready["height"]) == (290, 442)
    assert ready["blurhash"]
    assert [(r["width"], r["height"]) for r in ready["renditions"]] == [(290, 442), (290, 442)]
    for url in [
        ready["original_url"],
        ready["thumbnail_url"],
        *(r["url"] for r in ready["renditions"]),
    ]:
        assert await anonymous_status(url) == 200, url
    # The uploaded object is gone; the public ones are the media's, nothing else.
    keys = await bucket_keys(client)
    assert not [k for k in keys if k.startswith("incoming/")]
    assert len(keys) == 4

    again = await client.post(f"/v1/uploads/{form['upload_id']}/complete", headers=ada.auth)
    assert again.status == 200
    assert (await again.json())["media_id"] == media["media_id"]
    post = await client.post("/v1/posts", json={"media_id": media["media_id"]}, headers=ada.auth)
    assert post.status == 201, await post.text()


async def test_a_heic_is_served_as_a_jpeg_and_its_source_stays_private(
    client: Client, settings: Settings, ada: User
) -> None:
    heic = (CORPUS / "heic-orientation-6.heic").read_bytes()
    media = await direct_upload(client, ada, heic, "image/heic")
    async with media_worker(settings):
        ready = await wait_until_processed(client, ada, media["media_id"])
    assert ready["status"] == "ready"
    assert (ready["width"], ready["height"]) == (3024, 4032)  # turned upright
    assert [(r["width"], r["height"]) for r in ready["renditions"]] == [(450, 600), (810, 1080)]
    async with aiohttp.ClientSession() as session, session.get(ready["original_url"]) as image:
        assert (await image.read())[:3] == b"\xff\xd8\xff"
    sources = [k for k in await bucket_keys(client) if k.startswith("sources/")]
    assert len(sources) == 1
    storage = client.app[STORAGE]
    assert await anonymous_status(storage.public_url(sources[0])) == 403
    stored = await storage.client.get_object(Bucket=storage.bucket, Key=sources[0])
    assert await stored["Body"].read() == heic


# --- what presign signs ----------------------------------------------------------------------


async def test_the_policy_pins_the_key_the_type_and_the_size(
    client: Client, settings: Settings, ada: User
) -> None:
    form = await presign(client, ada, 1234, "image/png")
    policy = json.loads(base64.b64decode(form["fields"]["policy"]))
    conditions = policy["conditions"]
    assert {"key": form["fields"]["key"]} in conditions
    assert {"Content-Type": "image/png"} in conditions
    assert ["content-length-range", 1, settings.max_upload_bytes] in conditions
    expires = dt.datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00"))
    left = (expires - dt.datetime.now(dt.UTC)).total_seconds()
    assert settings.upload_url_ttl - 60 < left <= settings.upload_url_ttl


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"content_type": "image/gif", "bytes": 10}, 415, "unsupported_media_type"),
        ({"content_type": "image/jpeg", "bytes": 11 * 1024 * 1024}, 413, "payload_too_large"),
        ({"content_type": "image/jpeg", "bytes": 0}, 422, "invalid"),
        ({"content_type": "image/jpeg"}, 422, "invalid"),
        ({"content_type": "image/jpeg", "bytes": 10, "extra": 1}, 422, "invalid"),
    ],
)
async def test_nothing_is_signed_for_a_bad_declaration(
    client: Client, ada: User, body: dict[str, Any], status: int, code: str
) -> None:
    response = await client.post("/v1/uploads", json=body, headers=ada.auth)
    assert response.status == status
    assert_error_shape(await response.json(), code)


async def test_the_store_refuses_forms_that_do_not_meet_the_signed_policy(
    client: Client, ada: User
) -> None:
    form = await presign(client, ada, len(PHOTO))
    forged = {**form, "fields": {**form["fields"], "key": f"media/{ada.id}/planted.jpg"}}
    assert await send_form(forged, PHOTO) == 403
    unsigned = {
        **form,
        "fields": {
            k: v
            for k, v in form["fields"].items()
            if k.lower() not in {"signature", "x-amz-signature"}
        },
    }
    assert await send_form(unsigned, PHOTO) == 403
    other_type = {**form, "fields": {**form["fields"], "Content-Type": "text/html"}}
    assert await send_form(other_type, b"<script>", "text/html") == 403
    assert await bucket_keys(client) == []
    assert await send_form(form, PHOTO) == 204


# --- what complete refuses -------------------------------------------------------------------


async def _complete(client: Client, user: User, upload_id: int) -> aiohttp.ClientResponse:
    return await client.post(f"/v1/uploads/{upload_id}/complete", headers=user.auth)


@pytest.mark.parametrize(
    ("sent", "declared_type", "declared_size", "status", "code"),
    [
        (PHOTO, "image/jpeg", len(PHOTO) + 10, 422, "size_mismatch"),
        ((CORPUS / "sample.png").read_bytes(), "image/jpeg", None, 415, "unsupported_media_type"),
        ((CORPUS / "logo.svg").read_bytes(), "image/png", None, 415, "unsupported_media_type"),
        (png_claiming(30_000, 30_000), "image/png", None, 422, "image_too_large"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 100, "image/jpeg", None, 422, "undecodable_image"),
    ],
    ids=["a size that lies", "a PNG behind a JPEG type", "SVG", "a pixel flood", "no frame header"],
)
async def test_a_stored_file_that_is_not_what_was_declared_is_refused_and_deleted(
    client: Client,
    ada: User,
    sent: bytes,
    declared_type: str,
    declared_size: int | None,
    status: int,
    code: str,
) -> None:
    form = await presign(client, ada, declared_size or len(sent), declared_type)
    # The store takes what the form names as its type; the service looks at the bytes.
    assert await send_form(form, sent, declared_type) == 204
    response = await _complete(client, ada, form["upload_id"])
    assert response.status == status, await response.text()
    assert_error_shape(await response.json(), code)
    assert await bucket_keys(client) == []


async def test_a_file_over_the_limit_never_reaches_the_store(
    aiohttp_client: Any, settings: Settings
) -> None:
    from app.main import create_app

    small = settings.with_overrides(max_upload_bytes=1000, upload_memory_budget=1000)
    client = await aiohttp_client(create_app(small))
    user = await sign_up(client, "bob")
    form = await presign(client, user, 900)
    # The form's policy says 1..1000 bytes: the store's gate refuses more, whatever was declared.
    assert await send_form(form, PHOTO) == 403
    response = await _complete(client, user, form["upload_id"])
    assert response.status == 409
    assert_error_shape(await response.json(), "upload_not_received")


async def test_a_truncated_image_passes_complete_and_fails_in_the_worker(
    client: Client, settings: Settings, ada: User
) -> None:
    media = await direct_upload(client, ada, (CORPUS / "truncated.jpg").read_bytes())
    async with media_worker(settings):
        failed = await wait_until_processed(client, ada, media["media_id"])
    assert failed["status"] == "failed"
    assert failed["failure"] == "undecodable_image"
    assert await bucket_keys(client) == []
    post = await client.post("/v1/posts", json={"media_id": media["media_id"]}, headers=ada.auth)
    assert post.status == 409
    assert_error_shape(await post.json(), "media_not_ready")


async def test_complete_answers_404_409_and_410_as_the_upload_stands(
    client: Client, settings: Settings, ada: User
) -> None:
    eve = await sign_up(client, "eve")
    form = await presign(client, ada, len(PHOTO))
    not_yet = await _complete(client, ada, form["upload_id"])
    assert not_yet.status == 409
    assert_error_shape(await not_yet.json(), "upload_not_received")

    assert await send_form(form, PHOTO) == 204
    someone_else = await _complete(client, eve, form["upload_id"])
    assert someone_else.status == 404
    assert_error_shape(await someone_else.json(), "not_found")
    assert (await _complete(client, ada, 999_999)).status == 404

    # The presign expires and the sweep deletes what was sent and never completed.
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute("UPDATE direct_uploads SET expires_at = now() - interval '1 hour'")
    finally:
        await conn.close()
    storage = client.app[STORAGE]
    assert await abandon_expired_uploads(client.app[DATABASE].connection, storage, 60) == 1
    assert await bucket_keys(client) == []
    gone = await _complete(client, ada, form["upload_id"])
    assert gone.status == 410
    assert_error_shape(await gone.json(), "upload_expired")


async def test_three_completes_at_once_make_one_media_and_one_job(
    client: Client, settings: Settings, ada: User
) -> None:
    form = await presign(client, ada, len(PHOTO))
    assert await send_form(form, PHOTO) == 204
    answers = await asyncio.gather(*(_complete(client, ada, form["upload_id"]) for _ in range(3)))
    assert [a.status for a in answers] == [202] * 3
    (media_id,) = {(await a.json())["media_id"] for a in answers}
    waiting, _ = await client.app[QUEUE].depth()
    assert waiting == 1
    conn = await asyncpg.connect(settings.database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM media") == 1
    finally:
        await conn.close()
    async with media_worker(settings):
        ready = await wait_until_processed(client, ada, media_id)
    assert ready["status"] == "ready"
    assert len(await bucket_keys(client)) == 4


async def test_someone_elses_media_reads_as_missing(client: Client, ada: User) -> None:
    media = await direct_upload(client, ada, PHOTO)
    eve = await sign_up(client, "eve")
    response = await client.get(f"/v1/media/{media['media_id']}", headers=eve.auth)
    assert response.status == 404
    assert_error_shape(await response.json(), "not_found")
