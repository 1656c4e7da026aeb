"""GET /metrics: the seed's six signals, with the right labels, summed across processes."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from app.devstack.postgres import EmbeddedPostgres
from app.devstack.s3 import EmbeddedS3
from app.main import create_app
from app.settings import Settings
from tests.helpers import (
    CORPUS,
    ROOT,
    AiohttpClient,
    Client,
    publish,
    service_process,
    settings_for,
    sign_up,
    upload,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def scrape(client: Client) -> Samples:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    return parse(await response.text())


async def test_an_upload_a_feed_read_and_a_failed_upload_show_in_every_family(
    client: Client,
) -> None:
    author, reader = await sign_up(client, "author"), await sign_up(client, "reader")
    await client.put(f"/v1/following/{author.id}", headers=reader.auth)
    await publish(client, author)  # an upload and a post
    assert (await client.get("/v1/feed", headers=reader.auth)).status == 200
    assert (await upload(client, author, (CORPUS / "logo.svg").read_bytes())).status == 415
    await asyncio.sleep(0.05)

    m = await scrape(client)
    # 1. bandwidth by route
    assert value(m, "monogram_http_request_bytes_total", route="/v1/media") > 20_000
    assert value(m, "monogram_http_response_bytes_total", route="/v1/feed") > 0
    # 2. thumbnails and the queue in front of them
    assert value(m, "monogram_thumbnail_duration_seconds_count", type="jpeg") == 1
    assert value(m, "monogram_thumbnail_duration_seconds_sum", type="jpeg") > 0
    assert value(m, "monogram_thumbnail_cpu_seconds_total", type="jpeg") > 0
    assert value(m, "monogram_thumbnail_queue_wait_seconds_count") == 1
    # 3. feed query time by strategy; request duration by route, method, status class
    assert value(m, "monogram_feed_query_duration_seconds_count") == 1
    assert (
        value(
            m,
            "monogram_http_request_duration_seconds_count",
            route="/v1/feed",
            method="GET",
            status_class="2xx",
        )
        == 1
    )
    assert (
        value(
            m, "monogram_http_requests_total", route="/v1/media", method="POST", status_class="4xx"
        )
        == 1
    )
    # 4. connections: this pool, and the server's sampled from pg_stat_activity
    assert value(m, "monogram_db_pool_connections", state="max") == 90
    assert value(m, "monogram_db_server_connections") >= 1
    assert value(m, "monogram_db_server_max_connections") == 100
    assert ("monogram_db_pool_waiting", frozenset()) in m
    # 5. S3 by operation and outcome
    assert (
        value(m, "monogram_s3_request_duration_seconds_count", operation="PutObject", outcome="ok")
        == 2
    )
    # 6. uploads by result
    assert value(m, "monogram_uploads_total", result="created") == 1
    assert value(m, "monogram_uploads_total", result="unsupported_type") == 1


async def test_routes_are_labelled_by_template_not_by_path(client: Client) -> None:
    me = await sign_up(client, "someone")
    for user_id in (111, 222, 333):
        await client.put(f"/v1/following/{user_id}", headers=me.auth)
    await client.get("/no/such/path")
    m = await scrape(client)
    assert value(m, "monogram_http_requests_total", route="/v1/following/{user_id}") == 3
    assert value(m, "monogram_http_requests_total", route="unmatched") == 1
    routes = {dict(labels).get("route") for (_, labels) in m}
    assert not any(r and r.startswith("/v1/following/1") for r in routes)


async def test_a_metrics_token_protects_the_endpoint(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings.with_overrides(metrics_token="scrape-me")))
    assert (await client.get("/metrics")).status == 401
    allowed = await client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert allowed.status == 200


# --- several processes -------------------------------------------------------------------


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bytes(response.read())


@pytest.mark.slow
def test_counters_of_three_processes_add_up(
    tmp_path: Path,
    postgres: EmbeddedPostgres,
    s3_server: EmbeddedS3,
    bucket: str,
    clean_database: str,
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    settings = settings_for(postgres, s3_server, bucket)
    with ExitStack() as stack:
        urls = [
            stack.enter_context(
                service_process(
                    settings,
                    PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
                    SERVICE_PROCESSES="3",
                    THUMBNAIL_WARM_START="false",
                )
            )[0]
            for _ in range(3)
        ]
        for url, hits in zip(urls, (3, 5, 7), strict=True):
            for _ in range(hits):
                get(f"{url}/healthz")
        for url in urls:  # any process serves the sum of all of them
            m = parse(get(f"{url}/metrics").decode())
            assert value(m, "monogram_http_requests_total", route="/healthz") == 3 + 5 + 7
            assert value(m, "monogram_db_pool_connections", state="max") == 3 * 30
    shutil.rmtree(metrics_dir)


# --- the alert rules and the dashboard ----------------------------------------------------


DOCKER = ROOT / "docker"


async def exported_families(client: Client) -> set[str]:
    response = await client.get("/metrics")
    return {family.name for family in text_string_to_metric_families(await response.text())}


def referenced_families(expression: str) -> set[str]:
    import re

    names = set(re.findall(r"\bmonogram_[a-z0-9_]+", expression))
    return {re.sub(r"_(bucket|count|sum|total)$", "", n) for n in names}


async def test_alert_rules_carry_the_seeds_thresholds_on_real_metrics(client: Client) -> None:
    rules = {
        rule["alert"]: rule
        for group in yaml.safe_load((DOCKER / "prometheus" / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    thresholds = {
        "ApiBandwidthHigh": "> 500e6",
        "ThumbnailSlow": "> 0.8",
        "FeedQuerySlow": "> 0.5",
        "DatabaseConnectionsHigh": "> 0.70",
        "DatabaseConnectionsCritical": "> 0.85",
        "S3Slow": "> 0.3",
        "UploadSuccessLow": "< 0.99",
        # V1: the media job queue's backlog and its failures.
        "MediaBacklogOld": "> 120",
        "MediaJobsFailing": "> 0.05",
    }
    assert set(rules) == set(thresholds)
    exported = await exported_families(client)
    for name, threshold in thresholds.items():
        expression = " ".join(rules[name]["expr"].split())
        assert expression.endswith(threshold), name
        assert referenced_families(expression) <= exported, name


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian: prometheus) absent")
def test_promtool_accepts_the_rules() -> None:
    rules = str(DOCKER / "prometheus" / "alerts.yml")
    check = subprocess.run(
        ["promtool", "check", "rules", rules], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr


async def test_the_dashboard_has_a_panel_for_each_of_the_six_signals(client: Client) -> None:
    dashboard = json.loads((DOCKER / "grafana" / "dashboard.json").read_text())
    panels = dashboard["panels"]
    assert [p["title"][:2] for p in panels[:6]] == ["1.", "2.", "3.", "4.", "5.", "6."]
    assert [p["title"] for p in panels[6:]] == [
        "Requests by service process (spread behind the balancer)",
        "V1: media job queue (waiting, taken) and the oldest job's age",
        "V1: complete to ready (p50, p99) and jobs by outcome",
        "Overload: requests admitted and refused (503) per second, by class",
        "Overload: each class's concurrency limit, and uploads' predicted wait for an image "
        "worker (p99)",
    ]
    exported = await exported_families(client)
    for panel in panels:
        for target in panel["targets"]:
            assert referenced_families(target["expr"]) <= exported, panel["title"]
