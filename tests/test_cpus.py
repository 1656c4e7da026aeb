"""The image pool's default size follows a container's CPU limit, not the host's core count."""

from __future__ import annotations

import os
from pathlib import Path

from app.cpus import cgroup_cpu_quota, usable_cpus


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def cgroup_v2(tmp_path: Path, own: str, limits: dict[str, str]) -> tuple[Path, Path]:
    mount = tmp_path / "cgroup"
    write(mount / "cgroup.controllers", "cpu memory pids\n")
    for level, cpu_max in limits.items():
        write(mount / level.lstrip("/") / "cpu.max", cpu_max)
    membership = tmp_path / "self-cgroup"
    write(membership, f"0::{own}\n")
    return mount, membership


def test_a_docker_cpus_limit_caps_the_workers(tmp_path: Path) -> None:
    # `docker run --cpus 1.5`: the container's cgroup (its root, in its own namespace) says so.
    mount, membership = cgroup_v2(tmp_path, "/", {"/": "150000 100000\n"})
    assert cgroup_cpu_quota(mount, membership) == 1.5
    assert usable_cpus(mount, membership) == min(2, len(os.sched_getaffinity(0)))


def test_the_tightest_quota_on_the_way_up_wins(tmp_path: Path) -> None:
    mount, membership = cgroup_v2(
        tmp_path,
        "/system.slice/monogram.service",
        {"/system.slice": "50000 100000", "/system.slice/monogram.service": "max 100000"},
    )
    assert cgroup_cpu_quota(mount, membership) == 0.5
    assert usable_cpus(mount, membership) == 1  # never zero workers


def test_no_quota_leaves_the_cpus_the_scheduler_allows(tmp_path: Path) -> None:
    mount, membership = cgroup_v2(tmp_path, "/user.slice", {"/user.slice": "max 100000"})
    assert cgroup_cpu_quota(mount, membership) is None
    assert usable_cpus(mount, membership) == len(os.sched_getaffinity(0))


def test_cgroup_v1_quotas_count_too(tmp_path: Path) -> None:
    mount = tmp_path / "cgroup"
    write(mount / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us", "300000\n")
    write(mount / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us", "100000\n")
    write(mount / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")
    write(mount / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    membership = tmp_path / "self-cgroup"
    write(membership, "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n")
    assert cgroup_cpu_quota(mount, membership) == 3.0


def test_without_cgroups_the_count_is_the_schedulers(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(tmp_path, tmp_path / "absent") is None
    assert 1 <= usable_cpus() <= (os.cpu_count() or 1)
