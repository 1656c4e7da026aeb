"""Hostile input beyond the corpus: each is refused with a 4xx, and no image worker is harmed.
Then the server's own limits: absurd URLs and headers, slowloris, ids and query parameters."""

from __future__ import annotations

import asyncio
import gzip
import io
import logging
import re
import socket
import struct
import time
from collections.abc import Iterator

import orjson
import pytest
from aiohttp.http_exceptions import BadHttpMessage

from app.keys import IMAGES
from app.logs import MalformedRequestFilter
from app.main import create_app
from app.settings import Settings
from tests.helpers import (
    CORPUS,
    AiohttpClient,
    Client,
    User,
    assert_error_shape,
    audit,
    png_claiming,
    rebuilds,
    service_process,
    sign_up,
)

PHOTO = (CORPUS / "sample.jpg").read_bytes()
BOUNDARY = "hostile-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def part(name: str, body: bytes, extra_headers: str = "") -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="a.jpg"\r\n'
            f"{extra_headers}Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + body
        + b"\r\n"
    )


def multipart(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def app1_segments(total: int) -> bytes:
    """APP1 (EXIF) segments of the largest size a JPEG allows, `total` bytes in all."""
    payload = b"Exif\x00\x00" + b"\x00" * (0xFFFF - 2 - 6)
    count = total // (len(payload) + 4) + 1
    return (b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload) * count


HOSTILE = {
    # name: (body, extra request headers, status, error code)
    "gzip-encoded body": (
        gzip.compress(multipart(part("file", PHOTO))),
        {"Content-Encoding": "gzip"},
        415,
        "unsupported_media_type",
    ),
    "1,000 parts": (
        multipart(*(part(f"field{i}", b"x") for i in range(999)), part("file", PHOTO)),
        {},
        400,
        "bad_request",
    ),
    "a 1 MB part header": (
        multipart(part("file", PHOTO, extra_headers=f"X-Padding: {'a' * 1024 * 1024}\r\n")),
        {},
        400,
        "bad_request",
    ),
    "a JPEG with 1 MB of EXIF": (
        multipart(part("file", PHOTO[:2] + app1_segments(1024 * 1024) + PHOTO[2:])),
        {},
        422,
        "undecodable_image",
    ),
    "a polyglot: JPEG magic, then HTML": (
        multipart(part("file", b"\xff\xd8\xff\xe0<html><script>alert(1)</script></html>")),
        {},
        422,
        "undecodable_image",
    ),
    "a PNG claiming 225,000 x 225,000 pixels": (
        multipart(part("file", png_claiming(225_000, 225_000))),
        {},
        422,
        "image_too_large",
    ),
}


@pytest.fixture
async def warm_client(aiohttp_client: AiohttpClient, settings: Settings) -> Client:
    return await aiohttp_client(
        create_app(settings.with_overrides(thumbnail_workers=2, thumbnail_warm_start=True))
    )


async def test_hostile_uploads_are_4xx_and_no_worker_is_harmed(
    warm_client: Client, settings: Settings
) -> None:
    user = await sign_up(warm_client, "mallory")
    workers = set(warm_client.app[IMAGES].worker_pids())
    for name, (body, headers, status, code) in HOSTILE.items():
        response = await warm_client.post(
            "/v1/media",
            data=io.BytesIO(body),
            headers={**user.auth, "Content-Type": MULTIPART, **headers},
        )
        assert response.status == status, (name, await response.text())
        assert_error_shape(await response.json(), code)
    assert set(warm_client.app[IMAGES].worker_pids()) == workers, "a worker died"
    assert await rebuilds(warm_client) == 0
    fine = await warm_client.post(
        "/v1/media",
        data=multipart(part("file", PHOTO)),
        headers={**user.auth, "Content-Type": MULTIPART},
    )
    assert fine.status == 201
    await audit(settings, [(await fine.json())["media_id"]])


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/posts/9223372036854775808", 404),  # 2^63: past a 64-bit id
        ("/v1/posts/0", 404),
        ("/v1/posts/-1", 404),
        ("/v1/posts/%C2%B3", 404),  # "³": a digit to str.isdigit(), not to int()
        ("/v1/following/%D9%A3", 404),  # Arabic-Indic three
        ("/v1/feed?limit=%C2%B3", 400),
        ("/v1/feed?limit=0", 400),
        ("/v1/feed?limit=101", 400),
        ("/v1/feed?cursor=" + "A" * 600, 400),
    ],
)
async def test_ids_and_query_parameters_are_checked(client: Client, path: str, status: int) -> None:
    user = await sign_up(client, "checker")
    method = "PUT" if path.startswith("/v1/following") else "GET"
    response = await client.request(method, path, headers=user.auth)
    assert response.status == status
    assert "error" in await response.json()


