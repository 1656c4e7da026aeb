"""images: a far viewer opens feed pages and loads their images as a browser does, three ways.

The seed's third V0 bottleneck is that every image comes from the S3 origin: a user far from
it pays 150-200 ms per image, 750-1,000 ms for a page of 5. V1 puts an edge cache near the
user. Here the geography is simulated (bench/delay.py): the API and the S3 origin are a
150 ms round trip away, the edge cache (Varnish, docker/varnish/default.vcl) 5 ms, and the
edge is itself 150 ms from the origin, as a CDN's edge is.

Each page view: the feed's JSON (5 posts) from the far API, then the 5 thumbnails the web
client shows, over at most 6 keep-alive HTTP/1.1 connections per host, as a browser opens
them. Each round is a new browser (new connections); within a round the pages follow each
other and reuse them. The three ways:
- origin: every image from the origin, no cache;
- edge_cold: through the edge after every image was purged from it: each one is a miss;
- edge_warm: through the edge after the cold pass has filled it.
"""

from __future__ import annotations

import asyncio
import io
import secrets
import time
from contextlib import AsyncExitStack, ExitStack
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from app.devstack.edge import EdgeCache, varnishd_binary
from bench import stack
from bench.delay import delayed
from bench.histogram import Histogram
from bench.scenarios import Context, deploy

FAR_RTT = 0.150  # the seed's "150-200 ms" to us-east-1, at its low end
EDGE_RTT = 0.005  # the seed's "5-20 ms" from an edge location, at its low end
PAGE_SIZE = 5  # the seed's "feed with 5 images"
CONNECTIONS_PER_HOST = 6  # what browsers open per host over HTTP/1.1
AUTHORS = 3
UPLOADS_AT_ONCE = 4


async def images(ctx: Context, pages: int, rounds: int) -> dict[str, Any]:
    """Every way's page and image times, origin GETs per page, hit ratio and origin CPU."""
    bucket = ctx.settings.s3_bucket
    assert ctx.settings.s3_endpoint_url is not None
    origin = urlsplit(ctx.settings.s3_endpoint_url)
    assert origin.hostname is not None
    assert origin.port is not None
    with ExitStack() as exits:
        deployed = deploy(ctx, exits)
        viewer, keys = await _content(ctx, deployed.url, pages * PAGE_SIZE)
        api = urlsplit(deployed.url)
        assert api.hostname is not None
        assert api.port is not None
        async with AsyncExitStack() as proxies:
            far_api = await proxies.enter_async_context(delayed(api.hostname, api.port, FAR_RTT))
            far_origin = await proxies.enter_async_context(
                delayed(origin.hostname, origin.port, FAR_RTT)
            )
            viewing = Viewing(ctx, far_api.url, viewer, keys, pages, rounds)
            await viewing.measure_idle_origin()
            results: dict[str, Any] = {
                "simulated": f"round trips added on loopback: {FAR_RTT * 1000:g} ms to the API "
                f"and the S3 origin, {EDGE_RTT * 1000:g} ms to the edge, {FAR_RTT * 1000:g} ms "
                "from the edge to the origin",
                "page_size": PAGE_SIZE,
                "connections_per_host": CONNECTIONS_PER_HOST,
                "distinct_images": len(keys),
                "ways": {"origin": await viewing.way(f"{far_origin.url}/{bucket}", None, False)},
            }
            if varnishd_binary() is None:
                results["edge_missing"] = "varnishd is not installed: the edge ways did not run"
                return results
            edge = EdgeCache(stack.free_port(), far_origin.url, ctx.workdir / "edge", memory="256m")
            exits.callback(edge.stop)
            edge.start()
            near = await proxies.enter_async_context(delayed("127.0.0.1", edge.port, EDGE_RTT))
            base = f"{near.url}/{bucket}"
            results["ways"]["edge_cold"] = await viewing.way(base, edge, purge_first=True)
            results["ways"]["edge_warm"] = await viewing.way(base, edge, purge_first=False)
            results["edge_to_origin_connections"] = far_origin.connections
    return results | _verdicts(results)


