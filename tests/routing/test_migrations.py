"""routing_0003 over existing data: delivery rows get their lead id from the body; and back."""

from __future__ import annotations

import json

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection

from shared.db import create_engine


def _alembic(conn: Connection, action: str, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", "services.routing:migrations")
    cfg.attributes["connection"] = conn
    cfg.attributes["version_table"] = "alembic_version_routing"
    getattr(command, action)(cfg, revision)


async def test_0003_backfills_delivery_lead_ids_and_downgrades(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_alembic, "downgrade", "routing_0002")
        async with engine.begin() as conn:
            for i, body in enumerate([json.dumps({"subject": "lead-1", "data": {}}), "not json"]):
                await conn.execute(
                    text(
                        "INSERT INTO routing_webhook_deliveries (webhook, url, event_id,"
                        " event_type, body, state, attempts, next_attempt_at, created_at)"
                        " VALUES ('crm', 'https://x.example', :eid, 't', :body, 'delivered',"
                        " 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                    ),
                    {"eid": f"e{i}", "body": body},
                )
        async with engine.begin() as conn:
            await conn.run_sync(_alembic, "upgrade", "head")
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text("SELECT event_id, lead_id FROM routing_webhook_deliveries ORDER BY id")
                )
            ).all()
            tomb = await conn.execute(text("SELECT count(*) FROM routing_lead_tombstones"))
        assert [tuple(r) for r in rows] == [("e0", "lead-1"), ("e1", None)]
        assert tomb.scalar_one() == 0
    finally:
        await engine.dispose()
