"""V1's media workers and job queue under faults: a worker killed mid-job, a queue server that
restarts empty, a job that keeps failing. Each ends with every media ready (or failed) once,
with one set of objects and nothing left under incoming/."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, multiprocess

from app.devstack.postgres import EmbeddedPostgres
from app.devstack.s3 import EmbeddedS3
from app.keys import DATABASE, QUEUE, TOKENS
from app.main import create_app
from app.settings import Settings
from app.sweep import requeue_stuck_media
from tests.helpers import (
    CORPUS,
    PHOTO,
    ROOT,
    AiohttpClient,
    bucket_keys,
    direct_upload,
    free_port,
    make_users,
    settings_for,
    until,
    wait_until_processed,
)

pytestmark = pytest.mark.slow  # worker processes and a second moto

SLOW_HEIC = (CORPUS / "apple-heic-gainmap.heic").read_bytes()  # about 0.8 s in a worker


@contextmanager
def worker_process(settings: Settings, metrics_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m app worker`, as `make run` starts it."""
    env = {
        **os.environ,
        **settings.to_env(),
        "THUMBNAIL_WORKERS": "1",
        "LOG_LEVEL": "WARNING",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "worker"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=30)


def jobs_by_outcome(metrics_dir: Path) -> dict[str, float]:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(metrics_dir))  # type: ignore[no-untyped-call]
    outcomes: dict[str, float] = {}
    for family in registry.collect():
        if family.name == "monogram_media_jobs":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    outcomes[sample.labels["outcome"]] = sample.value
    return outcomes


async def test_a_worker_killed_mid_job_leaves_its_media_ready_once_with_one_set_of_objects(
    aiohttp_client: AiohttpClient, settings: Settings, clean_database: str, tmp_path: Path
) -> None:
    settings = settings.with_overrides(job_visibility_timeout=2)
    client = await aiohttp_client(create_app(settings))
    (user,) = await make_users(client.app[TOKENS], clean_database, 1, prefix="killed")
    media = await direct_upload(client, user, SLOW_HEIC, "image/heic")
    queue = client.app[QUEUE]

    with worker_process(settings, tmp_path) as doomed:

        async def taken() -> bool:
            return (await queue.depth())[1] == 1

        await until(taken)
        await asyncio.sleep(0.3)  # in the middle of the HEIC
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
    status = await client.get(f"/v1/media/{media['media_id']}", headers=user.auth)
    assert (await status.json())["status"] == "processing"

    # The job comes back after the visibility timeout, to another worker.
    with worker_process(settings, tmp_path):
        ready = await wait_until_processed(client, user, media["media_id"])
    assert ready["status"] == "ready"
    assert jobs_by_outcome(tmp_path) == {"ready": 1.0}
    keys = await bucket_keys(client)
    assert not [k for k in keys if k.startswith("incoming/")]
    stem = ready["thumbnail_url"].rsplit("/", 1)[1].removesuffix("_thumb.jpg")
    assert sorted(keys) == sorted(
        [
            f"media/{user.id}/{stem}.jpg",
            f"media/{user.id}/{stem}_thumb.jpg",
            f"media/{user.id}/{stem}_600.jpg",
            f"media/{user.id}/{stem}_1080.jpg",
            f"sources/{user.id}/{stem}.heic",
        ]
    )
    assert await queue.depth() == (0, 0)


async def test_a_queue_restarted_empty_loses_jobs_and_the_sweep_sends_them_again(
    aiohttp_client: AiohttpClient,
    postgres: EmbeddedPostgres,
    s3_server: EmbeddedS3,
    bucket: str,
    clean_database: str,
    tmp_path: Path,
) -> None:
    # The queue on a moto of its own, so that restarting it loses the jobs and not the bucket.
    queue_server = EmbeddedS3(free_port(), s3_server.secret_access_key)
    queue_server.start()
    try:
        settings = settings_for(postgres, s3_server, bucket).with_overrides(
            sqs_endpoint_url=queue_server.endpoint_url
        )
        app: web.Application = create_app(settings)
        client = await aiohttp_client(app)
        (user,) = await make_users(client.app[TOKENS], clean_database, 1, prefix="lost")
        completed = [await direct_upload(client, user, PHOTO) for _ in range(2)]
        assert (await client.app[QUEUE].depth())[0] == 2

        await asyncio.to_thread(queue_server.stop)
        await asyncio.to_thread(queue_server.start)  # moto keeps nothing: the jobs are gone
        with worker_process(settings, tmp_path):
            await asyncio.sleep(1.0)
            for media in completed:
                status = await client.get(f"/v1/media/{media['media_id']}", headers=user.auth)
                assert (await status.json())["status"] == "processing"
            # What the stuck-job sweep does every SWEEP_INTERVAL, after PROCESSING_TIMEOUT.
            connect = client.app[DATABASE].connection
            assert await requeue_stuck_media(connect, client.app[QUEUE], 0) == 2
            for media in completed:
                ready = await wait_until_processed(client, user, media["media_id"])
                assert ready["status"] == "ready"
        assert not [k for k in await bucket_keys(client) if k.startswith("incoming/")]
    finally:
        queue_server.stop()


async def test_a_job_that_keeps_failing_ends_failed_and_never_loops(
    aiohttp_client: AiohttpClient, settings: Settings, clean_database: str, tmp_path: Path
) -> None:
    """The worker's image store is unreachable (the queue is not): each try fails for a
    passing reason, is retried after a pause, and the last try fails the media."""
    client = await aiohttp_client(create_app(settings))
    (user,) = await make_users(client.app[TOKENS], clean_database, 1, prefix="poison")
    media = await direct_upload(client, user, PHOTO)
    broken = settings.with_overrides(
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
        sqs_endpoint_url=settings.s3_endpoint_url,
        s3_timeout=0.5,
        job_max_attempts=2,
    )
    with worker_process(broken, tmp_path):
        failed = await wait_until_processed(client, user, media["media_id"], seconds=60)
    assert failed["status"] == "failed"
    assert failed["failure"] == "processing_failed"
    outcomes = jobs_by_outcome(tmp_path)
    assert outcomes.get("retried") == 1.0
    assert outcomes.get("failed") == 1.0
