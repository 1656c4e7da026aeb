"""`make stack`: three service processes behind Caddy, as `python -m app stack` runs them.

Each test starts the whole stack as a user would (supervisor, three `serve`
processes, Caddy), pointed at the test PostgreSQL and moto, and talks only to
the balancer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from app.auth import Tokens
from app.devstack.edge import varnishd_binary
from app.devstack.stack import caddy_binary
from app.settings import Settings
from app.storage import Storage, s3_client
from app.sweep import find_orphans
from tests.helpers import (
    CORPUS,
    ROOT,
    User,
    assert_error_shape,
    free_port,
    make_users,
    upload,
    wait_until_ready,
)

pytestmark = pytest.mark.slow  # each test starts processes of its own

PROCESSES = 3
PHOTO = (CORPUS / "sample.jpg").read_bytes()

try:
    caddy_binary()
except SystemExit as exc:
    pytest.skip(str(exc), allow_module_level=True)


@dataclass
class Stack:
    url: str
    state_path: Path
    supervisor: subprocess.Popen[bytes]
    settings: Settings
    edge_port: int

    def pids(self) -> dict[str, int]:
        state = json.loads(self.state_path.read_text())
        return {p["name"]: p["pid"] for p in state["processes"]}


def _free_port_run(length: int) -> int:
    """A port p such that p .. p+length-1 are all free on 127.0.0.1."""
    for _ in range(100):
        first = random.randint(20000, 60000)
        sockets = []
        try:
            for port in range(first, first + length):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no run of free ports found")


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    port = _free_port_run(PROCESSES + 1)
    log_path = tmp_path / "stack.log"
    env = {
        **os.environ,
        **settings.to_env(),
        "PORT": str(port),
        "LOCAL_DIR": str(tmp_path / "local"),
        "LOG_LEVEL": "WARNING",
        "THUMBNAIL_WORKERS": "1",
        # One worker per process: on a loaded machine a single image waiting behind another
        # is predicted past the 0.4 s default and shed. These tests are about restarts and
        # connection limits; shedding uploads is test_admission's.
        "IMAGE_WAIT_BUDGET": "3.0",
        "LOCAL_EDGE_PORT": str(free_port()),
        "LOCAL_REDIS_PORT": str(free_port()),
    }
    with log_path.open("wb") as log:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "app", "stack", "--processes", str(PROCESSES)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    edge_port = int(env["LOCAL_EDGE_PORT"])
    running = Stack(url, tmp_path / "local" / "stack.json", supervisor, settings, edge_port)
    try:
        try:
            wait_until_ready(url, supervisor)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{_tail(log_path)}") from None
        pids = running.pids()
        yield running
    finally:
        supervisor.send_signal(signal.SIGTERM)
        code = supervisor.wait(timeout=60)
    assert code == 0, _tail(log_path)
    for pid in [*pids.values(), *running_pids_of(running)]:
        assert not _alive(pid), f"service process {pid} outlived the stack"
    assert "Traceback" not in log_path.read_text(), _tail(log_path)


def running_pids_of(stack: Stack) -> list[int]:
    try:
        return list(stack.pids().values())
    except FileNotFoundError:  # removed at a clean stop
        return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _tail(path: Path) -> str:
    return "stack log:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-40:])


@pytest.fixture
async def session(stack: Stack) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=400)
    async with aiohttp.ClientSession(stack.url, connector=connector) as client:
        yield client


async def users(stack: Stack, count: int, prefix: str) -> list[User]:
    assert stack.settings.database_url
    return await make_users(Tokens(stack.settings), stack.settings.database_url, count, prefix)


async def requests_by_process(session: aiohttp.ClientSession) -> dict[str, float]:
    async with session.get("/metrics") as response:
        assert response.status == 200
        text = await response.text()
    found = re.findall(r'monogram_process_http_requests_total\{process="([^"]+)"\} (\S+)', text)
    return {name: float(value) for name, value in found}


async def test_the_balancer_spreads_requests_over_every_process(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    (reader,) = await users(stack, 1, "spread")
    before = await requests_by_process(session)
    for _ in range(90):
        async with session.get("/v1/feed", headers=reader.auth) as response:
            assert response.status == 200
    after = await requests_by_process(session)

    served = {name: after[name] - before.get(name, 0) for name in after}
    assert sorted(served) == ["serve-1", "serve-2", "serve-3"]
    # Round robin: 30 feed reads each, plus the balancer's health checks and /metrics.
    for name, count in served.items():
        assert count >= 30, f"{name} served only {count} of 90: {served}"


async def test_the_balancer_refuses_bodies_past_the_limit_in_the_error_shape(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    (uploader,) = await users(stack, 1, "big")
    response = await upload(session, uploader, PHOTO + bytes(11 * 1024 * 1024))
    assert response.status == 413
    assert_error_shape(await response.json(), "payload_too_large")
    assert response.headers["X-Request-ID"]
    # A request id given by the client comes back through the balancer.
    async with session.get("/healthz", headers={"X-Request-ID": "trace-me-42"}) as response:
        assert response.headers["X-Request-ID"] == "trace-me-42"


async def test_a_file_of_the_services_largest_size_gets_past_the_balancer(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    """The multipart framing around a MAX_UPLOAD_BYTES file must not earn it a 413 from Caddy."""
    (uploader,) = await users(stack, 1, "edge")
    largest = PHOTO + bytes(stack.settings.max_upload_bytes - len(PHOTO))
    response = await upload(session, uploader, largest)
    # Past the balancer, the service reads it whole: the bytes after the JPEG's end are dropped.
    assert response.status == 201, await response.text()
    assert (await response.json())["bytes"] == stack.settings.max_upload_bytes


@pytest.mark.skipif(varnishd_binary() is None, reason="varnishd (Debian: varnish) absent")
async def test_the_stacks_images_come_through_its_edge_cache(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    (author,) = await users(stack, 1, "edge")
    response = await upload(session, author, PHOTO)
    assert response.status == 201, await response.text()
    url = (await response.json())["thumbnail_url"]
    edge = f"http://127.0.0.1:{stack.edge_port}/{stack.settings.s3_bucket}/media/"
    assert url.startswith(edge)
    async with aiohttp.ClientSession() as browser:
        seen = []
        for _ in range(2):
            async with browser.get(url) as image:
                seen.append((image.status, image.headers.get("X-Cache")))
    assert seen == [(200, "MISS"), (200, "HIT")]
    async with session.get("/") as page:  # the web client may show images from the edge
        assert f"http://127.0.0.1:{stack.edge_port}" in page.headers["Content-Security-Policy"]


@dataclass
class Outcomes:
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    media_ids: list[int] = field(default_factory=list)

    def failures(self) -> list[str]:
        bad = [f"{op} {status}" for (op, status), n in self.statuses.items() if status >= 400]
        return bad + self.errors


async def _read_feeds(
    session: aiohttp.ClientSession, readers: list[User], stop: asyncio.Event, out: Outcomes
) -> None:
    while not stop.is_set():
        reader = random.choice(readers)
        try:
            async with session.get("/v1/feed", headers=reader.auth) as response:
                await response.read()
                out.statuses["feed", response.status] += 1
        except aiohttp.ClientError as exc:
            out.errors.append(f"feed: {exc!r}")
        await asyncio.sleep(0.02)


async def _upload_and_post(
    session: aiohttp.ClientSession, uploader: User, stop: asyncio.Event, out: Outcomes
) -> None:
    while not stop.is_set():
        try:
            response = await upload(session, uploader, PHOTO)
            out.statuses["upload", response.status] += 1
            if response.status != 201:
                continue
            media_id = (await response.json())["media_id"]
            out.media_ids.append(media_id)
            async with session.post(
                "/v1/posts", json={"media_id": media_id}, headers=uploader.auth
            ) as posted:
                out.statuses["post", posted.status] += 1
        except aiohttp.ClientError as exc:
            out.errors.append(f"upload: {exc!r}")
        await asyncio.sleep(0.1)


async def test_a_rolling_restart_under_load_fails_no_request(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    uploaders = await users(stack, 2, "uploader")
    readers = await users(stack, 20, "reader")
    assert stack.settings.database_url
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        await conn.execute(
            "INSERT INTO follows (follower_id, followee_id) SELECT r, u FROM "
            "unnest($1::bigint[]) r, unnest($2::bigint[]) u",
            [r.id for r in readers],
            [u.id for u in uploaders],
        )
    finally:
        await conn.close()
    before = stack.pids()

    stop = asyncio.Event()
    out = Outcomes()
    load = [
        *(asyncio.create_task(_read_feeds(session, readers, stop, out)) for _ in range(8)),
        *(asyncio.create_task(_upload_and_post(session, u, stop, out)) for u in uploaders),
    ]
    await asyncio.sleep(1)  # steady load before the first process goes
    restart = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        "restart-rolling",
        cwd=ROOT,
        env={**os.environ, "LOCAL_DIR": str(stack.state_path.parent)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    printed, _ = await asyncio.wait_for(restart.communicate(), timeout=240)
    await asyncio.sleep(1)  # and after the last one is back
    stop.set()
    await asyncio.gather(*load)

    assert restart.returncode == 0, printed.decode()
    print(f"\nduring the rolling restart: {dict(out.statuses)}\n{printed.decode()}")
    after = stack.pids()
    assert all(after[name] != before[name] for name in before), (before, after)
    assert out.failures() == [], f"{out.failures()[:10]} of {dict(out.statuses)}"
    assert out.statuses["feed", 200] >= 200, dict(out.statuses)
    assert out.statuses["upload", 201] >= 10, dict(out.statuses)
    await _assert_every_upload_is_whole(stack.settings, out.media_ids)


async def _assert_every_upload_is_whole(settings: Settings, media_ids: list[int]) -> None:
    """Each 201 has its row and its objects; no object lacks a row."""
    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch("SELECT original_key, thumbnail_key FROM media ORDER BY media_id")
        assert len(rows) == len(media_ids)
        async with s3_client(settings) as client:
            storage = Storage(client, settings.s3_bucket, settings.public_base_url)
            listing = await client.list_objects_v2(Bucket=settings.s3_bucket)
            stored = {item["Key"] for item in listing.get("Contents", [])}
            for row in rows:
                assert {row["original_key"], row["thumbnail_key"]} <= stored
            assert await find_orphans(conn, storage, dt.timedelta(0)) == []
    finally:
        await conn.close()


async def test_three_processes_at_full_load_stay_within_the_servers_connections(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    """A celebrity's followers all at once, while every feed query is held up.

    A lock on posts keeps each feed query, and so its connection, busy: every
    process's pool fills to its share, (100 - 10 reserved) / (3 + the media worker) = 22,
    and the requests past that are shed with 503: at once by admission control past each
    process's reads limit (overloaded), or after DB_ACQUIRE_TIMEOUT (database_busy).
    """
    readers = await users(stack, 50, "crowd")
    assert stack.settings.database_url
    locker = await asyncpg.connect(stack.settings.database_url)
    sampler = await asyncpg.connect(stack.settings.database_url)
    peak = {"service": 0, "all": 0}
    sampling = asyncio.Event()

    async def sample() -> None:
        while not sampling.is_set():
            row = await sampler.fetchrow(
                "SELECT count(*) FILTER (WHERE application_name = 'monogram') AS service, "
                "count(*) AS all FROM pg_stat_activity WHERE backend_type = 'client backend'"
            )
            assert row is not None
            peak["service"] = max(peak["service"], row["service"])
            peak["all"] = max(peak["all"], row["all"])
            await asyncio.sleep(0.02)

    shed_seconds: list[float] = []

    async def read(reader: User) -> tuple[int, str | None]:
        started = time.monotonic()
        async with session.get("/v1/feed", headers=reader.auth) as response:
            body = await response.json()
            if response.status == 503:
                shed_seconds.append(time.monotonic() - started)
            return response.status, body.get("error", {}).get("code")

    # The service processes and the stack's media workers share the connections.
    sharing = PROCESSES + stack.settings.media_workers
    pools = PROCESSES * stack.settings.with_overrides(service_processes=sharing).db_pool_max
    crowd_size = 300
    try:
        sampler_task = asyncio.create_task(sample())
        async with locker.transaction():
            await locker.execute("LOCK TABLE posts IN ACCESS EXCLUSIVE MODE")
            crowd = [asyncio.create_task(read(readers[i % 50])) for i in range(crowd_size)]
            # While the lock holds, only requests that got no connection can finish.
            deadline = time.monotonic() + 30
            while sum(t.done() for t in crowd) < crowd_size - pools:
                assert time.monotonic() < deadline, "the crowd was neither served nor shed"
                await asyncio.sleep(0.05)
            # Full pools are load, not an outage: the processes stay in rotation.
            for _ in range(PROCESSES):
                async with session.get("/readyz") as response:
                    assert response.status == 200, await response.text()
        outcomes = Counter(await asyncio.gather(*crowd))
        sampling.set()
        await sampler_task
        max_connections = await sampler.fetchval("SHOW max_connections")
    finally:
        await locker.close()
        await sampler.close()

    print(f"\npeak connections: {peak}; outcomes: {dict(outcomes)}; ")
    print(f"shed in {min(shed_seconds):.2f}-{max(shed_seconds):.2f} s")
    assert int(max_connections) == 100
    assert peak["all"] <= 100, peak
    assert peak["service"] == pools, peak
    assert outcomes[(200, None)] == pools
    shed = {key: n for key, n in outcomes.items() if key != (200, None)}
    assert set(shed) <= {(503, "database_busy"), (503, "overloaded")}, outcomes
    assert sum(shed.values()) == crowd_size - pools
    # Shed after DB_ACQUIRE_TIMEOUT (1 s), not left to wait for the lock.
    assert max(shed_seconds) < 1 + 2.0, max(shed_seconds)
    async with session.get("/v1/feed", headers=readers[0].auth) as response:
        assert response.status == 200


async def test_a_service_process_that_dies_is_replaced_and_nothing_fails_after(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    (reader,) = await users(stack, 1, "survivor")
    victim = stack.pids()["serve-2"]
    os.kill(victim, signal.SIGKILL)  # no drain, no goodbye: a crash or the OOM killer

    deadline = time.monotonic() + 30
    while stack.pids()["serve-2"] == victim:
        assert time.monotonic() < deadline, "the dead process was not replaced"
        await asyncio.sleep(0.1)
    assert _alive(stack.pids()["serve-2"])
    await asyncio.sleep(2.0)  # its first health checks put it back in rotation
    for _ in range(30):
        async with session.get("/v1/feed", headers=reader.auth) as response:
            assert response.status == 200
