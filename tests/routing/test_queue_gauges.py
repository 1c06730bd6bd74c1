"""The pending-timer and webhook-queue gauges say how much work waits.

Before: the gauges (and the alert and dashboard panel built on them) were declared but never
set, so a growing SLA backlog was invisible in /metrics.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from services.routing.config import load_routing_config
from services.routing.deps import RoutingContext
from services.routing.tables import timers
from services.routing.workers import TimerWorker
from shared.db import create_engine
from shared.events import utcnow
from shared.metrics import ROUTING_TIMERS_PENDING
from shared.topics import Topics
from tests.routing.helpers import config
from tests.routing.test_graceful_stop import _backlog


def _gauge(kind: str) -> float:
    return float(ROUTING_TIMERS_PENDING.labels(kind)._value.get())


async def test_pending_timers_are_counted_by_kind(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        await _backlog(engine, 3)
        async with engine.begin() as conn:  # not due yet: the step fires nothing
            await conn.execute(update(timers).values(due_at=utcnow() + timedelta(hours=1)))
        ctx = RoutingContext(config=load_routing_config(config()), topics=Topics("t."))
        ROUTING_TIMERS_PENDING.labels("breach").set(99)  # a stale value from before
        await TimerWorker(engine, ctx).step()
        assert _gauge("warn") == 3
        assert _gauge("breach") == 0
    finally:
        await engine.dispose()
