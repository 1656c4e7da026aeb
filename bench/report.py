"""The bench's outputs: one JSON per scenario, and a markdown report with PNG plots."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import orjson

from bench import compare, stack
from bench.claims import SEED_BANDWIDTH_BYTES, SEED_CORES, claims_lines

# The seed's deployment, for the capacity estimate (bench/claims.py has its cores and network).
SEED_CONNECTIONS = 100
SEED_RPS = 1000


def write_json(out: Path, scenario: str, stamp: str, result: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{scenario}-{stamp}.json"
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return path


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for each of the issue's targets that this run measured."""
    rows: list[tuple[str, str, bool | None]] = []
    if thumb := results.get("thumbnail"):
        jpeg = thumb["images"]["jpeg_12mp"]
        rows.append(
            (
                "thumbnail, 12 MP ~2 MB JPEG: median <= 30 ms CPU and >= 5x the naive baseline",
                f"{jpeg['ours_cpu_ms_median']} ms, {jpeg['speedup']}x",
                jpeg["ours_cpu_ms_median"] <= 30 and jpeg["speedup"] >= 5,
            )
        )
    if feed := results.get("feed-vs-follows"):
        small = [p for p in feed["points"] if p["followed"] <= 1000]
        large = [p for p in feed["points"] if p["followed"] > 1000]
        worst_small = max(p["ours"]["p99_ms"] for p in small)
        rows.append(
            ("feed in SQL: p99 <= 10 ms at F <= 1000", f"worst {worst_small} ms", worst_small <= 10)
        )
        if large:
            worst_large = max(p["ours"]["p99_ms"] for p in large)
            rows.append(
                (
                    "feed in SQL: p99 <= 25 ms at F = 5000",
                    f"worst {worst_large} ms",
                    worst_large <= 25,
                )
            )
        rows.append(
            (
                "feed in SQL: >= 20x better than the literal JOIN's worst point",
                f"{feed['worst_vs_worst']}x",
                feed["worst_vs_worst"] >= 20,
            )
        )
        rows.append(
            (
                "feed in SQL: never > 3 ms slower than the literal JOIN",
                f"at most {feed['most_ms_slower_than_literal']} ms slower",
                feed["most_ms_slower_than_literal"] <= 3,
            )
        )
    if mix := results.get("mix"):
        good = [s for s in mix["feed_http_f200"] if s["p99_ms"] < 50 and s["errors"] == 0]
        best = max((s["throughput_per_s"] for s in good), default=0.0)
        top = mix["feed_http_f200"][-1]
        direct = [
            s for s in mix.get("feed_http_f200_direct", []) if s["p99_ms"] < 50 and not s["errors"]
        ]
        best_direct = max((s["throughput_per_s"] for s in direct), default=0.0)
        rows.append(
            (
                "feed through HTTP at F = 200: >= 1,000 requests/s with p99 < 50 ms",
                f"{best} requests/s within p99 50 ms through the balancer ({best_direct} "
                f"straight to the processes); at {top['offered_rate']}/s offered, "
                f"CPU cores ({CPU_LEGEND}): {_cpu_cell(top)}",
                max(best, best_direct) >= 1000,
            )
        )
    if storm := results.get("upload-storm"):
        within = [
            s
            for s in storm["steps"]
            if s["upload_p99_ms"] < 800 and s["upload_statuses"].get("201")
        ]
        best = max((s["uploads_stored_per_s"] for s in within), default=0.0)
        rows.append(
            ("uploads of 2 MB: >= 30/s sustained with p99 < 800 ms", f"{best}/s", best >= 30)
        )
        worst = max(s["feed_p99_vs_rest"] for s in storm["steps"])
        rows.append(
            ("feed p99 during the upload storm <= 2x at rest", f"at most {worst}x", worst <= 2)
        )
    costs = results.get("costs")
    if costs:
        cpu = costs["operations"]["upload"]["cpu_ms_per_request"]
        rows.append(
            (
                "V0 upload, 2 MB: <= 10 ms of the service process's CPU (image workers apart)",
                f"{cpu['service']} ms (image workers {cpu['image_workers']} ms)",
                cpu["service"] <= 10,
            )
        )
    if costs and "upload_v1" in costs["operations"]:
        # V0's API tier makes the thumbnails too: its image workers are part of it.
        v0_cpu = costs["operations"]["upload"]["cpu_ms_per_request"]
        v0 = round(v0_cpu["service"] + v0_cpu["image_workers"], 3)
        v1_op = costs["operations"]["upload_v1"]
        v1 = v1_op["cpu_ms_per_request"]["service"]
        rows.append(
            (
                "V1 upload: API-tier CPU (presign + complete) <= 5 ms and <= a fifth of V0's",
                f"{v1} ms against V0's {v0} ms (event loop {v0_cpu['service']} ms, image workers "
                f"{v0_cpu['image_workers']} ms): {v0 / max(v1, 1e-6):.1f}x less",
                v1 <= 5 and v1 * 5 <= v0,
            )
        )
        rows.append(
            (
                "V1 upload: <= 4 KB through the API, headers included (V0: the 2 MB body)",
                f"{v1_op['api_bytes_per_request']:,} bytes",
                v1_op["api_bytes_per_request"] <= 4096,
            )
        )
    if v1 := results.get("v1-uploads"):
        top = v1["steps"][-1]
        rows.append(
            (
                f"V1 upload acknowledged (complete's 202): p99 < 200 ms at {top['upload_rate']:g}/s",
                f"p99 {top['complete_ms']['p99_ms']} ms for the complete call; the whole client "
                f"flow (presign, 2 MB to S3, complete) p99 {top['acknowledged_ms']['p99_ms']} ms",
                top["complete_ms"]["p99_ms"] < 200,
            )
        )
    if (images := results.get("images")) and "edge_warm" in images["ways"]:
        ways = images["ways"]
        warm = ways["edge_warm"]
        rows += [
            (
                "images, far user: warm edge's page of images p50 >= 10x better than the origin's",
                f"{warm['images_per_page']['p50_ms']} ms against "
                f"{ways['origin']['images_per_page']['p50_ms']} ms: {images['warm_speedup_p50']}x",
                (images["warm_speedup_p50"] or 0) >= 10,
            ),
            (
                "images: 0 origin GETs per warm page view",
                f"{warm['origin_gets_per_page']}",
                warm["origin_gets_per_page"] == 0,
            ),
            (
                "images: hit ratio >= 95% after one pass over the feed's images",
                f"{warm['hit_ratio']:.1%}",
                warm["hit_ratio"] is not None and warm["hit_ratio"] >= 0.95,
            ),
        ]
    if modes := results.get("feed-modes"):
        rows += _feed_mode_targets(modes)
    if over := results.get("overload"):
        rows += _overload_targets(over)
    if celebrity := results.get("celebrity"):
        celeb = celebrity["monogram"]
        slowest = celeb["latency"]["max_ms"]
        rows.append(
            (
                "overload answers 503 quickly, no request past its deadline (celebrity burst)",
                f"slowest answer {slowest} ms; {celeb['statuses']}",
                slowest <= 10_000 and "0" not in celeb["statuses"],
            )
        )
    return rows


