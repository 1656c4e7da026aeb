"""Stopping a child process: SIGTERM, its grace, then SIGKILL."""

from __future__ import annotations

import logging
import signal
import subprocess

log = logging.getLogger(__name__)


def stop_service(service: subprocess.Popen[bytes], grace: float) -> None:
    if service.poll() is None:
        service.send_signal(signal.SIGTERM)
    try:
        service.wait(timeout=grace + 5)
    except subprocess.TimeoutExpired:
        log.warning("process %s did not stop within %ss; killing it", service.pid, grace + 5)
        service.kill()
        service.wait()
