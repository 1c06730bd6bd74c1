"""The scoring hot path's shortcuts give what the plain path gives (pure, and on both databases).

Fit is remembered per combination of the values its rules test, the events' lead snapshot is
built once per event, and PostgreSQL writes leads, timeline and outbox with pre-built
``unnest`` statements: none of that may change a score, an event or a stored row.
"""

from __future__ import annotations

from datetime import timedelta

import orjson
from sqlalchemy import select

from services.scoring.domain import engine
from services.scoring.domain.lifecycle import Change
from services.scoring.domain.model import Hit, Lead
from services.scoring.events import lead_events, snapshot, snapshot_data
from services.scoring.handlers import ScoringHandler
from services.scoring.repository import LeadRepository, state_json
from services.scoring.tables import leads, timeline
from shared.contract import LeadEvent
from shared.db import create_engine
from shared.events import InteractionType as IT
from shared.events import LeadType, rfc3339
from shared.messaging_tables import outbox
from shared.topics import Topics
from tests.scoring.helpers import T0, VP_SALES, default_rules, drive, interaction, rules_from


def _fit_from_scratch(lead, rules):  # type: ignore[no-untyped-def]
    points, matched, disqualified = engine._fit_outcome(lead, rules)
    at = rfc3339(lead.profile_at or lead.created_at)
    return points, [{"rule": r, "points": p, "at": at} for r, p in matched], disqualified


def test_remembered_fit_follows_the_profile_and_the_rule_set() -> None:
    rules = default_rules()
    lead = drive([interaction(at=T0, contact=VP_SALES)], rules)
    assert engine.compute_fit(lead, rules) == _fit_from_scratch(lead, rules)
    first = engine.compute_fit(lead, rules)
    lead.job_title, lead.company_size = "Intern", 3
    assert engine.compute_fit(lead, rules) == _fit_from_scratch(lead, rules) != first
    other = rules_from(
        {"fit": [{"id": "intern", "field": "seniority", "match": "individual", "points": 7}]}
    )
    assert engine.compute_fit(lead, other)[0] == 7
    lead.emails.append("jane@gmail.com")
    assert engine.compute_fit(lead, rules) == _fit_from_scratch(lead, rules)


def test_lead_events_carry_the_same_data_as_the_contract_builds() -> None:
    rules = default_rules()
    lead = drive(
        [
            interaction(at=T0, contact=VP_SALES, intent="demo_request"),
            interaction(IT.TRACKED, at=T0 + timedelta(minutes=1), track={"event": "page"}),
        ],
        rules,
    )
    lead.owner = {"id": "rep-1", "name": "Ann", "email": "ann@x.io", "team": "emea"}
    assert snapshot_data(lead) == snapshot(lead).to_data()
    changes = [Change(LeadType.SCORED, {"from": 0, "to": lead.total}), Change(LeadType.QUALIFIED)]
    out = lead_events(lead, changes, "ev-1", IT.FORM_SUBMITTED, T0)
    cause = {"event_id": "ev-1", "type": IT.FORM_SUBMITTED}
    assert [e.data for e in out] == [
        LeadEvent(snapshot(lead), cause, c.change).to_data() for c in changes
    ]


def test_stored_state_is_the_leads_state_and_reads_back() -> None:
    rules = default_rules()
    lead = drive(
        [
            interaction(at=T0, contact=VP_SALES, intent="demo_request"),
            interaction(IT.TRACKED, at=T0 + timedelta(minutes=1), track={"event": "page"}),
        ],
        rules,
    )
    lead.owner = {"id": "rep-1", "name": "Ann", "email": "ann@x.io", "team": "emea"}
    lead.qualified_at = T0 + timedelta(microseconds=5)
    state = orjson.loads(state_json(lead))
    assert state == lead.to_state()
    assert Lead.from_state(state) == lead


async def test_rows_and_events_are_written_in_order(db_url: str) -> None:
    """Timeline entries and outbox rows (the relay's publishing order) keep the order in which
    the batch made them; the stored lead reads back as it was computed."""
    eng = create_engine(db_url)
    try:
        handler = ScoringHandler(default_rules(), Topics("h."))
        batch = [
            interaction(at=T0 + timedelta(seconds=i), email=f"p{i % 7}@corp.io", contact=VP_SALES)
            for i in range(40)
        ]
        async with eng.begin() as conn:
            await handler(conn, batch[:20])
        async with eng.begin() as conn:
            await handler(conn, batch[20:])
        async with eng.connect() as conn:
            causes = [
                r.data["cause"]["event_id"]
                for r in await conn.execute(select(outbox.c.data).order_by(outbox.c.id))
            ]
            entries = [
                r.event_id
                for r in await conn.execute(
                    select(timeline.c.event_id)
                    .where(timeline.c.kind == "interaction")
                    .order_by(timeline.c.id)
                )
            ]
            repo = LeadRepository(conn)
            ids = (await conn.execute(select(leads.c.id))).scalars().all()
            loaded = await repo.load(ids, lock=False)
            stored = {
                r.id: (r.score_total, r.stage)
                for r in await conn.execute(select(leads.c.id, leads.c.score_total, leads.c.stage))
            }
        order = [e.id for e in batch]
        assert entries == order
        assert causes == sorted(causes, key=order.index) and set(causes) <= set(order)
        assert len(loaded) == 7
        assert {i: (lead.total, lead.stage) for i, lead in loaded.items()} == stored
    finally:
        await eng.dispose()


def test_stored_state_of_a_lead_whose_hits_change_between_writes() -> None:
    # the hits' JSON is remembered per list (a lead is written after every batch that touches
    # it): grown, changed in place, shortened or replaced, the state must read as the lead's
    rules = default_rules()
    lead = drive([interaction(at=T0, contact=VP_SALES, intent="demo_request")], rules)

    def check() -> None:
        assert orjson.loads(state_json(lead)) == lead.to_state()

    check()
    for i in range(3):
        lead.hits.append(Hit("page-view", "web", 1, T0 + timedelta(minutes=i), f"e{i}"))
        check()
    lead.hits[1] = Hit("page-view", "web", 2, T0 + timedelta(hours=1), "changed")
    check()
    del lead.hits[0]
    check()
    lead.hits = [*lead.hits, Hit("pricing-page-view", "web", 10, T0, "new-list")]
    check()
    lead.hits.clear()
    check()