class Viewing:
    """A far viewer's page views, `rounds` browsers of `pages` pages each, one way at a time."""

    def __init__(
        self,
        ctx: Context,
        api: str,
        auth: dict[str, str],
        keys: list[str],
        pages: int,
        rounds: int,
    ) -> None:
        self.ctx = ctx
        self.api = api
        self.auth = auth
        self.keys = keys  # every image the pages show, for the purges
        self.s3_pids = ctx.backend_pids.get("s3", ())
        self.idle_origin_cores = 0.0  # what moto and its gate spend with nothing to do
        self.pages = pages
        self.rounds = rounds
        self.prefix = ctx.settings.image_url_prefix + "/"

    def _origin_cpu(self) -> float:
        return sum(stack.tree_cpu_seconds(pid) for pid in self.s3_pids)

    async def measure_idle_origin(self, seconds: float = 3.0) -> None:
        before, started = self._origin_cpu(), time.perf_counter()
        await asyncio.sleep(seconds)
        self.idle_origin_cores = (self._origin_cpu() - before) / (time.perf_counter() - started)

    async def way(self, base: str, edge: EdgeCache | None, purge_first: bool) -> dict[str, Any]:
        feed, images, pages, each = Histogram(), Histogram(), Histogram(), Histogram()
        fetched = failed = views = 0
        counters_before = await asyncio.to_thread(edge.counters) if edge else {}
        cpu = 0.0
        for _ in range(self.rounds):
            if edge is not None and purge_first:
                await self._purge_all(edge, base)
            cpu_before, started = self._origin_cpu(), time.perf_counter()
            connector = aiohttp.TCPConnector(limit_per_host=CONNECTIONS_PER_HOST)
            timeout = aiohttp.ClientTimeout(total=30)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as browser:
                cursor: str | None = None
                for _ in range(self.pages):
                    view = await self._page_view(browser, base, cursor)
                    cursor = view["next_cursor"]
                    views += 1
                    feed.record(view["feed"])
                    images.record(view["images"])
                    pages.record(view["page"])
                    for seconds in view["each"]:
                        each.record(seconds)
                    fetched += len(view["each"])
                    failed += view["failed"]
                    if cursor is None:
                        break
            idle = self.idle_origin_cores * (time.perf_counter() - started)
            cpu += max(0.0, self._origin_cpu() - cpu_before - idle)
        result: dict[str, Any] = {
            "page_views": views,
            "images": fetched,
            "failed": failed,
            "feed_json": feed.summary_ms(),
            "images_per_page": images.summary_ms(),
            "whole_page": pages.summary_ms(),
            "per_image": each.summary_ms(),
            "origin_cpu_ms_per_page": round(cpu / max(views, 1) * 1000, 2),
        }
        if edge is None:
            # Nothing between the browser and the origin: every image is an origin GET.
            result["origin_gets_per_page"] = round(fetched / max(views, 1), 2)
            return result
        counters = await asyncio.to_thread(edge.counters)
        spent = {name: counters[name] - counters_before[name] for name in counters}
        looked_up = spent["cache_hit"] + spent["cache_miss"]
        result["origin_gets_per_page"] = round(spent["backend_req"] / max(views, 1), 2)
        result["hit_ratio"] = round(spent["cache_hit"] / looked_up, 3) if looked_up else None
        result["edge_counters"] = spent
        return result

    async def _page_view(
        self, browser: aiohttp.ClientSession, base: str, cursor: str | None
    ) -> dict[str, Any]:
        started = time.perf_counter()
        params = {"limit": str(PAGE_SIZE), **({"cursor": cursor} if cursor else {})}
        async with browser.get(f"{self.api}/v1/feed", params=params, headers=self.auth) as answer:
            answer.raise_for_status()
            page = await answer.json()
        arrived = time.perf_counter()
        urls = [
            f"{base}/{item['thumbnail_url'].removeprefix(self.prefix)}" for item in page["items"]
        ]
        loads = await asyncio.gather(*(self._load(browser, url) for url in urls))
        finished = max((done for done, _, _ in loads), default=arrived)
        return {
            "feed": arrived - started,
            "images": finished - arrived,
            "page": finished - started,
            "each": [seconds for _, seconds, _ in loads],
            "failed": sum(1 for _, _, ok in loads if not ok),
            "next_cursor": page["next_cursor"],
        }

    @staticmethod
    async def _load(browser: aiohttp.ClientSession, url: str) -> tuple[float, float, bool]:
        """(when it was done, how long it took, whether it was a 200)."""
        started = time.perf_counter()
        try:
            async with browser.get(url) as answer:
                await answer.read()
                ok = answer.status == 200
        except aiohttp.ClientError:
            ok = False
        done = time.perf_counter()
        return done, done - started, ok

    async def _purge_all(self, edge: EdgeCache, base: str) -> None:
        """Every image out of the edge, straight to it (not through the simulated distance)."""
        path = urlsplit(base).path
        async with aiohttp.ClientSession() as admin:
            for key in self.keys:
                async with admin.request("PURGE", f"{edge.url}{path}/{key}") as answer:
                    assert answer.status == 200, f"purge answered {answer.status}"


