"""What assigning a qualified lead asks the database before the routing choice (both
databases): one read says whether the lead was erased, merged away, assigned or queued."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from services.routing.handlers import handle_event
from services.routing.tables import assignments, tombstones, unassigned
from tests.routing.helpers import lead, merged, qualified
from tests.routing.test_merge_and_erasure import apply, routing_db, rows_of


async def test_a_new_lead_costs_one_read_of_its_past(db_url: str) -> None:
    async with routing_db(db_url) as (engine, ctx):
        statements: list[str] = []

        def seen(_c: Any, _cur: Any, statement: str, *_args: Any) -> None:
            statements.append(statement)

        event.listen(engine.sync_engine, "before_cursor_execute", seen)
        fresh = lead()
        async with engine.begin() as conn:
            await handle_event(conn, ctx, qualified(fresh))
        event.remove(engine.sync_engine, "before_cursor_execute", seen)
        # reads of this lead's past: its tombstone, its assignments, its queue entry
        tables = (tombstones.name, assignments.name, unassigned.name)
        reads = [
            s
            for s in statements
            if s.lstrip().startswith("SELECT") and any(f"{t}.lead_id =" in s for t in tables)
        ]
        assert len(reads) == 1, reads
        assert [r["lead_id"] for r in await rows_of(engine)] == [fresh["id"]]

        # a repeated qualified is still a no-op, and a merged-away lead is still routed as
        # the lead it lives on in (once)
        await apply(engine, ctx, qualified(fresh))
        other = lead()
        await apply(engine, ctx, merged(fresh, other["id"]), qualified(other))
        assert [r["lead_id"] for r in await rows_of(engine)] == [fresh["id"]]
