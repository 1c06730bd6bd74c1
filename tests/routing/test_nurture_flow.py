"""Nurture in the production shape: lead events on the broker, the routing app, its outbox
relay and step worker; nurture events read back from ``leadflow.nurture``. On PostgreSQL only:
tests/routing/test_nurture_store.py runs the same paths on SQLite in process."""

from __future__ import annotations

import copy
from collections import Counter
from contextlib import AsyncExitStack
from typing import Any

from sqlalchemy import select

from shared.contract import Assigned
from shared.event_schemas import schema_errors
from shared.events import CloudEvent, LeadType, NurtureType, RoutingType
from shared.messaging_tables import outbox
from shared.topics import Topics
from tests.routing.helpers import config, publish, qualified, running
from tests.routing.test_nurture_store import NURTURE, lead_event, warm_lead
from tests.support import make_settings, wait_for_events


def of(events: list[CloudEvent], lead_id: str) -> list[str]:
    return [e.type.rsplit(".", 1)[1] for e in events if e.subject == lead_id]


async def test_cools_enters_gets_its_step_once_then_consent_and_sql_end_it(
    kafka_bootstrap: str, pg_db_url: str
) -> None:
    settings = make_settings(kafka_bootstrap, pg_db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    cfg: dict[str, Any] = config(nurture=copy.deepcopy(NURTURE))
    hot = {**warm_lead(), "temperature": "hot"}
    cooled = {**hot, "temperature": "warm"}
    withdrawn = {**cooled, "consent": {"marketing": False}}
    second = warm_lead()
    sql = {**second, "stage": "SQL", "temperature": "hot"}
    async with running(settings, cfg) as (app, client):
        # hot: not for nurture (routing's business); cools to warm: enters the warm track and
        # its first step (no delay) is announced
        await publish(app, topics.leads, [lead_event(hot), lead_event(cooled), lead_event(second)])

        def started(evs: list[CloudEvent]) -> bool:
            return of(evs, hot["id"]) == ["enrolled", "step_due"] and of(evs, second["id"]) == [
                "enrolled",
                "step_due",
            ]

        events = await wait_for_events(kafka_bootstrap, topics.nurture, started)
        due = next(e for e in events if e.type == NurtureType.STEP_DUE and e.subject == hot["id"])
        assert due.data["step"]["action"] == "send_content"
        assert due.key == hot["key"]

        # consent withdrawn: the pending webinar step is cancelled; SQL: out, and assigned
        await publish(app, topics.leads, [lead_event(withdrawn, LeadType.SCORED), qualified(sql)])

        def ended(evs: list[CloudEvent]) -> bool:
            return "exited" in of(evs, hot["id"]) and "exited" in of(evs, second["id"])

        events = await wait_for_events(kafka_bootstrap, topics.nurture, ended)
        exits = {e.subject: e.data["reason"] for e in events if e.type == NurtureType.EXITED}
        assert exits == {hot["id"]: "consent_withdrawn", second["id"]: "sql"}
        assert Counter(e.id for e in events).most_common(1)[0][1] == 1  # each event once
        routed = await wait_for_events(
            kafka_bootstrap,
            topics.routing,
            lambda evs: any(
                e.type == RoutingType.ASSIGNED and e.subject == second["id"] for e in evs
            ),
        )
        assigned = next(e for e in routed if e.subject == second["id"])
        assert assigned.type == RoutingType.ASSIGNED
        # Sales sees what marketing already sent: the track it leaves by qualifying, its steps.
        assert schema_errors(assigned) == []
        [track] = Assigned.from_data(assigned.data).nurture or []
        assert track["track"] == "warm"
        assert [s["step"] for s in track["steps"]] == ["guide"]

        r = await client.get(f"/v1/nurture/leads/{hot['id']}")
        (enr,) = r.json()["items"]
        assert enr["exit_reason"] == "consent_withdrawn"
        assert [(s["step_id"], s["state"]) for s in enr["steps"]] == [
            ("guide", "fired"),
            ("webinar", "cancelled"),
        ]


async def test_two_replicas_and_a_restart_announce_every_step_once(
    kafka_bootstrap: str, pg_db_url: str
) -> None:
    settings = make_settings(kafka_bootstrap, pg_db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    fast = copy.deepcopy(NURTURE)
    fast["tracks"]["warm"]["steps"] = [
        {"id": "s0", "action": "send_content", "content": "a", "after": 0},
        {"id": "s1", "action": "send_content", "content": "b", "after": "1s"},
        {"id": "s2", "action": "wait", "after": "1s"},
    ]
    cfg = config(nurture=fast)
    leads = [warm_lead() for _ in range(20)]
    ids = {x["id"] for x in leads}

    def steps(evs: list[CloudEvent]) -> list[tuple[str | None, int]]:
        return [(e.subject, e.data["step"]["index"]) for e in evs if e.type == NurtureType.STEP_DUE]

    async with AsyncExitStack() as first, running(settings, cfg) as (b, _):
        await first.enter_async_context(running(settings, cfg))  # replica a
        await publish(b, topics.leads, [lead_event(x) for x in leads])
        await wait_for_events(kafka_bootstrap, topics.nurture, lambda evs: len(steps(evs)) >= 20)
        await first.aclose()  # replica a stops mid-track, and starts again
        async with running(settings, cfg):
            events = await wait_for_events(
                kafka_bootstrap,
                topics.nurture,
                lambda evs: sum(e.type == NurtureType.EXITED for e in evs) >= 20,
            )
        rows = await nurture_outbox(b.state.runtime.engine)
    assert Counter(steps(events)) == Counter({(i, k): 1 for i in ids for k in range(3)})
    assert {e.data["reason"] for e in events if e.type == NurtureType.EXITED} == {"completed"}
    assert Counter(r["ce_type"] for r in rows) == Counter(
        {NurtureType.ENROLLED: 20, NurtureType.STEP_DUE: 60, NurtureType.EXITED: 20}
    )


async def nurture_outbox(engine: Any) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        q = select(outbox).where(outbox.c.topic.like("%nurture"))
        return [dict(r._mapping) for r in (await conn.execute(q)).all()]
