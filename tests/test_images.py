"""The image pool's hand-off (app/images.py): bodies reach the workers and come back through
files in a private tmpfs folder, one lane per worker, reused from job to job."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from app.errors import ImageRejected
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


async def test_a_lane_is_reused_only_once_its_worker_is_done_with_it(
    one_worker: Settings,
) -> None:
    """A request cancelled while its worker runs leaves the lane busy until the worker ends:
    another job's result written to that lane meanwhile would be overwritten by the
    abandoned one's."""
    slow = (CORPUS / "apple-heic-gainmap.heic").read_bytes()  # about 0.8 s in a worker
    async with open_image_pool(one_worker, Metrics(None, "test")) as images:
        handoff = images._handoff
        abandoned = asyncio.create_task(images.process(slow, "image/heic"))
        await asyncio.sleep(0.3)
        assert not abandoned.done()
        abandoned.cancel()
        with pytest.raises(asyncio.CancelledError):
            await abandoned
        assert handoff._free == [], "the lane was given back while its worker still ran"
        after = await images.process(SMALL, "image/jpeg")
        assert (after.width, after.height) == (290, 442)
        assert len(handoff._free) == 1


async def test_a_refused_image_frees_its_lane(one_worker: Settings) -> None:
    async with open_image_pool(one_worker, Metrics(None, "test")) as images:
        for _ in range(3):  # one lane: a lane kept after a failure would hang the second
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


async def test_trimming_gives_back_the_pages_of_idle_lanes(one_worker: Settings) -> None:
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
        handoff = Handoff(1)
        handoff.close()
        assert not dead.exists(), "the folder of a process that died was left"
        assert live.exists(), "a running process's folder was removed"
    finally:
        shutil.rmtree(dead, ignore_errors=True)
        shutil.rmtree(live, ignore_errors=True)
