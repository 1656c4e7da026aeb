"""Image work in a pool of worker processes: validate, clean, render, thumbnail.

Every decode happens in a worker process, never in the service process:
a hostile file can at worst crash a worker (which is replaced), and CPU work
never holds the event loop. Only JPEG, PNG and HEIC (by their bytes) reach a
decoder; libvips itself is locked down to its JPEG and PNG loaders.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.cpus import usable_cpus
from app.errors import ImageRejected, ImageTooLarge, ImageWorkerFailed, Overloaded
from app.metadata import (
    MAX_METADATA_BYTES,
    MalformedImage,
    clean_jpeg,
    clean_png,
    jpeg_metadata_bytes,
    png_metadata_bytes,
)
from app.metrics import Metrics
from app.settings import Settings
from app.sniff import HEIC, JPEG
from app.uploads import Bytes

if TYPE_CHECKING:
    import pyvips

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = 150
# The BlurHash is computed from this small a downscale of the thumbnail: a few microseconds.
BLURHASH_SIZE = 32
BLURHASH_COMPONENTS = (4, 3)  # across, down: the usual choice for photos
THUMBNAIL_QUALITY = 80
RENDITION_QUALITY = 88


@dataclass(frozen=True, slots=True)
class Thumbnail:
    data: bytes  # JPEG, sRGB, at most THUMBNAIL_SIZE on its longest side
    width: int
    height: int
    blurhash: str  # a placeholder for the image, painted while it loads


@dataclass(frozen=True, slots=True)
class Rendition:
    data: bytes  # JPEG, sRGB, at most `size` px on its longest side
    size: int  # the longest side asked for
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Processed:
    width: int  # as displayed, after orientation
    height: int
    original: Bytes  # what original_url serves: the cleaned upload, or a JPEG rendition of a HEIC
    original_type: str
    thumbnail: Thumbnail
    cpu_seconds: float
    seconds: float  # wall time in the worker
    renditions: tuple[Rendition, ...] = ()  # the larger sizes V1's worker serves (600, 1080 px)


# --- in the worker process ----------------------------------------------------------


def _init_worker(scheduling: str) -> None:
    import pyvips

    # Ctrl-C reaches the whole process group; the service stops its workers itself, in order.
    # The worker was started with SIGINT blocked (_Worker): once ignored, it may be unblocked.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    yield_cpu(scheduling)

    # Only the two loaders this service accepts can ever run, and nothing flagged unsafe.
    pyvips.block_untrusted_set(True)
    pyvips.operation_block_set("VipsForeignLoad", True)
    pyvips.operation_block_set("VipsForeignLoadJpeg", False)
    pyvips.operation_block_set("VipsForeignLoadPng", False)
    # One job per process at a time: parallelism comes from the processes.
    pyvips.concurrency_set(1)
    pyvips.cache_set_max(0)


def yield_cpu(scheduling: str) -> None:
    """Image work gives the cores to everything else first (IMAGE_WORKER_SCHEDULING).

    nice: nice 10, a tenth of a busy core's share against the event loop. idle: SCHED_IDLE,
    which runs only on a core nothing else wants (no privilege is needed to lower one's own
    policy; Linux only). The bench measured nice 10 steadier for the feed: a starved worker keeps
    every upload, its body and its place, in the service longer (docs/design.md).
    """
    if scheduling == "idle" and hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    else:
        os.nice(10)


def _warm_up() -> int:
    return os.getpid()


def process_image(
    data: bytes, media_type: str, max_pixels: int, renditions: tuple[int, ...] = ()
) -> Processed:
    """All the CPU work of one upload, with a rendition for each size in `renditions`. Runs in
    a worker process."""
    import pyvips

    started, started_cpu = time.perf_counter(), time.process_time()
    # libvips keeps its error messages in one buffer per process; a damaged file can leave
    # bytes there that pyvips cannot decode, which would then fail the next, healthy job.
    pyvips.vips_lib.vips_error_clear()
    try:
        if media_type == HEIC:
            width, height, original = _render_heic(data, max_pixels)
            original_type = JPEG
        else:
            _check_metadata(data, media_type)
            width, height, orientation = _check_header(data, media_type, max_pixels)
            try:
                original = clean_jpeg(data, orientation) if media_type == JPEG else clean_png(data)
            except MalformedImage as exc:
                raise ImageRejected(str(exc)) from None
            if media_type != JPEG and orientation != 1:
                original = _upright_png(data)
            original_type = media_type
        thumbnail, larger = make_sizes(original, renditions)
    except (pyvips.Error, UnicodeDecodeError):  # pyvips fails to decode some libvips errors
        raise ImageRejected("the image cannot be decoded: it is truncated or corrupt") from None
    return Processed(
        width,
        height,
        original,
        original_type,
        thumbnail,
        time.process_time() - started_cpu,
        time.perf_counter() - started,
        larger,
    )


def process_image_file(
    source: str,
    size: int,
    result: str,
    media_type: str,
    max_pixels: int,
    renditions: tuple[int, ...] = (),
) -> tuple[Processed, int]:
    """process_image on the first `size` bytes of the file `source`. Runs in a worker process.

    The original goes to the start of the file `result`; what comes back through the pipe is
    the rest of the answer and the original's length.
    """
    with open(source, "rb") as file:
        data = file.read(size)
    processed = process_image(data, media_type, max_pixels, renditions)
    _pwrite(Path(result), processed.original)
    return dataclasses.replace(processed, original=b""), len(processed.original)


def _check_metadata(data: bytes, media_type: str) -> None:
    """Refuse bloated metadata before libvips (and libexif) parse any of it."""
    measure = jpeg_metadata_bytes if media_type == JPEG else png_metadata_bytes
    try:
        size = measure(data)
    except MalformedImage as exc:
        raise ImageRejected(str(exc)) from None
    if size > MAX_METADATA_BYTES:
        raise ImageRejected(
            f"the image carries {size:,} bytes of metadata, over the limit of "
            f"{MAX_METADATA_BYTES:,}"
        )


def _check_header(data: bytes, media_type: str, max_pixels: int) -> tuple[int, int, int]:
    """Upright width and height and the EXIF orientation, read from the header alone."""
    import pyvips

    load = pyvips.Image.jpegload_buffer if media_type == JPEG else pyvips.Image.pngload_buffer
    try:
        header = load(data, access="sequential")
    except (pyvips.Error, UnicodeDecodeError):  # pyvips fails to decode some libvips errors
        raise ImageRejected("the image cannot be decoded") from None
    _check_pixels(header.width, header.height, max_pixels)
    orientation = header.get("orientation") if header.get_typeof("orientation") else 1
    if orientation in (5, 6, 7, 8):  # a quarter turn: the displayed image is the other way round
        return header.height, header.width, orientation
    return header.width, header.height, orientation


def _upright_png(data: bytes) -> bytes:
    """The PNG's pixels turned as its eXIf orientation says, with no metadata but the profile.

    Browsers disagree on whether a PNG's eXIf orientation counts, so it is applied: the stored
    original then looks the same everywhere, and its thumbnail follows.
    """
    import pyvips

    image = pyvips.Image.pngload_buffer(data).autorot()
    upright: bytes = image.pngsave_buffer(keep="icc")
    return upright


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"the image is {width}x{height}, over the limit of {max_pixels:,} pixels"
        )


def _render_heic(data: bytes, max_pixels: int) -> tuple[int, int, bytes]:
    """An upright, metadata-free JPEG of a HEIC's primary image (browsers cannot show HEIC)."""
    import pillow_heif
    import pyvips

    try:
        heif = pillow_heif.open_heif(data, convert_hdr_to_8bit=True)  # reads the header only
        width, height = heif.size  # already turned by the file's irot/imir
        _check_pixels(width, height, max_pixels)
        pixels, stride, bands = heif.data, heif.stride, len(heif.mode)
    except ImageRejected:
        raise
    except Exception:
        raise ImageRejected("the HEIC image cannot be decoded") from None
    if stride % bands == 0:
        image = pyvips.Image.new_from_memory(pixels, stride // bands, height, bands, "uchar")
        image = image.crop(0, 0, width, height)
    else:
        image = pyvips.Image.new_from_memory(
            heif.to_pillow().tobytes(), width, height, bands, "uchar"
        )
    image = image.copy(interpretation="srgb")
    icc = heif.info.get("icc_profile")
    if icc and heif.info.get("icc_profile_type") in ("prof", "rICC"):
        image.set_type(pyvips.GValue.blob_type, "icc-profile-data", icc)
    if image.hasalpha():
        image = image.flatten(background=[255, 255, 255])
    rendition: bytes = image.jpegsave_buffer(Q=RENDITION_QUALITY, keep="icc", optimize_coding=True)
    return width, height, rendition


def make_thumbnail(image_bytes: bytes) -> Thumbnail:
    """A JPEG of at most THUMBNAIL_SIZE px on its longest side, sRGB, upright, no metadata,
    and the image's BlurHash.

    libvips' errors propagate: process_image turns them into ImageRejected.
    """
    thumbnail, _ = make_sizes(image_bytes, ())
    return thumbnail


def make_sizes(
    image_bytes: bytes, renditions: tuple[int, ...]
) -> tuple[Thumbnail, tuple[Rendition, ...]]:
    """The thumbnail and a rendition per size in `renditions` (in that order), each a JPEG
    that is upright, sRGB, flattened and without metadata, all from one decode.

    Each decode of a 12-megapixel JPEG reads all of its entropy-coded data, whatever the
    shrink-on-load: the largest size is made from the bytes, and each smaller one from the
    pixels of the size above it. For a 2 MB phone photo that took 118 ms of CPU against 202 ms
    when each size decoded the upload again, and the smaller sizes differ from those by about
    one level in 255 on average.
    """
    made: dict[int, Rendition] = {}
    above: pyvips.Image | None = None

    def next_size(size: int) -> pyvips.Image:
        image = _downscale(image_bytes, size) if above is None else _smaller(above, size)
        return image.copy_memory()  # decoded once: encoded, and read by the next size

    for size in sorted(set(renditions), reverse=True):
        above = next_size(size)
        data: bytes = above.jpegsave_buffer(Q=RENDITION_QUALITY, keep="none", optimize_coding=True)
        made[size] = Rendition(data, size, above.width, above.height)
    thumb = next_size(THUMBNAIL_SIZE)  # read twice: by the JPEG and by the BlurHash
    thumb_data: bytes = thumb.jpegsave_buffer(Q=THUMBNAIL_QUALITY, keep="none")
    thumbnail = Thumbnail(thumb_data, thumb.width, thumb.height, blurhash(thumb))
    return thumbnail, tuple(made[size] for size in renditions)


def _smaller(image: pyvips.Image, size: int) -> pyvips.Image:
    """`image`, already upright and sRGB, at most `size` px on its longest side."""
    return image.thumbnail_image(size, height=size, size="down")


def _downscale(image_bytes: bytes, size: int) -> pyvips.Image:
    """At most `size` px on its longest side (never enlarged), upright, sRGB, alpha flattened
    onto white, with shrink-on-load."""
    import pyvips

    # Only an embedded profile needs a colour transform; one to sRGB from an image that
    # is sRGB already would cost a seventh of the thumbnail's CPU.
    header = pyvips.Image.new_from_buffer(image_bytes, "", access="sequential")
    profile = {"export_profile": "srgb"} if header.get_typeof("icc-profile-data") else {}
    image = pyvips.Image.thumbnail_buffer(
        image_bytes,
        size,
        height=size,
        size="down",  # never upscaled
        option_string="fail_on=truncated",
        **profile,
    )
    if image.hasalpha():
        image = image.flatten(background=[255, 255, 255])
    if image.interpretation != "srgb":
        image = image.colourspace("srgb")
    return image


def blurhash(image: pyvips.Image) -> str:
    """The BlurHash of an sRGB image, from a BLURHASH_SIZE px downscale of it."""
    from blurhash_rs import blurhash_encode
    from PIL import Image

    scale = min(1.0, BLURHASH_SIZE / max(image.width, image.height))
    small = image.resize(scale) if scale < 1.0 else image
    if small.bands == 1:  # greyscale
        small = small.colourspace("srgb")
    small = small.extract_band(0, n=3).cast("uchar")
    pixels = Image.frombytes("RGB", (small.width, small.height), small.write_to_memory())
    across, down = BLURHASH_COMPONENTS
    encoded: str = blurhash_encode(pixels, x_components=across, y_components=down)
    return encoded


# --- in the service process ---------------------------------------------------------

HANDOFF_PREFIX = "monogram-images-"


class Handoff:
    """A private folder in memory (tmpfs) through which bodies reach the workers and come back.

    Sending 2 MB through a worker's pipe costs the service about 5 ms of CPU (pickling, 64 kB
    pipe writes, unpickling the answer). Here each worker has two files, reused from job to
    job: a body is copied in, the result copied out, and the pages stay allocated (a fresh
    file would cost page allocation on write and freeing on unlink, about 1.4 ms per upload).
    `trim` gives those pages back when the uploads stop. Where the folder is unusable (a
    container's small /dev/shm), the body goes through the pipe.
    """

    def __init__(self) -> None:
        ram = Path("/dev/shm")  # noqa: S108 - a private folder is made inside it
        parent = ram if ram.is_dir() and os.access(ram, os.W_OK | os.X_OK) else None
        if parent is not None:
            _remove_abandoned(parent)
        # 0700, a fresh name: no other user reads or plants files in it.
        self.folder = Path(tempfile.mkdtemp(prefix=f"{HANDOFF_PREFIX}{os.getpid()}-", dir=parent))

    def source(self, worker: int) -> Path:
        return self.folder / f"{worker}.in"

    def result(self, worker: int) -> Path:
        return self.folder / f"{worker}.out"

    def trim(self, idle_workers: list[int]) -> None:
        """Give back the pages of the files of workers that have no job."""
        for worker in idle_workers:
            for path in (self.source(worker), self.result(worker)):
                with contextlib.suppress(FileNotFoundError):
                    os.truncate(path, 0)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _pwrite(path: Path, data: Bytes) -> None:
    """`data` at the start of the file (made if missing, 0600); what follows is left as is."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with memoryview(data) as view:
            written = 0
            while written < len(view):
                written += os.pwrite(fd, view[written:], written)
    finally:
        os.close(fd)


def _pread(path: Path, size: int) -> bytearray:
    """The file's first `size` bytes, read into one buffer."""
    data = bytearray(size)
    fd = os.open(path, os.O_RDONLY)
    try:
        with memoryview(data) as view:
            filled = 0
            while filled < size and (read := os.preadv(fd, [view[filled:]], filled)):
                filled += read
    finally:
        os.close(fd)
    if filled != size:
        raise OSError(f"{path} holds {filled} bytes, not {size}")
    return data


def _remove_abandoned(parent: Path) -> None:
    """Hand-off folders of service processes that died without cleaning up (SIGKILL)."""
    for folder in parent.glob(f"{HANDOFF_PREFIX}*-*"):
        pid = folder.name.removeprefix(HANDOFF_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)) and folder.stat().st_uid == os.getuid():
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's
    return True


