"""SLA clocks on the real broker and databases: warn and breach on time and exactly once
(escalation ladder, first touch, restart, two replicas)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select

from services.routing import durable_queues as queues
from shared.events import CloudEvent, RoutingType, parse_time
from shared.messaging_tables import outbox
from shared.topics import Topics
from tests.routing.helpers import AUTH, config, lead, publish, qualified, running
from tests.support import make_settings, wait_for, wait_for_events

ESCALATED = "io.leadflow.routing.escalated"


def types(events: list[CloudEvent], lead_id: str) -> list[str]:
    return [e.type for e in events if e.subject == lead_id]


async def outbox_rows(app: Any) -> list[dict[str, Any]]:
    async with app.state.runtime.engine.connect() as conn:
        rows = (await conn.execute(select(outbox).where(outbox.c.source == "routing"))).all()
    return [dict(r._mapping) for r in rows]


async def test_warning_breach_and_escalation_ladder(kafka_bootstrap: str, db_url: str) -> None:
    settings = make_settings(kafka_bootstrap, db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    hot = lead("DE", "hot")
    async with running(settings) as (app, client):
        await publish(app, topics.leads, [qualified(hot)])

        def done(evs: list[CloudEvent]) -> bool:
            return RoutingType.UNASSIGNED in types(evs, hot["id"])

        events = await wait_for_events(kafka_bootstrap, topics.routing, done, timeout=30)
        seq = [t for t in types(events, hot["id"]) if t != ESCALATED]
        # first owner: warned, breached, reassigned; second owner: warned, breached, queued
        assert seq == [
            RoutingType.ASSIGNED,
            RoutingType.SLA_WARNING,
            RoutingType.SLA_BREACHED,
            RoutingType.REASSIGNED,
            RoutingType.SLA_WARNING,
            RoutingType.SLA_BREACHED,
            RoutingType.UNASSIGNED,
        ]
        by_type = {e.type: e for e in events if e.subject == hot["id"]}
        first = next(e for e in events if e.type == RoutingType.ASSIGNED)
        re = by_type[RoutingType.REASSIGNED]
        assert re.data["reason"] == "sla_breach"
        assert re.data["previous_owner"] == first.data["owner"]
        assert re.data["owner"]["id"] != first.data["owner"]["id"]
        assert re.data["owner"]["team"] == "emea"
        assert by_type[RoutingType.UNASSIGNED].data["queue"] == "escalations"
        escalations = [e for e in events if e.type == ESCALATED]
        assert len(escalations) == 2
        assert escalations[0].data["manager"]["email"] == "eva@example.com"

        # Each timer fired at or after its deadline (never early), in deadline order. How
        # late is machine-dependent: a generous bound only, the measurement is printed.
        fired = sorted(
            (r["created_at"], parse_time(r["data"]["at"]), r["ce_type"])
            for r in await outbox_rows(app)
            if r["ce_type"] in (RoutingType.SLA_WARNING, RoutingType.SLA_BREACHED)
        )
        assert len(fired) == 4
        lags = [(written - due).total_seconds() for written, due, _ in fired]
        assert all(lag >= 0 for lag in lags), lags
        assert [due for _, due, _ in fired] == sorted(due for _, due, _ in fired)
        assert max(lags) < 30, lags
        print(f"timer lag: max {max(lags):.3f}s")

        r = await client.get("/v1/assignments", params={"lead_id": hot["id"]})
        states = sorted(a["state"] for a in r.json()["items"])
        assert states == ["breached", "reassigned"]
        q = (await client.get("/v1/queue", params={"queue": "escalations"})).json()["items"]
        assert [i["lead_id"] for i in q] == [hot["id"]]
        report = (await client.get("/v1/sla/report")).json()
        assert report["overall"]["breaches"] == 2
        assert report["overall"]["attainment_pct"] == 0.0


async def test_first_touch_stops_the_clock(kafka_bootstrap: str, db_url: str) -> None:
    settings = make_settings(kafka_bootstrap, db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    # Deadlines far beyond the test: stopped clocks are checked on the timers themselves,
    # not by sleeping past a deadline a slow machine might legitimately miss.
    cfg = config(
        sla={
            "warn_fraction": 0.5,
            "default_policy": "hot",
            "policies": {"hot": {"business_seconds": 600}},
        }
    )
    by_api, by_event, by_tool = lead("GB"), lead("US"), lead("CA")
    async with running(settings, cfg) as (app, client):
        await publish(app, topics.leads, [qualified(x) for x in (by_api, by_event, by_tool)])
        events = await wait_for_events(
            kafka_bootstrap,
            topics.routing,
            lambda evs: sum(e.type == RoutingType.ASSIGNED for e in evs) == 3,
        )
        ids = {e.subject: e.data["assignment_id"] for e in events if e.type == RoutingType.ASSIGNED}
        r = await client.post(
            f"/v1/assignments/{ids[by_api['id']]}/first-touch",
            headers=AUTH,
            json={"note": "called"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "met" and r.json()["sla"]["met_at"]
        # A contact logged by a sales tool on leadflow.sales stops the other clock.
        r = await client.post(
            "/v1/sales/activities",
            headers=AUTH,
            json={"type": "contacted", "lead_id": by_event["id"], "rep_id": "carla", "note": "hi"},
        )
        assert r.status_code == 202, r.text
        # A sales tool writing straight to leadflow.sales (only the lead id) works as well.
        await publish(
            app,
            topics.sales,
            [
                CloudEvent(
                    type="io.leadflow.sales.meeting_booked",
                    source="/crm",
                    key=by_tool["key"],
                    subject=by_tool["id"],
                    data={"lead_id": by_tool["id"], "rep_id": "carla"},
                )
            ],
        )
        sales = await wait_for_events(kafka_bootstrap, topics.sales, lambda evs: len(evs) == 2)
        sales = [e for e in sales if e.source == "/leadflow/routing"]
        assert sales[0].type == "io.leadflow.sales.contacted"
        assert sales[0].data["assignment_id"] == ids[by_event["id"]]
        assert sales[0].key == by_event["key"]

        # One sla_met each, and every clock stopped: no warning nor breach can come.
        events = await wait_for_events(
            kafka_bootstrap,
            topics.routing,
            lambda evs: sum(e.type == RoutingType.SLA_MET for e in evs) == 3,
        )
        for lid in (by_api["id"], by_event["id"], by_tool["id"]):
            assert types(events, lid) == [RoutingType.ASSIGNED, RoutingType.SLA_MET], lid
            async with app.state.runtime.engine.connect() as conn:
                clock = await queues.timers_of(conn, ids[lid])
            assert {t["kind"]: t["state"] for t in clock} == {
                "warn": "cancelled",
                "breach": "cancelled",
            }, lid
        assigned_at = {
            e.subject: parse_time(e.data["assigned_at"])
            for e in events
            if e.type == RoutingType.ASSIGNED
        }
        for met in (e for e in events if e.type == RoutingType.SLA_MET):
            # Measured from the assignment to the touch, on a 24x7 calendar: both the same.
            wall = (parse_time(met.data["at"]) - assigned_at[met.subject]).total_seconds()
            assert met.data["response_seconds"] == pytest.approx(wall, abs=1e-3)
            assert met.data["business_seconds"] == pytest.approx(wall, abs=1e-3)
            assert 0 <= wall < 600
        # A second touch is harmless; an unknown one is a 404; bad input is a 4xx.
        again = await client.post(f"/v1/assignments/{ids[by_api['id']]}/first-touch", headers=AUTH)
        assert again.status_code == 200
        assert (await client.post("/v1/assignments/x/first-touch", headers=AUTH)).status_code == 404
        bad = await client.post(
            "/v1/sales/activities", headers=AUTH, json={"type": "hugged", "lead_id": "x"}
        )
        assert bad.status_code == 422
        broken = await client.post(
            "/v1/sales/activities",
            headers={**AUTH, "content-type": "application/json"},
            content=b"{not json",
        )
        assert broken.status_code == 400
        report = (await client.get("/v1/sla/report")).json()
        assert report["overall"]["met"] == 3 and report["overall"]["attainment_pct"] == 100.0
        assert {t["team"] for t in report["by_team"]} == {"emea", "americas"}


async def read_all(bootstrap: str, topic: str) -> list[CloudEvent]:
    from tests.support import read_topic

    return await read_topic(bootstrap, topic)


FAST_NO_LADDER = config(
    sla={
        "warn_fraction": 0.5,
        "default_policy": "hot",
        "policies": {"hot": {"business_seconds": 2}},
    },
    escalation={"notify_manager": False, "ladder": ["none"]},
)


async def test_timers_fire_once_across_a_restart(kafka_bootstrap: str, db_url: str) -> None:
    settings = make_settings(kafka_bootstrap, db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    leads = [lead("DE") for _ in range(3)]
    async with running(settings, FAST_NO_LADDER) as (app, _):
        await publish(app, topics.leads, [qualified(x) for x in leads])
        await wait_for(lambda: _assigned(app, 3), what="three assignments")
    # Stopped before any deadline; the next process fires them.
    async with running(settings, FAST_NO_LADDER) as (app, _):
        events = await wait_for_events(
            kafka_bootstrap,
            topics.routing,
            lambda evs: sum(e.type == RoutingType.SLA_BREACHED for e in evs) >= 3,
        )
    # And a third start after they fired fires nothing again: a new lead's breach is the
    # barrier (the worker has made its passes by then); only its own two timers fired.
    marker = lead("DE")
    async with running(settings, FAST_NO_LADDER) as (app, _):
        await publish(app, topics.leads, [qualified(marker)])
        await wait_for_events(
            kafka_bootstrap,
            topics.routing,
            lambda evs: RoutingType.SLA_BREACHED in types(evs, marker["id"]),
        )
        assert app.state.runtime.state["timers"].fired == 2
    events = await read_all(kafka_bootstrap, topics.routing)
    counts = Counter(e.type for e in events)
    assert counts[RoutingType.SLA_WARNING] == 4 and counts[RoutingType.SLA_BREACHED] == 4


async def _assigned(app: Any, n: int) -> bool:
    rows = await outbox_rows(app)
    return sum(r["ce_type"] == RoutingType.ASSIGNED for r in rows) >= n


@pytest.mark.parametrize("n_leads", [30])
async def test_two_replicas_fire_each_timer_once(
    kafka_bootstrap: str, pg_db_url: str, n_leads: int
) -> None:
    settings = make_settings(kafka_bootstrap, pg_db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    leads = [lead("DE") for _ in range(n_leads)]
    async with (
        running(settings, FAST_NO_LADDER) as (a, _),
        running(settings, FAST_NO_LADDER) as (b, _),
    ):
        await publish(a, topics.leads, [qualified(x) for x in leads])
        await wait_for_events(
            kafka_bootstrap,
            topics.routing,
            lambda evs: sum(e.type == RoutingType.SLA_BREACHED for e in evs) >= n_leads,
            timeout=40,
        )
    # Both replicas stopped (drained): whatever either could still fire has fired.
    fired = [x.state.runtime.state["timers"].fired for x in (a, b)]
    assert sum(fired) == 2 * n_leads, fired
    print("fired per replica", fired)
    events = await read_all(kafka_bootstrap, topics.routing)
    counts = Counter((e.type, e.subject) for e in events)
    for x in leads:
        assert counts[(RoutingType.ASSIGNED, x["id"])] == 1
        assert counts[(RoutingType.SLA_WARNING, x["id"])] == 1
        assert counts[(RoutingType.SLA_BREACHED, x["id"])] == 1