def _rate(rate: float | None) -> str:
    return "none of the steps" if rate is None else f"{rate:.0f} requests/s"


def capacity(results: dict[str, Any]) -> list[str]:
    mix = results.get("mix")
    if not mix or not mix["steps"]:
        return []
    step = next(
        (s for s in reversed(mix["steps"]) if s["offered_rate"] == mix["highest_rate_within_slo"]),
        mix["steps"][0],
    )
    cpu_ms = step["service_cpu_ms_per_request"]
    done = sum(o["ok"] for o in step["operations"].values()) / step["seconds"]
    bytes_per_request = (step["api_bytes_in_per_s"] + step["api_bytes_out_per_s"]) / max(done, 1)
    by_cpu = SEED_CORES * 1000 / max(cpu_ms, 1e-6)
    by_bandwidth = SEED_BANDWIDTH_BYTES / max(bytes_per_request, 1)
    database_cores = step.get("cpu_cores", {}).get("postgresql")
    database_cost = (
        ""
        if database_cores is None
        else f" PostgreSQL spent {database_cores * 1000 / max(done, 1):.2f} ms of CPU per "
        "request besides, on its own machine in the seed's deployment."
    )
    return [
        "## Capacity of the seed's deployment, from this run's per-request costs",
        "",
        f"Measured in the mix step at {step['offered_rate']:.0f} requests/s offered: "
        f"{cpu_ms} ms of service CPU (event loop and image workers) and "
        f"{bytes_per_request / 1e3:.0f} kB of API traffic (in + out) per request."
        f"{database_cost}",
        "",
        "| limit | what it allows | the seed's figure |",
        "| --- | --- | --- |",
        f"| CPU: 3 pods x 4 vCPU = {SEED_CORES} cores | {by_cpu:,.0f} requests/s | about {SEED_RPS:,} requests/s |",
        f"| API bandwidth: 10 Gbit/s | {by_bandwidth:,.0f} requests/s | uploads through the API saturate it first |",
        f"| PostgreSQL: {SEED_CONNECTIONS} connections | see the celebrity scenario: excess requests get 503 within DB_ACQUIRE_TIMEOUT | pool exhaustion |",
        "",
        "Uploads dominate both: a 2 MB body in, and its thumbnail work, per upload.",
    ]


