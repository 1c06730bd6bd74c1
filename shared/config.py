"""The YAML configuration file: forms, scoring rules, routing rules, reps, SLA policies, calendars.

Each service validates the sections it owns against its own JSON Schema; an invalid file stops
start-up with one message naming the bad key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

DEFAULT_CONFIG = "default_config.yaml"
SECTIONS = ("forms", "capture", "scoring", "routing")
"""The top-level sections of the file; any other key is a misspelling and is refused."""

#: Sections that do nothing when empty, and what that would silently mean.
_EMPTY_MEANS = {
    "scoring": "no rules, so no lead would ever be scored or qualify",
    "routing": "no teams, so no lead would ever be assigned",
}


class ConfigError(SystemExit):
    """The configuration file is missing, unreadable or invalid; the message names the key."""


def default_config_text() -> str:
    """The packaged default configuration, as YAML text."""
    return resources.files("shared").joinpath(DEFAULT_CONFIG).read_text(encoding="utf-8")


def load_config(path: Path | str | None = None) -> dict[str, Any]:
    """Read the YAML config (the packaged default when ``path`` is None)."""
    where = str(path) if path else f"(packaged) {DEFAULT_CONFIG}"
    try:
        text = Path(path).read_text(encoding="utf-8") if path else default_config_text()
    except OSError as exc:
        raise ConfigError(f"config {where}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {where}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {where}: the top level must be a mapping")
    unknown = [str(key) for key in data if key not in SECTIONS]
    if unknown:
        raise ConfigError(
            "\n".join(
                f"invalid config at {key}: unknown section (the sections are {', '.join(SECTIONS)})"
                for key in unknown
            )
        )
    # ``scoring:`` with nothing under it (null) or ``scoring: {}`` would run with zero rules.
    empty = [
        str(key)
        for key in SECTIONS
        if key in data and (data[key] is None or (key in _EMPTY_MEANS and data[key] == {}))
    ]
    if empty:
        raise ConfigError(
            "\n".join(
                f"invalid config at {key}: the section is empty ("
                + _EMPTY_MEANS.get(key, "a key with nothing under it")
                + "); fill it in (`leadflow config show-default` prints a complete example)"
                for key in empty
            )
        )
    return data


def key_path(parts: Any) -> str:
    """Render a JSON-Schema error path as ``scoring.fit[2].points``."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def schema_problems(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Every way ``config`` breaks a JSON Schema, one line each, naming the bad key.

    For each failure the most specific cause is reported (``best_match`` descends into
    ``oneOf``/``anyOf``), so the line names the field, not the shallowest branch that failed.
    """
    validator = Draft202012Validator(schema)
    problems: dict[str, None] = {}
    found: list[ValidationError] = []
    for err in validator.iter_errors(config):
        best = best_match([err])
        found.append(best if best is not None else err)
    for err in sorted(found, key=lambda e: [_path_key(p) for p in e.absolute_path]):
        problems[f"invalid config at {key_path(err.absolute_path)}: {err.message}"] = None
    return list(problems)


def _path_key(part: Any) -> tuple[int, int, str]:
    return (0, part, "") if isinstance(part, int) else (1, 0, str(part))


def validate_section(config: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """Validate ``config`` against a JSON Schema; raise :class:`ConfigError` naming each bad key
    (one line per problem)."""
    problems = schema_problems(config, schema)
    if problems:
        raise ConfigError("\n".join(problems))


def load_schema(package: str, name: str = "config_schema.json") -> dict[str, Any]:
    """Load a JSON Schema shipped inside a package."""
    schema: dict[str, Any] = json.loads(
        resources.files(package).joinpath(name).read_text(encoding="utf-8")
    )
    return schema
