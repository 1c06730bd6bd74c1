"""Stopping with claimed breaches in hand: the ones not started are given back at once.

Without this they kept their 30 s lease, so neither the next start nor another replica could
fire them until it ran out: a rolling restart made every breach in flight 30 s late.
"""

from __future__ import annotations

from sqlalchemy import select, update

from services.routing import durable_queues as queues
from services.routing.config import load_routing_config
from services.routing.deps import RoutingContext
from services.routing.tables import timers
from services.routing.workers import TimerWorker
from shared.db import create_engine
from shared.events import utcnow
from shared.topics import Topics
from tests.routing.helpers import config
from tests.routing.test_graceful_stop import _backlog


async def test_stopping_releases_claimed_timers_not_fired(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        await _backlog(engine, 6)
        async with engine.begin() as conn:
            await conn.execute(update(timers).values(kind="breach"))
        ctx = RoutingContext(config=load_routing_config(config()), topics=Topics("t."))
        worker = TimerWorker(engine, ctx)
        async with engine.begin() as conn:
            due = await queues.claim_due_timers(conn, worker.owner, utcnow(), 50, 30.0)
        assert len(due) == 6
        await worker.stop()
        await worker._fire(due)
        async with engine.connect() as conn:
            rows = (await conn.execute(select(timers.c.state, timers.c.lease_until))).all()
        assert worker.fired == 0
        assert [tuple(r) for r in rows] == [("pending", None)] * 6
        # Claimable again right away (by this process's next start or another replica).
        async with engine.begin() as conn:
            again = await queues.claim_due_timers(conn, "other", utcnow(), 50, 30.0)
        assert len(again) == 6
    finally:
        await engine.dispose()


def test_a_warning_due_after_its_assignments_escalation_step_goes_last() -> None:
    # A late worker claimed an escalation step (which ends the assignment) and that same
    # assignment's warning together: warnings went first, so the rep was warned about an
    # assignment that was queued a moment later.
    from datetime import timedelta

    from services.routing.workers import _warnings_in_order

    t0 = utcnow()
    due: list[dict[str, object]] = [
        {"id": 1, "assignment_id": "a", "kind": "escalate:2", "due_at": t0},
        {"id": 2, "assignment_id": "a", "kind": "warn", "due_at": t0 + timedelta(seconds=1)},
        {"id": 3, "assignment_id": "b", "kind": "warn", "due_at": t0 + timedelta(seconds=1)},
        {"id": 4, "assignment_id": "c", "kind": "breach", "due_at": t0 + timedelta(seconds=2)},
        {"id": 5, "assignment_id": "c", "kind": "warn", "due_at": t0},
    ]
    early, late = _warnings_in_order(due)
    assert [t["id"] for t in early] == [3, 5]  # b has nothing else; c's warning precedes its breach
    assert [t["id"] for t in late] == [2]
