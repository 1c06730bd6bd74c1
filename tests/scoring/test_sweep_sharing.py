"""The decay sweep shares its work between replicas with SKIP LOCKED on PostgreSQL (docs/scoring.md
"Operations notes"; services/scoring/workers.py): concurrent sweepers cover every lead once and
announce nothing twice, and a sweeper never waits for leads another replica holds."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

from sqlalchemy import select, text

from services.scoring.handlers import ScoringHandler
from services.scoring.tables import leads
from services.scoring.workers import SWEEP_TYPE, DecaySweep
from shared.db import create_engine
from shared.events import LeadType
from shared.messaging_tables import outbox
from shared.topics import Topics
from tests.scoring.helpers import T0, VP_SALES, default_rules, interaction

N = 30
LATER = T0 + timedelta(days=20)  # every hot lead has cooled to warm by then


async def _hot_leads(engine: object, topics: Topics) -> list[str]:
    handler = ScoringHandler(default_rules(), topics, clock=lambda: T0 + timedelta(minutes=1))
    events = [
        interaction(intent="demo_request", contact=VP_SALES, email=f"p{i}@acme.com", at=T0)
        for i in range(N)
    ]
    async with engine.begin() as conn:  # type: ignore[attr-defined]
        await handler(conn, events)
        ids = (await conn.execute(select(leads.c.id).order_by(leads.c.id))).scalars().all()
        temps = set((await conn.execute(select(leads.c.temperature))).scalars())
    assert len(ids) == N and temps == {"hot"}
    return list(ids)


async def _announced(engine: object) -> list[tuple[str, str | None]]:
    """Temperature changes the sweeps announced (not those of the interactions themselves)."""
    async with engine.connect() as conn:  # type: ignore[attr-defined]
        rows = await conn.execute(
            select(outbox.c.event_id, outbox.c.ce_subject, outbox.c.data).where(
                outbox.c.ce_type == LeadType.TEMPERATURE_CHANGED
            )
        )
        return [(r.event_id, r.ce_subject) for r in rows if r.data["cause"]["type"] == SWEEP_TYPE]


async def test_two_sweepers_share_the_leads_and_announce_each_once(pg_db_url: str) -> None:
    topics = Topics("share.")
    engines = [create_engine(pg_db_url) for _ in range(2)]
    try:
        ids = await _hot_leads(engines[0], topics)
        sweeps = [
            DecaySweep(e, default_rules(), topics, clock=lambda: LATER, page_size=3)
            for e in engines
        ]
        emitted = await asyncio.gather(*(s.sweep_once() for s in sweeps))
        assert sum(emitted) == N, emitted  # together: every lead once, no lead twice
        announced = await _announced(engines[0])
        assert len({event_id for event_id, _ in announced}) == len(announced) == N
        assert Counter(subject for _, subject in announced) == Counter(ids)
        async with engines[0].connect() as conn:
            temps = Counter((await conn.execute(select(leads.c.temperature))).scalars())
        assert temps == {"warm": N}
        # A further pass by either finds nothing new to say.
        assert await sweeps[0].sweep_once() == 0 and await sweeps[1].sweep_once() == 0
    finally:
        for e in engines:
            await e.dispose()


async def test_a_sweeper_skips_leads_another_replica_holds(pg_db_url: str) -> None:
    topics = Topics("skip.")
    engine = create_engine(pg_db_url)
    try:
        ids = await _hot_leads(engine, topics)
        held = ids[:5]
        sweep = DecaySweep(engine, default_rules(), topics, clock=lambda: LATER, page_size=4)
        # Another replica is in the middle of a page: its rows stay locked until it commits.
        async with engine.connect() as other, other.begin():
            await other.execute(
                text("SELECT id FROM scoring_leads WHERE id = ANY(:ids) FOR UPDATE"),
                {"ids": held},
            )
            # Not blocked by the held rows (a plain FOR UPDATE would wait here), and not
            # sweeping them either: they are the other replica's work.
            assert await asyncio.wait_for(sweep.sweep_once(), timeout=10) == N - len(held)
            subjects = {s for _, s in await _announced(engine)}
            assert subjects == set(ids) - set(held)
        # Released (that replica is done or died): the next pass sweeps them.
        assert await sweep.sweep_once() == len(held)
        announced = await _announced(engine)
        assert sorted(str(s) for _, s in announced) == sorted(ids)
        assert len({event_id for event_id, _ in announced}) == N
    finally:
        await engine.dispose()
