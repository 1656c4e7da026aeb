"""Demo data for a fresh stack, made through the API as a person would make it (`make demo`).

Five people, a dozen real photos from the repository's image corpus (tests/images, see its
README for where they come from), everyone following almost everyone, and some likes. Run it
again and nothing is added twice: accounts that exist are logged into, posts already there (by
caption) are skipped, and follows and likes are idempotent.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

# Printed for anyone to use: demo accounts guard nothing.
PASSWORD = "monogram-demo"  # noqa: S105
PHOTOS = Path(__file__).resolve().parent.parent / "tests" / "images"
# Each upload waits for its thumbnail in the request (V0); a 12 MP HEIC takes a second or so.
TIMEOUT = aiohttp.ClientTimeout(total=120)


@dataclass(frozen=True, slots=True)
class Person:
    username: str
    display_name: str


@dataclass(frozen=True, slots=True)
class Photo:
    author: str
    file: str
    caption: str
    alt_text: str


PEOPLE = [
    Person("maya", "Maya Lindqvist"),
    Person("tomas", "Tomás Ferreira"),
    Person("aiko", "Aiko Tanaka"),
    Person("noor", "Noor Haddad"),
    Person("sam", "Sam Okafor"),
]
# Oldest first: the last one is the newest post in everyone's feed.
POSTS = [
    Photo(
        "maya",
        "Example1.heic",
        "Spring, boxed.",
        "A tissue box printed with pink blossom, a tissue spilling out, by a window",
    ),
    Photo(
        "tomas",
        "cd1.1.jpg",
        "Old scans, still lovely in grey.",
        "A greyscale close-up of an engraved pattern: a braid, beads and a triangle",
    ),
    Photo(
        "aiko",
        "sample.png",
        "Sixteen bits per channel, for no good reason.",
        "A painting of a white-haired man in blue overalls walking through a wheat field",
    ),
    Photo(
        "noor",
        "rotation/6.jpg",
        "Taken sideways; it shows the right way up.",
        "A waterfall between green cliffs above a pool, the word top above it",
    ),
    Photo(
        "sam",
        "oneplus-heic.heic",
        "Testing the new phone at the beach.",
        "A boardwalk along dunes by the sea under a clear blue sky",
    ),
    Photo(
        "maya",
        "ultra-hdr.jpg",
        "HDR on the big screen.",
        "Bright lights seen through a glass ceiling at night",
    ),
    Photo(
        "tomas",
        "apple-heic-gainmap.heic",
        "Old town, quiet morning.",
        "A cobbled street between tall coloured houses under a cloudy sky",
    ),
    Photo(
        "aiko",
        "sample.jpg",
        "The wheat field again, smaller.",
        "A painting of a white-haired man in blue overalls walking through a wheat field",
    ),
    Photo(
        "noor",
        "heic-orientation-6.heic",
        "Breakfast is served.",
        "A long table of fruit, pastries and bowls by tall windows",
    ),
    Photo(
        "sam",
        "sample-xyb.jpg",
        "Strange colour profile, same colours.",
        "A painting of a white-haired man in blue overalls walking through a wheat field",
    ),
    Photo(
        "maya",
        "cd3.1.jpg",
        "More from the archive.",
        "A greyscale close-up of an engraved cup with leaves",
    ),
    Photo(
        "aiko",
        "rgba.png",
        "Transparent once; on white now.",
        "A grey felt dome on a white base",
    ),
]
# Who does not follow whom: everyone else follows everyone.
NOT_FOLLOWING = {("sam", "aiko"), ("noor", "tomas")}
# Each person likes the posts whose index in POSTS is one of these, when not their own.
LIKES = {"maya": {1, 4, 6}, "tomas": {0, 5, 11}, "aiko": {3, 9}, "noor": {0, 2, 5, 10}, "sam": {6}}


class DemoError(RuntimeError):
    pass


async def make_demo(base_url: str, photos: Path = PHOTOS) -> dict[str, Any]:
    """Creates what is missing; returns what the stack now holds for the demo."""
    missing = [p.file for p in POSTS if not (photos / p.file).is_file()]
    if missing:
        raise DemoError(f"the demo photos are missing from {photos}: {', '.join(missing)}")
    async with aiohttp.ClientSession(base_url, timeout=TIMEOUT) as session:
        demo = Demo(session)
        users = {person.username: await demo.account(person) for person in PEOPLE}
        post_ids: list[int] = []
        created = 0
        for index, photo in enumerate(POSTS):
            post_id, new = await demo.post(users[photo.author], photo, photos, index)
            post_ids.append(post_id)
            created += new
        for follower in users.values():
            for followee in users.values():
                pair = (follower["username"], followee["username"])
                if follower is not followee and pair not in NOT_FOLLOWING:
                    await demo.call("PUT", f"/v1/following/{followee['id']}", follower)
        for username, liked in LIKES.items():
            for index in sorted(liked):
                if POSTS[index].author != username:
                    await demo.call("PUT", f"/v1/posts/{post_ids[index]}/like", users[username])
        feed = await demo.call("GET", "/v1/feed?limit=50", users[PEOPLE[0].username])
    return {
        "users": list(users),
        "password": PASSWORD,
        "posts": len(post_ids),
        "posts_created": created,
        "feed_of_first_user": len(feed["items"]),
    }


class Demo:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def call(
        self, method: str, path: str, user: dict[str, Any] | None = None, **kwargs: Any
    ) -> Any:
        headers = {"Authorization": f"Bearer {user['token']}"} if user else {}
        headers.update(kwargs.pop("headers", {}))
        async with self._session.request(method, path, headers=headers, **kwargs) as response:
            if response.status == 204:
                return None
            body = await response.json(content_type=None)
            if response.status >= 400:
                error = body.get("error", {}) if isinstance(body, dict) else {}
                raise ApiRefused(response.status, error.get("code"), error.get("message"))
            return body

    async def account(self, person: Person) -> dict[str, Any]:
        credentials = {"username": person.username, "password": PASSWORD}
        try:
            await self.call(
                "POST", "/v1/users", json={**credentials, "display_name": person.display_name}
            )
        except ApiRefused as refused:
            if refused.status != 409:
                raise
        try:
            token = await self.call("POST", "/v1/auth/token", json=credentials)
        except ApiRefused as refused:
            if refused.status == 401:
                raise DemoError(
                    f"a user named {person.username} exists with another password: "
                    "the demo needs a stack it made itself (or a fresh one)"
                ) from None
            raise
        user = {"username": person.username, "token": token["access_token"]}
        user["id"] = (await self.call("GET", "/v1/me", user))["id"]
        return user

    async def post(
        self, user: dict[str, Any], photo: Photo, photos: Path, index: int
    ) -> tuple[int, bool]:
        """The photo's post id, and whether it was made now (False: it was there already)."""
        existing = await self.call("GET", f"/v1/users/{user['username']}/posts?limit=100", user)
        for post in existing["items"]:
            if post["caption"] == photo.caption:
                return post["id"], False
        data = aiohttp.FormData()
        data.add_field("file", (photos / photo.file).read_bytes(), filename=Path(photo.file).name)
        media = await self.call(
            "POST",
            "/v1/media",
            user,
            data=data,
            # A run cut off after this upload reuses it instead of leaving one no post uses.
            headers={"Idempotency-Key": f"monogram-demo-{index}"},
        )
        post = await self.call(
            "POST",
            "/v1/posts",
            user,
            json={
                "media_id": media["media_id"],
                "caption": photo.caption,
                "alt_text": photo.alt_text,
            },
        )
        return post["id"], True


class ApiRefused(DemoError):
    def __init__(self, status: int, code: str | None, message: str | None) -> None:
        super().__init__(f"the API answered {status} {code}: {message}")
        self.status = status


def run(base_url: str) -> int:
    try:
        made = asyncio.run(make_demo(base_url))
    except aiohttp.ClientConnectionError:
        print(f"cannot reach Monogram at {base_url}: start it with `make run` first")
        return 1
    except DemoError as error:
        print(f"demo: {error}")
        return 1
    print(
        f"Demo ready at {base_url}: {made['posts']} posts ({made['posts_created']} new), "
        f"{len(made['users'])} people who follow one another."
    )
    print(f"Open {base_url} and log in as any of them, password {made['password']}:")
    print("  " + ", ".join(made["users"]))
    print(f"{made['users'][0]}'s feed holds {made['feed_of_first_user']} posts.")
    return 0
