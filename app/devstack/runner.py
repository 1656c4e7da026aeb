"""`make run`: the embedded stack and the service, started in order and stopped in reverse.

PostgreSQL starts unless DATABASE_URL is set, moto unless S3_ENDPOINT_URL is
set (it serves S3 and the media job queue, SQS); the schema is migrated; then the
service and MEDIA_WORKERS media workers run as child processes with the same
environment a real deployment would give them. Ctrl-C (or SIGTERM) stops the
service and the workers, takes a last copy of the S3 objects, then stops moto
and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from app.devstack.postgres import EmbeddedPostgres
from app.devstack.processes import stop_service
from app.devstack.redis import EmbeddedRedis
from app.devstack.s3 import ACCESS_KEY_ID, BucketMirror, EmbeddedS3
from app.migrations import migrate
from app.settings import Settings
from app.storage import ensure_bucket

log = logging.getLogger(__name__)

READY_TIMEOUT = 60.0


def run_local(settings: Settings) -> int:
    stopping = stop_on_signals()
    with ExitStack() as stack:
        settings = start_backends(settings, stack)
        if stopping.is_set():
            return 0
        settings = settings.with_overrides(
            # The service and the media workers share the database's connections.
            service_processes=1 + settings.media_workers,
            # ... and /metrics serves the sum of their samples.
            prometheus_multiproc_dir=(
                settings.prometheus_multiproc_dir
                or empty_dir(settings.local_dir.resolve() / "run-metrics")
            ),
        )
        service = subprocess.Popen(
            [sys.executable, "-m", "app", "serve"],
            env={**os.environ, **settings.to_env()},
            stdin=subprocess.DEVNULL,
        )
        stack.callback(stop_service, service, settings.shutdown_drain + settings.shutdown_timeout)
        url = f"http://{settings.host}:{settings.port}"
        if not wait_until_ready(url, service, stopping):
            return 0 if stopping.is_set() else 1
        workers = MediaWorkers(settings)
        stack.callback(workers.stop)
        workers.start()
        print(
            f"\nMonogram is running at {url} with {settings.media_workers} media worker(s)"
            "  (Ctrl-C stops it)\n",
            flush=True,
        )
        while not stopping.wait(0.5):
            if service.poll() is not None:
                log.error("the service exited with %s", service.returncode)
                return 1
            workers.replace_exited()
    return 0


class MediaWorkers:
    """`python -m app worker` processes (MEDIA_WORKERS): started, replaced when they exit,
    stopped together with SIGTERM, which lets each finish the jobs it has."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        self.processes = [self._spawn(i) for i in range(self.settings.media_workers)]

    def replace_exited(self) -> None:
        for i, process in enumerate(self.processes):
            if process.poll() is not None:
                log.error(
                    "media worker %s exited with %s; starting a new one", i + 1, process.returncode
                )
                self.processes[i] = self._spawn(i)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            stop_service(process, self.settings.shutdown_timeout)

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.settings.to_env(), "SERVICE_INSTANCE": f"worker-{index + 1}"}
        return subprocess.Popen(
            [sys.executable, "-m", "app", "worker"], env=env, stdin=subprocess.DEVNULL
        )


