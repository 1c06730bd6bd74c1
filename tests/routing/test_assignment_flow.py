"""The spine on the real broker and databases: qualified lead -> assignment -> routing.assigned."""

from __future__ import annotations

from typing import Any

from shared.events import RoutingType
from shared.topics import Topics
from tests.routing.helpers import AUTH, lead, publish, qualified, running
from tests.support import make_settings, wait_for, wait_for_events


def _of_type(events: list[Any], type_: str) -> list[Any]:
    return [e for e in events if e.type == type_]


async def test_qualified_lead_is_assigned_once(kafka_bootstrap: str, db_url: str) -> None:
    settings = make_settings(kafka_bootstrap, db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    the_lead = lead("DE", "warm")
    ev = qualified(the_lead)
    async with running(settings) as (app, client):
        # The same event twice, and a second qualified of the same lead: one assignment.
        await publish(app, topics.leads, [ev])
        await publish(app, topics.leads, [qualified(the_lead)])
        events = await wait_for_events(
            kafka_bootstrap, topics.routing, lambda evs: bool(_of_type(evs, RoutingType.ASSIGNED))
        )
        assigned = _of_type(events, RoutingType.ASSIGNED)[0]
        assert assigned.source == "/leadflow/routing"
        assert assigned.subject == the_lead["id"]
        assert assigned.key == the_lead["key"]
        data = assigned.data
        assert set(data) >= {
            "assignment_id",
            "lead_id",
            "owner",
            "lead",
            "sla",
            "assigned_at",
            "reason",
        }
        assert data["owner"]["team"] == "emea" and data["owner"]["id"] in {"anna", "ben"}
        assert set(data["owner"]) == {"id", "name", "email", "team"}
        assert data["lead"] == {
            "email": the_lead["email"],
            "first_name": "Jane",
            "last_name": "Doe",
            "company": "Acme",
            "job_title": "VP Sales",
            "temperature": "warm",
            "stage": "SQL",
            "score": 87,
        }
        assert data["sla"]["policy"] == "warm"
        assert data["reason"] == "rule:emea"

        r = await client.get(f"/v1/assignments/{data['assignment_id']}")
        assert r.status_code == 200
        body = r.json()
        assert body["state"] == "open" and body["lead_id"] == the_lead["id"]
        assert body["sla"]["due_at"] == data["sla"]["due_at"]

        # Redelivery of the very same event id is also harmless; the marker after it (same
        # key, so same partition) tells us the redelivered copy has been consumed.
        await publish(app, topics.leads, [ev, qualified(the_lead)])
        await wait_for(lambda: _consumed(app, 3), what="every copy consumed")
        r = await client.get("/v1/assignments", params={"state": "open"})
        page = r.json()
        assert page["next_cursor"] is None and len(page["items"]) == 1
        r = await client.get("/v1/assignments", params={"lead_id": the_lead["id"]})
        assert len(r.json()["items"]) == 1
        events = await wait_for_events(kafka_bootstrap, topics.routing, lambda evs: True)
        assert len(_of_type(events, RoutingType.ASSIGNED)) == 1

        r = await client.get("/v1/assignments", params={"owner": data["owner"]["id"]})
        assert [a["id"] for a in r.json()["items"]] == [data["assignment_id"]]
        r = await client.get("/v1/assignments", params={"owner": data["owner"]["email"]})
        assert [a["id"] for a in r.json()["items"]] == [data["assignment_id"]]
        r = await client.get("/v1/assignments", params={"owner": "nobody"})
        assert r.json() == {"items": [], "next_cursor": None}
        assert (await client.get("/v1/assignments/nope")).status_code == 404
        bad = await client.get("/v1/assignments", params={"state": "bogus"})
        assert bad.status_code == 422
        assert bad.headers["content-type"].startswith("application/problem+json")
        assert (await client.get("/v1/assignments", params={"cursor": "%%%"})).status_code == 400
        assert (
            await client.post(
                f"/v1/assignments/{data['assignment_id']}/first-touch",
                headers={"Authorization": ""},
            )
        ).status_code == 401
        r = await client.post(f"/v1/assignments/{data['assignment_id']}/first-touch", headers=AUTH)
        assert r.status_code == 200 and r.json()["state"] == "met"


async def _consumed(app: Any, n: int) -> bool:
    consumer = app.state.runtime.state["consumer"]
    return bool(consumer.processed >= n)


async def test_assignments_are_paginated(kafka_bootstrap: str, db_url: str) -> None:
    settings = make_settings(kafka_bootstrap, db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    leads = [lead("FR") for _ in range(5)]
    async with running(settings) as (app, client):
        await publish(app, topics.leads, [qualified(x) for x in leads])
        await wait_for(lambda: _consumed(app, 5), what="five leads consumed")
        seen: list[str] = []
        cursor = None
        for _ in range(5):
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/v1/assignments", params=params)).json()
            seen += [a["lead_id"] for a in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted(x["id"] for x in leads)
        assert (await client.get("/v1/assignments", params={"limit": 0})).status_code == 422
