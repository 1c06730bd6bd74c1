"""A burst: 500 leads qualified at once on PostgreSQL: all assigned
exactly once, shared by weight."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable

from sqlalchemy import func, select

from services.routing.tables import assignments
from shared.events import RoutingType
from shared.messaging_tables import outbox
from shared.topics import Topics
from tests.routing.helpers import config, lead, publish, qualified, running
from tests.support import make_settings, wait_for, wait_for_events

N = 500
WEIGHTS = {"w1": 1, "w2": 2, "w5": 5}
BURST = config(
    fallback_team=None,
    reps=[
        {
            "id": rid,
            "name": rid,
            "email": f"{rid}@example.com",
            "team": "emea",
            "weight": w,
            "hours": "24x7",
        }
        for rid, w in WEIGHTS.items()
    ],
)


async def test_500_leads_assigned_exactly_once_by_weight(
    kafka_bootstrap: str, pg_db_url: str
) -> None:
    settings = make_settings(kafka_bootstrap, pg_db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    leads = [lead("DE", "warm") for _ in range(N)]
    async with running(settings, BURST) as (a, _):
        engine = a.state.runtime.engine

        async def count() -> int:
            async with engine.connect() as conn:
                return int(
                    (await conn.execute(select(func.count()).select_from(assignments))).scalar_one()
                )

        started = time.monotonic()
        await publish(a, topics.leads, [qualified(x) for x in leads])
        await wait_for(
            lambda: _at_least(count(), N), timeout=120, interval=0.2, what=f"{N} assignments"
        )
        # A measurement, not an assertion: the wait above is the only bound.
        print(f"{N} leads assigned in {time.monotonic() - started:.1f}s")
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(assignments.c.lead_id, assignments.c.owner_id, assignments.c.state)
                )
            ).all()
            published = (
                await conn.execute(
                    select(outbox.c.ce_subject).where(
                        outbox.c.source == "routing", outbox.c.ce_type == RoutingType.ASSIGNED
                    )
                )
            ).all()
    assert len(rows) == N
    assert {r.lead_id for r in rows} == {x["id"] for x in leads}  # one each, nobody twice
    assert {r.state for r in rows} == {"open"}
    per_rep = Counter(r.owner_id for r in rows)
    total = sum(WEIGHTS.values())
    for rid, w in WEIGHTS.items():
        expected = N * w / total
        assert abs(per_rep[rid] - expected) <= 0.1 * expected, (per_rep, rid)
    # One routing.assigned event each, written in the assignment's transaction...
    assert Counter(r.ce_subject for r in published) == Counter({x["id"]: 1 for x in leads})
    # ...and on the topic, where consumers see them.
    events = await wait_for_events(
        kafka_bootstrap,
        topics.routing,
        lambda evs: len([e for e in evs if e.type == RoutingType.ASSIGNED]) >= N,
        timeout=60,
    )
    on_topic = Counter(e.subject for e in events if e.type == RoutingType.ASSIGNED)
    assert on_topic == Counter({x["id"]: 1 for x in leads})


async def _at_least(value: Awaitable[int], n: int) -> bool:
    return await value >= n
