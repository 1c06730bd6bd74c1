"""Escalation ladder steps on their own durable timers (``after:``), on both databases."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from services.routing import durable_queues as queues
from services.routing.domain.config import RoutingConfigError, parse_duration, parse_ladder
from services.routing.domain.model import EscalationStep
from shared.events import CloudEvent, RoutingType, parse_time
from shared.topics import Topics
from tests.routing.helpers import AUTH, config, lead, publish, qualified, running
from tests.support import make_settings, wait_for_events

ESCALATED = "io.leadflow.routing.escalated"


def _of(events: list[CloudEvent], lead_id: str) -> list[CloudEvent]:
    return [e for e in events if e.subject == lead_id and e.type != ESCALATED]


async def _timers(app: Any, assignment_id: str) -> dict[str, str]:
    async with app.state.runtime.engine.connect() as conn:
        rows = await queues.timers_of(conn, assignment_id)
    return {r["kind"]: r["state"] for r in rows}


async def _timer_rows(app: Any, assignment_id: str) -> dict[str, dict[str, Any]]:
    async with app.state.runtime.engine.connect() as conn:
        rows = await queues.timers_of(conn, assignment_id)
    return {r["kind"]: r for r in rows}


TIMED = config(
    sla={
        "warn_fraction": 0.9,
        "default_policy": "hot",
        "policies": {"hot": {"business_seconds": 1.5}},
    },
    escalation={
        "notify_manager": False,
        "ladder": [
            "reassign",
            {"action": "reassign", "after": "0.5s"},
            {"action": "queue", "after": {"business_seconds": 0.5}},
        ],
    },
)


async def test_ladder_steps_fire_on_their_own_timers(kafka_bootstrap: str, db_url: str) -> None:
    settings = make_settings(kafka_bootstrap, db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    hot = lead("DE", "hot")
    async with running(settings, TIMED) as (app, client):
        await publish(app, topics.leads, [qualified(hot)])
        events = await wait_for_events(
            kafka_bootstrap,
            topics.routing,
            lambda evs: any(e.type == RoutingType.UNASSIGNED for e in _of(evs, hot["id"])),
        )
        mine = _of(events, hot["id"])
        seq = [e.type for e in mine]
        seq = seq[: seq.index(RoutingType.UNASSIGNED) + 1]
        # Breach -> reassign (step 1); 0.5 s later, the new owner still untouched and before
        # their own deadline: reassign again (step 2); 0.5 s later: the escalation queue.
        assert seq == [
            RoutingType.ASSIGNED,
            RoutingType.SLA_WARNING,
            RoutingType.SLA_BREACHED,
            RoutingType.REASSIGNED,
            RoutingType.REASSIGNED,
            RoutingType.UNASSIGNED,
        ]
        first, second = (e for e in mine if e.type == RoutingType.REASSIGNED)
        assert first.data["reason"] == "sla_breach" and first.data["owner"]["id"] == "ben"
        assert second.data["reason"] == "escalation"
        assert second.data["owner"]["id"] == "desk"  # emea exhausted: the fallback team
        assert second.data["previous_owner"]["id"] == "ben"
        # Step 2 came on its own timer: not before it was due, and due before Ben's warning,
        # which it therefore pre-empted (due timers fire in due order, however late).
        ben_timers = await _timer_rows(app, first.data["assignment_id"])
        step_due = ben_timers["escalate:1"]["due_at"]
        assert parse_time(second.data["assigned_at"]) >= step_due
        assert (step_due - parse_time(first.data["assigned_at"])).total_seconds() >= 0.5
        assert step_due < ben_timers["warn"]["due_at"] < ben_timers["breach"]["due_at"]
        un = next(e for e in mine if e.type == RoutingType.UNASSIGNED)
        assert un.data["queue"] == "escalations" and un.data["reason"] == "escalation"
        counts = Counter(e.type for e in mine)
        assert counts[RoutingType.REASSIGNED] == 2 and counts[RoutingType.UNASSIGNED] == 1

        # Ben's clock stopped when the step took the lead away: no warning, no breach for him.
        ben = first.data["assignment_id"]
        assert await _timers(app, ben) == {
            "warn": "cancelled",
            "breach": "cancelled",
            "escalate:1": "fired",
        }
        assert (await _timers(app, second.data["assignment_id"]))["escalate:2"] == "fired"
        r = await client.get(f"/v1/assignments/{ben}")
        assert r.json()["state"] == "reassigned" and r.json()["sla"]["breached"] is False
        q = (await client.get("/v1/queue", params={"queue": "escalations"})).json()["items"]
        assert [i["lead_id"] for i in q] == [hot["id"]]


async def test_first_touch_stops_the_ladder(kafka_bootstrap: str, sqlite_db_url: str) -> None:
    # One database is enough here: the timers' SQL is the one the ladder test runs on both.
    settings = make_settings(kafka_bootstrap, sqlite_db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    cfg = config(
        sla={
            "warn_fraction": 0.5,
            "default_policy": "hot",
            "policies": {"hot": {"business_seconds": 0.5}},
        },
        escalation={
            "notify_manager": True,
            "ladder": [
                "notify_manager",
                {"action": "reassign", "after": "30m"},
                {"action": "queue", "after": "1h"},
            ],
        },
    )
    late, early = lead("DE"), lead("DE")
    async with running(settings, cfg) as (app, client):
        await publish(app, topics.leads, [qualified(late), qualified(early)])
        events = await wait_for_events(
            kafka_bootstrap,
            topics.routing,
            lambda evs: (
                sum(e.type == RoutingType.SLA_BREACHED for e in evs) == 2
                and len({e.id for e in evs if e.type == ESCALATED}) == 4
            ),
        )
        breached = {e.subject: e for e in events if e.type == RoutingType.SLA_BREACHED}
        for x in (late, early):
            assert breached[x["id"]].data["escalation"] == "notify_manager"
            aid = breached[x["id"]].data["assignment_id"]
            # The breach took step 1 and armed step 2's timer on the same (breached) assignment.
            assert (await _timers(app, aid))["escalate:1"] == "pending"
            assert (await client.get(f"/v1/assignments/{aid}")).json()["escalation_level"] == 1
        # A late touch (after the breach) still stops the remaining steps.
        aid = breached[late["id"]].data["assignment_id"]
        r = await client.post(f"/v1/assignments/{aid}/first-touch", headers=AUTH)
        assert r.status_code == 200 and r.json()["state"] == "breached"
        assert (await _timers(app, aid))["escalate:1"] == "cancelled"
        other = breached[early["id"]].data["assignment_id"]
        assert (await _timers(app, other))["escalate:1"] == "pending"
        # Per lead: the breach's notification, and step 1's own (a distinct event).
        escalated = [e for e in events if e.type == ESCALATED]
        assert {e.data["action"] for e in escalated} == {"notify_manager"}
        for x in (late, early):
            mine = {e.id: e for e in escalated if e.subject == x["id"]}  # by id: no dupes
            assert sorted(e.data.get("step", -1) for e in mine.values()) == [-1, 0]


def test_ladder_config() -> None:
    assert parse_duration("10m", 8) == 600
    assert parse_duration("1.5h", 8) == 5400
    assert parse_duration("1d", 8) == 8 * 3600
    assert parse_duration(45, 8) == 45
    assert parse_duration({"business_minutes": 2}, 8) == 120
    for bad in ("ten minutes", "0s", -1, True, {}, {"minutes": 3}, None):
        with pytest.raises(ValueError):
            parse_duration(bad, 8)
    assert parse_ladder(["reassign", {"action": "queue", "after": "5m"}], 8) == [
        EscalationStep("reassign"),
        EscalationStep("queue", 300.0),
    ]
    with pytest.raises(RoutingConfigError) as err:
        parse_ladder([{"action": "reassign", "after": "5m"}], 8)
    assert err.value.key == "routing.escalation.ladder[0].after"
    with pytest.raises(RoutingConfigError) as err:
        parse_ladder(["reassign", {"action": "queue", "after": "5 fortnights"}], 8)
    assert err.value.key == "routing.escalation.ladder[1].after"
