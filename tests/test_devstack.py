"""`make run`'s runner, as a user drives it: start, use, Ctrl-C, start again."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import psutil
import pytest

from app.devstack.postgres import (
    BIN_DIR,
    ROOT_DATA_HOME,
    ROOT_INSTALL_CACHE,
    SERVICE_USER,
    EmbeddedPostgres,
    reachable_bin_dir,
)
from app.devstack.runner import S3_KEY_FILE, answers_ready, local_secret
from app.devstack.s3 import s3_client
from tests.helpers import CORPUS, ROOT, free_port, wait_until_ready

pytestmark = pytest.mark.slow  # each test starts processes of its own

START_TIMEOUT = 90


class Stack:
    def __init__(self, local_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.local_dir = local_dir
        self.port, self.pg_port, self.s3_port = free_port(), free_port(), free_port()
        self.redis_port = free_port()
        self.extra_env = extra_env or {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def postgres(self) -> EmbeddedPostgres:
        return EmbeddedPostgres(self.local_dir / "postgres", self.pg_port)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "LOCAL_DIR": str(self.local_dir),
            "PORT": str(self.port),
            "LOCAL_PG_PORT": str(self.pg_port),
            "LOCAL_S3_PORT": str(self.s3_port),
            "LOCAL_REDIS_PORT": str(self.redis_port),
            "LOCAL_S3_SYNC_INTERVAL": "0.5",
            **self.extra_env,
        }

    @contextmanager
    def running(self) -> Iterator[subprocess.Popen[bytes]]:
        env = self.env
        for name in ("DATABASE_URL", "S3_ENDPOINT_URL", "REDIS_URL"):
            if name not in self.extra_env:
                env.pop(name, None)
        log = (self.local_dir.parent / "runner.log").open("ab")
        # A session of its own, so the test can send the whole group SIGINT, as Ctrl-C does.
        runner = subprocess.Popen(
            [sys.executable, "-m", "app", "local"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        try:
            wait_until_ready(self.url, runner, START_TIMEOUT, why=self.log_tail())
            yield runner
        finally:
            if runner.poll() is None:
                os.killpg(runner.pid, signal.SIGINT)
            try:
                runner.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(runner.pid, signal.SIGKILL)
                raise
            finally:
                log.close()

    def log_tail(self) -> str:
        return (self.local_dir.parent / "runner.log").read_text(errors="replace")[-3000:]


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if text in cmdline:
            found.append(cmdline)
    return found


async def insert_user(dsn: str, username: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO users (username, password_hash) VALUES ($1, 'not-a-real-hash')", username
        )
    finally:
        await conn.close()


async def usernames(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r["username"] for r in await conn.fetch("SELECT username FROM users ORDER BY 1")]
    finally:
        await conn.close()


def test_ctrl_c_stops_everything_and_a_restart_keeps_rows_and_objects(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "local")
    photo = (CORPUS / "sample.jpg").read_bytes()
    later = b"written a moment before Ctrl-C"

    with stack.running() as runner:
        started = psutil.Process(runner.pid).children(recursive=True)
        assert any("moto.server" in " ".join(p.cmdline()) for p in started)
        asyncio.run(insert_user(stack.postgres.dsn, "before_restart"))
        # A client of the running one, with the secret the runner keeps for its owner.
        s3 = s3_client(
            f"http://127.0.0.1:{stack.s3_port}", local_secret(stack.local_dir, S3_KEY_FILE)
        )
        s3.put_object(
            Bucket="monogram", Key="media/1/photo.jpg", Body=photo, ContentType="image/jpeg"
        )
        time.sleep(1.5)  # a periodic copy runs
        s3.put_object(
            Bucket="monogram", Key="media/1/late.txt", Body=later, ContentType="text/plain"
        )
        # The sweep finds this stack by itself: no DATABASE_URL, no S3 settings typed in.
        sweep = subprocess.run(
            [sys.executable, "-m", "app", "sweep-orphans", "--min-age", "0"],
            cwd=ROOT,
            env={
                k: v for k, v in stack.env.items() if k not in ("DATABASE_URL", "S3_ENDPOINT_URL")
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert sweep.returncode == 0, sweep.stderr
        assert '"orphan":"media/1/photo.jpg"' in sweep.stdout

    assert runner.returncode == 0, stack.log_tail()
    assert stack.local_dir.stat().st_mode & 0o777 == 0o700
    # A clean stop: no traceback from any process the stack started (image workers included).
    assert "Traceback" not in (stack.local_dir.parent / "runner.log").read_text(errors="replace")
    for port in (stack.port, stack.pg_port, stack.s3_port):
        assert not listening(port), f"port {port} still open after Ctrl-C"
    assert processes_mentioning(str(stack.local_dir)) == []
    assert processes_mentioning(f"--port {stack.s3_port}") == []
    assert [p.pid for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    assert not (stack.local_dir / "postgres" / "postmaster.pid").exists()

    with stack.running():
        assert asyncio.run(usernames(stack.postgres.dsn)) == ["before_restart"]
        # Served by the local S3 at the public URL the API will hand to browsers.
        public = f"http://127.0.0.1:{stack.s3_port}/monogram"
        with urllib.request.urlopen(f"{public}/media/1/photo.jpg") as response:
            assert response.read() == photo
            assert response.headers["Content-Type"] == "image/jpeg"
        with urllib.request.urlopen(f"{public}/media/1/late.txt") as response:
            assert response.read() == later


def test_a_readiness_probe_answered_with_something_not_http_says_not_ready() -> None:
    """A probe of a port nobody listens on yet may be connected to itself by the kernel and
    read its own request back: the runner and the tests then wait on, as for a refusal (a
    fresh-clone CI run failed a stack test's setup on that echo)."""
    with socket.create_server(("127.0.0.1", 0)) as server:

        def echo_once() -> None:
            conn, _ = server.accept()
            with conn:
                conn.sendall(conn.recv(4096))

        echo = threading.Thread(target=echo_once, daemon=True)
        echo.start()
        assert answers_ready(f"http://127.0.0.1:{server.getsockname()[1]}") is False
        echo.join(timeout=5)


def test_database_url_points_the_stack_at_another_postgresql(
    tmp_path: Path, fresh_postgres: EmbeddedPostgres
) -> None:
    stack = Stack(tmp_path / "local", {"DATABASE_URL": fresh_postgres.dsn})
    with stack.running():
        # The runner migrated the PostgreSQL it was given, and started none of its own.
        asyncio.run(insert_user(fresh_postgres.dsn, "on_the_other_server"))
        assert asyncio.run(usernames(fresh_postgres.dsn)) == ["on_the_other_server"]
        assert not (stack.local_dir / "postgres").exists()
        assert not listening(stack.pg_port)
        with urllib.request.urlopen(f"{stack.url}/readyz") as response:
            assert response.status == 200


@pytest.mark.parametrize("variable", ["PORT", "SERVICE_PROCESSES"])
def test_a_bad_setting_stops_the_runner_with_a_clear_message(variable: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app", "local"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, variable: "0"},
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert f"configuration error: {variable}" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")
def test_root_runs_postgresql_from_a_private_checkout_through_a_reachable_copy(
    tmp_path: Path,
) -> None:
    """A clone made with `mktemp -d` is 0700: the service user cannot execute binaries below it."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    package = next(p for p in BIN_DIR.parents if p.parent.name == "site-packages")
    for part in (package, package.with_name(f"{package.name}.libs")):
        if part.exists():
            shutil.copytree(part, private / "site-packages" / part.name, symlinks=True)
    private_bin = private / "site-packages" / BIN_DIR.relative_to(package.parent)

    reachable = reachable_bin_dir(private_bin)
    try:
        assert reachable.is_relative_to(ROOT_INSTALL_CACHE)
        assert reachable_bin_dir(private_bin) == reachable  # made once, then reused
        server = EmbeddedPostgres(tmp_path / "data", free_port(), bin_dir=private_bin)
        server.start()
        try:
            assert server.is_running()
        finally:
            server.stop()
    finally:
        shutil.rmtree(ROOT_INSTALL_CACHE / reachable.relative_to(ROOT_INSTALL_CACHE).parts[0])


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")
def test_root_keeps_postgresql_data_in_the_service_users_folder_and_opens_no_parent(
    tmp_path: Path,
) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    modes_before = {p: p.stat().st_mode for p in [private, *private.parents]}
    asked = private / "local" / "postgres"

    server = EmbeddedPostgres(asked, free_port())
    server.start()
    try:
        assert server.is_running()
        password_file = private / "local" / "postgres.password"
        assert password_file.stat().st_mode & 0o777 == 0o600
        assert password_file.stat().st_uid == 0  # the service user never needed it
    finally:
        server.stop()

    assert {p: p.stat().st_mode for p in [private, *private.parents]} == modes_before
    assert asked.is_symlink()
    folder = asked.resolve()
    assert folder.parent == ROOT_DATA_HOME
    assert folder.stat().st_mode & 0o777 == 0o700
    assert pwd.getpwuid(folder.stat().st_uid).pw_name == SERVICE_USER
    assert EmbeddedPostgres(asked, free_port()).data_dir == folder  # found again by its link

    # Deleting the local folder forgets the data, as for anyone else; the next start sweeps it.
    shutil.rmtree(private / "local")
    EmbeddedPostgres(tmp_path / "other" / "postgres", free_port())
    assert not folder.exists()


def test_secrets_are_private_from_the_moment_they_exist(tmp_path: Path) -> None:
    old_umask = os.umask(0)  # the most careless umask: the file's own mode must be 0600
    try:
        secret = local_secret(tmp_path, "jwt-secret")
    finally:
        os.umask(old_umask)
    assert (tmp_path / "jwt-secret").stat().st_mode & 0o777 == 0o600
    assert len(secret) >= 48
    assert local_secret(tmp_path, "jwt-secret") == secret  # made once, then kept
