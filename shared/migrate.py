"""Alembic migrations run programmatically on an async engine.

Each service keeps its own migration scripts and version table, so it can own its schema;
``shared`` has one set too (inbox and outbox tables). ``leadflow migrate`` applies them all.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import command, context
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

#: (script location as "package:folder", version table), applied in this order.
MIGRATION_SETS: tuple[tuple[str, str], ...] = (
    ("shared:migrations", "alembic_version_shared"),
    ("services.capture:migrations", "alembic_version_capture"),
    ("services.scoring:migrations", "alembic_version_scoring"),
    ("services.routing:migrations", "alembic_version_routing"),
)


def _upgrade(conn: Connection, location: str, version_table: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", location)
    cfg.attributes["connection"] = conn
    cfg.attributes["version_table"] = version_table
    command.upgrade(cfg, "head")


async def migrate(engine: AsyncEngine, sets: Sequence[tuple[str, str]] = MIGRATION_SETS) -> None:
    """Bring the database to the newest schema of every migration set."""
    for location, version_table in sets:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade, location, version_table)


def run_env() -> None:
    """Body of every ``env.py``: migrate on the connection handed over by :func:`migrate`."""
    cfg = context.config
    conn = cfg.attributes["connection"]
    context.configure(
        connection=conn,
        target_metadata=None,
        version_table=cfg.attributes["version_table"],
        render_as_batch=conn.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
