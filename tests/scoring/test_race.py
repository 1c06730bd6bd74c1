"""Two consumers process the same new person at the same moment (PostgreSQL).

The first transaction holds its new identity row uncommitted; the second blocks on the unique
key, fails with IntegrityError when the first commits, and one retry finds the lead the first
one created: one lead, both events counted once.

This test is about the handler (what the retry sees), so it retries by hand exactly once. How
often the real ConsumerRunner retries a conflict, and what it does when conflicts persist, is
tested with the real runner (tests/scoring/test_race_replicas.py, tests/shared).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scoring.handlers import ScoringHandler
from services.scoring.tables import identities, leads
from shared.bus import claim
from shared.db import create_engine
from shared.events import CloudEvent, InteractionType
from shared.topics import Topics
from tests.scoring.helpers import default_rules, interaction
from tests.support import wait_for, waiting_on_a_lock

GROUP = "leadflow-scoring"


async def _apply_retrying_once(
    engine: AsyncEngine, handler: ScoringHandler, events: Sequence[CloudEvent], attempts: list[str]
) -> None:
    """Claim and apply in one transaction; after an IntegrityError, once more (no more)."""
    for _ in range(2):
        try:
            async with engine.begin() as conn:
                fresh = await claim(conn, GROUP, [e.id for e in events])
                await handler(conn, [e for e in events if e.id in fresh])
            attempts.append("ok")
            return
        except IntegrityError:
            attempts.append("conflict")


async def test_two_consumers_race_on_one_person(pg_db_url: str) -> None:
    engine = create_engine(pg_db_url)
    handler = ScoringHandler(default_rules(), Topics("race."))
    first = interaction(intent="newsletter", email="race@acme.com")
    second = interaction(
        InteractionType.CONTENT_DOWNLOADED,
        email="race@acme.com",
        asset={"id": "g", "type": "ebook", "gated": True},
    )
    attempts: list[str] = []
    try:
        async with engine.begin() as conn:
            await claim(conn, GROUP, [first.id])
            await handler(conn, [first])
            racer = asyncio.create_task(_apply_retrying_once(engine, handler, [second], attempts))
            await wait_for(lambda: waiting_on_a_lock(engine), what="second consumer blocked")
        await asyncio.wait_for(racer, 30)
        assert attempts == ["conflict", "ok"]
        async with engine.connect() as conn:
            rows = (await conn.execute(select(leads.c.state))).scalars().all()
            n_ids = (await conn.execute(select(func.count()).select_from(identities))).scalar()
        assert len(rows) == 1 and n_ids == 1
        state = rows[0]
        assert sorted(h[0] for h in state["hits"]) == ["gated-download", "newsletter-signup"]
        assert state["engagement"] == 20
    finally:
        await engine.dispose()
