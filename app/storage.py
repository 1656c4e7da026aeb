"""S3: one long-lived aioboto3 client for the bucket, opened and closed with the app."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError

from app.errors import AppError, StorageRefused, StorageTimeout, StorageUnavailable, TooLarge
from app.metrics import Metrics
from app.s3put import ObjectPutter, whole_size
from app.settings import Settings
from app.uploads import Bytes

if TYPE_CHECKING:
    from app.delivery import EdgePurger

log = logging.getLogger(__name__)

T = TypeVar("T")


# Objects are never overwritten (every key is new), so caches may keep them forever.
CACHE_FOREVER = "public, max-age=31536000, immutable"
# Only keys under this prefix are readable by anyone; others (HEIC sources) stay private.
PUBLIC_PREFIX = "media/"
# DeleteObjects takes this many keys at most.
MAX_KEYS_PER_DELETE = 1000


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    body: Bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class Storage:
    client: Any  # aiobotocore's S3 client; it has no static types
    bucket: str
    public_base_url: str
    metrics: Metrics | None = None
    # Seconds put_all may take in all, retries included; None: botocore's own bounds only.
    deadline: float | None = None
    # Deletes of objects whose upload failed, running after the client has its answer.
    cleanups: set[asyncio.Task[None]] = field(default_factory=set, repr=False)
    # The upload's PUTs without aiobotocore's per-call cost (app/s3put.py); None: the client.
    putter: ObjectPutter | None = None
    # The edge cache that deleted objects are purged from (app/delivery.py); None: no edge.
    edge: EdgePurger | None = None

    async def _call(self, operation: str, call: Awaitable[T]) -> T:
        if self.metrics is None:
            return await call
        return await self.metrics.timed_s3(operation, call)

    def public_url(self, key: str) -> str:
        return f"{self.public_base_url}/{key}"

    async def check(self) -> None:
        """Raise unless the bucket answers."""
        await self._call("HeadBucket", self.client.head_bucket(Bucket=self.bucket))

    async def presigned_post(
        self, key: str, content_type: str, max_bytes: int, expires_in: int
    ) -> dict[str, Any]:
        """A browser form that may write `key` once: this type, 1 to max_bytes bytes, until it
        expires. S3 checks the policy; the service checks the stored file again at complete."""
        form: dict[str, Any] = await self.client.generate_presigned_post(
            Bucket=self.bucket,
            Key=key,
            Fields={"Content-Type": content_type},
            Conditions=[{"Content-Type": content_type}, ["content-length-range", 1, max_bytes]],
            ExpiresIn=expires_in,
        )
        return form

    async def object_size(self, key: str) -> int | None:
        """The object's size, or None if it does not exist."""
        try:
            if self.putter is not None:
                return await self._call("HeadObject", self.putter.size(key))
            head = await self._call(
                "HeadObject", self.client.head_object(Bucket=self.bucket, Key=key)
            )
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise storage_error(exc) from None
        except (BotoCoreError, TimeoutError) as exc:
            raise storage_error(exc) from None
        size: int = head["ContentLength"]
        return size

    async def read_head(self, key: str, length: int) -> tuple[int, bytes] | None:
        """The object's size and its first `length` bytes (one ranged GET); None if missing."""
        try:
            if self.putter is not None:
                return await self._call("GetObject", self.putter.read_head(key, length))
            answer = await self._call(
                "GetObject",
                self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=0-{length - 1}"),
            )
            async with answer["Body"] as body:
                data: bytes = await body.read()
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404:
                return None
            if status == 416:  # an empty object has no byte 0
                return 0, b""
            raise storage_error(exc) from None
        except (BotoCoreError, TimeoutError) as exc:
            raise storage_error(exc) from None
        return whole_size(answer.get("ContentRange"), len(data)), data

    async def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the object: a ranged GET, never the whole of a large one."""
        try:
            if self.putter is not None:
                return await self._call("GetObject", self.putter.read_range(key, start, end))
            answer = await self._call(
                "GetObject",
                self.client.get_object(
                    Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end - 1}"
                ),
            )
            async with answer["Body"] as body:
                data: bytes = await body.read()
        except (ClientError, BotoCoreError, TimeoutError) as exc:
            raise storage_error(exc) from None
        return data

    async def read(self, key: str, limit: int) -> bytes | None:
        """The whole object, if it exists and holds at most `limit` bytes; None if missing."""
        try:
            answer = await self._call(
                "GetObject", self.client.get_object(Bucket=self.bucket, Key=key)
            )
            if answer["ContentLength"] > limit:
                raise TooLarge(f"the stored file is over the limit of {limit:,} bytes")
            async with answer["Body"] as body:
                data: bytes = await body.read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                return None
            raise storage_error(exc) from None
        except (BotoCoreError, TimeoutError) as exc:
            raise storage_error(exc) from None
        return data

    async def put_all(self, objects: list[StoredObject]) -> None:
        """Store every object, concurrently, within the deadline; if any fails, none stays."""
        try:
            async with asyncio.timeout(self.deadline):
                results = await asyncio.gather(
                    *(self._put(o) for o in objects), return_exceptions=True
                )
        except BaseException as exc:
            # Cut off mid-way, any of them may be stored. Deleting them may be as slow as
            # storing was, so the client does not wait for it.
            self.delete_later([o.key for o in objects])
            if isinstance(exc, TimeoutError):
                raise storage_error(exc) from None
            raise
        failures = [r for r in results if isinstance(r, BaseException)]
        if not failures:
            return
        # The store is failing: deleting what did get stored may fail as slowly, so the client
        # has its answer first, as when the deadline cut the puts off.
        self.delete_later([o.key for o, r in zip(objects, results, strict=True) if r is None])
        raise storage_error(failures[0])

    async def delete_all(self, keys: list[str]) -> None:
        """Best effort: what cannot be deleted now is left for the orphan sweep, and logged."""
        for key, reason in (await self.delete_objects(keys)).items():
            log.error("could not delete s3 object %s (%s); the orphan sweep will", key, reason)

    async def delete_objects(self, keys: list[str]) -> dict[str, str]:
        """Deletes the objects, 1,000 per request, and purges them from the edge cache; the
        keys S3 did not delete or the edge did not purge, with why (they stay queued).

        Deleting a key that does not exist succeeds: a retried delete is harmless.
        """
        failed: dict[str, str] = {}
        for start in range(0, len(keys), MAX_KEYS_PER_DELETE):
            batch = keys[start : start + MAX_KEYS_PER_DELETE]
            try:
                response = await self._call(
                    "DeleteObjects",
                    self.client.delete_objects(
                        Bucket=self.bucket,
                        Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                    ),
                )
            except Exception as exc:
                failed.update(dict.fromkeys(batch, type(exc).__name__))
                continue
            for error in response.get("Errors", []):
                failed[error["Key"]] = error.get("Message") or error.get("Code") or "error"
        if self.edge is not None:
            # After S3's delete: a miss in between would fetch the object back into the edge.
            failed.update(await self.edge.purge([k for k in keys if k not in failed]))
        return failed

    def delete_later(self, keys: list[str]) -> None:
        task = asyncio.create_task(self.delete_all(keys))
        self.cleanups.add(task)
        task.add_done_callback(self.cleanups.discard)

    async def finish_cleanups(self) -> None:
        """Wait, within the deadline, for deletes still running (at shutdown)."""
        if self.cleanups:
            await asyncio.wait(self.cleanups, timeout=self.deadline)

    async def _put(self, stored: StoredObject) -> None:
        if self.putter is not None:
            put = self.putter.put(stored.key, stored.body, stored.content_type, CACHE_FOREVER)
            await self._call("PutObject", put)
            return
        await self._call(
            "PutObject",
            self.client.put_object(
                Bucket=self.bucket,
                Key=stored.key,
                Body=io.BytesIO(stored.body),
                ContentLength=len(stored.body),
                ContentType=stored.content_type,
                CacheControl=CACHE_FOREVER,
            ),
        )


def storage_error(exc: BaseException) -> AppError:
    """What the client hears when S3 fails: 504 for a timeout, 503 when it is unreachable or
    overloaded, 502 when it answers with an error of its own."""
    log.error("s3 request failed: %s", type(exc).__name__)
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError | TimeoutError):
        return StorageTimeout("the image store did not answer in time, try again")
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if status != 503:
            return StorageRefused("the image store refused the upload")
    return StorageUnavailable("the image store is unavailable, try again shortly")


def client_config(settings: Settings) -> AioConfig:
    return AioConfig(
        connect_timeout=settings.s3_timeout,
        read_timeout=settings.s3_timeout,
        # botocore's "standard" mode: exponential backoff with full jitter. Three attempts in
        # all sleep at most 1 + 2 s, so an unreachable store is told apart (503) within the
        # S3 deadline; "max_attempts" would count retries only and sleep up to 7 s.
        retries={"total_max_attempts": 3, "mode": "standard"},
        max_pool_connections=64,
        # Bodies are not hashed into the signature (UNSIGNED-PAYLOAD): over HTTPS botocore already
        # skips it for uploads, and over HTTP (the local stack) it cost ~3 ms of CPU per 2 MB.
        s3={"addressing_style": "path", "payload_signing_enabled": False},
        request_checksum_calculation="when_required",
        # Presigned POSTs too: botocore signs them with Signature Version 2 unless told, which
        # AWS regions opened since 2014 refuse.
        signature_version="s3v4",
    )


def s3_session(settings: Settings) -> aioboto3.Session:
    # Keys given in the settings, else botocore's own chain (environment, instance role...).
    return aioboto3.Session(
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=settings.s3_secret_access_key,
        region_name=settings.s3_region,
    )


@asynccontextmanager
async def s3_client(settings: Settings) -> AsyncIterator[Any]:
    async with s3_session(settings).client(
        "s3", endpoint_url=settings.s3_endpoint_url, config=client_config(settings)
    ) as client:
        yield client


@asynccontextmanager
async def open_storage(
    settings: Settings, metrics: Metrics | None = None
) -> AsyncIterator[Storage]:
    """The bucket for as long as the block runs; deletes still running are awaited at its end."""
    from app.delivery import open_edge_purger  # it needs this module's PUBLIC_PREFIX

    session = s3_session(settings)
    config = client_config(settings)
    async with (
        session.client("s3", endpoint_url=settings.s3_endpoint_url, config=config) as client,
        open_edge_purger(settings) as edge,
    ):
        credentials = await session.get_credentials()
        putter = None
        if credentials is not None:  # else every call fails as the client's would: no keys
            putter = ObjectPutter(
                settings.s3_endpoint_url,
                settings.s3_region,
                settings.s3_bucket,
                credentials,
                config,
                settings.s3_timeout,
            )
        storage = Storage(
            client,
            settings.s3_bucket,
            settings.public_base_url,
            metrics,
            deadline=settings.s3_deadline,
            putter=putter,
            edge=edge,
        )
        log.info("s3 client ready", extra={"bucket": settings.s3_bucket})
        try:
            yield storage
        finally:
            await storage.finish_cleanups()
            if putter is not None:
                await putter.close()


async def ensure_bucket(settings: Settings) -> None:
    """Create the bucket if it is missing, let anyone read (only read) its public objects,
    and let the web client's pages POST presigned uploads to it.

    Images are served from S3 origin URLs, as the seed design has it, so a
    browser must be able to GET them without credentials.
    """
    bucket = settings.s3_bucket
    async with s3_client(settings) as client:
        try:
            await client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in {"404", "NoSuchBucket"}:
                raise
            location = {}
            if settings.s3_region != "us-east-1":
                location = {"CreateBucketConfiguration": {"LocationConstraint": settings.s3_region}}
            await client.create_bucket(Bucket=bucket, **location)
            log.info("created bucket", extra={"bucket": bucket})
        await client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(public_read_policy(bucket)))
        # A browser sends V1 uploads straight to the bucket: it may POST a form from the web
        # client's origin and read the answer. Writing needs the form's signed policy anyway.
        await client.put_bucket_cors(
            Bucket=bucket,
            CORSConfiguration={
                "CORSRules": [
                    {
                        "AllowedMethods": ["POST"],
                        "AllowedOrigins": settings.upload_origins_list,
                        "AllowedHeaders": ["*"],
                        "ExposeHeaders": ["ETag"],
                        "MaxAgeSeconds": 3600,
                    }
                ]
            },
        )


def public_read_policy(bucket: str) -> dict[str, Any]:
    """Anyone may GET an object under media/; nothing else."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PublicReadObjects",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/{PUBLIC_PREFIX}*",
            }
        ],
    }
