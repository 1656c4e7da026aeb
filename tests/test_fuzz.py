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
from tests.helpers import CORPUS, PASSWORD, AiohttpClient, audit, rebuilds, sign_up, upload_photo

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


@pytest.mark.slow
@pytest.mark.timeout(0)  # bounded by --fuzz-cases
async def test_damaged_images_get_201_or_4xx_and_never_kill_a_worker(
    aiohttp_client: AiohttpClient, settings: Settings, request: pytest.FixtureRequest
) -> None:
    cases = request.config.getoption("--fuzz-cases")
    seed = request.config.getoption("--fuzz-seed")
    rng = random.Random(seed)
    # Every damaged image must reach a worker: an upload refused for its predicted wait (the
    # heavy PNGs take 0.4 s on a loaded machine) is tests/test_admission.py's subject.
    fuzzing = settings.with_overrides(
        thumbnail_workers=2, thumbnail_warm_start=True, image_wait_budget=60.0
    )
    client = await aiohttp_client(create_app(fuzzing))
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


# Characters that break storage (NUL), hide or reorder text (bidi controls, zero-width and other
# format characters, separators), or look like nothing (C0, C1), among ordinary letters.
HOSTILE = [
    "\x00", "\x07", "\x1b", "\x7f", "\x85", "\x9f", "\t", "\n", "\r",
    "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069",
    "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u2028", "\u2029",
]  # fmt: skip
ORDINARY = [*"abcxyz019_. ", "é", "ß", "李", "ש", "ع", "👩", "💻", "🌍"]
TEXT_FIELDS = [
    ("sign-up", "username"),
    ("sign-up", "password"),
    ("sign-up", "display_name"),
    ("login", "username"),
    ("login", "password"),
    ("post", "caption"),
]


def hostile_text(rng: random.Random) -> str:
    chars = [
        rng.choice(HOSTILE if rng.random() < 0.3 else ORDINARY) for _ in range(rng.randint(1, 24))
    ]
    return "".join(chars)


@pytest.mark.timeout(0)  # bounded by --fuzz-cases
async def test_every_text_field_answers_hostile_characters_with_4xx_or_keeps_them_exactly(
    aiohttp_client: AiohttpClient, settings: Settings, request: pytest.FixtureRequest
) -> None:
    cases = request.config.getoption("--fuzz-cases")
    seed = request.config.getoption("--fuzz-seed")
    rng = random.Random(seed)
    client = await aiohttp_client(create_app(settings))
    author = await sign_up(client, "author")
    outcomes: dict[tuple[str, str, int], int] = {}
    media_id: int | None = None

    for index in range(cases):
        action, field = rng.choice(TEXT_FIELDS)
        value = hostile_text(rng)
        case = f"case {index} (seed {seed}): {action} {field}={value!r}"
        if action == "sign-up":
            body = {"username": f"fz{index}", "password": "fuzzing password", field: value}
            response = await client.post("/v1/users", json=body)
        elif action == "login":
            body = {"username": "author", "password": PASSWORD, field: value}
            response = await client.post("/v1/auth/token", json=body)
        else:
            if media_id is None:
                media_id = (await upload_photo(client, author))["media_id"]
            body = {"media_id": media_id, "caption": value}
            response = await client.post("/v1/posts", json=body, headers=author.auth)
        answer = await response.json()
        assert response.status < 500, (case, answer)
        outcomes[(action, field, response.status)] = (
            outcomes.get((action, field, response.status), 0) + 1
        )
        if response.status == 201 and action == "sign-up" and field == "display_name":
            assert answer["display_name"] == (value.strip() or f"fz{index}"), case
        if response.status == 201 and action == "post":
            media_id = None
            stored = await client.get(f"/v1/posts/{answer['id']}", headers=author.auth)
            assert (await stored.json())["caption"] == value, case
            assert "\x00" not in value, case

    print(f"text fuzz: {cases} cases, seed {seed}, answers {dict(sorted(outcomes.items()))}")
    assert any(status == 422 for (_, _, status) in outcomes), "no hostile value was refused"
