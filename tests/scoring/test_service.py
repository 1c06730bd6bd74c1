"""The scoring service end to end: real broker, real PostgreSQL and SQLite, HTTP API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from sqlalchemy import select

from services.scoring.main import build_app
from shared.db import create_engine
from shared.event_schemas import schema_errors
from shared.events import CloudEvent, InteractionType, LeadType, SalesType
from shared.messaging_tables import outbox
from shared.outbox import pending_count
from shared.topics import Topics
from tests.scoring.helpers import VP_SALES, assigned_data, interaction
from tests.support import make_settings, read_topic, wait_for, wait_for_events

AUTH = {"Authorization": "Bearer test-token"}


@asynccontextmanager
async def running(
    kafka_bootstrap: str, db_url: str
) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    settings = make_settings(kafka_bootstrap, db_url)
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        await app.state.runtime.wait_ready()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=AUTH
        ) as client:
            yield settings, client


async def produce(bootstrap: str, topic: str, events: Sequence[CloudEvent]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for ev in events:
            await producer.send_and_wait(
                topic, ev.value(), key=(ev.key or "").encode(), headers=ev.headers()
            )
    finally:
        await producer.stop()


async def lead_by_email(client: httpx.AsyncClient, email: str, **want: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        items = (await client.get("/v1/leads", params={"email": email})).json()["items"]
        if items and all(items[0][k] == v for k, v in want.items()):
            return dict(items[0])
        return None

    return await wait_for(probe, what=f"lead {email} {want}")


async def test_demo_request_becomes_hot_sql_and_is_announced(
    kafka_bootstrap: str, db_url: str
) -> None:
    async with running(kafka_bootstrap, db_url) as (settings, client):
        topics = Topics(settings.leadflow_topic_prefix)
        demo = interaction(
            intent="demo_request", email="jane@acme.com", contact=VP_SALES, anonymous_id="anon-1"
        )
        news = interaction(intent="newsletter", email="newbie@example.org")
        await produce(kafka_bootstrap, topics.interactions, [demo, news])
        lead = await lead_by_email(client, "jane@acme.com", stage="SQL")
        # The demo redelivered after it was committed (so the inbox, not in-batch dedupe, must
        # catch it), then a same-key marker behind it on the same partition: once the marker
        # is in the timeline, the copy has been handled.
        marker = interaction(
            InteractionType.IDENTIFIED, email="jane@acme.com", anonymous_id="anon-1"
        )
        assert marker.key == demo.key
        await produce(kafka_bootstrap, topics.interactions, [demo, marker])
        await _in_timeline(client, lead["id"], marker.id)
        lead = await lead_by_email(client, "jane@acme.com")
        assert (lead["temperature"], lead["status"]) == ("hot", "lead")
        assert lead["email"] == "jane@acme.com" and lead["anonymous_ids"] == ["anon-1"]
        assert lead["score"]["engagement"] == 60 and lead["score"]["fit"] == 45
        cold = await lead_by_email(client, "newbie@example.org")
        assert (cold["temperature"], cold["stage"]) == ("cold", "IQL")

        events = await wait_for_events(
            kafka_bootstrap,
            topics.leads,
            lambda evs: (
                any(e.type == LeadType.QUALIFIED for e in evs)
                and any(e.subject == cold["id"] for e in evs)
            ),
        )
        assert all(schema_errors(e) == [] for e in events), [schema_errors(e) for e in events]
        mine = [e for e in events if e.subject == lead["id"]]
        assert [e.type for e in mine] == [
            LeadType.CREATED,
            LeadType.SCORED,
            LeadType.TEMPERATURE_CHANGED,
            LeadType.STAGE_CHANGED,
            LeadType.QUALIFIED,
        ]
        assert all(e.key == "jane@acme.com" and e.source == "/leadflow/scoring" for e in mine)
        qualified = mine[-1].data
        assert qualified["change"] == {"from": "IQL", "to": "SQL"}
        assert qualified["cause"] == {"event_id": demo.id, "type": InteractionType.FORM_SUBMITTED}
        assert qualified["lead"]["score"]["total"] == 105

        # the API
        got = (await client.get(f"/v1/leads/{lead['id']}")).json()
        assert got == lead
        missing = await client.get("/v1/leads/nope")
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")
        bad = await client.get("/v1/leads", params={"stage": "XQL"})
        assert bad.status_code == 422
        bad_cursor = await client.get("/v1/leads", params={"cursor": "!!"})
        assert bad_cursor.status_code == 400
        page1 = (await client.get("/v1/leads", params={"limit": 1})).json()
        assert len(page1["items"]) == 1 and page1["next_cursor"]
        page2 = (
            await client.get("/v1/leads", params={"limit": 1, "cursor": page1["next_cursor"]})
        ).json()
        assert page2["next_cursor"] is None
        assert {page1["items"][0]["id"], page2["items"][0]["id"]} == {lead["id"], cold["id"]}
        assert (await client.get("/v1/leads", params={"stage": "SQL"})).json()["items"] == [got]
        timeline = (await client.get(f"/v1/leads/{lead['id']}/timeline")).json()
        applied = [i["event_id"] for i in timeline["items"] if i["kind"] == "interaction"]
        assert applied == [demo.id, marker.id] and timeline["next_cursor"] is None


async def test_identify_merges_sales_and_routing_update_override_and_erasure(
    kafka_bootstrap: str, db_url: str
) -> None:
    async with running(kafka_bootstrap, db_url) as (settings, client):
        topics = Topics(settings.leadflow_topic_prefix)
        page = interaction(
            InteractionType.TRACKED,
            email=None,
            anonymous_id="visitor-9",
            track={"event": "page", "name": "Pricing", "properties": {}},
        )
        await produce(kafka_bootstrap, topics.interactions, [page])

        async def anon_lead() -> bool:
            return bool((await client.get("/v1/leads")).json()["items"])

        await wait_for(anon_lead, what="anonymous lead")
        anon = (await client.get("/v1/leads")).json()["items"][0]
        assert anon["email"] is None and anon["key"] == "visitor-9"
        # form fill without the cookie: a separate lead; then identify joins the visitor to it
        form = interaction(intent="contact", email="joe@corp.io", contact=VP_SALES)
        ident = interaction(
            InteractionType.IDENTIFIED, email="joe@corp.io", anonymous_id="visitor-9"
        )
        await produce(kafka_bootstrap, topics.interactions, [form, ident])
        lead = await lead_by_email(client, "joe@corp.io", anonymous_ids=["visitor-9"])
        assert any(r["rule"] == "pricing-page-view" for r in lead["score"]["reasons"])
        assert (await client.get(f"/v1/leads/{anon['id']}")).json()["id"] == lead["id"]
        assert len((await client.get("/v1/leads")).json()["items"]) == 1
        # a different identified person on the same device is not merged
        other = interaction(
            InteractionType.IDENTIFIED, email="eve@corp.io", anonymous_id="visitor-9"
        )
        await produce(kafka_bootstrap, topics.interactions, [other])
        eve = await lead_by_email(client, "eve@corp.io")
        assert eve["anonymous_ids"] == [] and eve["id"] != lead["id"]
        eve_tl = (await client.get(f"/v1/leads/{eve['id']}/timeline")).json()["items"]
        assert any(i["kind"] == "identity_conflict" for i in eve_tl)

        # routing assigns an owner; sales activity moves the status forward only
        owner = {"id": "rep-anna", "name": "Anna", "email": "anna@example.com", "team": "emea"}
        assigned = CloudEvent(
            type="io.leadflow.routing.assigned",
            source="/leadflow/routing",
            data=assigned_data(lead["id"], owner),
            key="joe@corp.io",
        )
        won = CloudEvent(
            type=SalesType.WON, source="crm", data={"lead_id": lead["id"]}, key="joe@corp.io"
        )
        contacted = CloudEvent(
            type=SalesType.CONTACTED, source="crm", data={"email": "JOE@corp.io"}, key="joe@corp.io"
        )
        await produce(kafka_bootstrap, topics.routing, [assigned])
        await produce(kafka_bootstrap, topics.sales, [won, contacted])
        lead = await lead_by_email(client, "joe@corp.io", status="client")
        assert lead["owner"] == owner
        by_owner = (await client.get("/v1/leads", params={"owner": "rep-anna"})).json()["items"]
        assert [i["id"] for i in by_owner] == [lead["id"]]

        # a person may move stage and status back, with the bearer token only
        assert (
            await client.patch(
                f"/v1/leads/{lead['id']}", json={"stage": "MQL"}, headers={"Authorization": ""}
            )
        ).status_code == 401
        bad = await client.patch(f"/v1/leads/{lead['id']}", json={}, headers=AUTH)
        assert bad.status_code == 422
        patched = await client.patch(
            f"/v1/leads/{lead['id']}",
            json={"stage": "MQL", "status": "prospect", "reason": "double-check"},
            headers=AUTH,
        )
        assert patched.status_code == 200
        assert (patched.json()["stage"], patched.json()["status"]) == ("MQL", "prospect")
        timeline = (await client.get(f"/v1/leads/{lead['id']}/timeline")).json()["items"]
        assert any(
            i["kind"] == "override" and i["data"]["reason"] == "double-check" for i in timeline
        )

        # erasure: personal data gone, and later tracking without consent does not re-create
        engine = create_engine(db_url)
        try:
            await wait_for(lambda: _drained(engine), what="published before the erasure")
            assert (await client.delete(f"/v1/leads/{lead['id']}", headers=AUTH)).status_code == 204
            async with engine.connect() as conn:
                history = (
                    (
                        await conn.execute(
                            select(outbox.c.data).where(outbox.c.ce_subject == lead["id"])
                        )
                    )
                    .scalars()
                    .all()
                )
            assert history and "joe@corp.io" not in str(history)
        finally:
            await engine.dispose()
        erased = (await client.get(f"/v1/leads/{lead['id']}")).json()
        assert erased["email"] is None and erased["first_name"] is None and erased["erased"]
        tl = (await client.get(f"/v1/leads/{lead['id']}/timeline")).json()["items"]
        assert "joe@corp.io" not in str(tl)
        # Without consent the erased person is not re-created; the consented event under the
        # same Kafka key comes after it on the same partition, so by the time the new lead
        # exists the first one has been handled (and ignored).
        again = interaction(intent="newsletter", email="joe@corp.io")
        renewed = interaction(
            intent="newsletter",
            email="joe@corp.io",
            consent={"marketing": True, "at": "2026-11-26T10:00:00Z"},
        )
        assert again.key == renewed.key
        await produce(kafka_bootstrap, topics.interactions, [again, renewed])
        back = await lead_by_email(client, "joe@corp.io")
        assert back["id"] != lead["id"]
        back_tl = (await client.get(f"/v1/leads/{back['id']}/timeline")).json()["items"]
        applied = [i["event_id"] for i in back_tl if i["kind"] == "interaction"]
        assert applied == [renewed.id]
        events = await wait_for_events(
            kafka_bootstrap, topics.leads, lambda evs: any(e.type == LeadType.ERASED for e in evs)
        )
        assert any(
            e.type == LeadType.MERGED and e.data["change"]["merged_ids"] == [anon["id"]]
            for e in events
        )
        assert all(schema_errors(e) == [] for e in events)
        statuses = [e.data["change"] for e in events if e.type == LeadType.STATUS_CHANGED]
        assert statuses[0]["to"] == "client" and statuses[1]["to"] == "prospect"
        assert await read_topic(kafka_bootstrap, topics.deadletter) == []


async def test_bad_input_gets_a_problem_never_a_500(kafka_bootstrap: str, pg_db_url: str) -> None:
    async with running(kafka_bootstrap, pg_db_url) as (_, client):
        cases = [
            ("GET", "/v1/leads/a%00b", None, 422),
            ("GET", "/v1/leads/" + "x" * 3000, None, 404),
            ("GET", "/v1/leads?owner=%00", None, 422),
            ("GET", "/v1/leads?email=not-an-email", None, 422),
            ("GET", "/v1/leads?limit=0", None, 422),
            ("GET", "/v1/leads?limit=abc", None, 422),
            ("GET", "/v1/leads?temperature=lukewarm", None, 422),
            ("GET", "/v1/leads/x/timeline?cursor=WyJcdTAwMDAiXQ", None, 404),
            ("PATCH", "/v1/leads/x", b"{not json", 400),
            ("PATCH", "/v1/leads/x", b'{"stage": "XQL"}', 422),
            ("PATCH", "/v1/leads/x", b'{"stage": "SQL", "extra": 1}', 422),
            ("PATCH", "/v1/leads/x", b'{"stage": "SQL"}', 404),
            ("DELETE", "/v1/leads/x", None, 404),
            ("POST", "/v1/ad-spend", b"[]", 422),
            ("GET", "/v1/kpis?from=%00", None, 422),
        ]
        for method, url, body, status in cases:
            headers = {**AUTH, "Content-Type": "application/json"}
            answer = await client.request(method, url, content=body, headers=headers)
            assert answer.status_code == status, (method, url, answer.text)
            assert answer.headers["content-type"].startswith("application/problem+json")


async def _in_timeline(client: httpx.AsyncClient, lead_id: str, event_id: str) -> bool:
    async def probe() -> bool:
        items = (await client.get(f"/v1/leads/{lead_id}/timeline")).json()["items"]
        return any(i["event_id"] == event_id for i in items)

    return await wait_for(probe, what=f"{event_id} in the timeline of {lead_id}")


async def _drained(engine: object) -> bool:
    return await pending_count(engine, "scoring") == 0  # type: ignore[arg-type]
