"""SIGTERM with a backlog of due SLA timers: the routing process stops within seconds.

The timer worker used to claim batch after batch while the backlog lasted, so a routing
process took 30-50 s to stop. Once stopping, it finishes the batch in hand and claims no more;
what is left stays pending for the next start (or another replica).
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from sqlalchemy import func, select

from services.routing.main import build_app
from services.routing.tables import assignments, timers
from shared.db import create_engine
from shared.events import utcnow
from tests.routing.helpers import config
from tests.support import make_settings, wait_for

BACKLOG = 10_000
#: Generous for a drain that should take well under a second; the backlog takes far longer
#: (10 s at the pace the test sets).
STOP_BOUND = 5.0


async def _backlog(engine: object, n: int) -> None:
    now = utcnow()
    past = now - timedelta(minutes=5)
    owner = {"id": "anna", "name": "Anna", "email": "anna@example.com", "team": "emea"}
    rows = [
        {
            "id": f"a-{i}",
            "lead_id": f"lead-{i}",
            "lead_key": None,
            "owner_id": "anna",
            "owner": owner,
            "team": "emea",
            "state": "open",
            "policy": "warm",
            "warn_at": past,
            "due_at": now + timedelta(hours=4),
            "met_at": None,
            "breached": False,
            "response_seconds": None,
            "business_seconds": None,
            "assigned_at": past,
            "reason": "rule:emea",
            "lead": {"id": f"lead-{i}"},
            "escalation_level": 0,
            "previous_assignment_id": None,
            "updated_at": past,
        }
        for i in range(n)
    ]
    async with engine.begin() as conn:  # type: ignore[attr-defined]
        await conn.execute(assignments.insert(), rows)
        await conn.execute(
            timers.insert(),
            [
                {"assignment_id": r["id"], "kind": "warn", "due_at": past, "state": "pending"}
                for r in rows
            ],
        )


async def _pending(db_url: str) -> int:
    engine = create_engine(db_url)  # the app's engine is disposed by its stop
    try:
        async with engine.connect() as conn:
            q = select(func.count()).select_from(timers).where(timers.c.state == "pending")
            return int((await conn.execute(q)).scalar_one())
    finally:
        await engine.dispose()


async def test_stop_with_a_due_backlog_takes_seconds(kafka_bootstrap: str, db_url: str) -> None:
    settings = make_settings(kafka_bootstrap, db_url)
    app = build_app(settings, config())
    runtime = app.state.runtime
    worker = runtime.state["timers"]
    fire = worker._fire

    async def slow_fire(due: list[dict[str, object]], conn: object = None) -> None:
        # a slower database: 200 batches of 50 then take 10 s, far longer than STOP_BOUND,
        # whatever the machine (a fast one drained the 10,000 timers on SQLite during the
        # half second the rest of the stop took, so the test proved nothing there)
        await fire(due, conn)
        await asyncio.sleep(0.05)

    worker._fire = slow_fire
    await _backlog(runtime.engine, BACKLOG)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    stopped = False
    try:
        await runtime.wait_ready()
        await wait_for(lambda: _fired(worker, 1), what="the timer worker at work")
        started = time.monotonic()
        await lifespan.__aexit__(None, None, None)
        stopped = True
        took = time.monotonic() - started
    finally:
        if not stopped:
            await lifespan.__aexit__(None, None, None)
    left = await _pending(db_url)
    print(f"stopped in {took:.2f}s with {left} of {BACKLOG} timers still due")
    assert took < STOP_BOUND, f"stopping took {took:.1f}s ({left} timers still due)"
    assert left > 0, "the backlog was gone before the stop: make it larger"
    assert left + worker.fired == BACKLOG  # nothing lost: fired or still pending


async def _fired(worker: object, n: int) -> bool:
    return int(worker.fired) >= n  # type: ignore[attr-defined]
