"""Settings come from the environment, are validated, and are all documented."""

from __future__ import annotations

import re

import pytest

from app.settings import Settings, SettingsError, env_table, redact_url
from tests.helpers import ROOT


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert settings.port == 8080
    assert settings.database_url is None
    assert settings.db_pool_max == 90


@pytest.mark.parametrize("processes", [1, 2, 3, 4, 7, 30, 90])
def test_pools_of_all_processes_fit_the_connection_budget(processes: int) -> None:
    settings = Settings.from_env({"SERVICE_PROCESSES": str(processes)})
    assert settings.db_pool_max >= 1
    assert processes * settings.db_pool_max + settings.db_reserved_connections <= 100


def test_three_processes_share_the_seeds_hundred_connections() -> None:
    settings = Settings.from_env({"SERVICE_PROCESSES": "3"})
    assert settings.db_pool_max == 30


def test_a_budget_too_small_for_the_processes_is_refused() -> None:
    with pytest.raises(SettingsError, match="DB_MAX_CONNECTIONS"):
        Settings.from_env({"SERVICE_PROCESSES": "91"})


@pytest.mark.parametrize(
    ("variable", "value"),
    [("PORT", "eighty"), ("PORT", "70000"), ("DB_ACQUIRE_TIMEOUT", "-1"), ("LOG_LEVEL", "LOUD")],
)
def test_bad_values_name_their_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})


def test_empty_values_mean_the_default() -> None:
    assert Settings.from_env({"PORT": ""}).port == 8080


def test_public_url_defaults_to_the_endpoint_and_bucket() -> None:
    settings = Settings.from_env({"S3_ENDPOINT_URL": "http://127.0.0.1:9000/", "S3_BUCKET": "b"})
    assert settings.public_base_url == "http://127.0.0.1:9000/b"
    cdn = settings.with_overrides(s3_public_base_url="https://img.example.com/")
    assert cdn.public_base_url == "https://img.example.com"


def test_secrets_stay_out_of_repr_and_urls_in_logs_are_redacted() -> None:
    settings = Settings.from_env(
        {"DATABASE_URL": "postgresql://u:pw-123@db/x", "S3_SECRET_ACCESS_KEY": "sk-456"}
    )
    assert "pw-123" not in repr(settings)
    assert "sk-456" not in repr(settings)
    assert redact_url("postgresql://u:pw-123@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert redact_url("postgresql://db/x") == "postgresql://db/x"


def test_to_env_round_trips() -> None:
    settings = Settings.from_env({"PORT": "9001", "S3_BUCKET": "photos", "SERVICE_PROCESSES": "3"})
    assert Settings.from_env(settings.to_env()) == settings


def test_the_configuration_page_documents_every_setting_with_its_default() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    for variable, default, _ in env_table():
        row = re.search(rf"^\| `{variable}` \| ([^|]*) \|", page, re.MULTILINE)
        assert row is not None, f"docs/configuration.md has no row for {variable}"
        assert default in row[1], f"docs/configuration.md gives {variable} another default"
