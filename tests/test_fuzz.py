"""Fuzz the upload path with damaged corpus images: truncated, bit-flipped, or both.

Every answer must be a 201 or a 4xx: never a 5xx, and never a dead image worker. The number of
cases is `--fuzz-cases` (`make fuzz` runs many more); the seed is printed so a failure can be
replayed with `--fuzz-seed`.
"""

from __future__ import annotations

import asyncio
import io
import random

import aiohttp
import pytest

from app.keys import IMAGES
from app.main import create_app
from app.settings import Settings
from tests.conftest import CORPUS, AiohttpClient, sign_up
from tests.test_faults import audit, rebuilds

SOURCES = sorted(
    path
    for path in CORPUS.rglob("*")
    if path.suffix.lower() in {".jpg", ".jpeg", ".png", ".heic"} and path.stat().st_size < 4_000_000
)


def damage(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """A truncated or bit-flipped copy, and how it was made."""
    how = rng.choice(["truncate", "flip", "flip-header", "both"])
    damaged = bytearray(data)
    if how in ("flip", "flip-header", "both"):
        # Headers are where parsers decide sizes and offsets: aim half the flips there.
        span = min(len(damaged), 2048) if how == "flip-header" else len(damaged)
        for _ in range(rng.randint(1, 16)):
            damaged[rng.randrange(span)] ^= 1 << rng.randrange(8)
    if how in ("truncate", "both"):
        del damaged[rng.randint(1, len(damaged) - 1) :]
    return bytes(damaged), how


@pytest.mark.timeout(0)  # bounded by --fuzz-cases
async def test_damaged_images_get_201_or_4xx_and_never_kill_a_worker(
    aiohttp_client: AiohttpClient, settings: Settings, request: pytest.FixtureRequest
) -> None:
    cases = request.config.getoption("--fuzz-cases")
    seed = request.config.getoption("--fuzz-seed")
    rng = random.Random(seed)
    client = await aiohttp_client(
        create_app(settings.with_overrides(thumbnail_workers=2, thumbnail_warm_start=True))
    )
    user = await sign_up(client, "fuzzer")
    workers = set(client.app[IMAGES].worker_pids())
    originals = {path: path.read_bytes() for path in SOURCES}
    plan = [(source, *damage(originals[source], rng)) for source in rng.choices(SOURCES, k=cases)]
    created: list[int] = []
    outcomes: dict[int, int] = {}
    slots = asyncio.Semaphore(4)

    async def send(index: int) -> None:
        source, data, how = plan[index]
        form = aiohttp.FormData()
        form.add_field("file", io.BytesIO(data), filename="fuzz", content_type="image/jpeg")
        async with slots:
            response = await client.post("/v1/media", data=form, headers=user.auth)
            body = await response.json()
        case = f"case {index} (seed {seed}): {source.name}, {how}, {len(data)} bytes"
        assert response.status == 201 or 400 <= response.status < 500, (case, body)
        outcomes[response.status] = outcomes.get(response.status, 0) + 1
        if response.status == 201:
            created.append(body["media_id"])

    await asyncio.gather(*(send(i) for i in range(cases)))
    assert set(client.app[IMAGES].worker_pids()) == workers, "an image worker died"
    assert await rebuilds(client) == 0
    print(f"fuzz: {cases} cases, seed {seed}, answers {dict(sorted(outcomes.items()))}")
    await audit(settings, created)
