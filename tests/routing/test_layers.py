"""The routing domain imports no I/O, and routing imports no other service."""

from __future__ import annotations

import ast
from pathlib import Path

import services.routing

ROOT = Path(services.routing.__file__).parent
FORBIDDEN_IN_DOMAIN = (
    "sqlalchemy",
    "aiokafka",
    "fastapi",
    "httpx",
    "asyncpg",
    "aiosqlite",
    "shared.db",
    "shared.bus",
    "shared.outbox",
    "shared.runtime",
    "shared.http",
)


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_domain_is_pure() -> None:
    for path in (ROOT / "domain").rglob("*.py"):
        for name in imports(path):
            assert not any(name == f or name.startswith(f + ".") for f in FORBIDDEN_IN_DOMAIN), (
                f"{path.name} imports {name}"
            )


def test_routing_imports_no_other_service() -> None:
    for path in ROOT.rglob("*.py"):
        for name in imports(path):
            if name.startswith("services."):
                assert name.startswith("services.routing"), f"{path.name} imports {name}"