def write_markdown(out: Path, stamp: str, results: dict[str, Any], facts: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Monogram bench, {stamp}",
        "",
        f"Size `{facts.get('size')}`: {facts.get('data', {})}. Machine: {facts.get('machine')}.",
        "Every latency is measured by the client from when the request was due (open loop).",
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
    ]
    for target, measured, met in targets(results):
        lines.append(f"| {target} | {measured} | {'yes' if met else 'NO'} |")
    lines.append("")
    lines += claims_lines(results)
    if costs := results.get("costs"):
        lines += _costs_lines(costs)
    if thumb := results.get("thumbnail"):
        lines += [
            "## thumbnail: CPU ms per image (median)",
            "",
            "| image | MB | MP | ours: thumbnail | ours: whole worker job | naive: full decode | speedup (thumbnail) | V1 sizes: one decode | V1 sizes: a decode each |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, r in thumb["images"].items():
            lines.append(
                f"| {name} | {r['bytes'] / 1e6:.1f} | {r['megapixels']} | {r['ours_cpu_ms_median']} | "
                f"{r['ours_whole_job_cpu_ms_median']} | {r['naive_cpu_ms_median']} | {r['speedup']}x | "
                f"{r['v1_sizes_cpu_ms_median']} | {r['v1_sizes_decoded_each_cpu_ms_median']} |"
            )
        lines += ["", thumb["note"] + ".", ""]
    if feed := results.get("feed-vs-follows"):
        lines += [
            "## feed-vs-follows: one feed page in the database",
            "",
            "| F | followed accounts | ours p50 / p99 ms | literal JOIN p50 / p99 ms | literal / ours | post rows read, ours / literal |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for p in feed["points"]:
            lines.append(
                f"| {p['followed']} | {p['kind']} | {p['ours']['p50_ms']} / {p['ours']['p99_ms']} | "
                f"{p['literal']['p50_ms']} / {p['literal']['p99_ms']} | {p['p99_ratio_literal_over_ours']}x | "
                f"{p['ours_post_rows']:,} / {p['literal_post_rows']:,} |"
            )
        lines += ["", f"![latency vs F](feed-vs-follows-{stamp}.png)", ""]
        _plot_feed(out / f"feed-vs-follows-{stamp}.png", feed)
    if mix := results.get("mix"):
        lines += [
            f"## mix: the seed's traffic, {mix['processes']} service processes",
            "",
            f"| offered/s | feed p50/p99/p99.9 ms | upload p50/p99 ms | detail p99 | post p99 | like p99 | errors | dropped | CPU cores: {CPU_LEGEND} | MB/s in / out |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for s in mix["steps"]:
            o = s["operations"]
            errors = sum(v["errors"] for v in o.values())
            lines.append(
                f"| {s['offered_rate']:.0f} | {o['feed']['p50_ms']}/{o['feed']['p99_ms']}/{o['feed']['p999_ms']} | "
                f"{o['upload']['p50_ms']}/{o['upload']['p99_ms']} | {o['detail']['p99_ms']} | {o['post']['p99_ms']} | "
                f"{o['like']['p99_ms']} | {errors} | {s['dropped']} | {_cpu_cell(s)} | "
                f"{s['api_bytes_in_per_s'] / 1e6:.1f} / {s['api_bytes_out_per_s'] / 1e6:.1f} |"
            )
        lines += [
            "",
            f"Highest offered rate within the seed's SLOs (feed p99 {500} ms, upload p99 {800} ms): "
            f"{_rate(mix['highest_rate_within_slo'])}.",
            "",
            "Feed only, F = 200 viewers:",
            "",
            f"| offered/s | done/s | p50 / p99 ms | errors | CPU cores: {CPU_LEGEND} |",
            "| --- | --- | --- | --- | --- |",
        ]
        for s in mix["feed_http_f200"]:
            lines.append(
                f"| {s['offered_rate']} | {s['throughput_per_s']} | {s['p50_ms']} / {s['p99_ms']} | {s['errors']} | {_cpu_cell(s)} |"
            )
        if mix.get("feed_http_f200_direct"):
            lines += [
                "",
                "The same reads straight to the service processes, without the balancer:",
                "",
                f"| offered/s | done/s | p50 / p99 ms | errors | CPU cores: {CPU_LEGEND} |",
                "| --- | --- | --- | --- | --- |",
            ]
            for s in mix["feed_http_f200_direct"]:
                lines.append(
                    f"| {s['offered_rate']} | {s['throughput_per_s']} | {s['p50_ms']} / {s['p99_ms']} | {s['errors']} | {_cpu_cell(s)} |"
                )
        lines += ["", f"![latency vs offered rate](mix-{stamp}.png)", ""]
        _plot_mix(out / f"mix-{stamp}.png", mix)
        if seed := mix.get("seed"):
            lines += _seed_mix_lines(seed, mix)
    if storm := results.get("upload-storm"):
        lines += [
            f"## upload-storm: uploads ramped under {storm['feed_rate']} feed reads/s (feed p99 at rest {storm['feed_p99_at_rest_ms']} ms)",
            "",
            f"| uploads offered/s | stored/s | upload p99 ms | statuses | 503 p99 ms | feed p99 ms | vs rest | CPU cores: {CPU_LEGEND} |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for s in storm["steps"]:
            lines.append(
                f"| {s['upload_rate']} | {s['uploads_stored_per_s']} | {s['upload_p99_ms']} | {s['upload_statuses']} | "
                f"{s['rejected_503_p99_ms']} | {s['feed_p99_ms']} | {s['feed_p99_vs_rest']}x | {_cpu_cell(s)} |"
            )
        lines += ["", f"![feed p99 during the storm](upload-storm-{stamp}.png)", ""]
        _plot_storm(out / f"upload-storm-{stamp}.png", storm)
    if v1 := results.get("v1-uploads"):
        lines += _v1_lines(v1)
    if images := results.get("images"):
        lines += _images_lines(images)
    if modes := results.get("feed-modes"):
        lines += _feed_modes_lines(modes)
    if over := results.get("overload"):
        lines += _overload_lines(over)
    if celebrity := _bursts(results):
        any_run = next(iter(celebrity.values()))
        writes = sum(any_run["writes_during_the_burst"]["upload"]["statuses"].values())
        lines += [
            "## celebrity: every follower reads their feed right after a post",
            "",
            f"The celebrity posts; then {any_run['followers_reading_at_once']} followers read "
            f"their feed at once, against {any_run['pool_connections_per_process']} pooled "
            f"connections per process, while {writes} uploads and {writes} "
            "new posts run in the same burst. First under the seed's JOIN served through the "
            "API (`FEED_QUERY=seed`), then under Monogram's query.",
            "",
            "| feed query | feed reads: statuses | p50 / p99 / max ms | all answered within | "
            "peak waiting for a connection | uploads: statuses, p99 ms | posts: statuses, p99 ms |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for query, c in celebrity.items():
            writes = c["writes_during_the_burst"]
            lines.append(
                f"| {query} | {c['statuses']} | {c['latency']['p50_ms']} / {c['latency']['p99_ms']}"
                f" / {c['latency']['max_ms']} | {c['all_answered_within_s']} s | "
                f"{c['peak_requests_waiting_for_a_connection']:.0f} | "
                f"{writes['upload']['statuses']}, {writes['upload']['latency']['p99_ms']} | "
                f"{writes['post']['statuses']}, {writes['post']['latency']['p99_ms']} |"
            )
        lines += ["", f"![the burst over time](celebrity-{stamp}.png)", ""]
        _plot_celebrity(out / f"celebrity-{stamp}.png", celebrity)
    if compared := results.get("compare"):
        lines += compare.report_lines(compared)
    lines += capacity(results)
    path = out / f"report-{stamp}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


CPU_PARTS = stack.CPU_PARTS
# How the CPU columns name the parts, in CPU_PARTS' order.
CPU_LEGEND = "service / image workers / balancer / PG / S3 / bench / media workers / Redis"


def _costs_lines(costs: dict[str, Any]) -> list[str]:
    """Per request: each part's CPU, the bytes through the API, the latency."""
    parts = " | ".join(f"{p} ms" for p in CPU_LEGEND.split(" / "))
    lines = [
        "## costs: one request of each kind, alone, at a light load through the balancer",
        "",
        f"| operation | offered/s | p50 / p99 ms | errors | CPU per request: {parts} | API bytes per request |",
        "| --- | --- | --- | --- |" + " --- |" * len(CPU_PARTS) + " --- |",
    ]
    for name, op in costs["operations"].items():
        cpu = " | ".join(str(op["cpu_ms_per_request"].get(part, "-")) for part in CPU_PARTS)
        lines.append(
            f"| {name} | {op['offered_rate']} | {op['p50_ms']} / {op['p99_ms']} | {op['errors']} | "
            f"{cpu} | {op['api_bytes_per_request']:,} |"
        )
    balancer = costs["balancer"]
    via, direct = balancer["through_the_balancer"], balancer["straight_to_a_process"]
    feed_bench_ms = costs["operations"]["feed"]["cpu_ms_per_request"]["load_generator"]
    lines += [
        "",
        f"The balancer (Caddy, as `make stack` runs it): feed reads through it p50 "
        f"{via['p50_ms']} ms / p99 {via['p99_ms']} ms, straight to a service process "
        f"{direct['p50_ms']} / {direct['p99_ms']} ms in the same step: it adds "
        f"{balancer['adds_p50_ms']} ms at p50 and costs {balancer['balancer_cpu_ms_per_request']} ms "
        f"of its CPU per request. Verifying a JWT costs {costs['jwt_verify_us']} us of CPU.",
        "",
        f"The load generator (Python, open loop) spends {feed_bench_ms} ms of CPU per feed read: "
        f"{feed_bench_ms:.2f} cores at 1,000 reads/s, taken from the same two cores as the "
        "service.",
    ]
    native = costs["native_client"]
    if native["available"]:
        lines += [
            "",
            f"A native client, `hey`, reading the F = 200 feed through the balancer with "
            f"{native['connections']} connections for {native['seconds']:g} s (a closed loop, "
            f"the most it can get): {native['reads_per_s']} reads/s, p99 {native['p99_ms']} ms, "
            f"statuses {native['statuses']}, using {native['client_cpu_cores']} cores itself.",
        ]
    else:
        lines += ["", f"No native client cross-check: {native['why']}."]
    return [*lines, ""]


def _v1_lines(v1: dict[str, Any]) -> list[str]:
    lines = [
        f"## v1-uploads: presigned straight to S3, processed by media workers, under {v1['feed_rate']} feed reads/s (feed p99 at rest {v1['feed_p99_at_rest_ms']} ms)",
        "",
        "| uploads offered/s | acknowledged/s | whole flow p50 / p99 ms | complete p50 / p99 ms | complete to ready p50 / p99 ms | media | feed p99 ms | vs rest | backlog drained after | API bytes out / in per upload | presign body | CPU cores: "
        + CPU_LEGEND
        + " |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in v1["steps"]:
        drained = (
            "-" if s["drain_seconds_after_step"] is None else f"{s['drain_seconds_after_step']} s"
        )
        lines.append(
            f"| {s['upload_rate']:g} | {s['acknowledged_per_s']} | {s['acknowledged_ms']['p50_ms']} / {s['acknowledged_ms']['p99_ms']} | "
            f"{s['complete_ms']['p50_ms']} / {s['complete_ms']['p99_ms']} | {s['complete_to_ready_ms']['p50_ms']} / {s['complete_to_ready_ms']['p99_ms']} | "
            f"{s['media_by_status']} | {s['feed_p99_ms']} | {s['feed_p99_vs_rest']}x | {drained} | "
            f"{s['api_bytes_per_upload']['sent']:,} / {s['api_bytes_per_upload']['received']:,} | {s['presign_body_bytes']} | {_cpu_cell(s)} |"
        )
    lines += [
        "",
        "The whole flow is the client's: presign through the balancer, the 2 MB form straight to "
        "S3 (moto and its gate, on the same two cores), complete through the balancer. The API's "
        "CPU per upload is in the costs table (`upload_v1`, beside V0's `upload`).",
        "",
    ]
    return lines


def _images_lines(images: dict[str, Any]) -> list[str]:
    lines = [
        "## images: a far viewer's feed pages and their images, from the origin and through the edge",
        "",
        f"Simulated geography ({images['simulated']}). Each page view: the feed's JSON "
        f"({images['page_size']} posts), then its {images['page_size']} thumbnails over at most "
        f"{images['connections_per_host']} keep-alive connections per host, as a browser loads "
        f"them; {images['distinct_images']} distinct images. The origin's CPU is moto's and its "
        "gate's, with what they spend idle taken off.",
        "",
        "| way | page views | images of a page p50 / p99 ms | whole page p50 / p99 ms | one image p50 / p99 ms | origin GETs per page | hit ratio | origin CPU ms per page | failed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, way in images["ways"].items():
        hit = way.get("hit_ratio")
        lines.append(
            f"| {name} | {way['page_views']} | {way['images_per_page']['p50_ms']} / {way['images_per_page']['p99_ms']} | "
            f"{way['whole_page']['p50_ms']} / {way['whole_page']['p99_ms']} | "
            f"{way['per_image']['p50_ms']} / {way['per_image']['p99_ms']} | {way['origin_gets_per_page']} | "
            f"{'-' if hit is None else f'{hit:.1%}'} | {way['origin_cpu_ms_per_page']} | {way['failed']} |"
        )
    lines.append("")
    if missing := images.get("edge_missing"):
        lines += [missing + ".", ""]
    if "s3_get_p99_ms" in images:
        lines += [
            f"The seed's metric 5 (S3 GET p99, alert at 300 ms), from the far viewer's origin GETs: "
            f"{images['s3_get_p99_ms']} ms. The seed's 750-1,000 ms a page is 5 images fetched one "
            "after another; a browser fetches them at once, so a page costs about one round trip "
            "(two on new connections).",
            "",
        ]
    return lines


def _feed_mode_targets(modes: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    rows: list[tuple[str, str, bool | None]] = []
    by_mode = modes["modes"]
    first_rate = modes["rates"][0]
    for name, ratios in modes["best_rate_vs_pull"].items():
        bests = {m: by_mode[m]["reads"][name]["best_rate_within_p99_50ms"] for m in by_mode}
        at_first = {m: by_mode[m]["reads"][name]["p99_ms_at_first_rate"] for m in by_mode}
        # The 10x is for the largest F; at F = 200, at least as good as pull.
        need = 10 if name.startswith(f"F{modes['largest_followed']}-") else 1
        rows.append(
            (
                f"feed {name}: best rate within p99 50 ms, push and hybrid >= {need}x pull's",
                ", ".join(f"{m} {bests[m]:g}/s" for m in bests)
                + (
                    f" ({ratios['push']}x, {ratios['hybrid']}x)"
                    if bests["pull"]
                    else " (pull: no offered rate within p99 50 ms)"
                ),
                all(r is not None and r >= need for r in ratios.values())
                if bests["pull"]
                else all(bests[m] > 0 for m in ("push", "hybrid")),
            )
        )
        rows.append(
            (
                f"feed {name}: p99 at {first_rate:g} reads/s < 10 ms in push and hybrid",
                ", ".join(f"{m} {at_first[m]} ms" for m in at_first),
                all(at_first[m] < 10 for m in ("push", "hybrid")),
            )
        )
    push = by_mode["push"]["celebrity"]
    hybrid = by_mode["hybrid"]["celebrity"]
    lag = push["fan_out_lag_ms"]
    rows.append(
        (
            f"fan-out lag p99 < 1 s for an author with {push['followers']:,} followers at "
            "the mix's post rate",
            f"p99 {lag['p99_ms']} ms" if lag else "not measured",
            bool(lag) and lag["p99_ms"] < 1000,
        )
    )
    reading = hybrid["followers_reading_at_200_per_s"]
    rows.append(
        (
            "hybrid: the celebrity's post fans out to no timeline, and its followers' reads at "
            "200/s have p99 < 10 ms",
            f"{hybrid['timelines_written']} timelines written; p99 {reading['p99_ms']} ms",
            hybrid["timelines_written"] == 0 and reading["p99_ms"] < 10,
        )
    )
    return rows


def _feed_modes_lines(modes: dict[str, Any]) -> list[str]:
    by_mode = modes["modes"]
    lines = [
        "## feed-modes: pull against push (fan-out on write) and hybrid, same data, same run",
        "",
        f"Reads by one dedicated viewer at offered rates {modes['rates']} until p99 passes "
        f"50 ms. The celebrity is a whale in hybrid mode (WHALE_FOLLOWERS = "
        f"{modes['whale_followers']}).",
        "",
        "| viewer | "
        + " | ".join(f"{m}: best rate within p99 50 ms / p99 at the first rate" for m in by_mode)
        + " |",
        "| --- |" + " --- |" * len(by_mode),
    ]
    for name in modes["best_rate_vs_pull"]:
        cells = [
            f"{by_mode[m]['reads'][name]['best_rate_within_p99_50ms']:g}/s / "
            f"{by_mode[m]['reads'][name]['p99_ms_at_first_rate']} ms"
            for m in by_mode
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| celebrity | followers | timelines built in | its post's fan-out | timelines written | fan-out lag p50 / p99 | followers reading at 200/s p50 / p99 | Redis: timelines, bytes each, bytes per entry |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for mode, result in by_mode.items():
        celeb = result["celebrity"]
        lag = celeb["fan_out_lag_ms"]
        reading = celeb["followers_reading_at_200_per_s"]
        redis = result["redis"]
        lines.append(
            f"| {mode} | {celeb['followers']:,} | {celeb['timelines_built_in_s']} s | "
            f"{'-' if celeb['fan_out_seconds'] is None else str(celeb['fan_out_seconds']) + ' s'} | "
            f"{'-' if celeb['timelines_written'] is None else celeb['timelines_written']} | "
            f"{'-' if not lag else str(lag['p50_ms']) + ' / ' + str(lag['p99_ms']) + ' ms'} | "
            f"{reading['p50_ms']} / {reading['p99_ms']} ms | "
            + (
                "-"
                if not redis
                else f"{redis['timelines']:,}, {redis['bytes_per_timeline_mean']:,} B "
                f"({redis['entries_per_timeline_mean']} entries), {redis['bytes_per_entry']} B"
            )
            + " |"
        )
    if push_redis := by_mode["push"]["redis"]:
        per_entry = push_redis["bytes_per_entry"]
        lines += [
            "",
            f"The seed's arithmetic: a post by an author with 1M followers is 1M timeline writes; "
            f"at {per_entry} bytes an entry here, that is {per_entry * 1e6 / 1e6:.0f} MB written "
            f"(and as much trimmed off the oldest), and 1M timelines of 800 entries hold "
            f"{push_redis['bytes_per_timeline_mean'] * 1e6 / 1e9:.0f} GB.",
        ]
    return [*lines, ""]


def _seed_mix_lines(seed: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    """The same steps under the seed's JOIN (FEED_QUERY=seed), beside Monogram's."""
    lines = [
        "The same load under the seed's JOIN served through the API (`FEED_QUERY=seed`):",
        "",
        "| step | seed: feed p50 / p99 ms, errors | Monogram: feed p50 / p99 ms, errors | "
        f"seed: upload p99 ms | seed CPU cores: {CPU_LEGEND} |",
        "| --- | --- | --- | --- | --- |",
    ]
    for theirs, mine in zip(seed["feed_http_f200"], ours["feed_http_f200"], strict=False):
        lines.append(
            f"| feed only, {theirs['offered_rate']}/s | {theirs['p50_ms']} / {theirs['p99_ms']}, "
            f"{theirs['errors']} | {mine['p50_ms']} / {mine['p99_ms']}, {mine['errors']} | - | "
            f"{_cpu_cell(theirs)} |"
        )
    for theirs, mine in zip(seed["steps"], ours["steps"], strict=False):
        t, m = theirs["operations"], mine["operations"]
        lines.append(
            f"| mix, {theirs['offered_rate']:.0f}/s | {t['feed']['p50_ms']} / {t['feed']['p99_ms']}, "
            f"{t['feed']['errors']} | {m['feed']['p50_ms']} / {m['feed']['p99_ms']}, "
            f"{m['feed']['errors']} | {t['upload']['p99_ms']} | {_cpu_cell(theirs)} |"
        )
    lines += [
        "",
        f"Highest offered mix rate within the seed's SLOs under the seed's JOIN: "
        f"{_rate(seed['highest_rate_within_slo'])}.",
        "",
    ]
    return lines


def _cpu_cell(step: dict[str, Any]) -> str:
    """Cores each part used during a step; "-" for a PostgreSQL or S3 the bench did not start."""
    cores = step["cpu_cores"]
    return " / ".join(str(cores.get(part, "-")) for part in CPU_PARTS)


def _plot_feed(path: Path, feed: dict[str, Any]) -> None:
    figure, axis = plt.subplots(figsize=(7, 4))
    for kind, style in (("active", "-"), ("quiet", "--")):
        points = [p for p in feed["points"] if p["kind"] == kind]
        xs = [p["followed"] for p in points]
        axis.plot(xs, [p["ours"]["p99_ms"] for p in points], "o" + style, label=f"ours, {kind}")
        axis.plot(
            xs, [p["literal"]["p99_ms"] for p in points], "s" + style, label=f"literal JOIN, {kind}"
        )
    axis.set(xscale="log", yscale="log", xlabel="followed accounts (F)", ylabel="p99 ms, one page")
    _save(figure, axis, path)


def _plot_mix(path: Path, mix: dict[str, Any]) -> None:
    figure, axis = plt.subplots(figsize=(7, 4))
    rates = [s["offered_rate"] for s in mix["steps"]]
    for op in ("feed", "upload", "detail"):
        axis.plot(
            rates, [s["operations"][op]["p99_ms"] for s in mix["steps"]], "o-", label=f"{op} p99"
        )
    axis.axhline(500, color="grey", linestyle=":", label="feed SLO")
    axis.axhline(800, color="black", linestyle=":", label="upload SLO")
    axis.set(yscale="log", xlabel="offered requests/s (the seed's mix)", ylabel="ms")
    _save(figure, axis, path)


def _plot_storm(path: Path, storm: dict[str, Any]) -> None:
    figure, axis = plt.subplots(figsize=(7, 4))
    rates = [s["upload_rate"] for s in storm["steps"]]
    axis.plot(
        rates, [s["feed_p99_ms"] for s in storm["steps"]], "o-", label="feed p99 during the storm"
    )
    axis.axhline(
        storm["feed_p99_at_rest_ms"], color="grey", linestyle=":", label="feed p99 at rest"
    )
    axis.plot(
        rates, [s["upload_p99_ms"] for s in storm["steps"]], "s-", label="upload p99 (stored)"
    )
    axis.set(yscale="log", xlabel="uploads offered per second", ylabel="ms")
    _save(figure, axis, path)


def _bursts(results: dict[str, Any]) -> dict[str, Any]:
    """The celebrity scenario's burst under each feed query it ran, seed's first."""
    celebrity = results.get("celebrity", {})
    return {query: celebrity[query] for query in ("seed", "monogram") if query in celebrity}


def _plot_celebrity(path: Path, celebrity: dict[str, Any]) -> None:
    """Requests waiting for a pooled connection, and feed reads answered, over the burst."""
    figure, (waiting, answered) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for query, c in celebrity.items():
        style = "--" if query == "seed" else "-"
        times = [t for t, _ in c["pool_waits_over_time"]]
        waiting.plot(times, [w for _, w in c["pool_waits_over_time"]], style, label=query)
        reads = [(t, status) for name, t, status in c["answers_over_time"] if name == "feed"]
        ok = [t for t, status in reads if status == 200]
        shed = [t for t, status in reads if status != 200]
        answered.plot(ok, range(1, len(ok) + 1), style, label=f"{query}: 200")
        if shed:
            answered.plot(
                shed, range(1, len(shed) + 1), style + "o", ms=2, label=f"{query}: not 200"
            )
    waiting.set(ylabel="waiting for a connection")
    waiting.legend()
    waiting.grid(True, alpha=0.3)
    answered.set(xlabel="seconds since the burst began", ylabel="feed reads answered")
    _save(figure, answered, path)


def _save(figure: Any, axis: Any, path: Path) -> None:
    axis.legend()
    axis.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def stamp_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


# --- overload -------------------------------------------------------------------------------


def feed_p99_bound(rest_p99: float) -> float:
    """The issue's bound on the feed's p99 during an upload storm."""
    return max(1.5 * rest_p99, rest_p99 + 10)


def _overload_targets(over: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    rows: list[tuple[str, str, bool | None]] = []
    feed = over["feed"]
    if feed["capacity"] is not None:
        capacity = feed["capacity"]["ok_per_s"]
        for step, floor in zip(feed["admission"], (0.9, 0.8), strict=True):
            share = step["ok_per_s"] / max(capacity, 1e-9)
            rows.append(
                (
                    f"feed at {step['multiple']:g}x capacity: goodput >= {floor:.0%} of the "
                    "capacity step's, admitted p99 < 50 ms, refusals p99 < 20 ms, only 200 and 503",
                    f"{step['ok_per_s']}/s ({share:.0%} of {capacity}/s), p99 {step['ok_p99_ms']} ms, "
                    f"refusals p99 {step['refused_p99_ms']} ms, statuses {step['statuses']}",
                    share >= floor
                    and (step["ok_p99_ms"] or 0) < 50
                    and (step["refused_p99_ms"] or 0) < 20
                    and step["other_errors"] == 0
                    and step["connection_errors"] == 0,
                )
            )
    uploads = over["uploads"]
    if uploads["sustainable"] is not None:
        base = uploads["sustainable"]["upload"]["ok_per_s"]
        rest = uploads["rest"]["feed"]["ok_p99_ms"]
        for step in uploads["admission"]:
            up, feed_p99 = step["upload"], step["feed"]["ok_p99_ms"]
            rows.append(
                (
                    f"upload storm at {step['multiple']:g}x the sustainable rate: stored >= 90% of "
                    "it, accepted p99 < 800 ms, refusals p99 < 50 ms, feed p99 <= max(1.5x rest, "
                    "rest + 10 ms)",
                    f"{up['ok_per_s']}/s stored ({up['ok_per_s'] / max(base, 1e-9):.0%} of "
                    f"{base}/s), p99 {up['ok_p99_ms']} ms, refusals p99 {up['refused_p99_ms']} ms, "
                    f"feed p99 {feed_p99} ms (rest {rest} ms)",
                    up["ok_per_s"] >= 0.9 * base
                    and (up["ok_p99_ms"] or 0) < 800
                    and (up["refused_p99_ms"] or 0) < 50
                    and (feed_p99 or 0) <= feed_p99_bound(rest or 0),
                )
            )
    native = over["native"]
    if native.get("busy"):
        calm, busy = native["calm"], native["busy"]
        rows.append(
            (
                "hey at 1.5x the calm rate (128 paced connections): only 200 and 503, no connection "
                "errors, 200s >= 90% of the calm rate, p99 < 100 ms",
                f"{busy['ok_per_s']}/s of 200 against calm {calm['ok_per_s']}/s, statuses "
                f"{busy['statuses']}, {busy['connection_errors']} connection errors, p99 "
                f"{busy['p99_ms']} ms",
                set(busy["statuses"]) <= {"200", "503"}
                and busy["connection_errors"] == 0
                and busy["ok_per_s"] >= 0.9 * calm["ok_per_s"]
                and (busy["p99_ms"] or 0) < 100,
            )
        )
    return rows


def _overload_lines(over: dict[str, Any]) -> list[str]:
    feed, uploads, native = over["feed"], over["uploads"], over["native"]
    lines = [
        "## overload: past capacity, with admission control and without it (the old behaviour)",
        "",
        f"Feed reads only, F = {feed['followed']}, straight to the service processes. The ramp "
        "finds the capacity: the highest offered rate with 99% answered 200 and p99 under 50 ms.",
        "",
        "| step | offered/s | 200/s | 200 p50 / p99 ms | 503/s | 503 p99 ms | p99 of all ms | statuses "
        "| load generator's own lag p50 / p99 ms | service loop lag median / max ms | shedding "
        "pressure max | reads limit min-max |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def row(label: str, s: dict[str, Any]) -> str:
        return (
            f"| {label} | {s['offered_per_s']:g} | {s['ok_per_s']} | {s['ok_p50_ms']} / "
            f"{s['ok_p99_ms']} | {s['refused_per_s']} | {s['refused_p99_ms'] or '-'} | "
            f"{s['all_p99_ms']} | {s['statuses']} | {s['load_generator_lag_p50_ms']} / "
            f"{s['load_generator_lag_p99_ms']} | {s.get('service_loop_lag_median_ms', '-')} / "
            f"{s.get('service_loop_lag_max_ms', '-')} | {s.get('service_pressure_max', '-')} | "
            f"{s.get('service_reads_limit_min', '-')}-{s.get('service_reads_limit_max', '-')} |"
        )

    lines += [row("ramp", s) for s in feed["ramp"]]
    if feed["capacity"] is None:
        lines.append("| no step met the bound: the multiples are of the lowest rate |" + " |" * 11)
    lines += [row(f"{s['multiple']:g}x, admission", s) for s in feed["admission"]]
    lines += [row(f"{s['multiple']:g}x, old behaviour", s) for s in feed["old"]]
    lines += [
        "",
        f"Upload storm: 2 MB V0 uploads (Expect: 100-continue) under {uploads['feed_rate']:g} feed "
        "reads/s. The ramp finds the sustainable rate (95% stored, p99 under 800 ms). Old "
        "behaviour: no admission control, a fixed 2 s wait for an image worker. Image workers "
        "run at nice 10 (IMAGE_WORKER_SCHEDULING=nice) but in the SCHED_IDLE run.",
        "",
        "| step | uploads offered/s | stored/s | accepted p50 / p99 ms | 503/s | 503 p99 ms | "
        "statuses | feed p99 ms | feed bound ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def storm_row(label: str, s: dict[str, Any], rest: dict[str, Any]) -> str:
        up, rest_p99 = s["upload"], rest["feed"]["ok_p99_ms"] or 0
        return (
            f"| {label} | {up['offered_per_s']:g} | {up['ok_per_s']} | {up['ok_p50_ms']} / "
            f"{up['ok_p99_ms']} | {up['refused_per_s']} | {up['refused_p99_ms'] or '-'} | "
            f"{up['statuses']} | {s['feed']['ok_p99_ms']} | {feed_p99_bound(rest_p99):.1f} |"
        )

    rest = uploads["rest"]
    lines.append(f"| at rest | 0 | - | - | - | - | - | {rest['feed']['ok_p99_ms']} | - |")
    lines += [storm_row("ramp", s, rest) for s in uploads["ramp"]]
    if uploads["sustainable"] is None:
        lines.append("| no step was sustainable: the multiples are of the lowest rate |" + " |" * 8)
    lines += [storm_row(f"{s['multiple']:g}x, admission", s, rest) for s in uploads["admission"]]
    nice = uploads["bulkhead_idle"]
    lines.append(
        f"| at rest (SCHED_IDLE run) | 0 | - | - | - | - | - | {nice['rest']['feed']['ok_p99_ms']} | - |"
    )
    lines.append(
        storm_row(
            f"{nice['step']['multiple']:g}x, admission, SCHED_IDLE", nice["step"], nice["rest"]
        )
    )
    old_rest = uploads["old_rest"]
    lines.append(
        f"| at rest (old run) | 0 | - | - | - | - | - | {old_rest['feed']['ok_p99_ms']} | - |"
    )
    lines += [storm_row(f"{s['multiple']:g}x, old behaviour", s, old_rest) for s in uploads["old"]]
    lines.append("")
    if native.get("busy"):
        calm, busy = native["calm"], native["busy"]
        lines += [
            "hey against one service process (per-user limit lifted):",
            "",
            "| run | connections | offered/s | 200/s | 503/s | p99 of all ms | statuses | connection errors |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            f"| calm | {calm['connections']} | closed loop | {calm['ok_per_s']} | {calm['refused_per_s']} | "
            f"{calm['p99_ms']} | {calm['statuses']} | {calm['connection_errors']} |",
            f"| 1.5x, paced (-q {busy['per_connection_qps']}) | {busy['connections']} | "
            f"{busy['offered_per_s']} | {busy['ok_per_s']} | {busy['refused_per_s']} | "
            f"{busy['p99_ms']} | {busy['statuses']} | {busy['connection_errors']} |",
            "",
        ]
    elif not native.get("available", True):
        lines += [f"hey: {native['why']}", ""]
    return lines
