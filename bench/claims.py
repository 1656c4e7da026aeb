"""The seed's claims, each beside what this run measured and what that implies for the seed's
deployment (3 pods x 4 vCPU, 100 database connections, 10 Gbit/s), with a verdict.

The extrapolation uses only costs measured per request (CPU milliseconds, bytes), never this
machine's throughput: two cores shared by the service, PostgreSQL, S3 and the load generator
say little about twelve cores that serve the API alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SEED_CORES = 12  # 3 pods x 4 vCPU
SEED_BANDWIDTH_BYTES = 10e9 / 8  # 10 Gbit/s
SEED_BANDWIDTH_ALERT_BYTES = 500e6  # the seed's alert: half of 10 Gbit/s


@dataclass(frozen=True)
class Claim:
    claim: str
    seed: str
    measured: str
    deployment: str
    verdict: str


def claims(results: dict[str, Any]) -> list[Claim]:
    """Every claim the run has figures for."""
    found: list[Claim] = []
    costs = results.get("costs")
    ops = costs["operations"] if costs else {}
    if mix := results.get("mix"):
        found.append(_total_rps(mix))
    if "upload" in ops:
        found += _uploads(ops["upload"], results.get("upload-storm"))
    if thumb := results.get("thumbnail"):
        found.append(_thumbnail(thumb))
    if feed := results.get("feed-vs-follows"):
        found += _feed_sql(feed, ops.get("feed"))
    if "post" in ops:
        found.append(_latency("post creation", "~50 ms (a single INSERT)", ops["post"], 50))
    if "like" in ops:
        found.append(_latency("like", "~5 ms (an atomic UPDATE)", ops["like"], 5))
    if costs:
        found.append(_jwt(costs["jwt_verify_us"]))
        found.append(_balancer(costs["balancer"]))
    if images := results.get("images"):
        found += _images(images)
    if "presign" in ops:
        found.append(_presign(ops["presign"], results.get("v1-uploads")))
    if "upload_v1" in ops and "upload" in ops:
        found.append(_v1_upload(ops["upload_v1"], ops["upload"], results.get("v1-uploads")))
    return found


def _times(measured: float, seed: float) -> str:
    if measured <= 0 or seed <= 0:
        return "-"
    ratio = seed / measured
    return f"{ratio:.1f}x lower here" if ratio >= 1 else f"{1 / ratio:.1f}x higher here"


def _total_rps(mix: dict[str, Any]) -> Claim:
    step = next(
        (s for s in reversed(mix["steps"]) if s["offered_rate"] == mix["highest_rate_within_slo"]),
        mix["steps"][0],
    )
    done = sum(o["ok"] for o in step["operations"].values()) / step["seconds"]
    cpu_ms = step["service_cpu_ms_per_request"]
    traffic = (step["api_bytes_in_per_s"] + step["api_bytes_out_per_s"]) / max(done, 1)
    by_cpu = SEED_CORES * 1000 / max(cpu_ms, 1e-6)
    by_bandwidth = SEED_BANDWIDTH_BYTES / max(traffic, 1)
    ceiling = min(by_cpu, by_bandwidth)
    limit = "CPU" if by_cpu <= by_bandwidth else "bandwidth"
    return Claim(
        "requests/s in all, the seed's mix (60% feed, 10% 2 MB uploads)",
        "~1,000/s, the ceiling at API bandwidth and the database",
        f"{done:.0f}/s within the SLOs on 2 shared cores ({cpu_ms} ms of service CPU and "
        f"{traffic / 1e3:.0f} kB through the API per request)",
        f"{ceiling:,.0f}/s ({limit}: {by_cpu:,.0f}/s by 12 cores, {by_bandwidth:,.0f}/s by "
        "10 Gbit/s)",
        "agrees"
        if 0.5 <= ceiling / 1000 <= 2
        else f"{ceiling / 1000:.1f}x the seed's, limited by {limit}",
    )


def _uploads(upload: dict[str, Any], storm: dict[str, Any] | None) -> list[Claim]:
    cpu = upload["cpu_ms_per_request"]
    service_ms = cpu["service"] + cpu["image_workers"]
    by_cpu = SEED_CORES * 1000 / max(service_ms, 1e-6)
    through_api = upload["api_bytes_per_request"]
    # The service sends the body on to S3 as well: about as many bytes again leave it.
    per_upload = 2 * through_api
    best = "no storm step ran"
    if storm:
        within = [
            s
            for s in storm["steps"]
            if s["upload_p99_ms"] < 800 and s["upload_statuses"].get("201")
        ]
        stored = max((s["uploads_stored_per_s"] for s in within), default=0.0)
        best = f"{stored}/s stored within p99 800 ms on 2 shared cores"
    cores_at_100 = service_ms * 100 / 1000
    return [
        Claim(
            "uploads/s the service tier sustains (CPU)",
            "~250/s (150 threads, each upload ~600 ms, ~400 ms of it thumbnail CPU)",
            f"{best}; {cpu['service']:.1f} ms of event-loop CPU and "
            f"{cpu['image_workers']:.1f} ms of image-worker CPU per upload",
            f"{by_cpu:,.0f}/s by CPU on 12 cores",
            f"{by_cpu / 250:.1f}x the seed's: its 400 ms thumbnail is "
            f"{400 / max(cpu['image_workers'], 1e-6):.0f}x this one's",
        ),
        Claim(
            "uploads/s before API bandwidth runs out",
            "~200/s whatever the pod count; alert at 500 MB/s (half of 10 Gbit/s)",
            f"{through_api / 1e6:.2f} MB in and out of the API per upload, "
            f"about {per_upload / 1e6:.1f} MB through the service's network with the copy to S3",
            f"{SEED_BANDWIDTH_BYTES / per_upload:,.0f}/s at 10 Gbit/s, "
            f"{SEED_BANDWIDTH_ALERT_BYTES / through_api:,.0f}/s at the 500 MB/s alert",
            "agrees: bandwidth, not CPU, caps V0's uploads"
            if SEED_BANDWIDTH_BYTES / per_upload < by_cpu
            else "CPU runs out first here",
        ),
        Claim(
            "share of the service tier's CPU at 100 uploads/s",
            "40% of 12 cores (4.8 cores)",
            f"{service_ms:.1f} ms of CPU per upload (event loop and image workers)",
            f"{cores_at_100:.2f} cores, {cores_at_100 / SEED_CORES:.0%} of 12",
            _times(cores_at_100, 4.8),
        ),
        Claim(
            "upload latency, p99",
            "500-800 ms",
            f"p50 {upload['p50_ms']} ms, p99 {upload['p99_ms']} ms at "
            f"{upload['offered_rate']} uploads/s",
            "the same per upload: it is one request's own work",
            "within the seed's range" if upload["p99_ms"] <= 800 else "over the seed's 800 ms",
        ),
    ]


def _thumbnail(thumb: dict[str, Any]) -> Claim:
    jpeg = thumb["images"]["jpeg_12mp"]
    return Claim(
        "thumbnail, 150 px, libvips, in the request",
        "300-500 ms (~400 ms CPU)",
        f"{jpeg['ours_cpu_ms_median']} ms of CPU for a 12 MP JPEG (shrink-on-load); "
        f"{jpeg['ours_whole_job_cpu_ms_median']} ms for the worker's whole job; "
        f"{jpeg['naive_cpu_ms_median']} ms with a full decode",
        "the same per core",
        f"{400 / max(jpeg['ours_cpu_ms_median'], 1e-6):.0f}x less than the seed's 400 ms; "
        "a full decode is near it",
    )


def _feed_sql(feed: dict[str, Any], http: dict[str, Any] | None) -> list[Claim]:
    found = []
    measured_f = {p["followed"] for p in feed["points"]}
    for claimed, seed_ms in ((200, 50), (1000, 200)):
        # A size without F = 200 (tiny) shows its largest F instead, and says so.
        followed = claimed if claimed in measured_f or claimed != 200 else max(measured_f)
        points = [p for p in feed["points"] if p["followed"] == followed]
        if not points:
            continue
        literal = max(p["literal"]["p99_ms"] for p in points)
        ours = max(p["ours"]["p99_ms"] for p in points)
        through = ""
        if http and claimed == 200:
            through = f"; through the API at {http['offered_rate']}/s: p99 {http['p99_ms']} ms"
        at = "" if followed == claimed else f" (F = {followed} at this size)"
        found.append(
            Claim(
                f"feed p99 at F = {claimed:,}",
                f"~{seed_ms} ms (the JOIN, O(F))",
                f"in PostgreSQL{at}, worst of active and quiet: the seed's JOIN {literal} ms, "
                f"Monogram's query {ours} ms{through}",
                "the same per query; the database is the shared resource",
                f"the JOIN {_times(literal, seed_ms)}; Monogram's {_times(ours, seed_ms)}",
            )
        )
    return found


def _latency(name: str, seed: str, op: dict[str, Any], seed_ms: float) -> Claim:
    return Claim(
        name,
        seed,
        f"p50 {op['p50_ms']} ms, p99 {op['p99_ms']} ms at {op['offered_rate']}/s",
        "the same per request",
        f"p50 {_times(op['p50_ms'], seed_ms)}",
    )


def _presign(presign: dict[str, Any], v1: dict[str, Any] | None) -> Claim:
    body = v1["steps"][0]["presign_body_bytes"] if v1 else None
    cpu = presign["cpu_ms_per_request"]["service"]
    return Claim(
        "presigning an upload URL",
        "~2 ms, ~500 bytes",
        f"p50 {presign['p50_ms']} ms, {cpu} ms of service CPU; "
        + (f"{body} bytes of JSON" if body else "body not measured in this run"),
        f"{SEED_CORES * 1000 / max(cpu, 1e-6):,.0f} presigns/s on 12 cores",
        f"latency {_times(presign['p50_ms'], 2)}",
    )


def _v1_upload(v1_op: dict[str, Any], v0_op: dict[str, Any], v1: dict[str, Any] | None) -> Claim:
    api = v1_op["cpu_ms_per_request"]["service"]
    v0 = v0_op["cpu_ms_per_request"]["service"] + v0_op["cpu_ms_per_request"]["image_workers"]
    acknowledged = ""
    if v1:
        top = v1["steps"][-1]
        acknowledged = (
            f"; at {top['upload_rate']:g}/s the complete's 202 p99 "
            f"{top['complete_ms']['p99_ms']} ms, the whole flow p99 "
            f"{top['acknowledged_ms']['p99_ms']} ms"
        )
    return Claim(
        "V1 upload: the API only signs and checks",
        "<200 ms upload; the API's only work ~2 ms, ~500 bytes",
        f"{api} ms of API CPU and {v1_op['api_bytes_per_request']:,} bytes per upload "
        f"(V0: {v0:.1f} ms with its image worker, ~2 MB){acknowledged}",
        f"{SEED_CORES * 1000 / max(api, 1e-6):,.0f} uploads/s of API CPU on 12 cores; "
        f"{SEED_BANDWIDTH_BYTES / max(v1_op['api_bytes_per_request'], 1):,.0f}/s of its bandwidth",
        "the bandwidth ceiling is gone: the bytes go to S3",
    )


def _images(images: dict[str, Any]) -> list[Claim]:
    ways = images["ways"]
    origin = ways["origin"]
    per_image = origin["per_image"]["p50_ms"]
    page = origin["images_per_page"]["p50_ms"]
    one_by_one = per_image * images["page_size"]
    found = [
        Claim(
            "S3 GETs for images at 600 feed reads/s, no CDN",
            "3,000/s (5 images a page)",
            f"{origin['origin_gets_per_page']} origin GETs per page view; "
            f"{origin['origin_cpu_ms_per_page']} ms of the origin's CPU per page",
            f"{600 * origin['origin_gets_per_page']:,.0f} origin GETs/s at 600 reads/s",
            "confirmed: every image of every page reaches the origin",
        ),
        Claim(
            "image loading per page for a far user, no CDN",
            "750-1,000 ms (5 x 150-200 ms)",
            f"p50 {page} ms, p99 {origin['images_per_page']['p99_ms']} ms with a browser's 6 "
            f"connections; one image p50 {per_image} ms, so {one_by_one:.0f} ms one after another "
            "(simulated 150 ms round trip)",
            "latency is distance: the same on any deployment",
            "confirmed for images fetched one by one; a browser's parallel fetches cost about "
            "one round trip a page (two on new connections)",
        ),
    ]
    if warm := ways.get("edge_warm"):
        cold = ways["edge_cold"]
        found.append(
            Claim(
                "CDN edge: images in 5-20 ms, 95% of reads absorbed",
                "5-20 ms an image; 95% absorbed",
                f"warm: one image p50 {warm['per_image']['p50_ms']} ms, a page's images p50 "
                f"{warm['images_per_page']['p50_ms']} ms, hit ratio {warm['hit_ratio']:.1%}, "
                f"{warm['origin_gets_per_page']} origin GETs a page; cold (every image a miss): "
                f"a page's images p50 {cold['images_per_page']['p50_ms']} ms "
                "(simulated 5 ms to the edge)",
                f"{600 * warm['origin_gets_per_page']:,.0f} origin GETs/s at 600 reads/s once warm",
                "confirmed: hits never reach the origin; a miss costs the trip to the origin "
                "and back",
            )
        )
    return found


def _jwt(verify_us: float) -> Claim:
    return Claim(
        "JWT validation per request",
        "~3 ms",
        f"{verify_us} us of CPU (HS256 and its claims)",
        f"{verify_us / 1000:.3f} cores at 1,000 requests/s",
        _times(verify_us / 1000, 3),
    )


def _balancer(balancer: dict[str, Any]) -> Claim:
    added = balancer["adds_p50_ms"]
    return Claim(
        "the load balancer's added latency",
        "~1.5 ms (AWS ALB)",
        f"Caddy on this machine: +{balancer['adds_p50_ms']} ms at p50, "
        f"+{balancer['adds_p99_ms']} ms at p99; {balancer['balancer_cpu_ms_per_request']} ms "
        "of its CPU per request",
        "an ALB is a managed service: no pod CPU",
        _times(added, 1.5) if added >= 0.05 else "too small to tell apart from noise here",
    )


def claims_lines(results: dict[str, Any]) -> list[str]:
    rows = claims(results)
    if not rows:
        return []
    lines = [
        "## The seed's claims",
        "",
        "Each figure the source design states, beside this run's. The seed's deployment column "
        "divides its 12 cores and 10 Gbit/s by the CPU and bytes this run measured per request.",
        "",
        "| claim | the seed | measured here | on the seed's deployment | verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {c.claim} | {c.seed} | {c.measured} | {c.deployment} | {c.verdict} |" for c in rows
    ]
    return [*lines, ""]