async def _content(ctx: Context, url: str, count: int) -> tuple[dict[str, str], list[str]]:
    """A viewer who follows AUTHORS new accounts, which post `count` real photos between
    them through the API (V0 uploads): the viewer's auth and the thumbnails' keys."""
    run = secrets.token_hex(3)
    password = secrets.token_urlsafe(12)
    async with aiohttp.ClientSession(url) as api:

        async def account(name: str) -> tuple[int, dict[str, str]]:
            body = {"username": f"img{run}_{name}", "password": password}
            async with api.post("/v1/users", json=body) as made:
                assert made.status == 201, await made.text()
                user_id = (await made.json())["id"]
            async with api.post("/v1/auth/token", json=body) as login:
                assert login.status == 200, await login.text()
                token = (await login.json())["access_token"]
            return user_id, {"Authorization": f"Bearer {token}"}

        _, viewer = await account("viewer")
        authors = [await account(f"author{i}") for i in range(AUTHORS)]
        for author_id, _ in authors:
            async with api.put(f"/v1/following/{author_id}", headers=viewer) as followed:
                assert followed.status in {200, 204}, await followed.text()
        slots = asyncio.Semaphore(UPLOADS_AT_ONCE)

        async def post(n: int) -> str:
            _, auth = authors[n % AUTHORS]
            photo = ctx.photos[n % len(ctx.photos)]
            form = aiohttp.FormData()
            form.add_field("file", io.BytesIO(photo), filename="p.jpg", content_type="image/jpeg")
            async with slots:
                async with api.post("/v1/media", data=form, headers=auth) as stored:
                    assert stored.status == 201, await stored.text()
                    media = await stored.json()
                async with api.post(
                    "/v1/posts", json={"media_id": media["media_id"]}, headers=auth
                ) as posted:
                    assert posted.status == 201, await posted.text()
            thumbnail: str = media["thumbnail_url"]
            return thumbnail.removeprefix(ctx.settings.image_url_prefix + "/")

        keys = list(await asyncio.gather(*(post(n) for n in range(count))))
    return viewer, keys


def _verdicts(results: dict[str, Any]) -> dict[str, Any]:
    ways = results["ways"]
    if "edge_warm" not in ways:
        return {}
    origin_p50 = ways["origin"]["images_per_page"]["p50_ms"]
    warm_p50 = ways["edge_warm"]["images_per_page"]["p50_ms"]
    return {
        "warm_speedup_p50": round(origin_p50 / warm_p50, 1) if warm_p50 else None,
        "s3_get_p99_ms": ways["origin"]["per_image"]["p99_ms"],
    }
