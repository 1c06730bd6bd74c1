"""Async SQLAlchemy engine and column types that behave the same on PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, DateTime, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.types import TypeDecorator

JSONType = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware.

    SQLite has no timezone type; without this, values would come back naive there and aware
    on PostgreSQL, and comparisons between the two would raise.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


#: Execution option for a connection that only reads (see :func:`create_engine` on SQLite).
READ_ONLY = "leadflow_read_only"


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine for ``postgresql+asyncpg`` or ``sqlite+aiosqlite``.

    SQLite gets WAL and a busy timeout so that the three services of ``leadflow dev`` can
    share one file.
    """
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # aiosqlite's default transaction handling issues BEGIN lazily; we begin
            # explicitly (IMMEDIATE) so writers queue on the busy timeout instead of failing
            # with "database is locked" at upgrade from a read lock.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Any) -> None:
            # A read-only probe (``READ_ONLY``) takes no write lock: in WAL mode it then never
            # waits behind a writer, so a health check answers while a long batch commits.
            read_only = conn.get_execution_options().get(READ_ONLY, False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


def is_sqlite(conn: AsyncConnection | AsyncEngine) -> bool:
    """Whether this connection or engine talks to SQLite."""
    return conn.dialect.name == "sqlite"


def insert_for(conn: AsyncConnection | AsyncEngine) -> Any:
    """The dialect's ``insert`` construct, which has ``on_conflict_do_nothing/do_update``."""
    return sqlite.insert if is_sqlite(conn) else postgresql.insert


#: See :func:`plan_each_execution`.
_CUSTOM_PLANS = "SET LOCAL plan_cache_mode = force_custom_plan"


async def plan_each_execution(conn: AsyncConnection) -> None:
    """Have PostgreSQL plan the rest of this transaction's statements for their parameters.

    The driver prepares each statement once per connection, and after five executions
    PostgreSQL may keep a generic plan, chosen for a table as it was then. For a statement
    like ``UPDATE outbox … WHERE id = ANY($1)`` prepared while the table was young, that plan
    is a sequential scan, kept as the table grows (a whole outbox read to mark a pass sent).
    For short transactions of simple statements, where planning is cheap. No-op on SQLite.
    """
    if not is_sqlite(conn):
        await conn.exec_driver_sql(_CUSTOM_PLANS)
