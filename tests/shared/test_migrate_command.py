"""docs/operations.md: "``leadflow migrate`` applies every migration (each service has its own
Alembic history and version table, so a service can also live in its own database)"
(shared/migrate.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import inspect
from typer.testing import CliRunner

from services.cli import app as cli
from shared.db import create_engine
from shared.migrate import MIGRATION_SETS, migrate
from shared.settings import get_settings

PREFIXES = {"capture": "capture_", "scoring": "scoring_", "routing": "routing_"}


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


def test_leadflow_migrate_applies_every_set_and_can_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("LEADFLOW_DEV", "1")
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        first = runner.invoke(cli, ["migrate"])
        assert first.exit_code == 0, first.output
        again = runner.invoke(cli, ["migrate"])  # nothing left to apply: still fine
        assert again.exit_code == 0, again.output
    finally:
        get_settings.cache_clear()
    tables = asyncio.run(_tables(url))
    assert {version for _, version in MIGRATION_SETS} <= tables
    assert {"processed_events", "outbox", "deadletters"} <= tables
    for prefix in PREFIXES.values():
        assert any(t.startswith(prefix) for t in tables), prefix


@pytest.mark.parametrize("service", sorted(PREFIXES))
async def test_a_service_can_live_in_its_own_database(service: str, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / f'{service}.db'}"
    own = [
        s for s in MIGRATION_SETS if s[0] in ("shared:migrations", f"services.{service}:migrations")
    ]
    assert len(own) == 2
    engine = create_engine(url)
    try:
        await migrate(engine, own)  # its history needs no other service's tables
    finally:
        await engine.dispose()
    tables = await _tables(url)
    assert any(t.startswith(PREFIXES[service]) for t in tables)
    others = [p for s, p in PREFIXES.items() if s != service]
    assert not [t for t in tables if t.startswith(tuple(others))], tables
