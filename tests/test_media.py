"""POST /v1/media against real libvips, a real S3 endpoint and PostgreSQL, with the real corpus."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import os
import signal
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import pyvips
from aiohttp import web
from blurhash_rs import blurhash_decode
from PIL import ImageStat

from app.auth import Tokens, public
from app.devstack.postgres import EmbeddedPostgres
from app.devstack.s3 import EmbeddedS3
from app.images import make_sizes, make_thumbnail
from app.keys import STORAGE
from app.main import create_app
from app.settings import Settings
from app.storage import Storage, s3_client
from app.sweep import find_orphans
from tests.helpers import (
    CORPUS,
    AiohttpClient,
    Client,
    User,
    assert_error_shape,
    bucket_keys,
    free_port,
    make_users,
    media_rows,
    png_claiming,
    refuses_connections,
    service_process,
    settings_for,
    sign_up,
    upload,
)

ACCEPTED = [
    "Example1.heic",
    "heic-orientation-6.heic",
    "oneplus-heic.heic",
    "apple-heic-gainmap.heic",
    *(f"rotation/{n}.jpg" for n in range(1, 9)),
    "sample.jpg",
    "sample-xyb.jpg",
    "ultra-hdr.jpg",
    "cd1.1.jpg",
    "cd2.1.jpg",
    "cd3.1.jpg",
    "cd4.1.jpg",
    "sample.png",
    "indexed.png",
    "rgba.png",
    "trans-x.png",
]
REFUSED_TYPES = [
    "17000x17000.avif",
    "avif-orientation-6.avif",
    "1.webp",
    "looks-like-svg.webp",
    "big-height.webp",
    "logo.svg",
    "cogs.gif",
    "truncated.gif",
    "sample.tif",
    "blankpage.pdf",
    "favicon.ico",
]


@pytest.fixture(autouse=True)
async def no_orphans_left(settings: Settings, clean_database: str) -> AsyncIterator[None]:
    """After every test here, every object in the bucket belongs to a media row."""
    yield
    conn = await asyncpg.connect(clean_database)
    try:
        async with s3_client(settings) as client:
            storage = Storage(client, settings.s3_bucket, settings.public_base_url)
            assert await find_orphans(conn, storage, dt.timedelta(0)) == []
    finally:
        await conn.close()


async def fetch(client: Client, url: str) -> bytes:
    async with client.session.get(url) as response:
        assert response.status == 200, url
        return await response.read()


@pytest.fixture
async def uploader(client: Client) -> User:
    return await sign_up(client, "uploader")


# --- the corpus ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ACCEPTED)
async def test_accepted_images_are_stored_with_a_thumbnail(
    client: Client, uploader: User, clean_database: str, name: str
) -> None:
    data = (CORPUS / name).read_bytes()
    response = await upload(client, uploader, data, filename=Path(name).name)
    assert response.status == 201, await response.text()
    body = await response.json()
    assert set(body) == {
        "media_id",
        "content_type",
        "width",
        "height",
        "bytes",
        "original_url",
        "thumbnail_url",
        "thumbnail_width",
        "thumbnail_height",
        "blurhash",
        "created_at",
    }
    assert body["bytes"] == len(data)
    assert (
        body["content_type"]
        == {"heic": "image/heic", "jpg": "image/jpeg", "png": "image/png"}[name.rsplit(".", 1)[1]]
    )

    thumbnail = pyvips.Image.new_from_buffer(await fetch(client, body["thumbnail_url"]), "")
    assert thumbnail.get("vips-loader") == "jpegload_buffer"
    assert max(thumbnail.width, thumbnail.height) == min(150, max(body["width"], body["height"]))
    assert thumbnail.bands == 3
    assert thumbnail.interpretation == "srgb"
    # Same shape as the image (to a pixel of rounding).
    assert abs(thumbnail.width / thumbnail.height - body["width"] / body["height"]) < 0.02
    assert (body["thumbnail_width"], body["thumbnail_height"]) == (
        thumbnail.width,
        thumbnail.height,
    )
    # The placeholder decodes, and its colours are the image's on average.
    placeholder = blurhash_decode(body["blurhash"], 32, 32)
    average = ImageStat.Stat(placeholder).mean
    stats = thumbnail.stats()  # row 1 + b: band b; column 4: its mean
    expected = [stats(4, band + 1)[0] for band in range(3)]
    assert all(abs(a - b) < 30 for a, b in zip(average, expected, strict=True)), (average, expected)

    original = pyvips.Image.new_from_buffer(await fetch(client, body["original_url"]), "")
    assert original.get("vips-loader") in {"jpegload_buffer", "pngload_buffer"}
    (row,) = await media_rows(clean_database)
    assert row["media_id"] == body["media_id"]
    assert (row["width"], row["height"]) == (body["width"], body["height"])


@pytest.mark.parametrize("name", REFUSED_TYPES)
async def test_other_formats_are_415_whatever_they_claim_to_be(
    client: Client, uploader: User, clean_database: str, name: str
) -> None:
    data = (CORPUS / name).read_bytes()
    response = await upload(
        client, uploader, data, filename="holiday.jpg", content_type="image/jpeg"
    )
    assert response.status == 415
    assert_error_shape(await response.json(), "unsupported_media_type")
    assert await media_rows(clean_database) == []
    assert await bucket_keys(client) == []


async def test_a_truncated_jpeg_is_422_naming_the_problem_and_nothing_is_stored(
    client: Client, uploader: User, clean_database: str
) -> None:
    response = await upload(client, uploader, (CORPUS / "truncated.jpg").read_bytes())
    assert response.status == 422
    body = await response.json()
    assert_error_shape(body, "undecodable_image")
    assert "truncated" in body["error"]["message"]
    assert await media_rows(clean_database) == []
    assert await bucket_keys(client) == []


async def thumbnail_of(client: Client, user: User, name: str) -> pyvips.Image:
    response = await upload(client, user, (CORPUS / name).read_bytes())
    assert response.status == 201
    return pyvips.Image.new_from_buffer(
        await fetch(client, (await response.json())["thumbnail_url"]), ""
    )


async def test_every_exif_orientation_gives_the_same_upright_thumbnail(
    client: Client, uploader: User
) -> None:
    reference = await thumbnail_of(client, uploader, "rotation/1.jpg")
    assert reference.height > reference.width  # the picture is a portrait
    for n in range(2, 9):
        thumbnail = await thumbnail_of(client, uploader, f"rotation/{n}.jpg")
        assert (thumbnail.width, thumbnail.height) == (reference.width, reference.height), n
        # Mean difference per channel (0-255), measured: upright thumbnails of these files
        # differ from the reference by 3.7-8.2 (JPEG blocks fall differently), a flip or a
        # half turn by 35-47.
        assert (thumbnail - reference).abs().avg() < 15, n


@pytest.mark.parametrize(
    "name", ["ultra-hdr.jpg", "sample-xyb.jpg", "rotation/6.jpg", "rgba.png", "sample.jpg"]
)
def test_sizes_made_from_one_decode_match_sizes_made_from_the_upload(name: str) -> None:
    """V1's worker makes its smaller sizes from the larger one's pixels: upright, sRGB and
    flattened as if each were made from the upload itself (a large photo with a gain map, an
    XYB colour profile, an EXIF turn, an alpha channel, one smaller than every size)."""
    data = (CORPUS / name).read_bytes()
    thumbnail, renditions = make_sizes(data, (600, 1080))
    assert [r.size for r in renditions] == [600, 1080]
    references = [make_thumbnail(data), *(make_sizes(data, (r.size,))[1][0] for r in renditions)]
    for made, reference in zip([thumbnail, *renditions], references, strict=True):
        image = pyvips.Image.new_from_buffer(made.data, "")
        expected = pyvips.Image.new_from_buffer(reference.data, "")
        assert (image.width, image.height) == (made.width, made.height)
        assert abs(image.width - expected.width) <= 1, (name, image.width, expected.width)
        assert abs(image.height - expected.height) <= 1, (name, image.height, expected.height)
        assert image.bands == expected.bands == 3
        # Mean difference per channel (0-255), measured at 0-1.6, and 3.05 for a thumbnail a
        # pixel shorter that is stretched to compare; a colour profile or a turn missed would
        # be tens.
        if (image.width, image.height) != (expected.width, expected.height):
            image = image.resize(
                expected.width / image.width, vscale=expected.height / image.height
            )
        assert (image - expected).abs().avg() < 6, name
    assert len(thumbnail.blurhash) == len(references[0].blurhash)


async def test_heic_rotation_is_applied(client: Client, uploader: User) -> None:
    for name in ("heic-orientation-6.heic", "apple-heic-gainmap.heic"):
        thumbnail = await thumbnail_of(client, uploader, name)
        assert thumbnail.height == 150
        assert thumbnail.width < 150


async def test_an_unusual_colour_profile_comes_out_as_srgb(client: Client, uploader: User) -> None:
    plain = await thumbnail_of(client, uploader, "sample.jpg")
    xyb = await thumbnail_of(client, uploader, "sample-xyb.jpg")
    # The XYB file is the same picture in another colour space: converted, they look alike.
    assert (plain - xyb).abs().avg() < 6


async def test_the_heic_file_is_kept_privately_and_its_public_original_is_a_jpeg(
    client: Client, uploader: User, clean_database: str
) -> None:
    data = (CORPUS / "Example1.heic").read_bytes()
    body = await (await upload(client, uploader, data, filename="IMG_0001.HEIC")).json()
    assert (body["width"], body["height"]) == (4032, 3024)
    rendition = await fetch(client, body["original_url"])
    assert rendition.startswith(b"\xff\xd8")
    assert pyvips.Image.new_from_buffer(rendition, "").width == 4032
    assert b"Exif" not in rendition[:4096]

    (row,) = await media_rows(clean_database)
    assert row["source_key"].startswith("sources/")
    storage = client.app[STORAGE]
    stored = await storage.client.get_object(Bucket=storage.bucket, Key=row["source_key"])
    assert await stored["Body"].read() == data
    async with client.session.get(storage.public_url(row["source_key"])) as response:
        assert response.status == 403  # never readable without credentials


# --- metadata ------------------------------------------------------------------------


def exif_with_gps(orientation: int) -> bytes:
    """An EXIF APP1 segment with an orientation and a GPS position, written by hand."""

    def ifd(entries: list[tuple[int, int, int, bytes]], next_offset: int = 0) -> bytes:
        out = struct.pack(">H", len(entries))
        for tag, kind, count, value in entries:
            out += struct.pack(">HHI", tag, kind, count) + value.ljust(4, b"\0")
        return out + struct.pack(">I", next_offset)

    gps_offset = 8 + 2 + 2 * 12 + 4
    ifd0 = ifd(
        [
            (0x0112, 3, 1, struct.pack(">H", orientation)),
            (0x8825, 4, 1, struct.pack(">I", gps_offset)),
        ]
    )
    latitude_offset = gps_offset + 2 + 2 * 12 + 4
    gps = ifd([(0x0001, 2, 2, b"N\0"), (0x0002, 5, 3, struct.pack(">I", latitude_offset))])
    latitude = struct.pack(">6I", 48, 1, 51, 1, 30, 1)
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + ifd0 + gps + latitude
    payload = b"Exif\0\0" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def with_segments(jpeg: bytes, *segments: bytes) -> bytes:
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


async def test_gps_and_comments_are_removed_and_the_pixels_kept(
    client: Client, uploader: User
) -> None:
    plain = (CORPUS / "rotation" / "6.jpg").read_bytes()
    xmp = b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta><exif:GPSLatitude>48,51N</exif:GPSLatitude>"
    comment = b"\xff\xfe" + struct.pack(">H", 2 + 15) + b"shot at home!!!"
    tagged = (
        with_segments(
            plain, exif_with_gps(6), b"\xff\xe1" + struct.pack(">H", len(xmp) + 2) + xmp, comment
        )
        + b"<html>trailing polyglot</html>"
    )
    assert pyvips.Image.new_from_buffer(tagged, "").get("exif-ifd3-GPSLatitudeRef").startswith("N")

    body = await (await upload(client, uploader, tagged)).json()
    stored = await fetch(client, body["original_url"])
    for leak in (b"GPS", b"48,51N", b"shot at home", b"<html>", b"xmpmeta"):
        assert leak not in stored
    stored_image = pyvips.Image.new_from_buffer(stored, "")
    assert not [name for name in stored_image.get_fields() if name.startswith("exif-ifd3")]
    assert stored_image.get("orientation") == 6  # still shown upright
    original_pixels = pyvips.Image.new_from_buffer(plain, "")
    assert (stored_image - original_pixels).abs().max() == 0
    assert (body["width"], body["height"]) == (original_pixels.height, original_pixels.width)


async def test_png_text_chunks_are_removed(client: Client, uploader: User) -> None:
    png = (CORPUS / "trans-x.png").read_bytes()
    text = b"Comment\0taken at 48.85N 2.35E"
    chunk = (
        struct.pack(">I", len(text))
        + b"tEXt"
        + text
        + struct.pack(">I", zlib.crc32(b"tEXt" + text))
    )
    tagged = png[:33] + chunk + png[33:]  # after the signature and IHDR
    body = await (await upload(client, uploader, tagged, content_type="image/png")).json()
    stored = await fetch(client, body["original_url"])
    assert b"48.85N" not in stored
    assert png_chunk_types(stored) == [b"IHDR", b"IDAT", b"IEND"]  # pHYs is not rendering
    assert same_pixels(stored, png)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_chunk_types(png: bytes) -> list[bytes]:
    types, position = [], 8
    while position < len(png):
        length = struct.unpack(">I", png[position : position + 4])[0]
        types.append(png[position + 4 : position + 8])
        position += 12 + length
    return types


def same_pixels(a: bytes, b: bytes) -> bool:
    first, second = pyvips.Image.new_from_buffer(a, ""), pyvips.Image.new_from_buffer(b, "")
    return (first.width, first.height) == (second.width, second.height) and bool(
        (first - second).abs().max() == 0
    )


async def test_png_keeps_only_the_chunks_rendering_needs(client: Client, uploader: User) -> None:
    png = (CORPUS / "indexed.png").read_bytes()
    private = png_chunk(b"prVt", b"home address, phone number")
    stamp = png_chunk(b"tIME", struct.pack(">HBBBBB", 2026, 12, 2, 7, 0, 0))
    tagged = png[:33] + private + stamp + png[33:]
    body = await (await upload(client, uploader, tagged, content_type="image/png")).json()
    stored = await fetch(client, body["original_url"])
    assert b"home address" not in stored
    assert png_chunk_types(stored) == [b"IHDR", b"sRGB", b"PLTE", b"IDAT", b"IEND"]
    assert same_pixels(stored, png)


async def test_a_png_orientation_is_applied_to_its_pixels(client: Client, uploader: User) -> None:
    landscape = pyvips.Image.black(80, 60).draw_rect(255, 0, 0, 20, 20, fill=True)
    png = landscape.pngsave_buffer()
    # An eXIf chunk (TIFF, big-endian) holding one tag: Orientation = 6 (turn a quarter right).
    entry = struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0)
    exif = b"MM\x00\x2a" + struct.pack(">IH", 8, 1) + entry + bytes(4)
    tagged = png[:33] + png_chunk(b"eXIf", exif) + png[33:]
    assert pyvips.Image.new_from_buffer(tagged, "").get("orientation") == 6

    response = await upload(client, uploader, tagged, content_type="image/png")
    body = await response.json()
    assert (body["width"], body["height"]) == (60, 80)
    stored = pyvips.Image.new_from_buffer(await fetch(client, body["original_url"]), "")
    assert (stored.width, stored.height) == (60, 80)  # the pixels turned, not a tag
    assert b"eXIf" not in await fetch(client, body["original_url"])
    assert same_pixels(
        await fetch(client, body["original_url"]), landscape.rot90().pngsave_buffer()
    )
    thumbnail = pyvips.Image.new_from_buffer(await fetch(client, body["thumbnail_url"]), "")
    assert thumbnail.height > thumbnail.width


async def test_jfif_and_jfxx_segments_and_their_thumbnails_are_removed(
    client: Client, uploader: User
) -> None:
    plain = (CORPUS / "sample.jpg").read_bytes()
    jfxx = b"JFXX\x00\x10" + b"OLD THUMBNAIL FROM BEFORE THE CROP"
    tagged = with_segments(plain, b"\xff\xe0" + struct.pack(">H", len(jfxx) + 2) + jfxx)
    body = await (await upload(client, uploader, tagged)).json()
    stored = await fetch(client, body["original_url"])
    for leak in (b"JFXX", b"JFIF", b"OLD THUMBNAIL"):
        assert leak not in stored
    assert same_pixels(stored, plain)


# --- limits ---------------------------------------------------------------------------


def jpeg_claiming(width: int, height: int) -> bytes:
    jpeg = bytearray((CORPUS / "sample.jpg").read_bytes())
    sof = jpeg.find(b"\xff\xc0")
    assert sof > 0
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(jpeg)


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (png_claiming(30000, 30000), "image/png"),
        (png_claiming(225000, 225000), "image/png"),
        (jpeg_claiming(30000, 30000), "image/jpeg"),
    ],
)
async def test_a_pixel_flood_is_422_from_the_header(
    client: Client, uploader: User, clean_database: str, data: bytes, content_type: str
) -> None:
    response = await upload(client, uploader, data, content_type=content_type)
    assert response.status == 422
    body = await response.json()
    assert_error_shape(body, "image_too_large")
    assert "pixels" in body["error"]["message"]
    assert await media_rows(clean_database) == []


@pytest.fixture
async def counting_client(aiohttp_client: AiohttpClient, settings: Settings) -> Client:
    """A client whose app records how many body bytes it read from each request."""
    app = create_app(settings)
    read: list[int] = []

    @web.middleware
    async def count_body(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)  # type: ignore[no-any-return]
        finally:
            read.append(request.content.total_bytes)

    app.middlewares.insert(0, count_body)

    @public
    async def body_bytes_read(request: web.Request) -> web.Response:
        return web.json_response(read)

    app.router.add_get("/test/read", body_bytes_read)
    return await aiohttp_client(app)


async def test_a_declared_11_mib_body_is_refused_before_reading(counting_client: Client) -> None:
    user = await sign_up(counting_client, "big")
    data = b"\xff\xd8\xff" + b"\0" * (11 * 1024 * 1024)

    # A client that asks first (Expect: 100-continue, as curl does) is refused before sending.
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(data), filename="big.jpg", content_type="image/jpeg")
    response = await counting_client.post("/v1/media", data=form, headers=user.auth, expect100=True)
    assert response.status == 413
    assert_error_shape(await response.json(), "payload_too_large")
    assert response.headers["Connection"] == "close"
    assert "X-Request-ID" in response.headers

    # One that just sends is answered from Content-Length and cut off: it may see a reset
    # instead of the 413, but the server reads next to nothing of the body.
    try:
        response = await upload(counting_client, user, data)
        assert response.status == 413
    except aiohttp.ClientError:
        pass
    read = await (await counting_client.get("/test/read")).json()
    assert read[-1] <= 512 * 1024


async def test_a_chunked_11_mib_body_is_cut_off_just_past_the_limit(
    counting_client: Client,
) -> None:
    user = await sign_up(counting_client, "big")
    boundary = "monogram-test-boundary"

    async def body() -> AsyncIterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        for _ in range(11 * 16):  # 11 MiB in 64 KiB pieces, no Content-Length
            yield b"\xff" * (64 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    try:
        response = await counting_client.post(
            "/v1/media",
            data=body(),
            headers={**user.auth, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert response.status == 413
    except aiohttp.ClientError:
        pass  # the server may close the connection while the client is still sending
    read = await (await counting_client.get("/test/read")).json()
    assert 10 * 1024 * 1024 < read[-1] <= 10 * 1024 * 1024 + 512 * 1024


# --- failures leave nothing half-stored ------------------------------------------------


async def test_with_s3_down_the_upload_is_503_and_no_row_exists(
    aiohttp_client: AiohttpClient, postgres: EmbeddedPostgres, clean_database: str
) -> None:
    s3 = EmbeddedS3(free_port())
    s3.start()
    settings = settings_for(postgres, s3, "unreachable")
    client = await aiohttp_client(create_app(settings))
    user = await sign_up(client, "unlucky")
    s3.stop()

    response = await upload(client, user, (CORPUS / "sample.jpg").read_bytes())
    assert response.status in {502, 503, 504}
    assert_error_shape(await response.json(), "storage_unavailable")
    assert await media_rows(clean_database) == []


async def test_with_the_database_down_after_storing_no_object_remains(
    aiohttp_client: AiohttpClient,
    fresh_postgres: EmbeddedPostgres,
    s3_server: EmbeddedS3,
    bucket: str,
) -> None:
    from app.migrations import migrate

    await migrate(fresh_postgres.dsn)
    client = await aiohttp_client(create_app(settings_for(fresh_postgres, s3_server, bucket)))
    user = await sign_up(client, "unlucky")
    fresh_postgres.stop()  # the upload path touches the database only to insert the row

    response = await upload(client, user, (CORPUS / "sample.jpg").read_bytes())
    assert response.status == 503
    assert_error_shape(await response.json(), "database_unavailable")
    assert await bucket_keys(client) == []
    fresh_postgres.start()
    assert await media_rows(fresh_postgres.dsn) == []


# --- idempotency -----------------------------------------------------------------------


async def test_one_idempotency_key_stores_once_and_answers_the_same(
    client: Client, uploader: User, clean_database: str
) -> None:
    data = (CORPUS / "Example1.heic").read_bytes()
    key = {"Idempotency-Key": "phone-upload-7f3a"}
    together = await asyncio.gather(
        *(upload(client, uploader, data, headers=key) for _ in range(2))
    )
    later = await upload(client, uploader, data, headers=key)
    responses = [*together, later]
    assert [r.status for r in responses] == [201, 201, 201]
    bodies = [await r.json() for r in responses]
    assert bodies[0] == bodies[1] == bodies[2]
    assert len(await media_rows(clean_database)) == 1
    assert len(await bucket_keys(client)) == 3  # rendition, thumbnail, private source

    other = await upload(client, uploader, (CORPUS / "sample.jpg").read_bytes(), headers=key)
    assert other.status == 422
    assert_error_shape(await other.json(), "invalid")


async def test_keys_are_per_user_and_bounded(client: Client, uploader: User) -> None:
    other_user = await sign_up(client, "other")
    data = (CORPUS / "sample.jpg").read_bytes()
    key = {"Idempotency-Key": "same-key"}
    first = await (await upload(client, uploader, data, headers=key)).json()
    second = await (await upload(client, other_user, data, headers=key)).json()
    assert first["media_id"] != second["media_id"]
    too_long = await upload(client, uploader, data, headers={"Idempotency-Key": "k" * 256})
    assert too_long.status == 400


# --- malformed requests ----------------------------------------------------------------


async def test_malformed_uploads_are_refused(client: Client, uploader: User) -> None:
    no_file = aiohttp.FormData(default_to_multipart=True)
    no_file.add_field("caption", "hello")
    response = await client.post("/v1/media", data=no_file, headers=uploader.auth)
    assert response.status == 400
    assert "file" in (await response.json())["error"]["message"]

    broken = await client.post(
        "/v1/media",
        data=b"--x\r\nthis is not a part\r\n",
        headers={**uploader.auth, "Content-Type": "multipart/form-data; boundary=x"},
    )
    assert broken.status == 400

    json_body = await client.post("/v1/media", json={"file": "..."}, headers=uploader.auth)
    assert json_body.status == 415

    gzipped = await client.post(
        "/v1/media",
        data=zlib.compress(b"x" * 1000),
        headers={
            **uploader.auth,
            "Content-Encoding": "gzip",
            "Content-Type": "multipart/form-data; boundary=x",
        },
    )
    assert gzipped.status == 415

    anonymous = aiohttp.FormData()
    anonymous.add_field("file", b"\xff\xd8\xff", filename="a.jpg")
    assert (await client.post("/v1/media", data=anonymous)).status == 401


async def test_a_trickling_body_is_cut_off_with_408(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(
        create_app(settings.with_overrides(upload_min_rate=1024 * 1024, upload_rate_grace=0.3))
    )
    user = await sign_up(client, "slowpoke")
    boundary = "b"

    async def slow_body() -> AsyncIterator[bytes]:
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"\r\n\r\n'.encode()
        for _ in range(20):
            await asyncio.sleep(0.1)
            yield b"\xff" * 100

    try:
        response = await client.post(
            "/v1/media",
            data=slow_body(),
            headers={**user.auth, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert response.status == 408
        assert_error_shape(await response.json(), "request_timeout")
    except aiohttp.ClientError:
        pytest.fail("the server should answer 408 before closing")


async def test_a_full_byte_budget_answers_503(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    limit = 1024 * 1024
    client = await aiohttp_client(
        create_app(
            settings.with_overrides(
                max_upload_bytes=limit,
                upload_memory_budget=limit + 64 * 1024,
                upload_budget_wait=0.2,
            )
        )
    )
    user = await sign_up(client, "hog")
    release = asyncio.Event()

    async def held_body() -> AsyncIterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\n\xff\xd8\xff'
        await release.wait()
        yield b"\r\n--b--\r\n"

    headers = {**user.auth, "Content-Type": "multipart/form-data; boundary=b"}
    holder = asyncio.create_task(client.post("/v1/media", data=held_body(), headers=headers))
    await asyncio.sleep(0.2)
    refused = await upload(client, user, (CORPUS / "sample.jpg").read_bytes())
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "1"
    assert_error_shape(await refused.json(), "overloaded")
    release.set()
    await holder
    accepted = await upload(client, user, (CORPUS / "sample.jpg").read_bytes())
    assert accepted.status == 201


# --- graceful shutdown ---------------------------------------------------------------


async def test_an_upload_still_arriving_at_sigterm_is_finished_and_stored(
    settings: Settings, clean_database: str
) -> None:
    """SIGTERM mid-body: the listener closes at once, but the upload begun gets its 201."""
    (uploader,) = await make_users(Tokens(settings), clean_database, 1, prefix="late")
    photo = (CORPUS / "sample.jpg").read_bytes()
    boundary = "monogram-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    halfway, resume = asyncio.Event(), asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield head + photo[: len(photo) // 2]
        halfway.set()
        await resume.wait()
        yield photo[len(photo) // 2 :] + f"\r\n--{boundary}--\r\n".encode()

    with service_process(settings, SHUTDOWN_DRAIN="0") as (url, pid):
        async with aiohttp.ClientSession(url) as session:
            posting = asyncio.create_task(
                session.post(
                    "/v1/media",
                    data=slow_body(),
                    headers={
                        **uploader.auth,
                        "Content-Type": f"multipart/form-data; boundary={boundary}",
                    },
                )
            )
            await halfway.wait()
            await asyncio.sleep(0.3)  # the service is reading the body
            os.kill(pid, signal.SIGTERM)
            assert await refuses_connections(url), "new connections still taken after SIGTERM"
            resume.set()
            response = await posting
            assert response.status == 201, await response.text()
            media_id = (await response.json())["media_id"]

    rows = await media_rows(clean_database)
    assert [row["media_id"] for row in rows] == [media_id]
    async with s3_client(settings) as client:
        listing = await client.list_objects_v2(Bucket=settings.s3_bucket)
    stored = {item["Key"] for item in listing.get("Contents", [])}
    assert {rows[0]["original_key"], rows[0]["thumbnail_key"]} <= stored
