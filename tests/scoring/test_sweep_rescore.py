"""Time passing (the decay sweep) and ``rescore_all``, on PostgreSQL and SQLite."""

from __future__ import annotations

import copy
from datetime import timedelta

from sqlalchemy import select

from services.scoring import queries
from services.scoring.handlers import ScoringHandler
from services.scoring.rescore import rescore_all
from services.scoring.workers import DecaySweep, decay_worker
from shared.config import load_config
from shared.db import create_engine
from shared.events import LeadType
from shared.loops import Periodic
from shared.messaging_tables import outbox
from shared.topics import Topics
from tests.scoring.helpers import T0, VP_SALES, default_rules, interaction, rules_from
from tests.support import make_settings


async def _lead_events(engine: object, ce_type: str) -> list[dict]:
    async with engine.connect() as conn:  # type: ignore[attr-defined]
        rows = await conn.execute(select(outbox.c.data).where(outbox.c.ce_type == ce_type))
        return [r.data for r in rows]


async def test_sweep_cools_hot_leads_once(db_url: str) -> None:
    engine = create_engine(db_url)
    topics = Topics("sweep.")
    rules = default_rules()
    try:
        handler = ScoringHandler(rules, topics, clock=lambda: T0 + timedelta(minutes=1))
        async with engine.begin() as conn:
            await handler(
                conn,
                [
                    interaction(intent="demo_request", contact=VP_SALES, at=T0),
                    interaction(intent="newsletter", email="n@x.io", at=T0),
                ],
            )
        clock = {"now": T0 + timedelta(days=5)}
        sweep = DecaySweep(engine, rules, topics, clock=lambda: clock["now"], page_size=1)
        assert await sweep.sweep_once() == 0  # still hot after 5 days
        clock["now"] = T0 + timedelta(days=20)
        assert await sweep.sweep_once() == 1  # hot → warm
        assert await sweep.sweep_once() == 0  # nothing new to say
        clock["now"] = T0 + timedelta(days=45)
        assert await sweep.sweep_once() == 1  # warm → cold
        changes = [d["change"] for d in await _lead_events(engine, LeadType.TEMPERATURE_CHANGED)]
        assert {"from": "hot", "to": "warm"} in changes and {
            "from": "warm",
            "to": "cold",
        } in changes
        async with engine.connect() as conn:
            page, _ = await queries.list_leads(conn, email="jane@acme.com")
        lead = page[0]
        assert (lead.temperature, lead.stage) == ("cold", "SQL")  # stage stays
        # the demo's 60 points, half-life 30 days, 45 days on: 60 * 0.5**1.5 = 21.2
        assert lead.engagement == 21
    finally:
        await engine.dispose()


async def test_rescore_all_applies_new_rules_without_double_counting(db_url: str) -> None:
    settings = make_settings("127.0.0.1:1", db_url)
    engine = create_engine(db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    try:
        handler = ScoringHandler(default_rules(), topics)
        async with engine.begin() as conn:
            await handler(
                conn,
                [
                    interaction(intent="newsletter", email="a@x.io"),
                    interaction(intent="newsletter", email="a@x.io"),
                    interaction(intent="generic", email="b@x.io"),
                ],
            )
        config = copy.deepcopy(load_config())
        for rule in config["scoring"]["engagement"]["rules"]:
            if rule["id"] == "newsletter-signup":
                rule["points"] = 25
        assert await rescore_all(settings, config) == 1
        assert await rescore_all(settings, config) == 0
        async with engine.connect() as conn:
            a, _ = await queries.list_leads(conn, email="a@x.io")
            b, _ = await queries.list_leads(conn, email="b@x.io")
        assert a[0].engagement == 25 and a[0].temperature == "warm"
        assert b[0].engagement == 10
        scored = await _lead_events(engine, LeadType.SCORED)
        assert any(d["cause"]["type"] == "io.leadflow.scoring.rescore" for d in scored)
    finally:
        await engine.dispose()


def test_the_decay_sweep_runs_on_the_shared_periodic_loop() -> None:
    rules = rules_from({"sweep_interval_seconds": 17})
    sweep = DecaySweep(create_engine("sqlite+aiosqlite://"), rules, Topics("p."))
    worker = decay_worker(sweep)
    assert isinstance(worker, Periodic)
    assert (worker.every, worker.work) == (17, sweep.sweep_once)
