"""The Meta Graph API version is config (capture.ad_fetch.meta_graph_version), not a constant
buried in META_GRAPH_URL: Meta retires each version about two years after its release."""

from __future__ import annotations

import httpx
import pytest

from services.capture.ad_platforms import DEFAULT_META_GRAPH_VERSION, AdPlatforms, graph_root
from services.capture.config import parse_config
from shared.config import ConfigError, load_config
from shared.settings import Settings


@pytest.mark.parametrize(
    ("url", "version", "root"),
    [
        ("https://graph.facebook.com/v21.0", "v24.0", "https://graph.facebook.com/v24.0"),
        ("https://graph.facebook.com/v21.0/", "v25.0", "https://graph.facebook.com/v25.0"),
        ("http://127.0.0.1:9/graph", "v24.0", "http://127.0.0.1:9/graph"),  # a stand-in
    ],
)
def test_the_version_replaces_the_one_in_the_url(url: str, version: str, root: str) -> None:
    assert graph_root(url, version) == root


def test_config_default_and_override() -> None:
    config = load_config()
    assert parse_config(config).ad_fetch.meta_graph_version == DEFAULT_META_GRAPH_VERSION
    config["capture"].setdefault("ad_fetch", {})["meta_graph_version"] = "v25.0"
    assert parse_config(config).ad_fetch.meta_graph_version == "v25.0"


def test_a_malformed_version_is_refused_naming_the_key() -> None:
    config = load_config()
    config["capture"].setdefault("ad_fetch", {})["meta_graph_version"] = "24"
    with pytest.raises(ConfigError, match=r"capture\.ad_fetch\.meta_graph_version"):
        parse_config(config)


async def test_fetches_call_the_configured_version() -> None:
    settings = Settings(
        leadflow_dev=True
    )  # META_GRAPH_URL default: https://graph.facebook.com/v21.0
    async with httpx.AsyncClient() as client:
        platforms = AdPlatforms(settings, client, meta_graph_version="v24.0")
        assert platforms.meta_graph_root == "https://graph.facebook.com/v24.0"
