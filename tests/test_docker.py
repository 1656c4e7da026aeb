"""docker/: no Docker engine runs here, so the files are checked for what they promise.

The compose file must describe the seed's topology and start the same commands `make
stack` runs; the image must run as a non-root user without a compiler.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from app.devstack.edge import VCL, varnishd_binary
from app.devstack.stack import CADDYFILE
from app.settings import Settings
from app.uploads import FRAMING_ALLOWANCE
from tests.helpers import ROOT

DOCKER = ROOT / "docker"


def compose() -> dict[str, dict[str, object]]:
    services: dict[str, dict[str, object]] = yaml.safe_load((DOCKER / "compose.yaml").read_text())[
        "services"
    ]
    return services


def test_compose_runs_the_seeds_topology_with_the_commands_of_make_stack() -> None:
    services = compose()
    replicas = [name for name in services if name.startswith("service-")]
    assert replicas == ["service-1", "service-2", "service-3"]
    for name in replicas:
        service = services[name]
        assert service["command"] == ["python", "-m", "app", "serve"]
        env = service["environment"]
        assert isinstance(env, dict)
        assert env["SERVICE_PROCESSES"] == "3"
        assert env["SERVICE_INSTANCE"] == name
        assert float(env["SHUTDOWN_DRAIN"]) >= 2

    balancer = services["balancer"]
    assert balancer["command"] == [
        "caddy",
        "run",
        "--config",
        "/etc/caddy/Caddyfile",
        "--adapter",
        "caddyfile",
    ]
    assert balancer["volumes"] == ["./Caddyfile:/etc/caddy/Caddyfile:ro"]
    assert (DOCKER / "Caddyfile") == CADDYFILE  # the file `make stack` gives Caddy
    env = balancer["environment"]
    assert isinstance(env, dict)
    assert env["MONOGRAM_UPSTREAMS"].split() == [f"{name}:8080" for name in replicas]
    assert int(env["BALANCER_MAX_BODY"]) == Settings().max_upload_bytes + FRAMING_ALLOWANCE

    assert services["postgres"]["command"] == ["postgres", "-c", "max_connections=100"]
    assert services["init"]["command"] == [
        "sh",
        "-c",
        "python -m app migrate && python -m app init-bucket",
    ]
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in str(
        services["prometheus"]["volumes"]
    )
    assert "./grafana/dashboard.json" in str(services["grafana"]["volumes"])
    scraped = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    targets = scraped["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == [f"{name}:8080" for name in replicas]


def image_stages() -> list[str]:
    return re.split(r"^FROM ", (DOCKER / "Dockerfile").read_text(), flags=re.MULTILINE)[1:]


def test_the_image_runs_as_a_user_and_carries_no_compiler() -> None:
    stages = image_stages()
    final = stages[-1]
    assert len(stages) >= 2, "the dependencies are installed in a stage of their own"
    assert final.startswith("python:${PYTHON_VERSION}-slim")  # slim: no gcc
    assert re.search(r"^ARG PYTHON_VERSION=3\.1[1-3]$", (DOCKER / "Dockerfile").read_text(), re.M)
    assert re.search(r"^USER (?!root)\S+", final, flags=re.MULTILINE)
    assert not re.search(r"apt-get install|build-essential|gcc", final)


def test_the_image_installs_the_locked_dependencies_and_ships_sql_once() -> None:
    dependencies, final = image_stages()
    assert "COPY pyproject.toml uv.lock" in dependencies
    assert re.search(r"^RUN uv sync --locked --no-install-project$", dependencies, re.M)
    assert "pip install" not in final
    # The service runs from source, loading sql/ beside app/ as in a checkout: one copy of each.
    copies = re.findall(r"^COPY (?!--from)(.*)$", final, flags=re.MULTILINE)
    assert copies == ["app ./app", "sql ./sql"]


def test_the_build_context_is_an_allow_list_without_secrets_or_virtualenvs() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    allowed = {p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")}
    assert allowed == {"pyproject.toml", "uv.lock", "README.md", "app", "sql"}
    assert not any(name.startswith((".local", ".venv")) for name in allowed)


def test_the_bucket_set_up_waits_for_a_healthy_s3() -> None:
    services = compose()
    assert "healthcheck" in services["s3"]
    depends = services["init"]["depends_on"]
    assert isinstance(depends, dict)
    assert depends["s3"] == {"condition": "service_healthy"}
    assert depends["postgres"] == {"condition": "service_healthy"}


@pytest.mark.skipif(
    shutil.which("caddy") is None and not (Path(sys.executable).parent / "caddy").exists(),
    reason="caddy absent",
)
def test_caddy_accepts_the_balancer_config_with_the_composes_variables() -> None:
    from app.devstack.stack import caddy_binary

    env = compose()["balancer"]["environment"]
    assert isinstance(env, dict)
    check = subprocess.run(
        [caddy_binary(), "validate", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
        env={"PATH": "/usr/bin:/bin", **{k: str(v) for k, v in env.items()}},
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr[-2000:]


def test_compose_puts_the_edge_cache_in_front_of_s3_with_make_stacks_vcl() -> None:
    services = compose()
    edge = services["edge"]
    command = edge["command"]
    assert isinstance(command, list)
    assert command[:2] == ["varnishd", "-F"]
    assert "/etc/varnish/default.vcl" in command
    assert "vcl_path=/etc/varnish" in command
    assert edge["volumes"] == [
        "./varnish/default.vcl:/etc/varnish/default.vcl:ro",
        "./varnish/compose-site.vcl:/etc/varnish/site.vcl:ro",
    ]
    assert VCL == DOCKER / "varnish" / "default.vcl"  # the file `make stack` gives Varnish
    assert edge["ports"] == ["127.0.0.1:9080:9080"]
    env = services["service-1"]["environment"]
    assert isinstance(env, dict)
    assert env["IMAGE_BASE_URL"] == "http://localhost:9080/monogram"
    assert env["EDGE_PURGE_URL"] == "http://edge:9080"
    site = (DOCKER / "varnish" / "compose-site.vcl").read_text()
    assert '.host = "s3";' in site
    assert '.port = "5000";' in site


@pytest.mark.skipif(varnishd_binary() is None, reason="varnishd (Debian: varnish) absent")
def test_varnish_compiles_the_vcl_with_the_composes_origin(tmp_path: Path) -> None:
    # The compiler resolves the backend's name, and `s3` exists only on compose's network.
    site = (DOCKER / "varnish" / "compose-site.vcl").read_text()
    (tmp_path / "site.vcl").write_text(site.replace('"s3"', '"127.0.0.1"'))
    binary = varnishd_binary()
    assert binary is not None
    check = subprocess.run(
        [
            binary,
            "-C",
            "-j",
            "none",
            "-n",
            str(tmp_path / "work"),
            "-f",
            str(VCL),
            "-p",
            f"vcl_path={tmp_path}",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr[-2000:]
