"""The web client in a real browser (Debian's Chromium, driven by Playwright)."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
from pathlib import Path

import asyncpg
import pytest

from app.main import create_app
from app.settings import Settings
from app.storage import ensure_bucket
from app.worker import serve_jobs
from tests.helpers import CORPUS, PASSWORD, ROOT, AiohttpClient, insert_posts, publish
from tests.helpers import sign_up as api_sign_up

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="no Chromium: install Debian's chromium package (.ci/run does) to run browser tests",
    ),
]
playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
expect = playwright_api.expect

ARTIFACTS = ROOT / ".artifacts"
# This machine's network is closed: keep Chromium from reaching for Google's services.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 390, "height": 844}


async def sign_up(page: object, base: str, username: str) -> None:
    await page.goto(base)  # type: ignore[attr-defined]
    await page.get_by_label("Username").first.fill(username)  # type: ignore[attr-defined]
    await page.get_by_label("Password").fill(PASSWORD)  # type: ignore[attr-defined]
    await page.get_by_role("button", name="Sign up").click()  # type: ignore[attr-defined]
    await expect(page.locator("#whoami")).to_have_text(f"@{username}")  # type: ignore[attr-defined]


async def log_in(page: object, base: str, username: str) -> None:
    await page.goto(base)  # type: ignore[attr-defined]
    await page.get_by_label("Username").first.fill(username)  # type: ignore[attr-defined]
    await page.get_by_label("Password").fill(PASSWORD)  # type: ignore[attr-defined]
    await page.get_by_role("button", name="Log in").click()  # type: ignore[attr-defined]
    await expect(page.locator("#whoami")).to_have_text(f"@{username}")  # type: ignore[attr-defined]


async def test_two_people_share_follow_see_and_like_a_photo(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings.with_overrides(thumbnail_warm_start=True)))
    base = str(client.make_url("/"))
    # The page sends the photo straight to S3: the bucket's CORS rule names the page's origin.
    await ensure_bucket(settings.with_overrides(upload_origins=base.rstrip("/")))
    worker_stop = asyncio.Event()
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # Alice shares a real photo from the corpus.
            alice = await (await browser.new_context()).new_page()
            await sign_up(alice, base, "alice")
            await alice.set_input_files("input[type=file]", str(CORPUS / "logo.svg"))
            await alice.get_by_role("button", name="Upload").click()
            await expect(alice.locator("#status")).to_contain_text("not a JPEG, PNG or HEIC")
            big = ARTIFACTS / "big.jpg"
            ARTIFACTS.mkdir(exist_ok=True)
            big.write_bytes(b"\xff\xd8\xff" + bytes(11 * 1024 * 1024))
            await alice.set_input_files("input[type=file]", str(big))
            await alice.get_by_role("button", name="Upload").click()
            await expect(alice.locator("#status")).to_contain_text("larger than 10 MB")
            big.unlink()
            await alice.set_input_files("input[type=file]", str(CORPUS / "rotation" / "6.jpg"))
            await alice.get_by_role("button", name="Upload").click()
            # Sent to S3 with a progress bar, then processing until a media worker is done: no
            # worker runs yet, so the page waits, and says so.
            await expect(alice.locator("#status")).to_contain_text("Processing your photo")
            progress = alice.locator("#upload-progress")
            await expect(progress).to_be_visible()
            await expect(progress).to_have_attribute("value", "100")
            worker = asyncio.create_task(
                serve_jobs(settings.with_overrides(thumbnail_workers=1), worker_stop)
            )
            await expect(alice.locator("#preview")).to_be_visible(timeout=30_000)
            await expect(progress).to_be_hidden()
            await alice.get_by_label("Caption").fill("A waterfall, the right way up")
            await alice.get_by_label("Alt text").fill("Water falling over mossy rocks")
            await alice.get_by_role("button", name="Post").click()
            await expect(alice.locator("#status")).to_contain_text("Posted")
            # Every error the API can give reads as words, from the page's own mapping.
            for status, code, retry, words in [
                (429, "rate_limited", "7", "Try again in 7 seconds"),
                (503, "overloaded", "1", "busy right now"),
                (413, "payload_too_large", None, "larger than 10 MB"),
                (415, "unsupported_media_type", None, "not a JPEG, PNG or HEIC"),
            ]:
                text = await alice.evaluate(
                    "([s, c, r]) => explain(new ApiError(s, c, 'raw', r))", [status, code, retry]
                )
                assert words in text, (code, text)
            assert settings.database_url is not None
            conn = await asyncpg.connect(settings.database_url)
            alice_id = await conn.fetchval("SELECT user_id FROM users WHERE username = 'alice'")
            now = await conn.fetchval("SELECT min(created_at) FROM posts")
            await conn.close()

            # Bob, on a phone, follows her and sees it in his feed.
            bob = await (await browser.new_context(viewport=PHONE)).new_page()
            await sign_up(bob, base, "bob")
            await bob.locator("#find-form").get_by_label("Username").fill("alice")
            await bob.get_by_role("button", name="Find").click()
            await expect(bob.locator("#profile-name")).to_contain_text("@alice")
            await bob.get_by_role("button", name="Follow").click()
            post = bob.locator("li.post").first
            await expect(post).to_contain_text("@alice")
            await expect(post).to_contain_text("A waterfall, the right way up")

            like = post.get_by_role("button", name="Like")
            await like.click()
            await expect(like).to_have_text("♥ Liked · 1")
            await expect(like).to_have_attribute("aria-pressed", "true")

            # By keyboard: unlike and like again.
            await like.focus()
            await bob.keyboard.press("Enter")
            await expect(like).to_have_text("♡ Like · 0")
            await bob.keyboard.press("Enter")
            await expect(like).to_have_text("♥ Liked · 1")

            # A reload keeps the session and the like.
            await bob.reload()
            post = bob.locator("li.post").first
            await expect(post.get_by_role("button", name="Liked")).to_have_text("♥ Liked · 1")

            # The image came from S3 with its size known beforehand, and the page fits a phone.
            image = post.locator("img")
            await expect(image).to_have_attribute("alt", "Water falling over mossy rocks")
            await expect(image).to_have_attribute("width", "231")
            await expect(image).to_have_attribute("height", "308")
            assert await image.evaluate("img => img.complete && img.naturalWidth > 0")
            assert await bob.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

            # Scrolling loads the rest of the feed, page by page, through the cursor.
            older = [now - dt.timedelta(minutes=m) for m in range(1, 25)]
            assert settings.database_url is not None
            await insert_posts(settings.database_url, alice_id, older)
            await bob.reload()
            end = bob.get_by_text("That is everything from the people you follow.")
            for _ in range(20):
                if await end.is_visible():
                    break
                await bob.mouse.wheel(0, 4000)
                await bob.wait_for_timeout(150)
            await expect(end).to_be_visible()
            await expect(bob.locator("li.post")).to_have_count(25)
            await bob.evaluate("window.scrollTo(0, 0)")

            ARTIFACTS.mkdir(exist_ok=True)
            await bob.screenshot(path=str(ARTIFACTS / "feed.png"), full_page=True)
        finally:
            worker_stop.set()
            await browser.close()
    await asyncio.wait_for(worker, 30)


async def test_a_follower_sees_the_truth_and_a_deleted_post_leaves_their_feed(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings))
    ada, bob = await api_sign_up(client, "ada"), await api_sign_up(client, "bob")
    first = await publish(client, ada, "first", alt_text="A red kite over a field")
    second = await publish(client, ada, "second", alt_text="A harbour at dusk")
    assert (await client.put(f"/v1/following/{ada.id}", headers=bob.auth)).status == 204
    base = str(client.make_url("/"))
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            viewer = await (await browser.new_context()).new_page()
            await log_in(viewer, base, "bob")
            await expect(viewer.locator("li.post")).to_have_count(2)
            await viewer.locator("#find-form").get_by_label("Username").fill("ada")
            await viewer.get_by_role("button", name="Find").click()
            follow = viewer.locator("#follow")
            await expect(follow).to_have_text("Following · Unfollow")
            await expect(follow).to_have_attribute("aria-pressed", "true")
            grid = viewer.locator("#profile-grid li")
            await expect(grid).to_have_count(2)
            await expect(grid.first.locator("img")).to_have_attribute("alt", "A harbour at dusk")
            await expect(grid.locator("button", has_text="Delete")).to_have_count(0)

            # An unfollow the service refuses is shown at once, then rolled back.
            async def refuse(route: object) -> None:
                await route.fulfill(  # type: ignore[attr-defined]
                    status=503,
                    content_type="application/json",
                    body='{"error": {"code": "overloaded", "message": "busy"}}',
                )

            await viewer.route("**/v1/following/*", refuse)
            await follow.click()
            await expect(viewer.locator("#status")).to_contain_text("busy right now")
            await expect(follow).to_have_text("Following · Unfollow")
            await expect(viewer.locator("#profile-counts")).to_contain_text("1 followers")
            await viewer.unroute("**/v1/following/*")

            # The placeholder: a BlurHash painted behind an image that has not loaded.
            painted = await viewer.evaluate(
                """async (hash) => {
                    const image = document.createElement("img");
                    await paintPlaceholder(image, hash, 300, 200);
                    for (let i = 0; i < 50 && !image.style.backgroundImage; i++)
                        await new Promise((done) => setTimeout(done, 20));
                    return image.style.backgroundImage;
                }""",
                first["blurhash"],
            )
            assert painted.startswith('url("blob:'), painted

            # Ada deletes her newer post from her own grid.
            author = await (await browser.new_context()).new_page()
            await log_in(author, base, "ada")
            await author.get_by_role("button", name="My profile").click()
            own = author.locator("#profile-grid li")
            await expect(own).to_have_count(2)
            author.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
            await own.first.get_by_role("button", name="Delete").click()
            await expect(author.locator("#status")).to_contain_text("Deleted")
            await expect(own).to_have_count(1)
            await expect(author.locator("#profile-counts")).to_contain_text("1 posts")

            # Gone from Bob's feed, and from her grid as he sees it.
            await viewer.reload()
            feed = viewer.locator("li.post")
            await expect(feed).to_have_count(1)
            await expect(feed.first).to_have_attribute("data-post-id", str(first["id"]))
            assert await viewer.locator(f'li.post[data-post-id="{second["id"]}"]').count() == 0
        finally:
            await browser.close()
