"""SLA clocks fired a claimed batch at a time: warnings, and breaches with the ladder's step.

:func:`fire_timer` fires one timer in about thirty statements, and a breach's reassignment
locks the reps' rows from its routing choice until commit. A batch fired one timer at a time
therefore spent most of its time in round trips, and replicas queued behind each other's rep
locks. Here a batch of ``warn`` and ``breach`` timers is fired in one transaction with
set-based reads and writes: its assignments are read (and locked, in id order) with one query,
its timers flipped to fired with another, its events written with one outbox insert, and its
reassignments routed in memory, one lead after the other, on rep states read once. The reps'
rows are locked last, just before those picks, so a replica holds them only for the routing of
its batch and the few writes that record it; the rest of its work overlaps with the others'.

A timer is fired by exactly one caller (the conditional flip from pending to fired). Every id
and event is the one :func:`fire_timer` derives, so a batch that fails (rolled back) can be
fired again one timer at a time, as the worker does, and replays find the same ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.routing import durable_queues as queues
from services.routing import repository as repo
from services.routing.deps import RoutingContext
from services.routing.domain.assignment import Assignment, State
from services.routing.domain.model import Action
from services.routing.domain.rules import after_pick, candidate_reps, route
from services.routing.events import assigned_event, clock_event
from services.routing.handlers.assigning import planned_assignment
from services.routing.handlers.common import emit, lead_of
from services.routing.handlers.escalation import (
    _queue,
    _Step,
    after_step,
    breach_events,
    breach_step,
    take_step,
)
from shared.events import CloudEvent, RoutingType

#: The timer kinds fired here; escalation steps (``escalate:N``) go through :func:`fire_timer`.
CLOCK_KINDS = frozenset({"warn", "breach"})

_BREACH_CAUSE = "sla_breach"


async def fire_clock_timers(
    conn: AsyncConnection, ctx: RoutingContext, due: Sequence[Mapping[str, Any]], now: datetime
) -> list[str]:
    """Fire a batch of due ``warn`` and ``breach`` timers in the caller's transaction, each at
    most once (warnings first); the kinds of those this caller fired."""
    # Lock order everywhere: assignment, then its timers (first touch does the same).
    found = await repo.get_assignments(conn, {str(t["assignment_id"]) for t in due}, lock=True)
    won = await queues.mark_fired_many(conn, [int(t["id"]) for t in due], now)
    fired: list[str] = []
    events: list[CloudEvent] = []
    breaching: list[tuple[Assignment, datetime]] = []
    for t in sorted(due, key=lambda t: (t["kind"] != "warn", t["due_at"], t["id"])):
        a = found.get(str(t["assignment_id"]))
        if int(t["id"]) not in won or a is None or a.state is not State.OPEN:
            continue  # fired elsewhere, or touched, closed or reassigned meanwhile
        if t["kind"] == "warn":
            events.append(clock_event(RoutingType.SLA_WARNING, a, t["due_at"]))
            fired.append("warn")
        elif t["kind"] == "breach":
            breaching.append((a, t["due_at"]))
    breached = await _breach(conn, ctx, breaching, events, now)
    fired += ["breach"] * len(breached)
    await emit(conn, ctx, events, now)
    await _ladder(conn, ctx, breached, now)
    return fired


async def _breach(
    conn: AsyncConnection,
    ctx: RoutingContext,
    breaching: Sequence[tuple[Assignment, datetime]],
    events: list[CloudEvent],
    now: datetime,
) -> list[tuple[Assignment, datetime]]:
    """Mark the assignments breached; their events go to ``events``. A warning still pending
    at the breach was claimed by a replica that died before firing it (its lease has not run
    out yet): it is fired now, before the breach, or it would never be sent."""
    if not breaching:
        return []
    ids = [a.id for a, _ in breaching]
    warn_due = await queues.fire_pending_many(conn, ids, "warn", now)
    # What Assignment.breach changes, written for all at once.
    changed = await repo.transition_many(
        conn, ids, from_=State.OPEN, to=State.BREACHED, breached=True, updated_at=now
    )
    out = []
    for a, due in breaching:
        if a.id not in changed:
            continue
        if a.id in warn_due:
            events.append(clock_event(RoutingType.SLA_WARNING, a, warn_due[a.id]))
        b = a.breach(now)
        events.extend(breach_events(ctx, b, due))
        out.append((b, due))
    return out


async def _ladder(
    conn: AsyncConnection,
    ctx: RoutingContext,
    breached: Sequence[tuple[Assignment, datetime]],
    now: datetime,
) -> None:
    """Take each breach's ladder step: reassignments together, any other step one by one."""
    reassigning = []
    for b, due in breached:
        step = breach_step(ctx, b)
        if step is None:
            continue
        if step.action is Action.REASSIGN:
            reassigning.append((b, due))
        else:
            cause = [b.id, _BREACH_CAUSE]
            level = b.escalation_level
            await take_step(conn, ctx, b, level, cause, _BREACH_CAUSE, due, now)
    await _reassign_all(conn, ctx, reassigning, now)


