"""How many CPUs this process may really use: what sizes the image worker pool by default.

`os.cpu_count()` is the host's count. In a container started with `--cpus 2` (a cgroup CPU
quota) on a 64-core host, 64 image workers would share two cores' worth of time: each
thumbnail would take 32 times longer and hold its memory as long.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

CGROUP_MOUNT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


def usable_cpus(mount: Path = CGROUP_MOUNT, membership: Path = PROC_SELF_CGROUP) -> int:
    """The CPUs the scheduler lets this process run on, capped by any cgroup CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota(mount, membership)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return count


def cgroup_cpu_quota(mount: Path, membership: Path) -> float | None:
    """The tightest CPU quota (in CPUs) on this process's cgroup or its ancestors, if any."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return None  # not Linux
    quotas: list[float] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2: "0::/path"
            root = mount if (mount / "cgroup.controllers").exists() else mount / "unified"
            quotas += _each_level(root, path, _v2_quota)
        elif "cpu" in controllers.split(","):  # cgroup v1: "4:cpu,cpuacct:/path"
            quotas += _each_level(mount / controllers, path, _v1_quota)
    return min(quotas, default=None)


def _each_level(root: Path, path: str, read: Callable[[Path], float | None]) -> list[float]:
    found = []
    level = root / path.lstrip("/")
    while True:
        quota = read(level)
        if quota is not None:
            found.append(quota)
        if level == root or root not in level.parents:
            return found
        level = level.parent


def _v2_quota(level: Path) -> float | None:
    try:
        quota, period = (level / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _v1_quota(level: Path) -> float | None:
    try:
        quota = int((level / "cpu.cfs_quota_us").read_text())
        period = int((level / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 else quota / period
