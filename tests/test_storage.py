"""The bucket the API's image URLs point at, and the embedded stack's copy of it."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from app.devstack.s3 import MIRROR_MARKER, BucketMirror, EmbeddedS3
from app.errors import StorageRefused
from app.keys import STORAGE
from app.settings import Settings
from app.storage import CACHE_FOREVER, StoredObject, ensure_bucket, open_storage
from tests.helpers import free_port

Client = TestClient[web.Request, web.Application]


async def test_objects_are_readable_by_anyone_at_their_public_url_and_writable_by_no_one(
    client: Client, settings: Settings
) -> None:
    storage = client.app[STORAGE]
    await storage.client.put_object(
        Bucket=storage.bucket, Key="media/7/a.jpg", Body=b"jpeg bytes", ContentType="image/jpeg"
    )
    url = storage.public_url("media/7/a.jpg")
    assert url == f"{settings.s3_endpoint_url}/{settings.s3_bucket}/media/7/a.jpg"
    with urllib.request.urlopen(url) as response:  # noqa: ASYNC210
        assert response.read() == b"jpeg bytes"

    for method in ("PUT", "DELETE"):
        request = urllib.request.Request(url, data=b"evil", method=method)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request)  # noqa: ASYNC210
        refused.value.close()
        assert refused.value.code == 403


async def test_ensure_bucket_is_idempotent(client: Client, settings: Settings) -> None:
    await ensure_bucket(settings)
    await ensure_bucket(settings)
    await client.app[STORAGE].check()


def test_the_mirror_restores_every_object_and_forgets_deleted_ones(tmp_path: Path) -> None:
    keys = {
        "media/1/photo.jpg": b"photo",
        "../../outside": b"a key that looks like a path escape",
        "..": b"dots",
        "with space/and%percent": b"odd",
    }
    first = EmbeddedS3(free_port())
    first.start()
    try:
        client = first.client()
        client.create_bucket(Bucket="mirrored")
        mirror = BucketMirror(client, "mirrored", tmp_path / "copy")
        assert mirror.restore() == 0
        for key, body in keys.items():
            client.put_object(Bucket="mirrored", Key=key, Body=body, ContentType="image/jpeg")
        client.put_object(Bucket="mirrored", Key="deleted-later", Body=b"x")
        mirror.sync()
        client.delete_object(Bucket="mirrored", Key="deleted-later")
        mirror.sync()
    finally:
        first.stop()

    files = {p.resolve() for p in (tmp_path / "copy").rglob("*") if p.is_file()}
    assert all(p.is_relative_to((tmp_path / "copy").resolve()) for p in files)

    second = EmbeddedS3(free_port())
    second.start()
    try:
        client = second.client()
        client.create_bucket(Bucket="mirrored")
        assert BucketMirror(client, "mirrored", tmp_path / "copy").restore() == len(keys)
        for key, body in keys.items():
            stored = client.get_object(Bucket="mirrored", Key=key)
            assert stored["Body"].read() == body
            assert stored["ContentType"] == "image/jpeg"
        listed = client.list_objects_v2(Bucket="mirrored")["Contents"]
        assert sorted(item["Key"] for item in listed) == sorted([*keys, MIRROR_MARKER])
    finally:
        second.stop()


async def test_the_uploads_put_path_stores_what_the_client_reads_back(
    settings: Settings, bucket: str
) -> None:
    """The upload's PUTs skip aiobotocore (app/s3put.py) but sign and address as it does."""
    async with open_storage(settings) as storage:
        assert storage.putter is not None
        body = bytearray(b"\xff\xd8\xff" + bytes(range(256)) * 9000)  # 2.3 MB, from its buffer
        keys = ["media/9/odd name+%.jpg", "media/9/t.jpg"]
        await storage.put_all(
            [
                StoredObject(keys[0], body, "image/jpeg"),
                StoredObject(keys[1], b"small", "image/png"),
            ]
        )
        stored = await storage.client.get_object(Bucket=storage.bucket, Key=keys[0])
        assert await stored["Body"].read() == bytes(body)
        assert stored["ContentType"] == "image/jpeg"
        assert stored["CacheControl"] == CACHE_FOREVER
        small = await storage.client.get_object(Bucket=storage.bucket, Key=keys[1])
        assert await small["Body"].read() == b"small"


async def test_a_put_with_the_wrong_secret_is_refused_once_and_not_retried(
    settings: Settings, bucket: str
) -> None:
    wrong = settings.with_overrides(s3_secret_access_key="not-the-secret", s3_deadline=5.0)
    async with open_storage(wrong) as storage:
        started = time.monotonic()
        with pytest.raises(StorageRefused):
            await storage.put_all([StoredObject("media/9/x.jpg", b"x", "image/jpeg")])
        assert time.monotonic() - started < 0.9, "a 403 was retried with backoff"
