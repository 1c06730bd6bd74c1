"""Issue 8 (scoring): bounded leads, erasure races, lead-event keys, ad-platform erasures.

Each test drives the real ScoringHandler on a real database (both where the repository code
is involved; the lock race only exists on PostgreSQL).
"""

from __future__ import annotations

import asyncio

import orjson
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scoring import commands
from services.scoring.domain import profile
from services.scoring.domain.identity import Identifiers
from services.scoring.domain.lifecycle import MAX_HITS_PER_RULE
from services.scoring.domain.profile import MAX_ANONYMOUS_IDS
from services.scoring.events import SOURCE
from services.scoring.handlers import ScoringHandler
from services.scoring.tables import identities, leads
from shared.contract import Contact
from shared.db import create_engine
from shared.events import CloudEvent, InteractionType, LeadType, utcnow
from shared.messaging_tables import outbox
from shared.topics import Topics
from tests.scoring.helpers import T0, VP_SALES, ad_lead, default_rules, interaction
from tests.support import wait_for, waiting_on_a_lock

TOPICS = Topics("i8.")
PAGE = {"event": "page", "name": "Pricing", "properties": {}}


async def _apply(engine: AsyncEngine, handler: ScoringHandler, events: list[CloudEvent]) -> None:
    async with engine.begin() as conn:
        await handler(conn, events)


async def _lead_rows(engine: AsyncEngine) -> list[dict[str, object]]:
    async with engine.connect() as conn:
        return [dict(s) for s in (await conn.execute(select(leads.c.state))).scalars()]


async def _lead_events(engine: AsyncEngine) -> list[tuple[str, str | None, str, bytes]]:
    """(type, partition key, subject, serialised data) of every lead event in the outbox."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(outbox.c.ce_type, outbox.c.partition_key, outbox.c.ce_subject, outbox.c.data)
            .where(outbox.c.source == SOURCE)
            .order_by(outbox.c.id)
        )
        return [(r.ce_type, r.partition_key, r.ce_subject, orjson.dumps(r.data)) for r in rows]


async def test_thousands_of_anonymous_ids_keep_the_lead_and_its_events_small(
    db_url: str,
) -> None:
    """Review C5: 6,000 identify calls with distinct 200-char anonymous ids for one email (what
    anyone with the public write key can send) must not grow a lead event past Kafka's limit."""
    engine = create_engine(db_url)
    handler = ScoringHandler(default_rules(), TOPICS)
    anon_ids = [f"{i:06d}-" + "x" * 193 for i in range(6000)]
    try:
        await _apply(engine, handler, [interaction(intent="contact", email="big@corp.io")])
        for start in range(0, len(anon_ids), 1000):
            chunk = anon_ids[start : start + 1000]
            await _apply(
                engine,
                handler,
                [
                    interaction(InteractionType.IDENTIFIED, email="big@corp.io", anonymous_id=a)
                    for a in chunk
                ],
            )
        # a page view by the newest cookie alone still belongs to the person
        view = interaction(
            InteractionType.TRACKED, email=None, anonymous_id=anon_ids[-1], track=PAGE
        )
        await _apply(engine, handler, [view])

        states = await _lead_rows(engine)
        assert len(states) == 1
        state = states[0]
        assert state["anonymous_ids"] == anon_ids[-MAX_ANONYMOUS_IDS:]
        assert len(orjson.dumps(state)) < 64 * 1024
        async with engine.connect() as conn:
            n_ids = (await conn.execute(select(func.count()).select_from(identities))).scalar()
            kept = set(
                (
                    await conn.execute(
                        select(identities.c.value).where(identities.c.kind == "anon")
                    )
                ).scalars()
            )
        assert n_ids == 1 + MAX_ANONYMOUS_IDS and kept == set(anon_ids[-MAX_ANONYMOUS_IDS:])

        events = await _lead_events(engine)
        assert any(t == LeadType.SCORED and b'"pricing-page-view"' in d for t, _, _, d in events)
        assert max(len(d) for *_, d in events) < 64 * 1024
        assert all(b"anonymous_ids" not in d for *_, d in events)
    finally:
        await engine.dispose()


