"""The edge cache in front of the S3 origin: Varnish from Debian's package, run without root.

Varnish rather than nginx's proxy_cache: it purges one URL with an HTTP request (nginx's
purge needs a third-party module that Debian's nginx lacks), it keeps objects in memory
bounded by `-s malloc,SIZE` with LRU eviction, its counters (varnishstat) say hits, misses and
origin fetches without parsing logs, and its VCL says in one file what is cached and for how
long (docker/varnish/default.vcl, shared with docker compose).

`varnishd -F` runs in the foreground with its own work directory and port, as the user who
starts it (`-j none`), with no management port (`-T none`): it is stopped by a signal.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

from app.devstack.processes import stop_service

log = logging.getLogger(__name__)

VCL = Path(__file__).resolve().parents[2] / "docker" / "varnish" / "default.vcl"
INSTALL_HINT = (
    "the edge cache is Varnish: install it with your package manager "
    "(Debian/Ubuntu: `sudo apt-get install varnish`; macOS: `brew install varnish`); "
    "without it images are served straight from the S3 origin"
)
# varnishstat's counters: what the bench and tests read.
COUNTERS = ("MAIN.cache_hit", "MAIN.cache_miss", "MAIN.backend_req", "MAIN.n_purges")

SITE_VCL = """vcl 4.1;

# Written by app/devstack/edge.py: the origin this edge fetches from, and who may purge.
backend origin {{
    .host = "{host}";
    .port = "{port}";
    .host_header = "{host}:{port}";
    .connect_timeout = 2s;
    .first_byte_timeout = 10s;
    .between_bytes_timeout = 5s;
}}

acl purgers {{
    "127.0.0.1";
    "::1";
}}
"""


def varnishd_binary() -> str | None:
    """varnishd's path, when it is installed (Debian puts it in /usr/sbin, off most PATHs)."""
    found = shutil.which("varnishd")
    if found is None and Path("/usr/sbin/varnishd").exists():
        found = "/usr/sbin/varnishd"
    return found


class EdgeCache:
    """Varnish on 127.0.0.1:`port`, caching `origin_url` (http://host:port) in `memory`."""

    def __init__(self, port: int, origin_url: str, work_dir: Path, memory: str = "256m") -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.origin_url = origin_url
        self.work_dir = work_dir.resolve()
        self.memory = memory
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self, timeout: float = 30.0) -> None:
        binary = varnishd_binary()
        if binary is None:
            raise RuntimeError(INSTALL_HINT)
        origin = urlsplit(self.origin_url)
        if origin.scheme != "http" or origin.hostname is None:
            raise RuntimeError(f"the edge cache fetches over http://host:port, not {origin}")
        self.work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.work_dir / "site.vcl").write_text(
            SITE_VCL.format(host=origin.hostname, port=origin.port or 80)
        )
        # Its own messages (the child's starts and stops), kept for when it fails to start.
        log_path = self.work_dir / "varnishd.log"
        log_file = log_path.open("wb")
        self._process = subprocess.Popen(
            [
                binary,
                "-F",  # foreground: it stops with this process's signal
                "-j",
                "none",  # as the user who starts it: no root needed
                "-T",
                "none",  # no management port: nothing else to secure
                "-n",
                str(self.work_dir / "varnish"),
                "-a",
                f"127.0.0.1:{self.port}",
                "-f",
                str(VCL),
                "-p",
                f"vcl_path={self.work_dir}",
                "-s",
                f"malloc,{self.memory}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        deadline = time.monotonic() + timeout
        while not _tcp_answers(self.port):
            if self._process.poll() is not None:
                why = log_path.read_text(errors="replace").strip()
                self._process = None
                raise RuntimeError(f"varnishd exited (is port {self.port} free?): {why[-500:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"varnishd did not answer within {timeout}s")
            time.sleep(0.05)
        log.info("edge cache (varnish) running", extra={"url": self.url, "origin": origin.netloc})

    def counters(self) -> dict[str, int]:
        """Hits, misses, origin fetches and purges so far (varnishstat)."""
        found = shutil.which("varnishstat") or "/usr/bin/varnishstat"
        fields = [arg for name in COUNTERS for arg in ("-f", name)]
        out = subprocess.run(
            [found, "-n", str(self.work_dir / "varnish"), "-j", *fields],
            capture_output=True,
            check=True,
            timeout=10,
        ).stdout
        counters = json.loads(out)["counters"]
        return {name.removeprefix("MAIN."): counters[name]["value"] for name in COUNTERS}

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        stop_service(process, 5.0)
        log.info("edge cache (varnish) stopped")


def _tcp_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
