"""A crashed replica's timer claims come back when its lease ends (services/routing/workers.py,
durable_queues.py): on PostgreSQL, timers claimed by a replica that dies before firing them are
fired by another replica once the lease is over, not before, and each exactly once."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from services.routing import durable_queues as queues
from services.routing.tables import timers
from services.routing.workers import TimerWorker
from shared.db import create_engine
from shared.events import RoutingType, utcnow
from shared.messaging_tables import outbox
from shared.topics import Topics
from tests.routing.helpers import lead, publish, qualified, running
from tests.support import make_settings, wait_for

LEASE = 2.0


async def test_crashed_replicas_timer_claims_come_back_after_the_lease(
    kafka_bootstrap: str, pg_db_url: str
) -> None:
    settings = make_settings(kafka_bootstrap, pg_db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    leads = [lead("DE", "warm") for _ in range(3)]  # warm: a 4-hour clock, nothing due soon
    async with running(settings) as (app, _client):
        ctx = app.state.routing
        await publish(app, topics.leads, [qualified(x) for x in leads])

        async def clocks_started() -> bool:
            async with app.state.runtime.engine.connect() as conn:
                rows = (await conn.execute(select(timers.c.id))).all()
            return len(rows) == 2 * len(leads)

        await wait_for(clocks_started, what="warn and breach timers of three assignments")
    # The service is stopped: from here on only the two replicas below touch the timers.

    engine = create_engine(pg_db_url)
    try:
        now = utcnow()
        async with engine.begin() as conn:
            await conn.execute(
                update(timers).where(timers.c.kind == "warn").values(due_at=now - timedelta(1))
            )
            # Replica A claims the due warnings (what TimerWorker.step does first) and then
            # dies before firing them: its claims are leased for LEASE seconds.
            crashed = await queues.claim_due_timers(conn, "replica-a", utcnow(), 50, LEASE)
        assert len(crashed) == len(leads)
        async with engine.connect() as conn:
            leased = (
                await conn.execute(select(timers.c.lease_until).where(timers.c.kind == "warn"))
            ).scalars()
            lease_end = max(leased)

        survivor = TimerWorker(engine, ctx, lease_seconds=30.0)
        nxt = await survivor.step()
        if utcnow() < lease_end:
            # Still leased to the dead replica: not fired yet, and the survivor knows when to
            # look again (the lease's end), instead of waiting for the next warning hours away.
            assert survivor.fired == 0
            assert nxt is not None and nxt <= lease_end

        async def fired_all() -> bool:
            await survivor.step()
            return survivor.fired == len(leads)

        await wait_for(fired_all, timeout=LEASE + 20, interval=0.1, what="claims back")
        async with engine.connect() as conn:
            rows = (await conn.execute(select(timers).where(timers.c.kind == "warn"))).all()
            warnings = (
                await conn.execute(
                    select(outbox.c.event_id, outbox.c.ce_subject).where(
                        outbox.c.ce_type == RoutingType.SLA_WARNING
                    )
                )
            ).all()
        assert {r.state for r in rows} == {"fired"}
        for r in rows:
            assert r.fired_at >= lease_end, "fired before the crashed replica's lease ended"
        # Exactly once: another pass and a third replica find nothing left to fire.
        late = TimerWorker(engine, ctx)
        await late.step()
        await survivor.step()
        assert late.fired == 0 and survivor.fired == len(leads)
        assert sorted(s for _, s in warnings) == sorted(x["id"] for x in leads)
        assert len({i for i, _ in warnings}) == len(leads)
    finally:
        await engine.dispose()


async def test_a_warning_claimed_by_a_dead_replica_still_fires_once_before_the_breach(
    kafka_bootstrap: str, pg_db_url: str
) -> None:
    """Found by the kill -9 drill: replica A claims a warning and dies; the breach falls due
    before A's lease ends and another replica fires it. The warning must still be sent, once,
    ahead of the breach (it used to be dropped: once breached, a late warning fires nothing)."""
    settings = make_settings(kafka_bootstrap, pg_db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    the_lead = lead("DE", "warm")
    async with running(settings) as (app, _client):
        ctx = app.state.routing
        await publish(app, topics.leads, [qualified(the_lead)])

        async def clock_started() -> bool:
            async with app.state.runtime.engine.connect() as conn:
                return len((await conn.execute(select(timers.c.id))).all()) == 2

        await wait_for(clock_started, what="warn and breach timers")

    engine = create_engine(pg_db_url)
    try:
        now = utcnow()
        async with engine.begin() as conn:
            await conn.execute(
                update(timers).where(timers.c.kind == "warn").values(due_at=now - timedelta(1))
            )
            crashed = await queues.claim_due_timers(conn, "replica-a", utcnow(), 50, 600.0)
            assert [t["kind"] for t in crashed] == ["warn"]
            # The breach falls due while the dead replica's lease on the warning still holds.
            await conn.execute(
                update(timers).where(timers.c.kind == "breach").values(due_at=utcnow())
            )
        survivor = TimerWorker(engine, ctx, lease_seconds=30.0)
        await survivor.step()
        await TimerWorker(engine, ctx).step()  # a third replica: nothing left to fire
        async with engine.connect() as conn:
            clock = (
                await conn.execute(
                    select(outbox.c.ce_type)
                    .where(
                        outbox.c.ce_type.in_([RoutingType.SLA_WARNING, RoutingType.SLA_BREACHED])
                    )
                    .order_by(outbox.c.id)
                )
            ).scalars()
            assert list(clock) == [RoutingType.SLA_WARNING, RoutingType.SLA_BREACHED]
            states = (
                await conn.execute(
                    select(timers.c.kind, timers.c.state).where(
                        timers.c.assignment_id == crashed[0]["assignment_id"],
                        timers.c.kind.in_(["warn", "breach"]),
                    )
                )
            ).all()
        assert dict(states) == {"warn": "fired", "breach": "fired"}
    finally:
        await engine.dispose()
