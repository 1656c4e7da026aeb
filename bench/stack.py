"""The stack a bench run drives: PostgreSQL, S3 and service processes, all on 127.0.0.1.

The embedded PostgreSQL and moto are used unless DATABASE_URL and S3_ENDPOINT_URL point
elsewhere. Service processes are `python -m app serve`, as a deployment runs them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import psutil

from app.auth import Tokens
from app.devstack.postgres import EmbeddedPostgres
from app.devstack.processes import stop_service
from app.devstack.redis import EmbeddedRedis
from app.devstack.runner import answers_ready
from app.devstack.s3 import REGION, EmbeddedS3
from app.devstack.stack import start_balancer
from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Service:
    url: str
    process: subprocess.Popen[bytes]

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU time of the service process itself, and of its image workers."""
        own = 0.0
        with contextlib.suppress(psutil.NoSuchProcess):
            times = psutil.Process(self.process.pid).cpu_times()
            own = times.user + times.system
        return own, tree_cpu_seconds(self.process.pid) - own


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and its descendants, those that have exited included."""
    total = 0.0
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = proc.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
    return total


# The parts whose CPU a load step reports, in the order the report shows them.
CPU_PARTS = (
    "service",
    "image_workers",
    "balancer",
    "postgresql",
    "s3",
    "load_generator",
    "media_workers",
    "redis",
)


@dataclass(frozen=True)
class CpuMeter:
    """CPU seconds spent so far by each part of the bench's machine: the service processes
    (their event loops, and their image workers apart), the balancer, PostgreSQL and S3 when
    the bench started them, and this load generator. A step's share of each shows which
    part ran out of cores first."""

    services: list[Service]
    other_pids: Mapping[str, tuple[int, ...]]

    def read(self) -> dict[str, float]:
        loops, workers = zip(*(s.cpu_seconds() for s in self.services), strict=True)
        spent = {"service": sum(loops), "image_workers": sum(workers)}
        spent |= {
            role: sum(tree_cpu_seconds(pid) for pid in pids)
            for role, pids in self.other_pids.items()
        }
        spent["load_generator"] = time.process_time()
        return spent

    def since(self, before: dict[str, float]) -> dict[str, float]:
        """CPU seconds each part spent since `before`, an earlier `read()`."""
        after = self.read()
        return {role: after[role] - before[role] for role in after}


@dataclass(frozen=True)
class Backends:
    settings: Settings
    # Processes of the PostgreSQL, S3 and Redis started here, by role; none for ones given by URL.
    pids: dict[str, tuple[int, ...]]


@contextmanager
def backends(workdir: Path, environ: Mapping[str, str]) -> Iterator[Backends]:
    """Settings pointing at a PostgreSQL and an S3 bucket ready for the bench."""
    pids: dict[str, tuple[int, ...]] = {}
    with ExitStack() as stack:
        database_url = environ.get("DATABASE_URL")
        if not database_url:
            postgres = EmbeddedPostgres(workdir / "postgres", free_port(), durable=False)
            stack.callback(postgres.stop)
            postgres.start()
            database_url = postgres.dsn
            if postgres.pid is not None:
                pids["postgresql"] = (postgres.pid,)
        s3_env = {
            key: environ[key]
            for key in ("S3_ENDPOINT_URL", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY")
            if environ.get(key)
        }
        if "S3_ENDPOINT_URL" not in s3_env:
            s3 = EmbeddedS3(free_port())
            stack.callback(s3.stop)
            s3.start()
            pids["s3"] = s3.pids  # moto and the gate in front of it
            s3_env = {
                "S3_ENDPOINT_URL": s3.endpoint_url,
                "S3_ACCESS_KEY_ID": s3.access_key_id,
                "S3_SECRET_ACCESS_KEY": s3.secret_access_key,
            }
        redis_url = environ.get("REDIS_URL")
        if not redis_url:
            redis = EmbeddedRedis(workdir / "redis", free_port(), secrets.token_urlsafe(16), "1gb")
            stack.callback(redis.stop)
            redis.start()
            redis_url = redis.url
            if redis.pid is not None:
                pids["redis"] = (redis.pid,)
        settings = Settings.from_env(
            {
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_url,
                "S3_BUCKET": environ.get("S3_BUCKET", "monogram-bench"),
                "S3_REGION": environ.get("S3_REGION", REGION),
                "JWT_SECRET": secrets.token_urlsafe(48),
                "LOG_LEVEL": "WARNING",
                "RATE_LIMIT_PER_SECOND": "100000",
                "RATE_LIMIT_BURST": "100000",
                # The load generator signs up and logs in every simulated user from one address.
                "LOGIN_LIMIT_PER_ADDRESS": "1000000",
                "LOGIN_LIMIT_PER_USERNAME": "1000000",
                "SIGNUP_LIMIT_PER_ADDRESS": "1000000",
                **s3_env,
            }
        )
        yield Backends(settings, pids)


async def empty_schema(dsn: str) -> None:
    """Drops every table of the bench's own PostgreSQL: each run loads its data anew, and what
    an older run left, in an older schema with rows no migration expects, is not kept."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()


@contextmanager
def service(settings: Settings, **env: str) -> Iterator[Service]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve"],
        cwd=ROOT,
        env={**os.environ, **settings.to_env(), "PORT": str(port), **env},
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(url, process)
        yield Service(url, process)
    finally:
        stop_service(process, 25)


@contextmanager
def media_worker(settings: Settings, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m app worker`, as `make run` starts it; stopped with SIGTERM at the end."""
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "worker"],
        cwd=ROOT,
        env={**os.environ, **settings.to_env(), **env},
        stdin=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        stop_service(process, 25)


@dataclass
class Balancer:
    url: str
    process: subprocess.Popen[bytes]


@contextmanager
def balancer(settings: Settings, services: list[Service], state_dir: Path) -> Iterator[Balancer]:
    """The seed's load balancer in front of `services`: make stack's Caddy, round robin."""
    port = free_port()
    upstreams = " ".join(s.url.removeprefix("http://") for s in services)
    here = settings.with_overrides(host="127.0.0.1", port=port)
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / "caddy.log").open("ab") as log:  # its log, out of the bench's output
        process = start_balancer(here, upstreams, state_dir, log)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(url, process)
        yield Balancer(url, process)
    finally:
        stop_service(process, 25)


def tokens(settings: Settings) -> Tokens:
    return Tokens(settings)


def _wait_until_ready(url: str, process: subprocess.Popen[bytes], patience: float = 60) -> None:
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode}")
        if answers_ready(url):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{url} was not ready within {patience} s")