class WorkerDied(Exception):
    """The worker process ended (killed, or crashed by a decoder) with a job of ours."""


class _Worker:
    """One image worker process, and the pipe through which it takes jobs one at a time.

    The event loop watches the pipe itself: no thread stands between the service and its
    workers (a ProcessPoolExecutor's feeder and manager threads cost about 1.3 ms of CPU per
    upload in wake-ups and pickling), and a worker that dies fails only the job it had.
    """

    def __init__(self, index: int, scheduling: str) -> None:
        self.index = index
        # spawn: a fork of a process with running threads (botocore, argon2) is not safe.
        context = multiprocessing.get_context("spawn")
        self.pipe, theirs = context.Pipe()
        self.process = context.Process(
            target=_serve_jobs,
            args=(theirs, scheduling),
            name=f"image-worker-{index}",
            daemon=True,
        )
        # Started with Ctrl-C blocked, and it stays blocked in the child until _init_worker
        # ignores it: one that lands while the child still imports would kill it half-born.
        # In this process it is only held back, and delivered once the child has started.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self.process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        theirs.close()
        self.answer: asyncio.Future[Any] | None = None  # the job under way, if any
        self.dead = False

    async def run(self, job: tuple[Callable[..., Any], tuple[Any, ...]]) -> Any:
        """The job's answer. Raises what the job raised, or WorkerDied.

        A caller cancelled while the worker runs leaves `answer` to arrive all the same: the
        pipe's next message is that job's, whoever waits for it.
        """
        return await asyncio.shield(self._send(job))

    def _send(self, job: tuple[Callable[..., Any], tuple[Any, ...]]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        self.answer = loop.create_future()
        try:
            self.pipe.send(job)  # a few hundred bytes: the pipe takes it at once
        except OSError:
            self._died()
            raise WorkerDied from None
        loop.add_reader(self.pipe.fileno(), self._on_answer)
        return self.answer

    def _on_answer(self) -> None:
        try:
            ok, value = self.pipe.recv()
        except (EOFError, OSError):
            self._died()
            return
        asyncio.get_running_loop().remove_reader(self.pipe.fileno())
        answer, self.answer = self.answer, None
        if answer is not None and not answer.done():
            if ok:
                answer.set_result(value)
            else:
                answer.set_exception(value)

    def _died(self) -> None:
        self.dead = True
        self.detach()

    def detach(self) -> None:
        """Stop watching the pipe; a job under way fails with WorkerDied."""
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self.pipe.fileno())
        answer, self.answer = self.answer, None
        if answer is not None and not answer.done():
            answer.set_exception(WorkerDied())

    def stop(self) -> None:
        """Ask the worker to finish, and make sure it does (the loop is no longer watching)."""
        with contextlib.suppress(OSError):
            self.pipe.send(None)
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.pipe.close()


