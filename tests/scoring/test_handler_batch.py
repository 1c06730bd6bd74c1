"""One consumer batch is one set-based unit of work (PostgreSQL and SQLite)."""

from __future__ import annotations

import time

from sqlalchemy import event, select

from services.scoring import queries
from services.scoring.handlers import ASSIGNMENT_TYPES, EVENT_HANDLERS, ScoringHandler, parse
from services.scoring.tables import identities, leads, timeline
from shared.db import create_engine
from shared.events import INTERACTION_TYPES, SALES_TYPES, CloudEvent, RoutingType
from shared.events import InteractionType as IT
from shared.topics import Topics
from tests.scoring.helpers import VP_SALES, default_rules, interaction


async def test_merge_inside_one_batch(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        handler = ScoringHandler(default_rules(), Topics("b."))
        batch = [
            interaction(
                IT.TRACKED,
                email=None,
                anonymous_id="v1",
                track={"event": "page", "name": "Pricing", "properties": {}},
            ),
            interaction(intent="contact", email="m@corp.io", contact=VP_SALES),
            interaction(IT.IDENTIFIED, email="m@corp.io", anonymous_id="v1"),
        ]
        async with engine.begin() as conn:
            await handler(conn, batch)
        async with engine.connect() as conn:
            lead_ids = (await conn.execute(select(leads.c.id))).scalars().all()
            owners = set((await conn.execute(select(identities.c.lead_id))).scalars())
            tl_owners = set((await conn.execute(select(timeline.c.lead_id))).scalars())
            page, _ = await queries.list_leads(conn, email="m@corp.io")
        assert len(lead_ids) == 1 and owners == tl_owners == set(lead_ids)
        assert page[0].anonymous_ids == ["v1"]
        assert {r["rule"] for r in page[0].reasons} >= {"pricing-page-view", "contact-sales"}
    finally:
        await engine.dispose()


async def test_a_batch_costs_a_constant_number_of_statements(db_url: str) -> None:
    engine = create_engine(db_url)
    statements: list[str] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _count(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        statements.append(statement)

    try:
        handler = ScoringHandler(default_rules(), Topics("b."))
        people = [f"p{i}@corp.io" for i in range(100)]
        first = [interaction(intent="newsletter", email=p) for p in people]
        second = [
            interaction(
                IT.CONTENT_DOWNLOADED, email=p, asset={"id": "g", "type": "ebook", "gated": True}
            )
            for p in people
        ]
        for batch in (first, second):
            statements.clear()
            started = time.perf_counter()
            async with engine.begin() as conn:
                await handler(conn, batch + batch[:10])
            elapsed = time.perf_counter() - started
            work = [s for s in statements if not s.upper().startswith(("BEGIN", "PRAGMA"))]
            assert len(work) <= 10, work
            assert elapsed < 5
        async with engine.connect() as conn:
            page, _ = await queries.list_leads(conn, limit=500)
        assert len(page) == 100 and {lead.engagement for lead in page} == {20}
    finally:
        await engine.dispose()


def test_every_consumed_type_has_one_handler_and_others_are_not_read() -> None:
    consumed = (INTERACTION_TYPES - {IT.ERASURE_REQUESTED}) | SALES_TYPES | ASSIGNMENT_TYPES
    assert set(EVENT_HANDLERS) == consumed
    # routing's other events are not scoring's business: not even read
    ignored = CloudEvent(type=RoutingType.SLA_WARNING, source="t", data={"lead_id": ["\x00"]})
    assert parse(ignored) is None
