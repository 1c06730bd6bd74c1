"""End to end through HTTP: a form fill becomes a scored lead and a routing assignment.

All three services run in this process against the real broker and real PostgreSQL; they talk
only through Kafka, exactly as deployed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
from sqlalchemy import select

from services.capture.main import build_app as capture_app
from services.routing.main import build_app as routing_app
from services.scoring.main import build_app as scoring_app
from shared.db import create_engine
from shared.event_schemas import schema_errors
from shared.events import RoutingType
from shared.messaging_tables import outbox, processed_events
from shared.settings import Settings
from shared.topics import Topics
from tests.support import AUTH, make_settings, read_topic, wait_for, wait_for_events

VP_DEMO = {
    "email": "Dana.Vp@Acme-Software.example",
    "first_name": "Dana",
    "last_name": "Vance",
    "company": "Acme Software",
    "job_title": "VP of Sales",
    "company_size": "500",
    "industry": "software",
    "country": "DE",
    "consent_marketing": True,
    "utm_source": "google",
    "utm_medium": "cpc",
    "utm_campaign": "q4-demo",
}


@asynccontextmanager
async def leadflow(settings: Settings) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """The three services, started and ready, with an HTTP client for each."""
    async with AsyncExitStack() as stack:
        clients: dict[str, httpx.AsyncClient] = {}
        for name, factory in (
            ("capture", capture_app),
            ("scoring", scoring_app),
            ("routing", routing_app),
        ):
            app = factory(settings)
            await stack.enter_async_context(app.router.lifespan_context(app))
            await app.state.runtime.wait_ready()
            clients[name] = await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app),
                    base_url=f"http://{name}",
                    headers=AUTH,
                )
            )
        yield clients


async def _lead_by_email(client: httpx.AsyncClient, email: str) -> dict[str, Any] | None:
    resp = await client.get("/v1/leads", params={"email": email})
    assert resp.status_code == 200, resp.text
    items = resp.json()["items"]
    return items[0] if items else None


async def _scoring_events_about(settings: Settings, lead_id: str) -> set[str]:
    """Ids of every event scoring has written (to its outbox) about this lead."""
    engine = create_engine(settings.db_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(outbox.c.event_id).where(
                    outbox.c.source == "scoring", outbox.c.ce_subject == lead_id
                )
            )
            return set(rows.scalars())
    finally:
        await engine.dispose()


async def _routing_consumed(settings: Settings, event_ids: set[str]) -> None:
    """Wait until routing's consumer has processed every one of ``event_ids``."""
    engine = create_engine(settings.db_url)

    async def done() -> bool:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(processed_events.c.event_id).where(
                    processed_events.c.consumer == "leadflow-routing",
                    processed_events.c.event_id.in_(event_ids),
                )
            )
            return set(rows.scalars()) == event_ids

    try:
        await wait_for(done, timeout=30, what="routing consumed the lead's events")
    finally:
        await engine.dispose()


async def test_vp_demo_request_becomes_hot_sql_and_is_assigned(
    kafka_bootstrap: str, pg_db_url: str
) -> None:
    settings = make_settings(kafka_bootstrap, pg_db_url)
    async with leadflow(settings) as http:
        resp = await http["capture"].post("/v1/forms/demo-request/submissions", json=VP_DEMO)
        assert resp.status_code == 202, resp.text
        body = resp.json()
        assert body["status"] == "accepted"
        assert body["lead_key"] == "dana.vp@acme-software.example"

        async def sql_lead() -> dict[str, Any] | None:
            lead = await _lead_by_email(http["scoring"], "dana.vp@acme-software.example")
            return lead if lead and lead["stage"] == "SQL" else None

        lead = await wait_for(sql_lead, timeout=30, what="lead becomes SQL")
        assert lead["temperature"] == "hot"
        assert lead["score"]["reasons"], "a score carries its reasons"

        topic = Topics(settings.leadflow_topic_prefix).routing
        events = await wait_for_events(
            kafka_bootstrap,
            topic,
            lambda evs: any(
                e.type == RoutingType.ASSIGNED and e.subject == lead["id"] for e in evs
            ),
        )
        assigned = next(e for e in events if e.type == RoutingType.ASSIGNED)
        assert assigned.key == "dana.vp@acme-software.example"
        assert assigned.data["lead_id"] == lead["id"]
        assert assigned.data["owner"]["id"]
        assert assigned.data["lead"]["temperature"] == "hot"
        assert assigned.data["sla"]["due_at"]

        # Everything the services wrote matches the published JSON Schemas.
        topics = Topics(settings.leadflow_topic_prefix)
        for name in (topics.interactions, topics.leads, topics.routing):
            for ev in await read_topic(kafka_bootstrap, name):
                assert schema_errors(ev) == [], (ev.type, schema_errors(ev))

        resp = await http["routing"].get("/v1/assignments")
        assert resp.status_code == 200
        mine = [a for a in resp.json()["items"] if a["lead_id"] == lead["id"]]
        assert len(mine) == 1
        assert mine[0]["id"] == assigned.data["assignment_id"]
        assert mine[0]["state"] == "open"

        # The assignment flows back to the lead as its owner.
        async def owned() -> dict[str, Any] | None:
            current = await _lead_by_email(http["scoring"], "dana.vp@acme-software.example")
            return current if current and current.get("owner") else None

        owned_lead = await wait_for(owned, timeout=30, what="owner set on lead")
        assert owned_lead["owner"]["id"] == assigned.data["owner"]["id"]


async def test_newsletter_signup_alone_is_a_cold_iql_and_not_routed(
    kafka_bootstrap: str, pg_db_url: str
) -> None:
    settings = make_settings(kafka_bootstrap, pg_db_url)
    async with leadflow(settings) as http:
        resp = await http["capture"].post(
            "/v1/forms/newsletter/submissions",
            data={"email": "reader@example.org"},
        )
        assert resp.status_code == 202, resp.text
        lead = await wait_for(
            lambda: _lead_by_email(http["scoring"], "reader@example.org"), what="newsletter lead"
        )
        assert lead["stage"] == "IQL"
        assert lead["temperature"] == "cold"
        # Barrier: routing has consumed every event scoring wrote about this lead, so a wrongly
        # emitted lead.qualified would have been assigned by now; only then is "none" proof.
        about_lead = await _scoring_events_about(settings, lead["id"])
        assert about_lead, "scoring announced the new lead"
        await _routing_consumed(settings, about_lead)
        resp = await http["routing"].get("/v1/assignments")
        assert [a for a in resp.json()["items"] if a["lead_id"] == lead["id"]] == []


async def test_every_service_has_operations_endpoints(
    kafka_bootstrap: str, sqlite_db_url: str
) -> None:
    settings = make_settings(kafka_bootstrap, sqlite_db_url)
    async with leadflow(settings) as http:
        for client in http.values():
            for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
                resp = await client.get(path)
                assert resp.status_code == 200, (client.base_url, path, resp.text)
            resp = await client.get("/no-such-thing")
            assert resp.status_code == 404
            assert resp.headers["content-type"] == "application/problem+json"