def test_the_latest_identifiers_are_kept_and_the_primary_ones_never_dropped() -> None:
    lead = profile.new_lead("l", Identifiers("first@x.io", "+14155550100", None), T0)
    profile.add_identifiers(lead, Identifiers("first@x.io", "+14155550100", "cookie-0"))
    dropped = []
    for i in range(1, 15):
        more = Identifiers(f"e{i}@x.io", f"+1415555{i:04d}", f"cookie-{i}")
        dropped += profile.add_identifiers(lead, more)
    assert (lead.email, lead.phone, lead.key) == ("first@x.io", "+14155550100", "first@x.io")
    assert lead.emails == ["first@x.io"] + [f"e{i}@x.io" for i in range(6, 15)]
    assert lead.phones == ["+14155550100"] + [f"+1415555{i:04d}" for i in range(6, 15)]
    assert lead.anonymous_ids == [f"cookie-{i}" for i in range(15)]  # under its bound
    assert ("email", "e1@x.io") in dropped and ("email", "first@x.io") not in dropped
    assert len(dropped) == 2 * 5


async def test_a_merge_keeps_the_bounds(db_url: str) -> None:
    """Review C5: two bounded leads joined are still bounded: identifiers, index rows, hits."""
    engine = create_engine(db_url)
    handler = ScoringHandler(default_rules(), TOPICS)
    phone = "+14155550123"
    try:
        by_phone = [
            interaction(
                InteractionType.TRACKED,
                email=None,
                contact={"phone": phone},
                anonymous_id=f"p-{i:02d}",
                track=PAGE,
            )
            for i in range(40)
        ]
        by_email = [
            interaction(
                InteractionType.TRACKED, email="m@corp.io", anonymous_id=f"e-{i:02d}", track=PAGE
            )
            for i in range(40)
        ]
        # page views of the same rule on both leads: each lead keeps at most the bound
        await _apply(engine, handler, by_phone)
        await _apply(engine, handler, by_email)
        assert len(await _lead_rows(engine)) == 2
        # one form with both: the phone's lead joins the email's
        both = interaction(intent="contact", email="m@corp.io", contact={"phone": phone})
        await _apply(engine, handler, [both])
        (state,) = await _lead_rows(engine)
        anon = state["anonymous_ids"]
        # the survivor's oldest ids went first; the joined lead's follow the survivor's own
        assert anon == [f"e-{i:02d}" for i in range(30, 40)] + [f"p-{i:02d}" for i in range(40)]
        hits = state["hits"]
        assert isinstance(hits, list)
        for rule in ("page-view", "pricing-page-view"):  # a hit: [rule, group, points, at, id]
            assert sum(h[0] == rule for h in hits) == MAX_HITS_PER_RULE
        async with engine.connect() as conn:
            anon_rows = set(
                (
                    await conn.execute(
                        select(identities.c.value).where(identities.c.kind == "anon")
                    )
                ).scalars()
            )
        assert anon_rows == set(anon)
    finally:
        await engine.dispose()


async def test_an_api_erasure_racing_a_batch_does_not_bring_the_person_back(
    pg_db_url: str,
) -> None:
    """Review H2: the batch read the identities before the erasure committed and then waited
    for the lead's lock; once it has the lock the lead is erased and must stay so."""
    engine = create_engine(pg_db_url)
    handler = ScoringHandler(default_rules(), TOPICS)
    first = interaction(
        intent="contact",
        email="dana@acme.example",
        contact={**VP_SALES, "first_name": "Dana", "company": "Acme"},
    )
    second = interaction(
        intent="contact",
        email="dana@acme.example",
        contact={**VP_SALES, "first_name": "Dana", "company": "Acme 2"},
    )
    try:
        await _apply(engine, handler, [first])
        (lead_id,) = [s["id"] for s in await _lead_rows(engine)]
        async with engine.begin() as conn:
            erased = await commands.erase_lead(conn, TOPICS, str(lead_id), utcnow())
            assert erased is not None
            racer = asyncio.create_task(_apply(engine, handler, [second]))
            await wait_for(lambda: waiting_on_a_lock(engine), what="batch waits for the lead")
        await asyncio.wait_for(racer, 30)

        states = await _lead_rows(engine)
        assert len(states) == 1  # no consent: the second form is ignored, not a new lead
        state = states[0]
        assert state["erased_at"] is not None
        assert (state["email"], state["emails"], state["first_name"], state["company"]) == (
            None,
            [],
            None,
            None,
        )
        async with engine.connect() as conn:
            row = (await conn.execute(select(leads.c.email, leads.c.key))).one()
            n_ids = (await conn.execute(select(func.count()).select_from(identities))).scalar()
        assert row == (None, lead_id) and n_ids == 0
        events = await _lead_events(engine)
        erased_at = next(i for i, e in enumerate(events) if e[0] == LeadType.ERASED)
        assert all(b"dana" not in d.lower() for *_, d in events[erased_at:])
    finally:
        await engine.dispose()


