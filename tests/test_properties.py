"""Properties, checked on generated input (hypothesis): the cursor codec, the magic-number
sniffer, the JPEG and PNG structure walkers, and the upload size limit."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator

import aiohttp
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from app.cursors import Cursors
from app.errors import InvalidCursor
from app.main import create_app
from app.metadata import (
    MalformedImage,
    clean_jpeg,
    clean_png,
    jpeg_metadata_bytes,
    png_metadata_bytes,
)
from app.settings import Settings
from app.sniff import HEIC, JPEG, PNG, sniff
from tests.helpers import TEST_JWT_SECRET, AiohttpClient, Client, User, sign_up

CURSORS = Cursors(TEST_JWT_SECRET)
KINDS = st.sampled_from(["feed", "followers", "following"])
POSITIONS = st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), min_size=1, max_size=3)

# --- cursors ------------------------------------------------------------------------------------


@given(kind=KINDS, position=POSITIONS)
def test_a_cursor_decodes_to_the_position_it_was_made_from(kind: str, position: list[int]) -> None:
    cursor = CURSORS.encode(kind, *position)
    assert CURSORS.decode(kind, cursor, arity=len(position)) == position


@given(kind=KINDS, position=POSITIONS, data=st.data())
def test_an_altered_cursor_never_decodes_to_another_position(
    kind: str, position: list[int], data: st.DataObject
) -> None:
    cursor = CURSORS.encode(kind, *position)
    index = data.draw(st.integers(0, len(cursor) - 1))
    replacement = data.draw(st.characters(codec="utf-8"))
    altered = cursor[:index] + replacement + cursor[index + 1 :]
    try:
        decoded = CURSORS.decode(kind, altered, arity=len(position))
    except InvalidCursor:
        return
    # base64 ignores the unused low bits of the last character: same bytes, same position.
    assert decoded == position


@given(text=st.text(max_size=700), kind=KINDS, arity=st.integers(1, 3))
def test_any_text_as_a_cursor_is_refused_cleanly(text: str, kind: str, arity: int) -> None:
    with pytest.raises(InvalidCursor):
        CURSORS.decode(kind, text, arity=arity)


@given(position=POSITIONS)
def test_a_cursor_of_one_listing_is_refused_by_another(position: list[int]) -> None:
    cursor = CURSORS.encode("followers", *position)
    with pytest.raises(InvalidCursor):
        CURSORS.decode("following", cursor, arity=len(position))
    with pytest.raises(InvalidCursor):
        Cursors("another-secret-" + "y" * 40).decode("followers", cursor, arity=len(position))


# --- the sniffer -----------------------------------------------------------------------------


@given(head=st.binary(max_size=5000))
def test_the_sniffer_answers_any_bytes_with_a_type_or_none(head: bytes) -> None:
    assert sniff(head) in {None, JPEG, PNG, HEIC}


@given(tail=st.binary(max_size=200))
def test_the_sniffer_knows_jpeg_and_png_by_their_first_bytes_only(tail: bytes) -> None:
    assert sniff(b"\xff\xd8\xff" + tail) == JPEG
    assert sniff(b"\x89PNG\r\n\x1a\n" + tail) == PNG
    assume(not tail.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")))
    assume(tail[4:8] != b"ftyp")
    assert sniff(tail) is None


BRANDS = st.sampled_from(
    [b"heic", b"heix", b"mif1", b"msf1", b"avif", b"jpeg", b"isom", b"hevc", b"miaf", b"MiHE"]
)


@given(major=BRANDS, compatible=st.lists(BRANDS, max_size=6), tail=st.binary(max_size=64))
def test_heic_is_an_ftyp_box_that_names_hevc_and_no_other_codec_first(
    major: bytes, compatible: list[bytes], tail: bytes
) -> None:
    box = b"ftyp" + major + b"\x00\x00\x00\x00" + b"".join(compatible)
    head = struct.pack(">I", len(box) + 4) + box + tail
    hevc = {b"heic", b"heix", b"hevc"}
    expected = HEIC if ({major, *compatible} & hevc and major not in {b"avif", b"jpeg"}) else None
    assert sniff(head) == expected


# --- the structure walkers of app/metadata.py ----------------------------------------------

JPEG_SAMPLE = (
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    b"\xff\xe1\x00\x08Exif\x00\x00\xff\xda\x00\x02\x12\x34\x56\xff\xd9"
)
PNG_SAMPLE = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x00IEND\xaeB`\x82"


@given(data=st.data(), sample=st.sampled_from([JPEG_SAMPLE, PNG_SAMPLE]))
def test_a_damaged_file_is_malformed_or_cleaned_never_a_crash(
    data: st.DataObject, sample: bytes
) -> None:
    damaged = bytearray(sample)
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(damaged) - 1))
        damaged[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(damaged)))
    damaged_bytes = bytes(damaged[:cut])
    clean, measure = (
        (clean_jpeg, jpeg_metadata_bytes)
        if sample is JPEG_SAMPLE
        else (clean_png, png_metadata_bytes)
    )
    for walk in (clean, measure):
        with contextlib.suppress(MalformedImage):
            walk(damaged_bytes)


# --- the upload size limit -------------------------------------------------------------------

LIMIT = 8 * 1024


@pytest.fixture
async def small_limit(aiohttp_client: AiohttpClient, settings: Settings) -> tuple[Client, User]:
    client = await aiohttp_client(create_app(settings.with_overrides(max_upload_bytes=LIMIT)))
    return client, await sign_up(client, "limits")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(
    size=st.one_of(st.integers(0, 3 * LIMIT), st.integers(LIMIT - 2, LIMIT + 2)),
    chunk=st.integers(1, 4096),
    declared=st.booleans(),
)
async def test_the_file_part_is_refused_exactly_when_it_is_over_the_limit(
    small_limit: tuple[Client, User], size: int, chunk: int, declared: bool
) -> None:
    client, user = small_limit
    boundary = "property-boundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"\r\n\r\n'.encode()
        + b"\x00" * size
        + f"\r\n--{boundary}--\r\n".encode()
    )

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), chunk):
            yield body[start : start + chunk]
            await asyncio.sleep(0)

    try:
        response = await client.post(
            "/v1/media",
            data=body if declared else pieces(),  # with Content-Length, or chunked
            headers={**user.auth, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        status = response.status
    except aiohttp.ClientConnectionError:
        # Past the limit the server answers 413 and closes at once; a client still sending
        # may see the reset before it reads the answer.
        status = 0
    if size > LIMIT:
        assert status in (413, 0)
    elif size == 0:
        assert status == 400  # an empty file part
    else:
        assert status == 415  # within the limit, and not an image
