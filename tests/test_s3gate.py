"""The embedded S3 endpoint answers only its owner: anonymous writes, lists, resets and unsigned
form POSTs are refused, while public reads and signed (or presigned) requests keep working."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import botocore.exceptions
import pytest

from app.devstack.s3 import MIRROR_MARKER, BucketMirror, EmbeddedS3, s3_client
from app.storage import public_read_policy

PHOTO = b"\xff\xd8\xff\xe0 a photo"


@pytest.fixture
def owned_bucket(s3_server: EmbeddedS3) -> tuple[Any, str]:
    """A bucket with the service's public-read policy, one public and one private object."""
    client = s3_server.client()
    name = f"gate-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    client.put_bucket_policy(Bucket=name, Policy=json.dumps(public_read_policy(name)))
    client.put_object(Bucket=name, Key="media/1/a.jpg", Body=PHOTO, ContentType="image/jpeg")
    client.put_object(Bucket=name, Key="sources/1/a.heic", Body=b"gps inside")
    return client, name


def keys(client: Any, bucket: str) -> list[str]:
    listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return [o["Key"] for o in listed if o["Key"] != MIRROR_MARKER]


async def anonymous(method: str, url: str, **kwargs: Any) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, **kwargs) as response,
    ):
        return response.status, await response.read()


async def test_anonymous_list_put_delete_and_reset_are_refused(
    s3_server: EmbeddedS3, owned_bucket: tuple[Any, str]
) -> None:
    client, bucket = owned_bucket
    base = f"{s3_server.endpoint_url}/{bucket}"

    status, body = await anonymous("GET", base)  # list every key
    assert (status, b"<Code>AccessDenied</Code>" in body) == (403, True)
    assert (await anonymous("GET", f"{s3_server.endpoint_url}/"))[0] == 403  # list buckets
    page = b"<html><script>steal()</script></html>"
    put = await anonymous("PUT", f"{base}/media/evil.html", data=page)
    assert put[0] == 403
    assert (await anonymous("DELETE", f"{base}/media/1/a.jpg"))[0] == 403
    assert (await anonymous("POST", f"{s3_server.endpoint_url}/moto-api/reset"))[0] == 404
    assert (await anonymous("GET", f"{s3_server.endpoint_url}/moto-api/"))[0] == 404

    assert sorted(keys(client, bucket)) == ["media/1/a.jpg", "sources/1/a.heic"]


async def test_an_unsigned_or_forged_form_post_is_refused(
    s3_server: EmbeddedS3, owned_bucket: tuple[Any, str]
) -> None:
    client, bucket = owned_bucket
    form = aiohttp.FormData()
    form.add_field("key", "media/planted.html")
    form.add_field("Content-Type", "text/html")
    form.add_field("file", b"<script>1</script>", filename="x.html")
    assert (await anonymous("POST", f"{s3_server.endpoint_url}/{bucket}", data=form))[0] == 403

    forged = s3_client(s3_server.endpoint_url, "not-the-secret").generate_presigned_post(
        bucket, "media/forged.jpg"
    )
    status, body = await post_form(forged, PHOTO)
    assert status == 403
    assert b"SignatureDoesNotMatch" in body
    assert "media/planted.html" not in keys(client, bucket)
    assert "media/forged.jpg" not in keys(client, bucket)


async def post_form(presigned: dict[str, Any], data: bytes, **overrides: str) -> tuple[int, bytes]:
    form = aiohttp.FormData()
    for name, value in {**presigned["fields"], **overrides}.items():
        form.add_field(name, value)
    form.add_field("file", data, filename="photo.jpg", content_type="image/jpeg")
    return await anonymous("POST", presigned["url"], data=form)


def presign(client: Any, bucket: str, key: str, max_bytes: int = 1000, expires: int = 60) -> Any:
    return client.generate_presigned_post(
        bucket,
        key,
        Fields={"Content-Type": "image/jpeg"},
        Conditions=[{"Content-Type": "image/jpeg"}, ["content-length-range", 1, max_bytes]],
        ExpiresIn=expires,
    )


async def test_a_presigned_post_is_accepted_only_as_its_policy_allows(
    owned_bucket: tuple[Any, str],
) -> None:
    client, bucket = owned_bucket
    ok = presign(client, bucket, "uploads/ok.jpg")
    assert (await post_form(ok, PHOTO))[0] == 204
    assert client.get_object(Bucket=bucket, Key="uploads/ok.jpg")["Body"].read() == PHOTO

    too_big = presign(client, bucket, "uploads/big.jpg", max_bytes=10)
    assert (await post_form(too_big, PHOTO))[0] == 403
    other_key = presign(client, bucket, "uploads/mine.jpg")
    assert (await post_form(other_key, PHOTO, key="media/theirs.jpg"))[0] == 403
    wrong_type = presign(client, bucket, "uploads/typed.jpg")
    assert (await post_form(wrong_type, PHOTO, **{"Content-Type": "text/html"}))[0] == 403
    extra_field = presign(client, bucket, "uploads/extra.jpg")
    assert (await post_form(extra_field, PHOTO, **{"x-amz-meta-evil": "1"}))[0] == 403
    expired = presign(client, bucket, "uploads/late.jpg", expires=-1)
    status, body = await post_form(expired, PHOTO)
    assert (status, b"expired" in body) == (403, True)

    assert sorted(keys(client, bucket)) == ["media/1/a.jpg", "sources/1/a.heic", "uploads/ok.jpg"]