async def test_lead_events_are_keyed_by_the_lead_key_and_the_erasure_by_id(db_url: str) -> None:
    """The contract keys ``leadflow.leads`` by the lead key (the email here); once erased, the
    key no longer names the person, so ``lead.erased`` is keyed by the lead id. Routing keeps a
    tombstone for the reordering that allows (review M1)."""
    engine = create_engine(db_url)
    handler = ScoringHandler(default_rules(), TOPICS)
    try:
        demo = interaction(
            intent="demo_request", email="eve@acme-software.example", contact=VP_SALES
        )
        await _apply(engine, handler, [demo])
        (state,) = await _lead_rows(engine)
        async with engine.begin() as conn:
            await commands.erase_lead(conn, TOPICS, str(state["id"]), utcnow())

        events = await _lead_events(engine)
        types = [t for t, *_ in events]
        assert LeadType.QUALIFIED in types and types[-1] == LeadType.ERASED
        keys = [k for _, k, _, _ in events]
        assert set(keys[:-1]) == {"eve@acme-software.example"}
        assert keys[-1] == str(state["id"])
    finally:
        await engine.dispose()


def _platform_event(type_: str, key: str, data: dict[str, object]) -> CloudEvent:
    return CloudEvent(type=type_, source="/leadflow/capture", data=data, key=key)


async def test_a_linkedin_deletion_naming_only_the_platform_lead_erases_it(db_url: str) -> None:
    """Review M4: after ``keep_identifiers_days`` capture no longer knows the email, and its
    erasure request carries only ``linkedin:<lead id>``; scoring must still find the lead."""
    engine = create_engine(db_url)
    handler = ScoringHandler(default_rules(), TOPICS)
    received = ad_lead(
        "linkedin",
        "LI-77",
        Contact(email="pat@corp.example", first_name="Pat", company="Corp"),
        form_id="f-1",
        campaign_id="c-1",
    )
    deleted = ad_lead("linkedin", "LI-77", custom={"reason": "linkedin_lead_deleted"})
    other = ad_lead("linkedin", "LI-78", Contact(email="kim@corp.example"))
    try:
        await _apply(
            engine,
            handler,
            [
                _platform_event(
                    InteractionType.AD_LEAD_RECEIVED, received.lead_key, received.to_data()
                ),
                _platform_event(InteractionType.AD_LEAD_RECEIVED, other.lead_key, other.to_data()),
            ],
        )
        assert deleted.lead_key == "linkedin:LI-77" and deleted.contact is None
        await _apply(
            engine,
            handler,
            [
                _platform_event(
                    InteractionType.ERASURE_REQUESTED, deleted.lead_key, deleted.to_data()
                )
            ],
        )
        by_first = {s["first_name"] or s["email"] or "erased": s for s in await _lead_rows(engine)}
        assert set(by_first) == {"erased", "kim@corp.example"}
        pat = by_first["erased"]
        assert pat["erased_at"] is not None and pat["emails"] == [] and pat["company"] is None
        events = await _lead_events(engine)
        assert [t for t, _, s, _ in events if s == pat["id"]][-1] == LeadType.ERASED
    finally:
        await engine.dispose()