def empty_dir(path: Path) -> str:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return str(path)


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM, in place of their default handling."""
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not stopping.is_set():
            log.info("stopping on %s", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return stopping


def start_backends(settings: Settings, stack: ExitStack) -> Settings:
    """Start PostgreSQL and S3 where their URLs are unset, and migrate.

    Their stops are pushed on `stack`; the settings returned point at them.
    """
    local_dir = settings.local_dir.resolve()
    local_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    local_dir.chmod(0o700)  # secrets and private sources live here, whoever made it first
    if not settings.database_url:
        postgres = EmbeddedPostgres(local_dir / "postgres", settings.local_pg_port)
        stack.callback(postgres.stop)
        postgres.start()
        settings = settings.with_overrides(database_url=postgres.dsn)
    if not settings.s3_endpoint_url:
        settings = _start_s3(settings, local_dir, stack)
    if not settings.redis_url:
        redis = EmbeddedRedis(
            local_dir / "redis", settings.local_redis_port, local_secret(local_dir, REDIS_KEY_FILE)
        )
        stack.callback(redis.stop)
        redis.start()
        settings = settings.with_overrides(redis_url=redis.url)
    if not settings.jwt_secret:
        settings = settings.with_overrides(jwt_secret=_local_jwt_secret(local_dir))
    assert settings.database_url is not None
    asyncio.run(migrate(settings.database_url))
    return settings


def _start_s3(settings: Settings, local_dir: Path, stack: ExitStack) -> Settings:
    s3 = EmbeddedS3(settings.local_s3_port, local_secret(local_dir, S3_KEY_FILE))
    stack.callback(s3.stop)
    s3.start()
    settings = settings.with_overrides(
        s3_endpoint_url=s3.endpoint_url,
        s3_access_key_id=s3.access_key_id,
        s3_secret_access_key=s3.secret_access_key,
    )
    asyncio.run(ensure_bucket(settings))
    mirror = BucketMirror(s3.client(), settings.s3_bucket, local_dir / "s3" / settings.s3_bucket)
    restored = mirror.restore()
    log.info("s3 objects restored", extra={"objects": restored, "bucket": settings.s3_bucket})
    syncer = _Every(settings.local_s3_sync_interval, mirror.sync)
    # Runs before s3.stop: the last copy is taken after the service has stopped writing.
    stack.callback(syncer.stop_after_last_run)
    syncer.start()
    return settings


S3_KEY_FILE = "s3-secret"
REDIS_KEY_FILE = "redis-secret"
JWT_KEY_FILE = "jwt-secret"


def local_secret(local_dir: Path, name: str) -> str:
    """The secret in `local_dir/name`, made on first use: the file is 0600 from its creation."""
    path = local_dir / name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def running_stack_settings(settings: Settings) -> Settings | None:
    """Settings pointing at the `make run` stack kept in LOCAL_DIR, if it is running now.

    What lets `python -m app sweep-orphans` find that stack with nothing typed in.
    """
    local_dir = settings.local_dir.resolve()
    s3_secret = local_dir / S3_KEY_FILE
    postgres = EmbeddedPostgres(local_dir / "postgres", settings.local_pg_port)
    if not s3_secret.exists() or not postgres.is_running():
        return None
    return settings.with_overrides(
        database_url=postgres.dsn,
        s3_endpoint_url=f"http://127.0.0.1:{settings.local_s3_port}",
        s3_access_key_id=ACCESS_KEY_ID,
        s3_secret_access_key=s3_secret.read_text().strip(),
    )


def _local_jwt_secret(local_dir: Path) -> str:
    log.warning(
        "JWT_SECRET is not set: signing tokens with the generated secret in %s "
        "(fine on this machine; set JWT_SECRET anywhere else)",
        local_dir / JWT_KEY_FILE,
    )
    return local_secret(local_dir, JWT_KEY_FILE)


def wait_until_ready(url: str, service: subprocess.Popen[bytes], stopping: threading.Event) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline and not stopping.is_set():
        if service.poll() is not None:
            log.error("the service exited with %s before it was ready", service.returncode)
            return False
        if answers_ready(url):
            return True
        stopping.wait(0.2)
    if not stopping.is_set():
        log.error("the service was not ready within %ss", READY_TIMEOUT)
    return False


def answers_ready(url: str) -> bool:
    """Whether the service at `url` answers 200 on /readyz now (a 503 or no answer: no)."""
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except OSError:  # refused, timed out, or an HTTP error status
        return False
    except http.client.HTTPException:
        # Not HTTP: polling a port nobody listens on yet, the kernel may pick that very port
        # as the probe's own, and the probe then reads its request back as the answer.
        return False


class _Every(threading.Thread):
    """Calls `work` every `interval` seconds until stopped, then once more."""

    def __init__(self, interval: float, work: Callable[[], None]) -> None:
        super().__init__(name="s3-mirror", daemon=True)
        self.interval = interval
        self.work = work
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self._run_once()

    def stop_after_last_run(self) -> None:
        self._stop_event.set()
        self.join()
        self._run_once()

    def _run_once(self) -> None:
        try:
            self.work()
        except Exception:
            log.exception("s3 mirror: copy failed; will try again")
