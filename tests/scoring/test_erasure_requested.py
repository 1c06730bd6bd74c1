"""``interaction.erasure_requested`` through the consumer and the real broker, on both databases.

A matching lead is erased exactly as ``DELETE /v1/leads/{id}`` does; a request that matches no
lead leaves the identifiers' hashes behind, so the person is not created without a new consent.
Every "was ignored" check is followed by a consented event under the same Kafka key, which the
consumer processes after it: no sleeps.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import select

from services.scoring.domain.identity import email_hash, identifier_hash
from services.scoring.handlers import ScoringHandler
from services.scoring.main import GROUP_ID
from services.scoring.tables import erased_emails, leads, timeline
from shared.bus import claim
from shared.db import create_engine
from shared.event_schemas import schema_errors
from shared.events import CloudEvent, InteractionType, LeadType
from shared.messaging_tables import processed_events
from shared.topics import Topics
from tests.scoring.helpers import VP_SALES, default_rules, interaction
from tests.scoring.test_service import lead_by_email, produce, running
from tests.support import read_topic, wait_for, wait_for_events

CONSENT = {"marketing": True, "at": "2026-11-26T10:00:00Z"}
PHONE = "+14155550123"


def erasure_request(**ids: Any) -> CloudEvent:
    """An erasure request as capture writes it for a deleted ad-platform lead."""
    contact = {k: v for k, v in ids.items() if k in ("email", "phone", "country")}
    return interaction(
        InteractionType.ERASURE_REQUESTED,
        email=contact.pop("email", None),
        contact=contact,
        channel="ad",
        anonymous_id=ids.get("anonymous_id"),
        ad={"platform": "linkedin", "lead_id": "li-1", "campaign_id": None},
        custom={"reason": "linkedin_lead_deleted"},
        lead_key=ids.get("email") or ids.get("phone") or ids.get("anonymous_id"),
    )


async def _wait_processed(db_url: str, event_id: str) -> None:
    """Wait until the scoring consumer has committed ``event_id`` (its inbox row)."""
    engine = create_engine(db_url)

    async def seen() -> bool:
        async with engine.connect() as conn:
            row = await conn.execute(
                select(processed_events.c.event_id).where(
                    processed_events.c.consumer == GROUP_ID,
                    processed_events.c.event_id == event_id,
                )
            )
            return row.first() is not None

    try:
        await wait_for(seen, what=f"event {event_id} processed")
    finally:
        await engine.dispose()


async def _timeline(client: httpx.AsyncClient, lead_id: str) -> list[dict[str, Any]]:
    return list((await client.get(f"/v1/leads/{lead_id}/timeline")).json()["items"])


async def test_erasure_request_erases_the_lead_like_delete(
    kafka_bootstrap: str, db_url: str
) -> None:
    async with running(kafka_bootstrap, db_url) as (settings, client):
        topics = Topics(settings.leadflow_topic_prefix)
        form = interaction(
            intent="contact",
            email="erase.me@acme.com",
            contact={**VP_SALES, "phone": PHONE, "first_name": "Erin"},
            anonymous_id="cookie-e",
        )
        await produce(kafka_bootstrap, topics.interactions, [form])
        lead = await lead_by_email(client, "erase.me@acme.com")

        # found by the phone alone; delivered twice, erased (and announced) once
        request = erasure_request(phone=PHONE, country="US")
        # Barrier: a second request under the same Kafka key (so the same partition, behind
        # both copies) that matches no lead any more and changes nothing; once the consumer
        # has claimed it, both copies were handled.
        marker = erasure_request(phone=PHONE, country="US")
        assert marker.key == request.key
        await produce(kafka_bootstrap, topics.interactions, [request, request, marker])
        await _wait_processed(db_url, marker.id)

        async def erased() -> dict[str, Any] | None:
            got = (await client.get(f"/v1/leads/{lead['id']}")).json()
            return dict(got) if got["erased"] else None

        gone: dict[str, Any] = await wait_for(erased, what="lead erased")
        assert gone["email"] is None and gone["phone"] is None and gone["first_name"] is None
        assert gone["anonymous_ids"] == [] and gone["emails"] == []
        tl = await _timeline(client, lead["id"])
        assert "erase.me@acme.com" not in str(tl) and "Erin" not in str(tl)
        entry = [i for i in tl if i["kind"] == "erased"]
        assert len(entry) == 1 and entry[0]["type"] == InteractionType.ERASURE_REQUESTED
        assert entry[0]["data"] == {
            "by": "event",
            "channel": "ad",
            "platform": "linkedin",
            "reason": "linkedin_lead_deleted",
        }

        # the erased-email hash is kept: no re-creation without a new consent, by any identifier
        again = interaction(intent="newsletter", email="erase.me@acme.com")
        by_phone = interaction(intent="newsletter", email=None, contact={"phone": PHONE})
        renewed = interaction(intent="newsletter", email="erase.me@acme.com", consent=CONSENT)
        by_phone_ok = interaction(
            intent="newsletter", email=None, contact={"phone": PHONE}, consent=CONSENT
        )
        await produce(kafka_bootstrap, topics.interactions, [again, by_phone, renewed, by_phone_ok])
        back = await lead_by_email(client, "erase.me@acme.com")
        assert back["id"] != lead["id"]
        kinds = [i["event_id"] for i in await _timeline(client, back["id"])]
        assert again.id not in kinds and renewed.id in kinds

        async def phone_lead() -> list[dict[str, Any]]:
            items = (await client.get("/v1/leads")).json()["items"]
            return [i for i in items if i["phone"] == PHONE]

        (by_phone_lead,) = await wait_for(phone_lead, what="the phone's consented lead")
        kinds = [i["event_id"] for i in await _timeline(client, by_phone_lead["id"])]
        assert by_phone.id not in kinds and by_phone_ok.id in kinds

        events = await wait_for_events(
            kafka_bootstrap,
            topics.leads,
            lambda evs: (
                any(e.type == LeadType.ERASED for e in evs)
                and any(e.subject == back["id"] for e in evs)
                and any(e.subject == by_phone_lead["id"] for e in evs)
            ),
        )
        erasures = [e for e in events if e.type == LeadType.ERASED]
        assert len(erasures) == 1 and erasures[0].subject == lead["id"]
        assert erasures[0].data["cause"] == {
            "event_id": request.id,
            "type": InteractionType.ERASURE_REQUESTED,
        }
        assert erasures[0].data["lead"]["email"] is None
        assert all(schema_errors(e) == [] for e in events)
        assert await read_topic(kafka_bootstrap, topics.deadletter) == []


async def test_erasure_request_without_a_lead_blocks_the_person(
    kafka_bootstrap: str, db_url: str
) -> None:
    async with running(kafka_bootstrap, db_url) as (settings, client):
        topics = Topics(settings.leadflow_topic_prefix)
        ghost = erasure_request(email="ghost@nowhere.io", anonymous_id="cookie-g")
        await produce(kafka_bootstrap, topics.interactions, [ghost])
        engine = create_engine(db_url)
        try:

            async def remembered() -> set[str]:
                async with engine.connect() as conn:
                    rows = await conn.execute(select(erased_emails.c.email_hash))
                    return set(rows.scalars())

            hashes = await wait_for(remembered, what="hashes of the unknown person")
            assert hashes == {
                email_hash("ghost@nowhere.io"),
                identifier_hash("anon", "cookie-g"),
                # the platform's lead too (review M4): its ad lead is not re-created either
                identifier_hash("ad", "linkedin:li-1"),
            }
        finally:
            await engine.dispose()
        assert (await client.get("/v1/leads")).json()["items"] == []

        # later interactions of that person: ignored by email or by cookie, until a consent
        form = interaction(intent="demo_request", email="ghost@nowhere.io")
        page = interaction(
            InteractionType.TRACKED,
            email=None,
            anonymous_id="cookie-g",
            track={"event": "page", "name": "Pricing", "properties": {}},
        )
        page_ok = interaction(
            InteractionType.TRACKED,
            email=None,
            anonymous_id="cookie-g",
            consent=CONSENT,
            track={"event": "page", "name": "Home", "properties": {}},
        )
        renewed = interaction(intent="newsletter", email="ghost@nowhere.io", consent=CONSENT)
        await produce(kafka_bootstrap, topics.interactions, [form, page, renewed, page_ok])
        lead = await lead_by_email(client, "ghost@nowhere.io")
        assert [r["rule"] for r in lead["score"]["reasons"]] == ["newsletter-signup"]

        async def two_leads() -> list[dict[str, Any]] | None:
            items = (await client.get("/v1/leads")).json()["items"]
            return list(items) if len(items) == 2 else None

        both = await wait_for(two_leads, what="the cookie's consented lead")
        anon = next(i for i in both if i["id"] != lead["id"])
        anon_tl = [i["event_id"] for i in await _timeline(client, anon["id"])]
        assert page_ok.id in anon_tl and page.id not in anon_tl
        lead_tl = [i["event_id"] for i in await _timeline(client, lead["id"])]
        assert form.id not in lead_tl
        assert not [
            e for e in await read_topic(kafka_bootstrap, topics.leads) if e.type == LeadType.ERASED
        ]


async def test_erasure_in_the_middle_of_a_batch_keeps_the_order(db_url: str) -> None:
    """Before the request: applied then erased; after it: ignored (one batch, one transaction)."""
    engine = create_engine(db_url)
    handler = ScoringHandler(
        default_rules(), Topics("batch."), clock=lambda: datetime(2026, 11, 26, 12, tzinfo=UTC)
    )
    before = interaction(intent="demo_request", email="mid@acme.com", contact=VP_SALES)
    request = erasure_request(email="mid@acme.com")
    after = interaction(intent="newsletter", email="mid@acme.com")
    other = interaction(intent="newsletter", email="other@acme.com")
    try:
        async with engine.begin() as conn:
            await claim(conn, "g", [e.id for e in (before, request, after, other)])
            await handler(conn, [before, request, after, other])
        async with engine.connect() as conn:
            states = (await conn.execute(select(leads.c.state))).scalars().all()
            erased_tl = (
                (await conn.execute(select(timeline.c.event_id).where(timeline.c.kind == "erased")))
                .scalars()
                .all()
            )
        by_email = {s.get("email"): s for s in states}
        assert set(by_email) == {None, "other@acme.com"}
        assert by_email[None]["erased_at"] is not None
        assert erased_tl == [request.id]
    finally:
        await engine.dispose()
