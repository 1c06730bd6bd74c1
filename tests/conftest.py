"""Real infrastructure for the suite: a Kafka-compatible broker and PostgreSQL databases.

The broker is the bundled Tansu on a free port, unless ``KAFKA_BOOTSTRAP_SERVERS`` names a real
Kafka. PostgreSQL is ``TEST_PG_URL`` (default: the local server, user postgres). Each test that
asks for a database gets a fresh, migrated one, cloned from a template migrated once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from shared.broker import BundledBroker
from shared.db import create_engine
from shared.migrate import migrate

PG_BASE = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine to completion on its own loop in a thread (fixtures are sync)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


def _pg_url(dbname: str) -> str:
    base = PG_BASE.rsplit("/", 1)[0]
    return f"{base}/{dbname}".replace("postgresql://", "postgresql+asyncpg://", 1)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_BASE)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a real Kafka-protocol broker for the whole session."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    broker = BundledBroker(log_path=tmp_path_factory.mktemp("broker") / "tansu.log").start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated PostgreSQL template database; dropped with every clone at session end."""
    name = f"lf_tmpl_{uuid.uuid4().hex[:8]}"
    _run(_admin(f'CREATE DATABASE "{name}"'))
    _run(_migrate(_pg_url(name)))
    yield name
    _run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file to copy per test."""
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    _run(_migrate(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture
def pg_db_url(pg_template: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test."""
    name = f"lf_t_{uuid.uuid4().hex[:10]}"
    _run(_admin(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
    yield _pg_url(name)
    _run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_db_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A fresh, migrated SQLite database for one test."""
    path = tmp_path / "leadflow.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(params=["postgresql", "sqlite"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh, migrated database, once on PostgreSQL and once on SQLite."""
    fixture = "pg_db_url" if request.param == "postgresql" else "sqlite_db_url"
    url: str = request.getfixturevalue(fixture)
    return url


#: Fixtures that mean a test needs the broker or PostgreSQL (directly or through another one).
INFRASTRUCTURE = frozenset(
    {"kafka_bootstrap", "pg_template", "pg_db_url", "sqlite_template", "db_url"}
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``pure`` every test that needs neither broker nor PostgreSQL nor a process of its
    own: ``pytest -m pure`` is the fast, service-free suite (domain logic, parsing, contracts)."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        marked = item.get_closest_marker("slow") or item.get_closest_marker("infra")
        if not names & INFRASTRUCTURE and marked is None:
            item.add_marker(pytest.mark.pure)
