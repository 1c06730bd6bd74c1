"""A large batch is written in parts while the rest is applied, with the same outcome (PostgreSQL).

The scoring handler sends a batch's rows every ``WRITE_AHEAD_EVERY`` events and applies the
next events while the database stores them. The tests run one batch (leads created early and
changed later, an anonymous visitor merged into a known lead half-way) twice in the same
database, once written at the end and once in parts, and compare everything the batch stored;
then check that a failure while a part is being written leaves the transaction clean.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.scoring import handlers
from services.scoring.handlers import ScoringHandler
from services.scoring.lead_cache import LeadCache
from services.scoring.repository import _WRITE_ALL
from services.scoring.tables import identities, leads, timeline
from shared.events import CloudEvent
from shared.events import InteractionType as IT
from shared.messaging_tables import outbox
from shared.topics import Topics
from tests.scoring.helpers import T0, VP_SALES, default_rules, interaction

TOPICS = Topics("wa.")
PART = 32


def batch() -> list[CloudEvent]:
    """About 200 events: 60 people three times each (their leads are created in the first
    part and changed in later ones), a visitor's page views, and the visitor identified as one
    of the people after the fourth part (a merge: the rest is written at the end)."""
    out: list[CloudEvent] = []
    pricing = {"event": "page", "name": "Pricing", "properties": {}}
    for i in range(5):
        out.append(
            interaction(
                IT.TRACKED,
                email=None,
                anonymous_id="v1",
                channel="tracking",
                at=T0 + timedelta(seconds=i),
                track=pricing,
            )
        )
    for round_ in range(3):
        for j in range(60):
            at = T0 + timedelta(minutes=round_ * 10, seconds=j)
            if round_ == 0:
                ev = interaction(
                    intent="newsletter", email=f"p{j}@corp.io", at=at, contact=VP_SALES
                )
            else:
                ev = interaction(
                    IT.TRACKED, email=f"p{j}@corp.io", at=at, channel="tracking", track=pricing
                )
            out.append(ev)
        if round_ == 1:
            at = T0 + timedelta(minutes=15)
            out.append(interaction(IT.IDENTIFIED, email="p5@corp.io", anonymous_id="v1", at=at))
    return out


async def stored(conn: AsyncConnection) -> dict[str, Any]:
    """Everything the batch wrote, in a comparable form."""

    async def rows(query: Any) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await conn.execute(query)]

    return {
        "leads": await rows(
            select(leads.c.id, leads.c.state, leads.c.score_total, leads.c.stage).order_by(
                leads.c.id
            )
        ),
        "identities": await rows(
            select(identities).order_by(identities.c.kind, identities.c.value)
        ),
        "timeline": await rows(
            select(
                timeline.c.lead_id,
                timeline.c.at,
                timeline.c.kind,
                timeline.c.type,
                timeline.c.event_id,
                timeline.c.data,
            ).order_by(timeline.c.id)
        ),
        "outbox": await rows(
            select(outbox.c.event_id, outbox.c.ce_type, outbox.c.partition_key, outbox.c.data)
            .where(outbox.c.topic == TOPICS.leads)
            .order_by(outbox.c.id)
        ),
    }


async def run_and_roll_back(
    engine: AsyncEngine, events: list[CloudEvent], part: int
) -> tuple[dict[str, Any], int]:
    """Apply the batch with writes every ``part`` events; what it stored and how many writes
    it took; then roll it back (both runs start from the same empty database)."""
    writes: list[str] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _count(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        if statement == _WRITE_ALL:
            writes.append(statement)

    old = handlers.WRITE_AHEAD_EVERY
    handlers.WRITE_AHEAD_EVERY = part
    handler = ScoringHandler(default_rules(), TOPICS, clock=lambda: T0 + timedelta(hours=1))
    try:
        async with engine.connect() as conn:
            tx = await conn.begin()
            await handler(conn, events)
            result = await stored(conn)
            await tx.rollback()
    finally:
        handlers.WRITE_AHEAD_EVERY = old
        event.remove(engine.sync_engine, "before_cursor_execute", _count)
    return result, len(writes)


async def test_written_in_parts_or_at_once_the_batch_stores_the_same(engine: AsyncEngine) -> None:
    events = batch()
    at_once, one = await run_and_roll_back(engine, events, part=10**6)
    in_parts, several = await run_and_roll_back(engine, events, part=PART)
    assert one == 1
    # parts of 32 until the merge (event 126), then the rest at the end
    assert several == 126 // PART + 1
    assert len(at_once["leads"]) == 60  # the visitor's lead was merged away
    assert len(at_once["timeline"]) > len(events) and len(at_once["outbox"]) > 60
    for table in ("leads", "identities", "timeline", "outbox"):
        assert in_parts[table] == at_once[table], table


async def test_a_failure_while_a_part_is_written_leaves_a_clean_transaction(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handler fails while a part's write is still running: it waits for the write to
    end before raising, so the connection can roll back, and nothing stays."""
    events = batch()[:100]
    real = handlers.EVENT_HANDLERS[IT.TRACKED]
    seen = 0

    def failing(b: handlers.Batch, ev: CloudEvent, msg: Any) -> None:
        nonlocal seen
        seen += 1
        if seen == 6:  # event 65, right after the write of events 33-64 was sent
            raise RuntimeError("boom")
        real(b, ev, msg)

    monkeypatch.setattr(handlers, "WRITE_AHEAD_EVERY", PART)
    monkeypatch.setitem(handlers.EVENT_HANDLERS, IT.TRACKED, failing)
    cache = LeadCache()
    handler = ScoringHandler(default_rules(), TOPICS, cache=cache)
    with pytest.raises(RuntimeError, match="boom"):
        async with engine.begin() as conn:
            await handler(conn, events)
    async with engine.begin() as conn:  # the pool's connection is usable again
        assert (await conn.execute(select(leads.c.id))).first() is None
        assert (await conn.execute(select(timeline.c.id))).first() is None
    # the first part's leads were remembered by a transaction that rolled back: never served
    monkeypatch.setitem(handlers.EVENT_HANDLERS, IT.TRACKED, real)
    async with engine.begin() as conn:
        await handler(conn, events)
    assert cache.hits == 0
    async with engine.connect() as conn:
        assert len((await conn.execute(select(leads.c.id))).all()) == 61  # and the visitor's
