"""The bucket the API's image URLs point at, and the embedded stack's copy of it."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from app.devstack.s3 import MIRROR_MARKER, BucketMirror, EmbeddedS3
from app.keys import STORAGE
from app.settings import Settings
from app.storage import ensure_bucket
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
