"""Routing's configuration: the ``routing:`` section of the config file, checked against its
JSON Schema and then parsed (references, time zones, durations) into a frozen
:class:`~services.routing.domain.model.RoutingConfig`; errors name the bad key."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from services.routing.domain.config import RoutingConfigError, parse_routing_config
from services.routing.domain.model import RoutingConfig
from shared.config import ConfigError, load_config, load_schema, validate_section
from shared.settings import Settings


def load_routing_config(config: Mapping[str, Any]) -> RoutingConfig:
    """Validate the ``routing:`` section (schema, then references); stop with a clear message."""
    section = config.get("routing")
    validate_section({"routing": section}, load_schema("services.routing"))
    try:
        return parse_routing_config(section or {}, os.environ)
    except RoutingConfigError as exc:
        raise ConfigError(str(exc)) from None


def read_routing_config(settings: Settings, raw: Mapping[str, Any] | None = None) -> RoutingConfig:
    """Routing's config from the file ``LEADFLOW_CONFIG`` names (or from ``raw``, already read)."""
    return load_routing_config(load_config(settings.leadflow_config) if raw is None else raw)
