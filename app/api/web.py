"""The web client's three static files and the OpenAPI document, served by the service itself
(no build step, no CDN)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from app.auth import public
from app.errors import NotFound
from app.keys import SETTINGS

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
FILES = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "app.css": "text/css",
    "blurhash.mjs": "text/javascript",
}
# Read once at import, like the SQL: a few small files that never change while the service
# runs, and no file I/O on the event loop per request.
CONTENTS = {name: (STATIC_DIR / name).read_bytes() for name in FILES}
# The API's description, kept beside the code it describes (tests/test_openapi.py holds the
# two together).
OPENAPI_PATH = Path(__file__).resolve().parent.parent / "openapi.json"
OPENAPI = OPENAPI_PATH.read_bytes()


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _headers(request: web.Request, content_type: str) -> dict[str, str]:
    # Images come from IMAGE_BASE_URL (the edge cache, or the S3 origin), and V1 uploads go to
    # the bucket's endpoint; everything else only from here.
    settings = request.app[SETTINGS]
    images = _origin(settings.image_url_prefix)
    store = _origin(settings.s3_endpoint_url or f"https://s3.{settings.s3_region}.amazonaws.com")
    return {
        "Content-Type": f"{content_type}; charset=utf-8",
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": (
            f"default-src 'self'; img-src 'self' blob: {images}; connect-src 'self' {store}; "
            "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
        ),
    }


@public
async def index(request: web.Request) -> web.Response:
    return _file(request, "index.html")


@public
async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in FILES:  # a fixed list: no path ever reaches the file system
        raise NotFound("no such file")
    return _file(request, name)


@public
async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI, content_type="application/json")


def _file(request: web.Request, name: str) -> web.Response:
    return web.Response(body=CONTENTS[name], headers=_headers(request, FILES[name]))
