"""The scoring service's configuration: the ``scoring:`` section of the Leadflow config file.

Checked against ``config_schema.json`` (a :class:`~shared.config.ConfigError` names the bad
key), then parsed into the frozen :class:`~services.scoring.domain.ruleset.Rules` by the pure
:func:`~services.scoring.domain.ruleset.parse_rules`, which checks what a schema cannot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.scoring.domain.ruleset import Rules, parse_rules
from shared.config import load_config, load_schema, validate_section
from shared.settings import Settings


def load_rules(config: Mapping[str, Any]) -> Rules:
    """Validate the ``scoring:`` section of a loaded config and parse it."""
    validate_section(config, load_schema("services.scoring"))
    return parse_rules(config.get("scoring") or {})


def rules_for(settings: Settings, config: Mapping[str, Any] | None = None) -> Rules:
    """The rules of ``config``, or of the file ``LEADFLOW_CONFIG`` names when there is none."""
    return load_rules(config if config is not None else load_config(settings.leadflow_config))