async def test_json_bodies_are_capped_and_unknown_fields_refused(client: Client) -> None:
    user: User = await sign_up(client, "jsonuser")
    too_big = await client.post(
        "/v1/posts",
        data=b'{"caption": "' + b"a" * 70_000 + b'"}',
        headers={**user.auth, "Content-Type": "application/json"},
    )
    assert too_big.status == 413
    unknown = await client.post("/v1/posts", json={"media_id": 1, "admin": True}, headers=user.auth)
    assert unknown.status == 422
    assert "admin" in (await unknown.json())["error"]["message"]


# --- the server's own limits, on a real `serve` process ------------------------------------


@pytest.fixture
def served(settings: Settings) -> Iterator[tuple[str, int]]:
    with service_process(settings, IDLE_TIMEOUT="1") as (url, _):
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)


def raw_exchange(address: tuple[str, int], request: bytes, attempts: int = 5) -> bytes:
    """The server's whole answer to raw request bytes.

    A server that answers before reading all of a large request and then closes resets the
    connection (the unread bytes make the kernel send RST), and the reset can discard its
    answer before the client reads it: seen once in CI. That exchange is tried again; the
    answer itself is never assumed.
    """
    for _ in range(attempts):
        chunks = []
        try:
            with socket.create_connection(address, timeout=5) as sock:
                sock.sendall(request)
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except ConnectionResetError:
            if not chunks:
                continue
        return b"".join(chunks)
    raise AssertionError(f"every one of {attempts} connections was reset before an answer")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 100_000 + b"\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: y\r\n" % i for i in range(1000))
        + b"\r\n",
    ],
    ids=["100 KB URL", "100 KB header", "1,000 headers"],
)
def test_absurd_request_heads_are_refused_by_the_server(
    served: tuple[str, int], request_bytes: bytes
) -> None:
    answer = raw_exchange(served, request_bytes)
    # aiohttp answers these itself, before any middleware: plain text, not the error shape.
    assert re.match(rb"HTTP/1\.[01] (400|414|431) ", answer), answer[:200]


def test_a_malformed_request_is_logged_as_one_warning_without_a_trace(
    capfd: pytest.CaptureFixture[str], settings: Settings
) -> None:
    capfd.readouterr()
    with service_process(settings) as (url, _):
        host, port = url.removeprefix("http://").split(":")
        answer = raw_exchange(
            (host, int(port)), b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Null: \x00\r\n\r\n"
        )
        assert re.match(rb"HTTP/1\.[01] 400 ", answer), answer[:200]
    logged = [orjson.loads(line) for line in capfd.readouterr().out.splitlines() if line[:1] == "{"]
    refused = [line for line in logged if line["logger"] == "aiohttp.server"]
    assert len(refused) == 1, refused
    assert refused[0]["level"] == "WARNING"
    assert "exc" not in refused[0]
    assert refused[0]["status"] == 400
    assert refused[0]["msg"].startswith("refused a malformed request from 127.0.0.1: ")
    assert "header value" in refused[0]["msg"]


def test_a_parser_error_without_a_message_is_still_one_warning_line() -> None:
    record = logging.LogRecord(
        "aiohttp.server",
        logging.ERROR,
        __file__,
        1,
        "Error handling request from %s",
        ("203.0.113.7",),
        (BadHttpMessage, BadHttpMessage("  \n "), None),
    )
    assert MalformedRequestFilter().filter(record)
    assert record.levelname == "WARNING"
    assert record.exc_info is None
    assert record.getMessage() == "refused a malformed request from 203.0.113.7: BadHttpMessage"


def test_a_slowloris_client_is_cut_off_after_the_idle_timeout(served: tuple[str, int]) -> None:
    started = time.monotonic()
    with socket.create_connection(served, timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        closed = False
        for i in range(40):  # one header line every 0.25 s: never a whole request head
            try:
                sock.sendall(b"X-Slow-%d: y\r\n" % i)
                time.sleep(0.25)
                sock.settimeout(0.01)
                closed = sock.recv(1) == b""
            except TimeoutError:
                continue
            except OSError:
                closed = True
            finally:
                sock.settimeout(10)
            if closed:
                break
    assert closed, "the connection stayed open"
    assert time.monotonic() - started < 3.0


async def test_an_idle_keep_alive_connection_is_closed(served: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*served)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    started = time.monotonic()
    await asyncio.wait_for(reader.read(), timeout=5)  # the body, then EOF when closed
    assert time.monotonic() - started < 3.0
    writer.close()
