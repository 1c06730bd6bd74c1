"""Routing's configuration: the ``routing:`` section of the config file, checked against its
JSON Schema and then parsed (references, time zones, durations) into a frozen
:class:`~services.routing.domain.model.RoutingConfig`; errors name the bad key."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from services.routing.domain.config import RoutingConfigError, parse_routing_config
from services.routing.domain.model import RoutingConfig
from shared.config import ConfigError, load_config, load_schema, validate_section
from shared.settings import Settings


def load_routing_config(config: Mapping[str, Any], *, require_https: bool = False) -> RoutingConfig:
    """Validate the ``routing:`` section (schema, then references); stop with a clear message.

    With ``require_https`` (every process outside dev mode) a webhook URL must be ``https://``:
    deliveries carry lead personal data, which must not cross the network in clear text.
    """
    section = config.get("routing")
    validate_section({"routing": section}, load_schema("services.routing"))
    if require_https:
        insecure = insecure_webhook_urls(section or {})
        if insecure:
            raise ConfigError("\n".join(insecure))
    try:
        return parse_routing_config(section or {}, os.environ)
    except RoutingConfigError as exc:
        raise ConfigError(str(exc)) from None


def insecure_webhook_urls(section: Mapping[str, Any]) -> list[str]:
    """One line per ``routing.webhooks[i].url`` that is not ``https://`` (only its scheme and
    host are shown: for Slack, Zapier and the like the path is the credential)."""
    problems = []
    for i, spec in enumerate(section.get("webhooks") or []):
        url = str(spec.get("url", ""))
        parts = urlsplit(url)
        if parts.scheme.lower() != "https":
            problems.append(
                f"invalid config at routing.webhooks[{i}].url: {parts.scheme}://{parts.hostname} "
                "is not https (required outside dev mode: deliveries carry personal data)"
            )
    return problems


def read_routing_config(settings: Settings, raw: Mapping[str, Any] | None = None) -> RoutingConfig:
    """Routing's config from the file ``LEADFLOW_CONFIG`` names (or from ``raw``, already read);
    webhook URLs must be https unless in dev mode."""
    return load_routing_config(
        load_config(settings.leadflow_config) if raw is None else raw,
        require_https=not settings.leadflow_dev,
    )