async def test_public_objects_are_readable_by_anyone_and_private_ones_only_presigned(
    s3_server: EmbeddedS3, owned_bucket: tuple[Any, str]
) -> None:
    client, bucket = owned_bucket
    base = f"{s3_server.endpoint_url}/{bucket}"
    assert await anonymous("GET", f"{base}/media/1/a.jpg") == (200, PHOTO)
    assert (await anonymous("GET", f"{base}/sources/1/a.heic"))[0] == 403

    url = client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "sources/1/a.heic"}, ExpiresIn=60
    )
    assert await anonymous("GET", url) == (200, b"gps inside")
    assert (await anonymous("GET", url.replace("sources/1", "sources/2")))[0] == 403
    expiring = client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "sources/1/a.heic"}, ExpiresIn=1
    )
    await asyncio.sleep(2.1)
    status, body = await anonymous("GET", expiring)
    assert (status, b"expired" in body) == (403, True)


def test_the_owners_signed_requests_work_and_anothers_do_not(
    s3_server: EmbeddedS3, owned_bucket: tuple[Any, str]
) -> None:
    client, bucket = owned_bucket
    client.put_object(Bucket=bucket, Key="media/../odd key%.jpg", Body=b"odd")
    assert client.get_object(Bucket=bucket, Key="media/../odd key%.jpg")["Body"].read() == b"odd"
    client.delete_object(Bucket=bucket, Key="media/../odd key%.jpg")

    stranger = s3_client(s3_server.endpoint_url, "a-guess")
    with pytest.raises(botocore.exceptions.ClientError, match="SignatureDoesNotMatch"):
        stranger.list_objects_v2(Bucket=bucket)
    with pytest.raises(botocore.exceptions.ClientError, match="SignatureDoesNotMatch"):
        stranger.delete_bucket(Bucket=bucket)


def test_the_mirror_keeps_its_copies_when_the_bucket_vanishes_or_is_made_again(
    s3_server: EmbeddedS3, owned_bucket: tuple[Any, str], tmp_path: Path
) -> None:
    client, bucket = owned_bucket
    mirror = BucketMirror(client, bucket, tmp_path / "mirror")
    mirror.restore()
    mirror.sync()
    copies = sorted(p.name for p in (tmp_path / "mirror" / "objects").iterdir())
    assert len(copies) == 2

    # What `/moto-api/reset` did before the gate: the bucket and its objects gone...
    for key in [*keys(client, bucket), MIRROR_MARKER]:
        client.delete_object(Bucket=bucket, Key=key)
    client.delete_bucket(Bucket=bucket)
    mirror.sync()
    assert sorted(p.name for p in (tmp_path / "mirror" / "objects").iterdir()) == copies

    # ...then made again, empty, as an anonymous caller used to: the objects are put back.
    client.create_bucket(Bucket=bucket)
    mirror.sync()
    assert sorted(p.name for p in (tmp_path / "mirror" / "objects").iterdir()) == copies
    assert sorted(keys(client, bucket)) == ["media/1/a.jpg", "sources/1/a.heic"]
    assert client.get_object(Bucket=bucket, Key="media/1/a.jpg")["Body"].read() == PHOTO


def test_one_key_too_long_for_a_file_name_is_mirrored_and_stops_nothing(
    owned_bucket: tuple[Any, str], tmp_path: Path
) -> None:
    client, bucket = owned_bucket
    long_key = "media/" + "é" * 400  # 800 bytes, 2,400 once quoted: over any file name limit
    client.put_object(Bucket=bucket, Key=long_key, Body=b"long")
    mirror = BucketMirror(client, bucket, tmp_path / "mirror")
    mirror.restore()
    mirror.sync()
    client.put_object(Bucket=bucket, Key="media/later.jpg", Body=b"later")
    mirror.sync()

    folder = tmp_path / "mirror" / "objects"
    assert len(list(folder.iterdir())) == 4
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in folder.iterdir())
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "mirror").stat().st_mode & 0o777 == 0o700


def test_the_mirror_makes_every_missing_folder_private(
    owned_bucket: tuple[Any, str], tmp_path: Path
) -> None:
    client, bucket = owned_bucket
    BucketMirror(client, bucket, tmp_path / "local" / "s3" / bucket).restore()
    for folder in ("local", "local/s3", f"local/s3/{bucket}", f"local/s3/{bucket}/objects"):
        assert (tmp_path / folder).stat().st_mode & 0o777 == 0o700, folder
