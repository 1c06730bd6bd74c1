"""Reading ``docker-compose.yml`` as Compose would: YAML anchors and merge keys (PyYAML), then
``${VAR}`` interpolation, so a test can run each service with exactly its command and environment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_]\w*)")


class InterpolationError(ValueError):
    """A ``${VAR:?message}`` whose variable is missing: Compose refuses to start."""


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's variable syntax: ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}``, ``${VAR?error}`` and ``$$`` for a literal dollar."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3) or ""
        present = name in env
        val = env.get(name, "")
        if op == ":-":
            return val if val else arg
        if op == "-":
            return val if present else arg
        if (op == ":?" and not val) or (op == "?" and not present):
            raise InterpolationError(f"{name}: {arg}")
        return val

    return _VAR.sub(one, value)


def _walk(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_walk(n, env) for n in node]
    if isinstance(node, dict):
        return {k: _walk(v, env) for k, v in node.items()}
    return node


def load_compose(env: Mapping[str, str], path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The Compose file with anchors merged and variables substituted from ``env``."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    resolved: dict[str, Any] = _walk(raw, env)
    return resolved


def service_environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's ``environment`` (mapping or ``KEY=value`` list) as strings, as the container
    sees it (Compose passes an empty value as an empty string)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {
        str(k): "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
        for k, v in env.items()
    }


def start_order(services: Mapping[str, Any]) -> list[str]:
    """Service names with every dependency before its dependents (Compose's start order)."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order:
            return
        assert name not in path, f"dependency cycle: {' -> '.join((*path, name))}"
        deps = services[name].get("depends_on") or {}
        for dep in deps if isinstance(deps, (list, dict)) else []:
            visit(dep, (*path, name))
        order.append(name)

    for name in services:
        visit(name, ())
    return order