async def _reassign_all(
    conn: AsyncConnection,
    ctx: RoutingContext,
    items: Sequence[tuple[Assignment, datetime]],
    now: datetime,
) -> None:
    """Give each breached lead to the next available rep who has not had it yet (nobody: the
    escalation queue), as the ladder's ``reassign`` does for one, with one routing pass."""
    if not items:
        return
    exclude = await repo.previous_owners_of(conn, {b.lead_id for b, _ in items})
    # Release the leads first: only one active assignment per lead may exist.
    released = await repo.transition_many(
        conn, [b.id for b, _ in items], from_=State.BREACHED, to=State.REASSIGNED, updated_at=now
    )
    leads = {b.id: lead_of(b.lead) for b, _ in items if b.id in released}
    # Locks the rows of the reps who may take these leads until commit, and folds the
    # releases' load in. One statement, in rep id order: a consumer's transaction locks every
    # rep (in the same order, once or again per lead), another batch its own subset, so no
    # two of them ever wait for each other in a cycle.
    only = candidate_reps(leads.values(), ctx.config)
    states = await repo.load_rep_states(conn, ctx.config, now, only=only)
    made: list[tuple[Assignment, Assignment, datetime]] = []
    nobody: list[tuple[Assignment, datetime]] = []
    for b, due in items:
        if b.id not in leads:
            continue
        lead = leads[b.id]
        decision = route(lead, ctx.config, states, now, exclude.get(b.lead_id, ()))
        cause = [b.id, _BREACH_CAUSE]
        new = planned_assignment(
            ctx, lead, decision, cause, now, _BREACH_CAUSE, b, b.escalation_level + 1
        )
        if new is None or decision.rep is None:
            nobody.append((b, due))
            continue
        states = after_pick(states, decision)
        made.append((b, new, due))
    if made:
        # The new owners' open counts are written with the credits, not appended as deltas.
        await repo.insert_assignments(conn, [new for _, new, _ in made], count_load=False)
        await queues.add_timers_many(conn, [(n.id, n.warn_at, n.due_at) for _, n, _ in made])
        await repo.store_rep_loads(conn, states, ctx.config, now)
        assigned = [
            assigned_event(new, b.id, _BREACH_CAUSE, previous_owner=b.owner) for b, new, _ in made
        ]
        await emit(conn, ctx, assigned, now)
        await queues.cancel_timers_many(conn, [b.id for b, _, _ in made])  # their clocks are over
        for b, new, due in made:
            await after_step(conn, ctx, b, new, b.escalation_level, due)
    for b, due in nobody:
        # Nobody else can take it: the assignment stands, escalated to the queue instead.
        await repo.transition(conn, b.id, from_={State.REASSIGNED}, to=b.state)
        index = b.escalation_level
        step = _Step(conn, ctx, b, index, [b.id, _BREACH_CAUSE], _BREACH_CAUSE, due, now)
        await after_step(conn, ctx, b, await _queue(step), index, due)
