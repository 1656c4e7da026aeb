"""/openapi.json describes the whole API; schemathesis finds no 500 and no answer outside it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import orjson
import pytest

from app.api.web import OPENAPI_PATH
from app.main import create_app
from app.settings import Settings
from tests.helpers import PASSWORD, Client, service_process

SPEC = orjson.loads(OPENAPI_PATH.read_bytes())


def test_the_document_is_openapi_3_1_and_names_every_route_the_app_serves(
    settings: Settings,
) -> None:
    assert SPEC["openapi"].startswith("3.1.")
    app = create_app(settings)
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method not in ("HEAD", "*") and route.resource is not None
    }
    described = {(method, path) for path, item in SPEC["paths"].items() for method in item}
    assert served == described


def test_every_error_status_is_described_in_the_error_shape() -> None:
    for path, item in SPEC["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")) and path != "/readyz":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path)
                    # Only the HTTP parser's own 400 may be plain text.
                    assert set(response["content"]) <= {"application/json", "text/plain"}
                    assert status == "400" or set(response["content"]) == {"application/json"}


async def test_the_service_serves_the_document_kept_in_the_repo(client: Client) -> None:
    response = await client.get("/openapi.json")  # no token needed
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.read() == OPENAPI_PATH.read_bytes()


@pytest.mark.slow
@pytest.mark.timeout(0)  # bounded by the run's own time budget and subprocess timeout
def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_schema(
    settings: Settings, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    seconds = request.config.getoption("--schemathesis-seconds")
    with service_process(settings, RATE_LIMIT_PER_SECOND="100000") as (url, _):
        token = _token(url, "schemathesis")
        run = subprocess.run(
            [
                Path(sys.executable).with_name("schemathesis"),
                "run",
                f"{url}/openapi.json",
                "--header",
                f"Authorization: Bearer {token}",
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,"
                "response_schema_conformance,negative_data_rejection",
                "--phases",
                "examples,coverage,fuzzing,stateful",
                # NUL in every string it makes; bidi and zero-width characters come from the
                # text fields' examples in the document.
                "--generation-allow-x00",
                "true",
                "--max-time",
                str(seconds),
                "--seed",
                "20261124",
                # One worker: schemathesis's threads make hypothesis parse lambdas concurrently,
                # which CPython 3.11 can fail with "SystemError: AST constructor recursion depth
                # mismatch" (python/cpython#106905), seen once here.
                "--workers",
                "1",
                "--request-timeout",
                "15",
                "--no-color",
                # Deleting the account that holds the token would leave nothing but 401s to test.
                "--exclude-operation-id",
                "deleteMe",
            ],
            capture_output=True,
            text=True,
            timeout=seconds * 3 + 120,
            cwd=tmp_path,  # where it keeps its own state (.schemathesis/)
        )
    summary = run.stdout[-8000:]
    assert run.returncode == 0, summary
    cases = int(_one(r"(\d+) generated", summary))
    print(f"schemathesis: {cases} cases in {seconds} s, no failures")
    assert cases >= 20 * len(SPEC["paths"]), summary


def _token(url: str, username: str) -> str:
    for path in ("/v1/users", "/v1/auth/token"):
        call = urllib.request.Request(
            f"{url}{path}",
            data=json.dumps({"username": username, "password": PASSWORD}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(call, timeout=10) as response:
            answer = json.load(response)
    token: str = answer["access_token"]
    return token


def _one(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    assert found, text
    return found.group(1)


def test_every_text_field_a_client_sends_has_a_hostile_example_for_schemathesis() -> None:
    """NUL comes from --generation-allow-x00; bidi and zero-width characters from these."""
    hostile = {"\u202e", "\u200b", "\u200c"}
    schemas = SPEC["components"]["schemas"]
    for name in ("SignUp", "Credentials", "NewPost"):
        for field, schema in schemas[name]["properties"].items():
            if "string" in schema["type"]:
                examples = schema.get("examples", [])
                assert any(hostile & set(e) for e in examples), (name, field)
