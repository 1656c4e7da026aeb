"""The bench's social graph, loaded with COPY into an empty schema.

Users 1..N/2 are active authors (their posts are from the last weeks, denser towards now),
users N/2+1..N are quiet (their last post is months old). User 1 is the celebrity, followed
by a tenth of everyone. Every other user follows a heavy-tailed (Pareto) number of authors,
picked by a Zipf popularity. The last users are dedicated viewers: one per point of the
feed grid, following exactly F active or F quiet authors.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

DAY = dt.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Size:
    name: str
    users: int
    posts: int
    follow_points: tuple[int, ...]  # the F values of the feed grid

    @property
    def grid(self) -> list[tuple[int, str]]:
        return [(f, kind) for f in self.follow_points for kind in ("active", "quiet")]


SIZES = {
    "tiny": Size("tiny", users=400, posts=8_000, follow_points=(10, 50, 150)),
    "quick": Size("quick", users=10_000, posts=200_000, follow_points=(10, 200, 1000, 5000)),
    "default": Size("default", users=10_000, posts=1_000_000, follow_points=(10, 200, 1000, 5000)),
}


@dataclass(frozen=True, slots=True)
class Graph:
    """What the scenarios need to know about the loaded data."""

    size: Size
    celebrity: int
    viewers: dict[str, int]  # "F200-active" -> user id
    readers: list[int]  # ordinary users, for the traffic mix
    celebrity_followers: list[int]
    token_keys: dict[int, uuid.UUID] = field(default_factory=dict)  # what their tokens name

    def viewer(self, followed: int, kind: str) -> int:
        return self.viewers[f"F{followed}-{kind}"]


async def load(dsn: str, size: Size, seed: int = 1) -> tuple[Graph, dict[str, Any]]:
    """Empty the tables and load `size`; returns the graph and what the load took."""
    rng = random.Random(seed)
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "TRUNCATE users, media, posts, follows, likes, upload_idempotency "
            "RESTART IDENTITY CASCADE"
        )
        graph = _plan(size, rng)
        users = [(f"user{i}", f"User {i}", "bench-no-login") for i in range(1, size.users + 1)]
        for name, user_id in graph.viewers.items():
            users[user_id - 1] = (f"viewer_{name.lower().replace('-', '_')}", name, "x")
        await conn.copy_records_to_table(
            "users", records=users, columns=["username", "display_name", "password_hash"]
        )
        authors, times = _posts(size, rng)
        await conn.copy_records_to_table(
            "media",
            records=(
                (a, f"bench/{n}.jpg", f"bench/{n}_t.jpg", "image/jpeg", 1080, 1350, 2_000_000, t)
                for n, (a, t) in enumerate(zip(authors, times, strict=True), start=1)
            ),
            columns=[
                "user_id", "original_key", "thumbnail_key", "content_type",
                "width", "height", "bytes", "created_at",
            ],
        )  # fmt: skip
        await conn.copy_records_to_table(
            "posts",
            records=(
                (a, n, "", t) for n, (a, t) in enumerate(zip(authors, times, strict=True), start=1)
            ),
            columns=[
                "author_id",
                "media_id",
                "caption",
                "created_at",
            ],
        )
        follows = _follows(size, graph, rng)
        await conn.copy_records_to_table(
            "follows", records=follows, columns=["follower_id", "followee_id"]
        )
        await conn.execute("VACUUM ANALYZE")
        keys = await conn.fetch("SELECT user_id, token_key FROM users")
        graph = dataclasses.replace(graph, token_keys={r["user_id"]: r["token_key"] for r in keys})
    finally:
        await conn.close()
    took = time.perf_counter() - started
    facts = {
        "users": size.users,
        "posts": size.posts,
        "follows": len(follows),
        "celebrity_followers": len(graph.celebrity_followers),
        "load_seconds": round(took, 1),
    }
    log.info("bench data loaded", extra=facts)
    return graph, facts


def _plan(size: Size, rng: random.Random) -> Graph:
    viewers = {}
    next_id = size.users
    for followed, kind in reversed(size.grid):
        viewers[f"F{followed}-{kind}"] = next_id
        next_id -= 1
    readers = list(range(2, next_id + 1))
    followers = sorted(rng.sample(readers, k=max(1, size.users // 10)))
    return Graph(size, 1, viewers, readers, followers)


def _posts(size: Size, rng: random.Random) -> tuple[list[int], list[dt.datetime]]:
    """Authors and times of every post, oldest first (so ids grow with time, as in life)."""
    half = size.users // 2
    now = dt.datetime.now(dt.UTC)
    quiet_posts = size.posts // 10
    posts: list[tuple[dt.datetime, int]] = []
    for _ in range(quiet_posts):  # between four months and a year ago
        posts.append((now - DAY * rng.uniform(120, 365), rng.randint(half + 1, size.users)))
    for _ in range(size.posts - quiet_posts):  # the last weeks, denser towards now
        author = min(half, int(rng.paretovariate(1.2)))  # a few authors post a lot
        author = author if rng.random() < 0.3 else rng.randint(1, half)
        posts.append((now - DAY * min(rng.expovariate(1 / 5), 60), author))
    for n in range(1, half + 1):  # every active author has a post from the last three days
        posts[quiet_posts + n - 1] = (now - DAY * rng.uniform(0, 3), n)
    posts.sort()
    return [a for _, a in posts], [t for t, _ in posts]


def _follows(size: Size, graph: Graph, rng: random.Random) -> list[tuple[int, int]]:
    half = size.users // 2
    rows: set[tuple[int, int]] = set()
    for reader in graph.readers:
        count = min(int(rng.paretovariate(1.1) * 8), 2000, size.users - 2)
        for _ in range(count):
            followee = min(size.users, int(rng.paretovariate(0.8)))  # Zipf-like popularity
            if followee != reader:
                rows.add((reader, followee))
    for follower in graph.celebrity_followers:
        rows.add((follower, graph.celebrity))
    for name, viewer in graph.viewers.items():
        followed, kind = int(name[1:].split("-")[0]), name.split("-")[1]
        first = 2 if kind == "active" else half + 1
        rows.update((viewer, first + i) for i in range(followed) if first + i != viewer)
    return sorted(rows)
