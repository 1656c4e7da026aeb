"""Every bench scenario runs at a tiny size, so the bench code cannot rot unnoticed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.__main__ import SCENARIOS
from tests.helpers import ROOT

pytestmark = pytest.mark.slow  # each test starts processes of its own


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--size", "tiny", "--out", str(out), "all"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert "bench report:" in run.stdout
    # Every load step says how it is going while it runs: rate, p99 and errors so far.
    assert re.search(r"/s offered, \d+ s left: feed \d+/s p99 \d+ ms, \d+ errors", run.stderr)
    return out


def result_of(out: Path, scenario: str) -> dict[str, Any]:
    (path,) = out.glob(f"{scenario}-*.json")
    data: dict[str, Any] = orjson.loads(path.read_bytes())
    assert data["facts"]["size"] == "tiny"
    return data["result"]  # type: ignore[no-any-return]


@pytest.mark.timeout(450)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_each_scenario_writes_its_figures(tiny_run: Path, scenario: str) -> None:
    result = result_of(tiny_run, scenario)
    if scenario == "thumbnail":
        for image in result["images"].values():
            assert image["ours_cpu_ms_median"] > 0
            assert image["naive_cpu_ms_median"] > 0
            assert image["v1_sizes_cpu_ms_median"] > 0
            assert image["v1_sizes_decoded_each_cpu_ms_median"] > 0
    elif scenario == "feed-vs-follows":
        assert len(result["points"]) == 6  # 3 values of F, active and quiet
        for point in result["points"]:
            assert point["ours"]["count"] > 0
            assert point["literal"]["count"] > 0
            assert point["literal_post_rows"] > 0
    elif scenario == "mix":
        # Under the seed's JOIN too, served through the API (FEED_QUERY=seed).
        assert result["feed_query"] == "monogram"
        assert result["seed"]["feed_query"] == "seed"
        assert result["seed"]["steps"][0]["operations"]["feed"]["ok"] > 0
        assert result["seed"]["feed_http_f200"][0]["ok"] > 0
        step = result["steps"][0]
        assert set(step["operations"]) == {"feed", "detail", "upload", "post", "like"}
        assert step["operations"]["feed"]["ok"] > 0
        assert step["operations"]["upload"]["statuses"].get("201", 0) > 0
        assert step["service_cpu_cores"] > 0
        # The bench started PostgreSQL and S3 itself, so it can say what each of them used.
        assert set(step["cpu_cores"]) == {
            "service",
            "image_workers",
            "balancer",
            "postgresql",
            "s3",
            "load_generator",
            "redis",
        }  # no media worker runs in the mix: V0's uploads
        # The same reads straight to the processes say what the balancer costs in capacity.
        assert result["feed_http_f200_direct"][0]["ok"] > 0
        assert result["seed"]["feed_http_f200_direct"] == []
        feed_only = result["feed_http_f200"][0]
        assert feed_only["ok"] > 0
        # Hundreds of feed reads a second keep each part busy; the mix's first tiny step is
        # too light to show PostgreSQL's share at two decimals.
        assert feed_only["cpu_cores"]["postgresql"] > 0
        assert feed_only["cpu_cores"]["load_generator"] > 0
    elif scenario == "costs":
        ops = result["operations"]
        assert set(ops) == {"feed", "detail", "like", "post", "upload", "presign", "upload_v1"}
        for name, op in ops.items():
            assert op["errors"] == 0, (name, op["statuses"])
            assert op["ok"] > 0
            assert op["cpu_ms_per_request"]["service"] >= 0, name
        # At the tiny size a step is one second: only the costliest show above the CPU
        # clock's 10 ms ticks once the idle share is taken off.
        for name in ("feed", "upload", "upload_v1"):
            assert ops[name]["cpu_ms_per_request"]["service"] > 0, name
        upload = ops["upload"]
        assert upload["cpu_ms_per_request"]["image_workers"] > 0
        assert upload["api_bytes_per_request"] > 1_000_000  # the 2 MB body through the API
        # The load went through the balancer, which said what it adds.
        assert ops["feed"]["cpu_ms_per_request"]["balancer"] > 0
        assert result["balancer"]["through_the_balancer"]["count"] > 0
        assert result["balancer"]["straight_to_a_process"]["count"] > 0
        assert result["jwt_verify_us"] > 0
        native = result["native_client"]
        if native["available"]:
            assert native["reads_per_s"] > 0
            assert set(native["statuses"]) == {"200"}
    elif scenario == "v1-uploads":
        for step in result["steps"]:
            assert step["statuses"].get("202", 0) > 0, step["statuses"]
            assert step["media_by_status"].get("ready", 0) == step["statuses"]["202"]
            assert step["complete_to_ready_ms"]["count"] > 0
            assert step["drain_seconds_after_step"] is not None
            # The 2 MB went to S3: only JSON and headers went through the API.
            assert step["api_bytes_per_upload"]["sent"] < 4096
            assert step["presign_body_bytes"] > 0
            assert step["cpu_cores"]["media_workers"] > 0
    elif scenario == "images":
        origin = result["ways"]["origin"]
        assert origin["failed"] == 0
        assert origin["origin_gets_per_page"] == 5  # every image of the page from the origin
        assert origin["images_per_page"]["p50_ms"] >= 150  # at least the simulated round trip
        if "edge_missing" not in result:
            cold, warm = result["ways"]["edge_cold"], result["ways"]["edge_warm"]
            assert cold["failed"] == warm["failed"] == 0
            assert cold["hit_ratio"] == 0  # every image purged before the pass
            assert cold["origin_gets_per_page"] == 5
            assert warm["hit_ratio"] == 1
            assert warm["origin_gets_per_page"] == 0
            assert warm["images_per_page"]["p50_ms"] < 150  # no trip to the origin
    elif scenario == "feed-modes":
        assert set(result["modes"]) == {"pull", "push", "hybrid"}
        for mode in result["modes"].values():
            for reads in mode["reads"].values():
                assert reads["steps"]
                assert all(s["errors"] == 0 for s in reads["steps"])
            assert mode["celebrity"]["followers_reading_at_200_per_s"]["errors"] == 0
        push = result["modes"]["push"]
        # Every follower's timeline was built, so the celebrity's post went into each.
        assert push["celebrity"]["timelines_written"] == push["celebrity"]["followers"]
        assert push["celebrity"]["fan_out_seconds"] is not None
        assert push["celebrity"]["fan_out_lag_ms"]["count"] == 20
        assert push["redis"]["entries_per_timeline_mean"] > 0
        assert result["modes"]["hybrid"]["celebrity"]["timelines_written"] == 0  # a whale
        assert result["modes"]["pull"]["redis"] is None
    elif scenario == "overload":
        feed = result["feed"]
        assert feed["ramp"][0]["ok_per_s"] > 0
        assert feed["ramp"][0]["service_loop_lag_median_ms"] >= 0  # sampled from /metrics
        # A tiny run on a loaded machine may have no step within the bound: the multiples are
        # then of the lowest rate, and run all the same.
        assert feed["capacity"] is None or feed["capacity"] in feed["ramp"]
        # 1.5x and 3x the capacity, with admission control and with the old behaviour.
        for run in ("admission", "old"):
            assert [s["multiple"] for s in feed[run]] == [1.5, 3.0]
            assert all(s["ok_per_s"] > 0 and s["connection_errors"] == 0 for s in feed[run])
        uploads = result["uploads"]
        assert uploads["rest"]["feed"]["ok_p99_ms"] > 0
        assert uploads["sustainable"] is None or uploads["sustainable"] in uploads["ramp"]
        for run in ("admission", "old"):
            assert [s["multiple"] for s in uploads[run]] == [2.0, 3.0]
            assert all(s["upload"]["statuses"] for s in uploads[run])
        assert uploads["bulkhead_idle"]["step"]["upload"]["statuses"]
        native = result["native"]
        if native["available"]:  # hey is a Debian package; CI installs it
            assert native["calm"]["ok_per_s"] > 0
            assert set(native["busy"]["statuses"]) <= {"200", "503"}
    elif scenario == "compare":
        archs = result["architectures"]
        assert [(name, a["feed_mode"]) for name, a in archs.items()] == [
            ("V0", "pull"),
            ("V1", "push"),
            ("V2", "hybrid"),
        ]
        for name, arch in archs.items():
            light = arch["light"]
            acknowledged = light["acknowledged_ms"]["count"]
            assert acknowledged > 0, (name, light["statuses"])
            assert light["ready_ms"]["count"] == acknowledged, name  # each became ready
            assert light["bytes_stored_per_upload"] > light["api_bytes_per_upload"] / 2, name
            assert arch["cost_per_upload"]["dollars"] > 0
            assert all(s["ok"] > 0 for s in arch["feed_at_200_per_s"].values()), name
            assert len(arch["feed_at_200_per_s"]) == 4  # F = 200 and the largest, both kinds
            assert arch["feed_ramp"][0]["ok"] > 0
            assert arch["upload_ramp"][0]["statuses"], name
            assert arch["feed_ran_out"]["busiest"]
            assert arch["seed_deployment"]["upload_limit"]
        v0, v1 = archs["V0"]["light"], archs["V1"]["light"]
        # V0's 2 MB goes through the API and its image workers; V1's goes to S3, and the
        # media worker does the image work.
        assert v0["api_bytes_per_upload"] > 1_000_000
        assert v1["api_bytes_per_upload"] < 4096
        assert v0["cpu_ms_per_upload"]["image_workers"] > 0
        assert v1["cpu_ms_per_upload"]["media_workers"] > 0
        assert "media_workers" not in v0["cpu_ms_per_upload"]
        assert archs["V0"]["far_images"]["way"] == "origin"
        assert archs["V0"]["far_images"]["origin_gets_per_page"] == 5
        if archs["V1"]["far_images"] is not None:  # the edge ways need varnishd
            assert archs["V1"]["far_images"]["way"] == "edge_warm"
            assert archs["V1"]["far_images"]["origin_gets_per_page"] == 0
    elif scenario == "upload-storm":
        assert result["feed_p99_at_rest_ms"] > 0
        assert all(s["uploads_stored_per_s"] > 0 for s in result["steps"])
    else:
        for query in ("seed", "monogram"):
            burst = result[query]
            assert burst["feed_query"] == query
            assert burst["post_status"] == 201
            assert burst["statuses"] == {"200": burst["followers_reading_at_once"]}
            assert burst["the_post_is_on_a_follower_first_page"] is True
            # Uploads and new posts ran in the same burst, and were answered.
            for write in ("upload", "post"):
                assert sum(burst["writes_during_the_burst"][write]["statuses"].values()) == 20
            assert burst["writes_during_the_burst"]["post"]["statuses"].get("201", 0) > 0
            assert burst["pool_waits_over_time"]
            feed_answers = [a for a in burst["answers_over_time"] if a[0] == "feed"]
            assert len(feed_answers) == burst["followers_reading_at_once"]


def test_the_report_has_targets_and_plots(tiny_run: Path) -> None:
    (report,) = tiny_run.glob("report-*.md")
    text = report.read_text()
    assert "## Targets" in text
    assert "## Capacity of the seed's deployment" in text
    assert "`FEED_QUERY=seed`" in text  # the seed's JOIN beside Monogram's query
    # Every figure the seed states, beside this run's, with what it means for the seed's
    # deployment.
    claims = text.split("## The seed's claims", 1)[1].split("\n## ", 1)[0]
    for claim in (
        "requests/s in all",
        "uploads/s the service tier sustains",
        "uploads/s before API bandwidth runs out",
        "share of the service tier's CPU at 100 uploads/s",
        "thumbnail, 150 px",
        "feed p99 at F",
        "post creation",
        "like",
        "JWT validation",
        "the load balancer's added latency",
        "S3 GETs for images",
        "image loading per page for a far user",
        "presigning an upload URL",
    ):
        assert f"| {claim}" in claims, claim
    assert "not measured yet" not in claims
    assert "## images:" in text
    assert "simulated" in text.split("## images:", 1)[1].lower()
    assert "| V1 upload: the API only signs and checks" in claims
    assert "## costs" in text
    compared = text.split("## compare:", 1)[1].split("\n## ", 1)[0]
    for row in ("| V0 here", "| V0, the seed", "| V1 here", "| V1, the seed", "| V2 here"):
        assert row in compared, row
    assert "cost per upload = " in compared
    for plot in ("feed-vs-follows", "mix", "upload-storm", "celebrity"):
        (png,) = tiny_run.glob(f"{plot}-*.png")
        assert png.read_bytes().startswith(b"\x89PNG")
        assert png.name in text