def _serve_jobs(pipe: Connection, scheduling: str) -> None:
    """A worker process's life: jobs from the pipe, answers back, until told to stop."""
    _init_worker(scheduling)
    while (job := pipe.recv()) is not None:
        work, args = job
        try:
            answer: tuple[bool, Any] = (True, work(*args))
        except Exception as exc:  # the service raises it, as the executor would have
            answer = (False, exc)
        pipe.send(answer)


# What a job is taken to cost before the first has been timed: a 12 MP JPEG's whole job here.
FIRST_JOB_SECONDS = 0.05
# How fast the job-time estimate follows new jobs (an EWMA's weight): about the last ten jobs.
JOB_SECONDS_WEIGHT = 0.1
# The upload whose image this request's task carries, if it was admitted with `reserved()`.
_arriving: ContextVar[list[bool] | None] = ContextVar("image_reservation", default=None)


class ImagePool:
    """A bounded queue in front of worker processes; a worker that dies is replaced.

    Uploads are admitted by the wait they would have (`reserved`): the images ahead of one,
    whether still arriving or queued or in a worker, divided among the workers, times what a
    job lately takes. One predicted to wait past IMAGE_WAIT_BUDGET is refused before its body
    is read; THUMBNAIL_QUEUE_WAIT only bounds the wait of those admitted when the prediction
    was wrong.
    """

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.workers = settings.thumbnail_workers or usable_cpus()
        self._metrics = metrics
        self._max_pixels = settings.max_image_pixels
        self._slots = asyncio.Semaphore(settings.thumbnail_queue)
        self._queue_wait = settings.thumbnail_queue_wait
        self._wait_budget = settings.image_wait_budget
        self._predicts = settings.admission_control
        self._scheduling = settings.image_worker_scheduling
        self._arriving = 0  # uploads admitted whose image has not reached the queue yet
        self._queued = 0  # images in the queue: waiting for a worker or in one
        self.job_seconds = FIRST_JOB_SECONDS
        self._warm_start = settings.thumbnail_warm_start
        self._handoff = Handoff()
        # Started at the first job that needs them, unless warm_start.
        self._running: dict[int, _Worker] = {}
        self._idle = list(range(self.workers))
        self._available = asyncio.Semaphore(self.workers)

    async def start(self) -> None:
        """Start and warm every worker, so the first uploads do not pay for imports."""
        if self._warm_start:
            await asyncio.gather(*(self._call(_warm_up) for _ in range(self.workers)))

    def worker_pids(self) -> list[int]:
        """The live workers' process ids (for operators and the fault tests)."""
        return [w.process.pid for w in self._running.values() if w.process.pid is not None]

    def trim_handoff(self) -> None:
        """Give back the memory the hand-off files of idle workers hold (see Handoff)."""
        self._handoff.trim(self._idle)

    def stop_watching(self) -> None:
        """Before close, in the event loop: stop reading the workers' pipes."""
        for worker in self._running.values():
            worker.detach()

    def close(self) -> None:
        """Stop every worker; blocking, so run it off the event loop."""
        for worker in self._running.values():
            worker.stop()
        self._handoff.close()

    def predicted_wait(self) -> float:
        """Seconds an image arriving now would wait for a worker."""
        ahead = self._arriving + self._queued
        return max(0, ahead + 1 - self.workers) / self.workers * self.job_seconds

    def check_room(self) -> None:
        """Refuse an upload that would wait past IMAGE_WAIT_BUDGET for a worker (Overloaded)."""
        if not self._predicts:
            return
        wait = self.predicted_wait()
        self._metrics.image_wait_predicted.observe(wait)
        if wait > self._wait_budget:
            raise Overloaded(
                f"the image workers are busy for about {wait * 1000:.0f} ms, past the "
                f"{self._wait_budget * 1000:.0f} ms an upload may wait; try again shortly"
            )

    @contextlib.contextmanager
    def reserved(self) -> Iterator[None]:
        """Admit one upload by its predicted wait (else Overloaded), and count its image as on
        its way until `process` takes it, so that the uploads arriving behind it see it."""
        self.check_room()
        pending = [True]
        self._arriving += 1
        token = _arriving.set(pending)
        try:
            yield
        finally:
            _arriving.reset(token)
            if pending[0]:
                self._arriving -= 1

    def _arrived(self) -> None:
        pending = _arriving.get()
        if pending is not None and pending[0]:
            pending[0] = False
            self._arriving -= 1

    async def process(
        self, data: Bytes, media_type: str, renditions: tuple[int, ...] = ()
    ) -> Processed:
        submitted = time.perf_counter()
        try:
            async with asyncio.timeout(self._queue_wait):
                await self._slots.acquire()
        except TimeoutError:
            raise Overloaded("the image workers are all busy, try again shortly") from None
        self._arrived()
        self._queued += 1
        try:
            processed = await self._run(data, media_type, renditions)
        except WorkerDied:
            raise ImageWorkerFailed(
                "an image worker failed while processing this upload; try again"
            ) from None
        finally:
            self._queued -= 1
            self._slots.release()
        kind = media_type.removeprefix("image/")
        self._metrics.thumbnail_seconds.labels(kind).observe(processed.seconds)
        self._metrics.thumbnail_cpu.labels(kind).inc(processed.cpu_seconds)
        self._metrics.thumbnail_queue_seconds.observe(
            max(0.0, time.perf_counter() - submitted - processed.seconds)
        )
        return processed

    async def _run(self, data: Bytes, media_type: str, renditions: tuple[int, ...]) -> Processed:
        async with self._worker() as worker:
            with self._timing():
                return await self._run_in(worker, data, media_type, renditions)

    async def _run_in(
        self, worker: _Worker, data: Bytes, media_type: str, renditions: tuple[int, ...]
    ) -> Processed:
        source, result = self._handoff.source(worker.index), self._handoff.result(worker.index)
        try:
            _pwrite(source, data)
        except OSError as exc:
            log.warning("image hand-off folder unusable (%s); using the pipe", exc.strerror)
            job = (process_image, (bytes(data), media_type, self._max_pixels, renditions))
            processed: Processed = await worker.run(job)
            return processed
        args = (str(source), len(data), str(result), media_type, self._max_pixels, renditions)
        processed, original_size = await worker.run((process_image_file, args))
        return dataclasses.replace(processed, original=_pread(result, original_size))

    @contextlib.contextmanager
    def _timing(self) -> Iterator[None]:
        """A job's time in a worker, its answer included, feeds the estimate of the next ones'
        (it stretches when other work takes the cores)."""
        started = time.perf_counter()
        yield
        seconds = time.perf_counter() - started
        self.job_seconds += JOB_SECONDS_WEIGHT * (seconds - self.job_seconds)

    async def _call(self, work: Callable[..., Any], *args: Any) -> Any:
        async with self._worker() as worker:
            return await worker.run((work, args))

    @asynccontextmanager
    async def _worker(self) -> AsyncIterator[_Worker]:
        """A worker with no job, for one job. It takes no other until that job's answer is in,
        even if the caller is cancelled first: its files and pipe are that job's until then."""
        await self._available.acquire()
        index = self._idle.pop()
        worker = self._running.get(index)
        if worker is None or worker.dead or not worker.process.is_alive():
            worker = self._renewed(index)  # never started, or killed while idle
        try:
            yield worker
        finally:
            if worker.answer is not None:  # the caller was cancelled: the job runs on
                worker.answer.add_done_callback(lambda answer: self._free(index, answer))
            else:
                self._free(index)

    def _free(self, index: int, abandoned: asyncio.Future[Any] | None = None) -> None:
        if abandoned is not None and not abandoned.cancelled():
            abandoned.exception()  # nobody waits for it: retrieved, so it is not reported
        worker = self._running.get(index)
        if worker is not None and worker.dead:
            # Replaced now, not when next picked: the pool is whole again before the next job,
            # and its pids and rebuild count say so at once.
            self._renewed(index)
        self._idle.append(index)
        self._available.release()

    def _renewed(self, index: int) -> _Worker:
        """A new worker at `index`, in place of the one there if it died."""
        dead = self._running.get(index)
        if dead is not None:
            log.error("image worker %s died; starting a new one", dead.process.pid)
            self._metrics.image_pool_rebuilds.inc()
            dead.stop()
        worker = self._running[index] = _Worker(index, self._scheduling)
        return worker


@asynccontextmanager
async def open_image_pool(settings: Settings, metrics: Metrics) -> AsyncIterator[ImagePool]:
    """Warm image workers for as long as the block runs; stopped, in order, at its end."""
    pool = ImagePool(settings, metrics)
    try:
        await pool.start()
        yield pool
    finally:
        pool.stop_watching()
        await asyncio.get_running_loop().run_in_executor(None, pool.close)
