"""Receiving an upload's body: where the file part is in a multipart/form-data body, and what is
refused (app/api/multipart.py). The service parses the whole body once it is in memory, so
these cases run on bytes; the HTTP cases at the end go through the real route."""

from __future__ import annotations

import aiohttp
import pytest

from app.api.multipart import MAX_PART_HEADER, MAX_PARTS, _file_part
from app.errors import BadRequest, TooLarge
from app.uploads import FRAMING_ALLOWANCE
from tests.helpers import CORPUS, Client, User, assert_error_shape, sign_up

BOUNDARY = b"b0undary"
PHOTO = (CORPUS / "sample.jpg").read_bytes()
LIMIT = 10 * 1024 * 1024


def part(name: str, content: bytes, headers: bytes = b"") -> bytes:
    return (
        b"--" + BOUNDARY + b"\r\n"
        b'Content-Disposition: form-data; name="'
        + name.encode()
        + b'"; filename="x.jpg"\r\n'
        + headers
        + b"\r\n"
        + content
        + b"\r\n"
    )


def body(*parts: bytes, end: bytes = b"--" + BOUNDARY + b"--\r\n") -> bytearray:
    return bytearray(b"".join(parts) + end)


def file_of(data: bytearray) -> bytes:
    start, end = _file_part(data, BOUNDARY, LIMIT)
    return bytes(data[start:end])


def test_the_file_part_is_found_among_other_fields() -> None:
    data = body(part("caption", b"hello"), part("file", PHOTO), part("alt", b"a photo"))
    assert file_of(data) == PHOTO


def test_a_preamble_and_padding_after_a_boundary_are_allowed() -> None:
    padded = part("file", PHOTO).replace(b"--" + BOUNDARY + b"\r\n", b"--" + BOUNDARY + b" \t\r\n")
    assert file_of(body(b"a preamble, which readers ignore\r\n" + padded)) == PHOTO


def test_a_part_without_a_form_data_disposition_is_refused() -> None:
    nameless = b"--" + BOUNDARY + b"\r\n\r\nno headers\r\n"
    with pytest.raises(BadRequest, match="form-data"):
        file_of(body(nameless, part("file", PHOTO)))


def test_the_boundary_inside_the_file_but_not_after_a_line_break_is_content() -> None:
    tricky = b"\xff\xd8\xff--" + BOUNDARY + b"--\r\nstill --" + BOUNDARY + b" the file"
    assert file_of(body(part("file", tricky))) == tricky


def test_a_second_file_part_counts_as_another_field() -> None:
    data = body(part("file", PHOTO), part("file", b"x" * (FRAMING_ALLOWANCE + 1)))
    with pytest.raises(TooLarge, match="besides the file"):
        file_of(data)
    assert file_of(body(part("file", PHOTO), part("file", b"second"))) == PHOTO


@pytest.mark.parametrize(
    ("data", "error", "words"),
    [
        (bytearray(b"no boundary at all"), BadRequest, "no boundary"),
        (body(part("file", PHOTO), end=b""), BadRequest, "not closed"),
        (body(part("caption", b"hi")), BadRequest, "no part named file"),
        (body(part("file", b"")), BadRequest, "empty"),
        (
            body(part("file", PHOTO).replace(b"\r\nContent", b"xx\r\nContent", 1)),
            BadRequest,
            "broken",
        ),
        (
            body(part("file", PHOTO, headers=b"X-Padding: " + b"a" * MAX_PART_HEADER + b"\r\n")),
            BadRequest,
            "part headers",
        ),
        (body(part("file", PHOTO, headers=b"no colon here\r\n")), BadRequest, "header is broken"),
        (
            body(part("file", PHOTO, headers=b"Content-Type: multipart/mixed; boundary=x\r\n")),
            BadRequest,
            "nested",
        ),
        (
            body(*(part(f"f{n}", b"x") for n in range(MAX_PARTS)), part("file", PHOTO)),
            BadRequest,
            f"at most {MAX_PARTS} parts",
        ),
        (
            body(part("caption", b"x" * (FRAMING_ALLOWANCE + 1)), part("file", PHOTO)),
            TooLarge,
            "besides",
        ),
    ],
    ids=[
        "no boundary",
        "unclosed part",
        "no file part",
        "empty file",
        "broken boundary line",
        "huge part header",
        "header without a colon",
        "nested multipart",
        "too many parts",
        "large other fields",
    ],
)
def test_malformed_bodies_are_refused(data: bytearray, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        file_of(data)


def test_a_file_over_the_limit_is_413() -> None:
    with pytest.raises(TooLarge, match="over the limit of 1,000 bytes"):
        _file_part(body(part("file", b"x" * 1001)), BOUNDARY, 1000)
    start, end = _file_part(body(part("file", b"x" * 1000)), BOUNDARY, 1000)
    assert end - start == 1000


# --- through the route -------------------------------------------------------------------


@pytest.fixture
async def uploader(client: Client) -> User:
    return await sign_up(client, "framer")


@pytest.mark.parametrize(
    ("content_type", "words"),
    [
        ("multipart/form-data", "boundary"),
        ("multipart/form-data; boundary=" + "b" * 71, "boundary"),
        ('multipart/form-data; boundary="a\u00e9"', "boundary"),
    ],
    ids=["missing", "too long", "not ASCII"],
)
async def test_a_bad_boundary_is_400(
    client: Client, uploader: User, content_type: str, words: str
) -> None:
    response = await client.post(
        "/v1/media",
        data=bytes(body(part("file", PHOTO))),
        headers={**uploader.auth, "Content-Type": content_type},
    )
    assert response.status == 400
    error = await response.json()
    assert_error_shape(error, "bad_request")
    assert words in error["error"]["message"]


async def test_a_browser_form_with_a_preamble_and_other_fields_is_stored(
    client: Client, uploader: User
) -> None:
    data = body(b"preamble\r\n" + part("caption", b"hi"), part("file", PHOTO), part("x", b"y"))
    response = await client.post(
        "/v1/media",
        data=bytes(data),
        headers={
            **uploader.auth,
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY.decode()}",
        },
    )
    assert response.status == 201, await response.text()
    stored = await response.json()
    async with aiohttp.ClientSession() as session, session.get(stored["original_url"]) as image:
        assert image.status == 200
        assert (await image.read())[:3] == PHOTO[:3]
