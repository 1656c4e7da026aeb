"""S3: one long-lived aioboto3 client for the bucket, opened and closed with the app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aioboto3
from aiobotocore.config import AioConfig
from aiohttp import web

from app.keys import SETTINGS, STORAGE
from app.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Storage:
    client: Any  # aiobotocore's S3 client; it has no static types
    bucket: str
    public_base_url: str

    def public_url(self, key: str) -> str:
        return f"{self.public_base_url}/{key}"

    async def check(self) -> None:
        """Raise unless the bucket answers."""
        await self.client.head_bucket(Bucket=self.bucket)


def client_config(settings: Settings) -> AioConfig:
    return AioConfig(
        connect_timeout=settings.s3_timeout,
        read_timeout=settings.s3_timeout,
        # botocore's "standard" mode: exponential backoff with full jitter.
        retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=64,
        s3={"addressing_style": "path"},
    )


async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    session = aioboto3.Session()
    async with session.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=settings.s3_secret_access_key,
        config=client_config(settings),
    ) as client:
        app[STORAGE] = Storage(client, settings.s3_bucket, settings.public_base_url)
        log.info("s3 client ready", extra={"bucket": settings.s3_bucket})
        yield
