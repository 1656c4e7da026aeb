"""How clients get the images: URLs built when a response is rendered, and purges from the edge.

Rows hold object keys only. Every response turns them into URLs under IMAGE_BASE_URL (an edge
cache or CDN in front of the bucket, or the bucket itself), so changing it moves every post,
old ones included, at the next read.

The objects are `immutable` for a year, so an edge cache would serve a deleted photo for that
long. Deleting an object therefore purges its URL from the edge (EDGE_PURGE_URL) after S3 has
deleted it, in that order: a purge first would let the next miss fetch the object back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from app.settings import Settings
from app.storage import PUBLIC_PREFIX

PURGES_AT_ONCE = 16


@dataclass(frozen=True, slots=True)
class ImageUrls:
    """Object key -> the URL a client fetches it from."""

    base: str

    def __call__(self, key: str) -> str:
        return f"{self.base}/{key}"

    @classmethod
    def of(cls, settings: Settings) -> ImageUrls:
        return cls(settings.image_url_prefix)


class EdgePurger:
    """Sends `PURGE <path of the image URL>` to the edge cache for each deleted public object."""

    def __init__(self, session: aiohttp.ClientSession, purge_url: str, urls: ImageUrls) -> None:
        self._session = session
        self._purge_url = purge_url.rstrip("/")
        self._path = urlsplit(urls.base).path.rstrip("/")
        self._slots = asyncio.Semaphore(PURGES_AT_ONCE)

    async def purge(self, keys: list[str]) -> dict[str, str]:
        """Purges the keys' URLs; the keys the edge did not confirm, with why."""
        public = [key for key in keys if key.startswith(PUBLIC_PREFIX)]  # no others are cached
        results = await asyncio.gather(*(self._purge_one(key) for key in public))
        return {key: reason for key, reason in zip(public, results, strict=True) if reason}

    async def _purge_one(self, key: str) -> str | None:
        async with self._slots:
            try:
                async with self._session.request(
                    "PURGE", f"{self._purge_url}{self._path}/{key}"
                ) as response:
                    if response.status == 200:
                        return None
                    return f"edge purge answered {response.status}"
            except (aiohttp.ClientError, TimeoutError) as error:
                return f"edge purge failed: {type(error).__name__}"


@asynccontextmanager
async def open_edge_purger(settings: Settings) -> AsyncIterator[EdgePurger | None]:
    """The purger for as long as the block runs; None when no edge cache is configured."""
    if not settings.edge_purge_url:
        yield None
        return
    timeout = aiohttp.ClientTimeout(total=settings.s3_timeout)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield EdgePurger(session, settings.edge_purge_url, ImageUrls.of(settings))
