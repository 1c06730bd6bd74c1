"""A claimed batch of warnings and breaches fired in one set-based transaction
(``handlers/clock_batch.py``) ends exactly where firing its timers one at a time does.

The batch routes its reassignments in memory on rep states read once, so each pick must see
the previous picks' credits, open counts and daily counts, as a fresh read would: the same new
owners, the same round-robin credits, the same leads queued once capacity runs out, the same
events with the same ids.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, text

from services.routing import durable_queues as queues
from services.routing import handlers
from services.routing import repository as repo
from services.routing.config import load_routing_config
from services.routing.deps import RoutingContext
from services.routing.domain.assignment import Assignment, Owner, State
from services.routing.domain.model import RepState
from services.routing.domain.rules import candidate_reps, route
from services.routing.handlers.clock_batch import fire_clock_timers
from services.routing.tables import (
    assignments,
    rep_load_deltas,
    rep_states,
    timers,
    unassigned,
)
from services.routing.workers import TimerWorker
from shared.db import create_engine
from shared.events import utcnow
from shared.messaging_tables import outbox
from shared.topics import Topics
from tests.routing.helpers import config, snapshot
from tests.routing.helpers import lead as a_lead

N = 12


def _ctx() -> RoutingContext:
    """One desk of four reps with different weights; three of them can take two more leads
    each, so the last breaches of a batch find nobody and go to the escalation queue."""
    reps: list[dict[str, Any]] = [
        {"id": "r0", "name": "R0", "email": "r0@example.com", "team": "desk", "hours": "24x7"},
        *(
            {
                "id": f"r{i}",
                "name": f"R{i}",
                "email": f"r{i}@example.com",
                "team": "desk",
                "hours": "24x7",
                "weight": i,
                "capacity": {"max_open": 2},
            }
            for i in (1, 2, 3)
        ),
    ]
    cfg = config(reps=reps, rules=[])
    return RoutingContext(config=load_routing_config(cfg), topics=Topics("t."))


async def _open_assignment(
    conn: Any,
    i: int,
    rep: str,
    team: str,
    reason: str,
    at: datetime,
    warn_at: datetime,
    due_at: datetime,
) -> None:
    """Open assignment ``a-{i}`` of a warm DE lead ``lead-{i}`` to ``rep`` of ``team``, with
    its warning and breach timers."""
    lead = a_lead("DE", "warm", id=f"lead-{i}")
    a = Assignment(
        id=f"a-{i}",
        lead_id=lead["id"],
        lead_key=lead["key"],
        owner=Owner(rep, rep.capitalize(), f"{rep}@example.com", team),
        team=team,
        state=State.OPEN,
        policy="warm",
        warn_at=warn_at,
        due_at=due_at,
        assigned_at=at,
        reason=reason,
        lead=lead,
        updated_at=at,
    )
    await repo.insert_assignment(conn, a)
    await queues.add_timers(conn, a.id, a.warn_at, a.due_at)


async def _seed(engine: Any, now: datetime) -> list[dict[str, Any]]:
    """N open assignments of r0, each with a due warning and a due breach; the claimed timers."""
    past = now - timedelta(hours=5)
    async with engine.begin() as conn:
        for table in (assignments, timers, rep_states, rep_load_deltas, unassigned, outbox):
            await conn.execute(delete(table))
        for i in range(N):
            warn, due = past + timedelta(seconds=i), past + timedelta(seconds=N + i)
            await _open_assignment(conn, i, "r0", "desk", "fallback:no_rule", past, warn, due)
        return await queues.claim_due_timers(conn, "test", now, 100, 30.0)


async def _outcome(engine: Any, ctx: RoutingContext, now: datetime) -> dict[str, Any]:
    async with engine.connect() as conn:
        owners = {
            r.lead_id: (r.owner_id, r.state, r.escalation_level)
            for r in await conn.execute(select(assignments).where(assignments.c.id.notlike("a-%")))
        }
        old = {
            r.id: (r.state, r.breached, r.escalation_level)
            for r in await conn.execute(select(assignments).where(assignments.c.id.like("a-%")))
        }
        states = await repo.load_rep_states(conn, ctx.config, now, lock=False)
        events = sorted(
            (r.event_id, r.ce_type, r.ce_subject, str(r.data))
            for r in await conn.execute(select(outbox))
        )
        timer_states = sorted(
            (r.assignment_id, r.kind, r.state) for r in await conn.execute(select(timers))
        )
        queued = sorted(r.lead_id for r in await conn.execute(select(unassigned)))
    return {
        "owners": owners,
        "old": old,
        "reps": {
            rid: (round(s.credit, 6), s.open_count, s.today_count) for rid, s in states.items()
        },
        "events": events,
        "timers": timer_states,
        "queued": queued,
    }


async def test_a_batch_ends_where_one_timer_at_a_time_does(db_url: str) -> None:
    ctx = _ctx()
    now = utcnow()
    engine = create_engine(db_url)
    try:
        due = await _seed(engine, now)
        assert len(due) == 2 * N
        # One at a time, as fire_timer always did: warnings first, then breaches by due time.
        for t in sorted(due, key=lambda t: (t["kind"] != "warn", t["due_at"])):
            async with engine.begin() as conn:
                assert await handlers.fire_timer(conn, ctx, t, now)
        one_by_one = await _outcome(engine, ctx, now)

        due = await _seed(engine, now)
        async with engine.begin() as conn:
            kinds = await fire_clock_timers(conn, ctx, due, now)
        batched = await _outcome(engine, ctx, now)
    finally:
        await engine.dispose()
    assert sorted(kinds) == ["breach"] * N + ["warn"] * N
    assert batched == one_by_one
    # The case is the one meant: some leads reassigned, the rest queued once capacity ran out.
    assert len(batched["owners"]) == 6
    assert {o for o, _, _ in batched["owners"].values()} == {"r1", "r2", "r3"}
    assert len(batched["queued"]) == N - 6


async def test_a_batch_fires_each_timer_once(db_url: str) -> None:
    ctx = _ctx()
    now = utcnow()
    engine = create_engine(db_url)
    try:
        due = await _seed(engine, now)
        async with engine.begin() as conn:
            first = await fire_clock_timers(conn, ctx, due, now)
        async with engine.begin() as conn:  # a second replica holding the same claims
            again = await fire_clock_timers(conn, ctx, due, now)
    finally:
        await engine.dispose()
    assert len(first) == 2 * N
    assert again == []


async def test_a_poison_timer_is_deferred_alone(db_url: str) -> None:
    # One assignment's stored lead cannot be read: its breach fails the batch, which the
    # worker then fires one timer at a time; only that timer is put off.
    ctx = _ctx()
    now = utcnow()
    engine = create_engine(db_url)
    try:
        due = await _seed(engine, now)
        async with engine.begin() as conn:
            await queues.release_timers(conn, [int(t["id"]) for t in due], "test")
            bad = {**a_lead("DE", "warm", id="lead-3"), "status": "unheard-of"}
            await conn.execute(
                assignments.update().where(assignments.c.id == "a-3").values(lead=bad)
            )
        worker = TimerWorker(engine, ctx)
        await worker.step()
        async with engine.connect() as conn:
            rows = (await conn.execute(select(timers).where(timers.c.kind == "breach"))).all()
    finally:
        await engine.dispose()
    pending = [r for r in rows if r.state == "pending" and r.assignment_id.startswith("a-")]
    assert [r.assignment_id for r in pending] == ["a-3"]
    assert pending[0].lease_until is not None and pending[0].lease_until > utcnow()
    assert worker.fired == 2 * N - 1


def test_a_choice_needs_only_the_candidate_teams_reps() -> None:
    cfg = load_routing_config(config())
    now = utcnow()
    states = {rid: RepState(rid, credit=float(i)) for i, rid in enumerate(cfg.reps)}
    for country, reps in (
        ("DE", ["anna", "ben", "desk"]),
        ("US", ["carla", "desk"]),
        (None, ["desk"]),
    ):
        the_lead = snapshot(country, "warm")
        assert candidate_reps([the_lead], cfg) == reps
        narrowed = {rid: states[rid] for rid in reps}
        assert route(the_lead, cfg, narrowed, now) == route(the_lead, cfg, states, now)


async def test_a_batch_locks_only_the_reps_who_may_take_its_leads(pg_db_url: str) -> None:
    # Another transaction holds an americas rep's row (a consumer assigning a US lead): a
    # batch of EMEA breaches goes ahead instead of waiting for it.
    ctx = RoutingContext(config=load_routing_config(config()), topics=Topics("t."))
    now = utcnow()
    past = now - timedelta(hours=5)
    engine = create_engine(pg_db_url)
    try:
        async with engine.begin() as conn:
            await repo.ensure_rep_states(conn, ctx.config.reps, now)
            for i in range(3):
                await _open_assignment(conn, i, "anna", "emea", "rule:emea", past, past, past)
            due = await queues.claim_due_timers(conn, "test", now, 100, 30.0)
        async with engine.connect() as holder:
            await holder.begin()
            await repo.rep_state_rows(holder, ["carla"], lock=True)
            async with engine.begin() as conn:
                await conn.execute(text("SET LOCAL lock_timeout = '5s'"))
                kinds = await fire_clock_timers(conn, ctx, due, now)
            await holder.rollback()
        async with engine.connect() as conn:
            owners = [
                r.owner_id
                for r in await conn.execute(
                    select(assignments).where(assignments.c.id.notlike("a-%"))
                )
            ]
    finally:
        await engine.dispose()
    assert sorted(kinds) == ["breach"] * 3 + ["warn"] * 3
    assert sorted(owners) == ["ben", "ben", "ben"]
