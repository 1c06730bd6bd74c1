"""Start-up refuses dev credentials, weak tokens and a missing database outside dev mode."""

from __future__ import annotations

from typing import Any

import pytest

from shared.settings import SettingsError, load_settings

STRONG = "a-strong-admin-token-0123456789"
PROD: dict[str, Any] = dict(
    leadflow_dev=False,
    leadflow_api_token=STRONG,
    database_url="postgresql://u:p@db/leadflow",
)


@pytest.mark.parametrize(
    ("override", "variable"),
    [
        ({"leadflow_api_token": "dev-token"}, "LEADFLOW_API_TOKEN"),
        ({"leadflow_api_token": "short-token"}, "LEADFLOW_API_TOKEN"),
        ({"leadflow_api_token": f"{STRONG},dev-token"}, "LEADFLOW_API_TOKEN"),
        ({"leadflow_api_token": None}, "LEADFLOW_API_TOKEN"),
        ({"leadflow_read_tokens": "dev-token"}, "LEADFLOW_READ_TOKENS"),
        ({"leadflow_read_tokens": "reader"}, "LEADFLOW_READ_TOKENS"),
        ({"leadflow_write_keys": "wk-site-1,dev-write-key"}, "LEADFLOW_WRITE_KEYS"),
        ({"database_url": None}, "DATABASE_URL"),
        ({"leadflow_session_secret": "too-short"}, "LEADFLOW_SESSION_SECRET"),
    ],
)
def test_outside_dev_mode_weak_or_missing_settings_stop_start_up(
    override: dict[str, Any], variable: str
) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(**{**PROD, **override})
    assert variable in str(err.value)


def test_dev_mode_keeps_its_conveniences() -> None:
    dev = load_settings(leadflow_dev=True, leadflow_api_token="test-token")
    assert dev.api_tokens == ("test-token",)
    assert load_settings(leadflow_dev=True).api_tokens == ("dev-token",)
    assert load_settings(leadflow_dev=True).db_url.startswith("sqlite+aiosqlite:///")


def test_several_tokens_at_once_for_rotation() -> None:
    other = "the-next-admin-token-9876543210"
    reader = "a-read-only-token-abcdefghijkl"
    settings = load_settings(
        **{**PROD, "leadflow_api_token": f"{STRONG}, {other}", "leadflow_read_tokens": reader}
    )
    assert settings.api_tokens == (STRONG, other)
    assert settings.read_tokens == (reader,)
    assert {STRONG, other, reader} <= set(settings.secrets)


def test_an_empty_variable_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # docker-compose.yml passes ``LEADFLOW_CONFIG: ${LEADFLOW_CONFIG:-}``: an empty string that
    # would otherwise read as Path('.') and stop every service ("config .: Is a directory").
    monkeypatch.setenv("LEADFLOW_CONFIG", "")
    monkeypatch.setenv("LEADFLOW_TOPIC_PREFIX", "")
    monkeypatch.setenv("LEADFLOW_CAPTURE_PORT", "")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "")
    settings = load_settings(leadflow_dev=True)
    assert settings.leadflow_config is None
    assert settings.leadflow_topic_prefix == "leadflow."
    assert settings.leadflow_capture_port == 8001
    assert settings.kafka_bootstrap_servers is None


def test_a_set_variable_still_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADFLOW_CONFIG", "/etc/leadflow/leadflow.yaml")
    monkeypatch.setenv("LEADFLOW_TOPIC_PREFIX", "acme.")
    settings = load_settings(leadflow_dev=True)
    assert str(settings.leadflow_config) == "/etc/leadflow/leadflow.yaml"
    assert settings.leadflow_topic_prefix == "acme."
