"""Every response carries a request id; every failure has one JSON shape."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from app import db
from app.auth import public
from app.keys import DATABASE
from app.logs import json_handler
from app.main import create_app
from app.settings import Settings
from tests.helpers import AiohttpClient, assert_error_shape

Client = TestClient[web.Request, web.Application]


@contextmanager
def captured_json_logs(logger_name: str) -> Iterator[io.StringIO]:
    """What the production JSON handler writes for one logger."""
    stream = io.StringIO()
    handler = json_handler(stream)
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


async def test_healthz_answers_without_touching_dependencies(client: Client) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_every_response_gets_a_generated_request_id(client: Client) -> None:
    first = await client.get("/healthz")
    second = await client.get("/healthz")
    ids = {first.headers["X-Request-ID"], second.headers["X-Request-ID"]}
    assert len(ids) == 2
    assert all(len(i) == 32 for i in ids)


async def test_a_sent_request_id_is_echoed(client: Client) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": "phone-42.retry-1"})
    assert response.headers["X-Request-ID"] == "phone-42.retry-1"


@pytest.mark.parametrize("sent", ["x" * 129, "has space", "new\tline", 'quote"d'])
async def test_an_unfit_request_id_is_replaced(client: Client, sent: str) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": sent})
    assert response.headers["X-Request-ID"] != sent
    assert len(response.headers["X-Request-ID"]) == 32


async def test_unknown_route_is_404_in_the_error_shape(client: Client) -> None:
    response = await client.get("/no/such/thing")
    assert response.status == 404
    assert response.content_type == "application/json"
    assert_error_shape(await response.json(), "not_found")
    assert "X-Request-ID" in response.headers


async def test_wrong_method_is_405_with_allow(client: Client) -> None:
    response = await client.delete("/readyz")
    assert response.status == 405
    assert set(response.headers["Allow"].split(",")) == {"GET", "HEAD"}
    assert_error_shape(await response.json(), "method_not_allowed")


async def test_a_crash_is_500_without_a_trace_and_logged_with_the_request_id(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    @public
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals: password=hunter2")

    app = create_app(settings)
    app.router.add_get("/broken", broken)
    client = await aiohttp_client(app)

    with captured_json_logs("app.api.responses") as logged:
        response = await client.get("/broken", headers={"X-Request-ID": "crash-1"})
    assert response.status == 500
    text = await response.text()
    for leak in ("hunter2", "Traceback", "RuntimeError"):
        assert leak not in text
    assert_error_shape(json.loads(text), "internal_error")

    lines = [json.loads(line) for line in logged.getvalue().splitlines()]
    assert [line["level"] for line in lines] == ["ERROR"]
    assert lines[0]["request_id"] == "crash-1"
    assert "RuntimeError" in lines[0]["exc"]  # the trace goes to the log, not the client


async def test_an_oversized_json_body_is_413_in_the_error_shape(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    @public
    async def echo(request: web.Request) -> web.Response:
        return web.json_response(await request.json())

    app = create_app(settings)
    app.router.add_post("/echo", echo)
    client = await aiohttp_client(app)

    response = await client.post("/echo", data=b"[" + b"1," * 40_000 + b"1]")
    assert response.status == 413
    assert_error_shape(await response.json(), "payload_too_large")


async def test_a_database_route_uses_the_pool(client: Client) -> None:
    async with client.app[DATABASE].connection() as conn:
        assert await db.queries.ping(conn) == 1


async def test_every_response_forbids_content_sniffing(client: Client) -> None:
    for path in ("/healthz", "/v1/feed", "/v1/no-such-route", "/openapi.json", "/"):
        response = await client.get(path)
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
