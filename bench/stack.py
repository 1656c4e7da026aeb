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
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from app.auth import Tokens
from app.localstack.postgres import EmbeddedPostgres
from app.localstack.s3 import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, EmbeddedS3
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

    def cpu_seconds(self) -> float:
        """CPU time of the service process and its image workers."""
        total = 0.0
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = psutil.Process(self.process.pid)
            for proc in [parent, *parent.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    times = proc.cpu_times()
                    total += times.user + times.system
        return total


@contextmanager
def backends(workdir: Path, environ: Mapping[str, str]) -> Iterator[Settings]:
    """Settings pointing at a PostgreSQL and an S3 bucket ready for the bench."""
    with ExitStack() as stack:
        database_url = environ.get("DATABASE_URL")
        if not database_url:
            postgres = EmbeddedPostgres(workdir / "postgres", free_port(), durable=False)
            stack.callback(postgres.stop)
            postgres.start()
            database_url = postgres.dsn
        s3_env = {
            key: environ[key]
            for key in ("S3_ENDPOINT_URL", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY")
            if environ.get(key)
        }
        if "S3_ENDPOINT_URL" not in s3_env:
            s3 = EmbeddedS3(free_port())
            stack.callback(s3.stop)
            s3.start()
            s3_env = {
                "S3_ENDPOINT_URL": s3.endpoint_url,
                "S3_ACCESS_KEY_ID": ACCESS_KEY_ID,
                "S3_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            }
        yield Settings.from_env(
            {
                "DATABASE_URL": database_url,
                "S3_BUCKET": environ.get("S3_BUCKET", "monogram-bench"),
                "S3_REGION": environ.get("S3_REGION", REGION),
                "JWT_SECRET": secrets.token_urlsafe(48),
                "LOG_LEVEL": "WARNING",
                "RATE_LIMIT_PER_SECOND": "100000",
                "RATE_LIMIT_BURST": "100000",
                **s3_env,
            }
        )


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
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tokens(settings: Settings) -> Tokens:
    return Tokens(settings)


def _wait_until_ready(url: str, process: subprocess.Popen[bytes], patience: float = 60) -> None:
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/readyz", timeout=2) as response,  # noqa: S310
        ):
            if response.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} was not ready within {patience} s")
