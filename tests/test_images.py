"""The image pool (app/images.py): one pipe per worker, watched by the event loop, and bodies
that reach the workers and come back through files in a private tmpfs folder, one pair per
worker, reused from job to job."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from app.errors import ImageRejected, ImageWorkerFailed
from app.images import HANDOFF_PREFIX, Handoff, open_image_pool
from app.metrics import Metrics
from app.settings import Settings
from tests.helpers import CORPUS

SMALL = (CORPUS / "sample.jpg").read_bytes()  # 290 x 442
RAM = Path("/dev/shm")  # noqa: S108 - where Handoff makes its private folder


@pytest.fixture
def one_worker(settings: Settings) -> Settings:
    return settings.with_overrides(thumbnail_workers=1, thumbnail_warm_start=True)


async def test_the_folder_is_private_and_gone_when_the_pool_closes(one_worker: Settings) -> None:
    async with open_image_pool(one_worker, Metrics(None, "test")) as images:
        folder = images._handoff.folder
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        if RAM.is_dir():  # noqa: ASYNC240 - one stat
            assert folder.parent == RAM, "not in memory"
        processed = await images.process(SMALL, "image/jpeg")
        assert (processed.width, processed.height) == (290, 442)
        assert bytes(processed.original[:3]) == b"\xff\xd8\xff"
    assert not folder.exists()


async def test_a_worker_takes_no_other_job_until_its_abandoned_one_is_done(
    one_worker: Settings,
) -> None:
    """A request cancelled while its worker runs leaves the worker and its files busy until
    the job ends: another job's answer, read from the same pipe and files meanwhile, would be
    the abandoned one's."""
    slow = (CORPUS / "apple-heic-gainmap.heic").read_bytes()  # about 0.8 s in a worker
    async with open_image_pool(one_worker, Metrics(None, "test")) as images:
        abandoned = asyncio.create_task(images.process(slow, "image/heic"))
        await asyncio.sleep(0.3)
        assert not abandoned.done()
        abandoned.cancel()
        with pytest.raises(asyncio.CancelledError):
            await abandoned
        assert images._idle == [], "the worker was given another job while it still ran"
        after = await images.process(SMALL, "image/jpeg")
        assert (after.width, after.height) == (290, 442)
        assert images._idle == [0]


async def test_a_worker_killed_mid_job_fails_that_job_only_and_is_replaced(
    settings: Settings,
) -> None:
    two = settings.with_overrides(thumbnail_workers=2, thumbnail_warm_start=True)
    slow = (CORPUS / "apple-heic-gainmap.heic").read_bytes()
    async with open_image_pool(two, Metrics(None, "test")) as images:
        before = set(images.worker_pids())
        doomed = asyncio.create_task(images.process(slow, "image/heic"))
        await asyncio.sleep(0.3)
        busy = images._running[next(i for i in range(2) if i not in images._idle)]
        os.kill(busy.process.pid, signal.SIGKILL)
        with pytest.raises(ImageWorkerFailed):
            await doomed
        results = await asyncio.gather(*(images.process(SMALL, "image/jpeg") for _ in range(4)))
        assert [r.width for r in results] == [290] * 4
        after = set(images.worker_pids())
        assert len(after) == 2
        assert busy.process.pid not in after
        assert len(before & after) == 1, "the worker that was not killed should have stayed"


async def test_a_worker_killed_while_idle_is_replaced_before_its_next_job(
    one_worker: Settings,
) -> None:
    async with open_image_pool(one_worker, Metrics(None, "test")) as images:
        (pid,) = images.worker_pids()
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.2)
        assert (await images.process(SMALL, "image/jpeg")).width == 290
        assert images.worker_pids() != [pid]


async def test_a_refused_image_frees_its_worker(one_worker: Settings) -> None:
    async with open_image_pool(one_worker, Metrics(None, "test")) as images:
        for _ in range(3):  # one worker: a worker kept busy after a failure would hang the second
            with pytest.raises(ImageRejected):
                await asyncio.wait_for(
                    images.process((CORPUS / "truncated.jpg").read_bytes(), "image/jpeg"), 30
                )
        assert (await images.process(SMALL, "image/jpeg")).width == 290


async def test_without_a_usable_folder_the_body_goes_through_the_pipe(
    one_worker: Settings,
) -> None:
    async with open_image_pool(one_worker, Metrics(None, "test")) as images:
        shutil.rmtree(images._handoff.folder)
        processed = await images.process(SMALL, "image/jpeg")
        assert (processed.width, processed.height) == (290, 442)


async def test_trimming_gives_back_the_pages_of_idle_workers_files(
    one_worker: Settings,
) -> None:
    async with open_image_pool(one_worker, Metrics(None, "test")) as images:
        await images.process(SMALL, "image/jpeg")
        files = list(images._handoff.folder.iterdir())
        assert sum(f.stat().st_size for f in files) >= len(SMALL)
        images.trim_handoff()
        assert [f.stat().st_size for f in files] == [0] * len(files)
        assert (await images.process(SMALL, "image/jpeg")).width == 290


def test_a_dead_process_folder_is_removed_and_a_live_one_kept() -> None:
    if not RAM.is_dir():
        pytest.skip("no /dev/shm: the hand-off folder is in the temporary folder")
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                           capture_output=True, text=True)  # fmt: skip
    dead = RAM / f"{HANDOFF_PREFIX}{ended.stdout.strip()}-test"
    live = RAM / f"{HANDOFF_PREFIX}{os.getpid()}-test"
    for folder in (dead, live):
        folder.mkdir()
        (folder / "0.in").write_bytes(b"left behind")
    try:
        Handoff().close()
        assert not dead.exists(), "the folder of a process that died was left"
        assert live.exists(), "a running process's folder was removed"
    finally:
        shutil.rmtree(dead, ignore_errors=True)
        shutil.rmtree(live, ignore_errors=True)
