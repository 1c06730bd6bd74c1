"""Scoring's retention (review M7): forgotten anonymous visitors and old timeline entries go;
the decay sweep leaves cold anonymous visitors alone. PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scoring import commands, queries
from services.scoring.handlers import ScoringHandler
from services.scoring.tables import identities, leads, timeline
from services.scoring.workers import ScoringRetention
from shared.db import create_engine
from shared.events import CloudEvent, InteractionType
from shared.settings import Settings
from shared.topics import Topics
from tests.scoring.helpers import T0, VP_SALES, default_rules, interaction

TOPICS = Topics("ret.")
PAGE = {"event": "page", "name": "Docs", "properties": {}}
DAY = timedelta(days=1)


def _view(anon: str, days_ago: int) -> CloudEvent:
    return interaction(
        InteractionType.TRACKED, email=None, anonymous_id=anon, track=PAGE, at=T0 - days_ago * DAY
    )


async def _rows(engine: AsyncEngine) -> tuple[set[str], set[str], list[tuple[str, str]]]:
    """(lead keys, identity values, (lead key, timeline kind) pairs)."""
    async with engine.connect() as conn:
        keys = {r.id: r.key for r in await conn.execute(select(leads.c.id, leads.c.key))}
        ids = set((await conn.execute(select(identities.c.value))).scalars())
        tl = [
            (keys.get(r.lead_id, "?"), r.kind)
            for r in await conn.execute(select(timeline.c.lead_id, timeline.c.kind))
        ]
    return set(keys.values()), ids, tl


async def test_forgotten_visitors_and_old_timeline_entries_are_deleted(db_url: str) -> None:
    engine = create_engine(db_url)
    handler = ScoringHandler(default_rules(), TOPICS, clock=lambda: T0)
    try:
        async with engine.begin() as conn:
            await handler(
                conn,
                [
                    _view("gone-visitor", 91),
                    _view("recent-visitor", 89),
                    interaction(intent="newsletter", email="old@corp.io", at=T0 - 400 * DAY),
                    interaction(intent="newsletter", email="new@corp.io", at=T0 - 10 * DAY),
                    _view("erased-visitor", 200),
                ],
            )
        async with engine.connect() as conn:
            erased_id = (
                await conn.execute(select(leads.c.id).where(leads.c.key == "erased-visitor"))
            ).scalar_one()
        async with engine.begin() as conn:
            await commands.erase_lead(conn, TOPICS, erased_id, T0 - 100 * DAY)

        retention = ScoringRetention(
            engine, anonymous_keep=90 * DAY, timeline_keep=365 * DAY, page_size=1
        )
        assert await retention.purge(T0) == (1, 1)

        keys, ids, tl = await _rows(engine)
        # the erased lead stays (its key is its id now): counted in the KPIs, nothing personal
        assert keys == {"recent-visitor", "old@corp.io", "new@corp.io", erased_id}
        assert ids == {"recent-visitor", "old@corp.io", "new@corp.io"}
        assert ("gone-visitor", "interaction") not in tl and ("?", "interaction") not in tl
        # the 400-day-old interaction went; its lead's changes (recorded at T0) and the
        # erasure record stay
        assert ("old@corp.io", "interaction") not in tl and ("old@corp.io", "change") in tl
        assert ("new@corp.io", "interaction") in tl and ("recent-visitor", "interaction") in tl
        assert (erased_id, "erased") in tl
        assert await retention.purge(T0) == (0, 0)
    finally:
        await engine.dispose()


async def test_the_sweep_skips_cold_anonymous_visitors(db_url: str) -> None:
    engine = create_engine(db_url)
    handler = ScoringHandler(default_rules(), TOPICS, clock=lambda: T0)
    try:
        hot = [
            interaction(
                InteractionType.TRACKED,
                email=None,
                anonymous_id="hot-visitor",
                track={"event": "page", "name": "Pricing", "properties": {}},
                at=T0,
            )
            for _ in range(3)
        ] + [
            interaction(
                InteractionType.CONTENT_DOWNLOADED,
                email=None,
                anonymous_id="hot-visitor",
                asset={"id": f"g{i}", "type": "ebook", "gated": True},
                at=T0,
            )
            for i in range(2)
        ]
        async with engine.begin() as conn:
            await handler(
                conn,
                [
                    _view("cold-visitor", 0),
                    interaction(intent="newsletter", email="known@corp.io", at=T0),
                    interaction(intent="contact", email="warm@corp.io", contact=VP_SALES, at=T0),
                    *hot,
                ],
            )
        async with engine.connect() as conn:
            everyone = {
                r.key: (r.engagement, r.temperature)
                for r in await conn.execute(
                    select(leads.c.key, leads.c.engagement, leads.c.temperature)
                )
            }
            swept = {lead.key for lead in await queries.leads_to_sweep(conn, "", 100)}
            # leads active since the cutoff were just scored: the sweep leaves them (and their
            # row locks) to the consumer until its next pass
            just_active = await queries.leads_to_sweep(conn, "", 100, T0 - timedelta(seconds=1))
            quiet_since = await queries.leads_to_sweep(conn, "", 100, T0 + timedelta(seconds=1))
        assert everyone["cold-visitor"] == (1, "cold")
        assert everyone["hot-visitor"][1] != "cold"
        assert swept == {"known@corp.io", "warm@corp.io", "hot-visitor"}
        assert just_active == []
        assert {lead.key for lead in quiet_since} == swept
    finally:
        await engine.dispose()


def test_retention_settings_have_the_documented_defaults() -> None:
    settings = Settings(leadflow_dev=True)
    assert settings.leadflow_anonymous_retention_days == 90
    assert settings.leadflow_timeline_retention_days == 365
    assert (
        Settings(leadflow_dev=True, leadflow_anonymous_retention_days=7).model_dump()[
            "leadflow_anonymous_retention_days"
        ]
        == 7
    )
