"""SLA timers firing: the warning, the breach, and the escalation ladder that follows it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.routing import durable_queues as queues
from services.routing import repository as repo
from services.routing.deps import RoutingContext
from services.routing.domain.assignment import (
    ACTIVE,
    Assignment,
    State,
)
from services.routing.domain.business_time import (
    add_business_time,
)
from services.routing.domain.model import Action, EscalationStep
from services.routing.events import (
    ESCALATED,
    clock_data,
    clock_event,
    event,
    unassigned_event,
)
from services.routing.handlers.assigning import assign
from services.routing.handlers.common import emit, lead_of, save_assignment, team_calendar
from shared.events import (
    CloudEvent,
    RoutingType,
)

log = logging.getLogger(__name__)

ESCALATE_PREFIX = "escalate:"


async def fire_timer(
    conn: AsyncConnection, ctx: RoutingContext, timer: Mapping[str, Any], now: datetime
) -> bool:
    """Fire one due timer exactly once: warning, breach plus the escalation ladder, or a timed
    escalation step."""
    # Lock order everywhere: assignment, then its timers (first touch does the same).
    a = await repo.get_assignment(conn, timer["assignment_id"], lock=True)
    if not await queues.mark_fired(conn, timer["id"], now):
        return False  # another replica (or an earlier run) fired it
    kind = str(timer["kind"])
    if kind.startswith(ESCALATE_PREFIX):
        if a is None or not a.active or a.touched:
            return False  # touched, closed or reassigned meanwhile: the ladder stops
        index = int(kind[len(ESCALATE_PREFIX) :])
        await take_step(conn, ctx, a, index, [a.id, kind], "escalation", timer["due_at"], now)
        return True
    if a is None or a.state is not State.OPEN:
        return False
    if kind == "warn":
        await emit(conn, ctx, [clock_event(RoutingType.SLA_WARNING, a, timer["due_at"])], now)
        return True
    # The warning still pending at the breach was claimed by a replica that died before firing
    # it (its lease has not run out yet): fire it now, before the breach, or it would never be
    # sent once the assignment is no longer open.
    warn_due = await queues.fire_pending(conn, a.id, "warn", now)
    if warn_due is not None:
        await emit(conn, ctx, [clock_event(RoutingType.SLA_WARNING, a, warn_due)], now)
    breached = a.breach(now)
    if not await save_assignment(conn, a, breached):
        return False
    await escalate(conn, ctx, breached, timer["due_at"], now)
    return True


def _manager(ctx: RoutingContext, team_id: str) -> dict[str, Any] | None:
    team = ctx.config.teams.get(team_id)
    return dict(team.manager) if team and team.manager else None


def breach_events(ctx: RoutingContext, a: Assignment, due: datetime) -> list[CloudEvent]:
    """What a breach of ``a`` announces: the breach (with the ladder's step for it) and, if
    configured, the manager's notification."""
    level = a.escalation_level
    step = ctx.config.ladder_step(level)
    timed = step is not None and step.after_seconds is not None and level > 0
    action = step.action if step is not None else Action.NONE
    manager = _manager(ctx, a.team)
    events = [
        clock_event(
            RoutingType.SLA_BREACHED,
            a,
            due,
            escalation=action,
            escalation_on="timer" if timed else "breach",
            manager=manager,
        )
    ]
    if ctx.config.notify_manager and manager:
        notify = clock_event(ESCALATED, a, due, action=Action.NOTIFY_MANAGER, manager=manager)
        events.append(notify)
    return events


def breach_step(ctx: RoutingContext, a: Assignment) -> EscalationStep | None:
    """The ladder step a breach of ``a`` takes at once (None: none, or one on its own timer)."""
    level = a.escalation_level
    step = ctx.config.ladder_step(level)
    if step is None or (step.after_seconds is not None and level > 0):
        return None
    return step


async def escalate(
    conn: AsyncConnection, ctx: RoutingContext, a: Assignment, due: datetime, now: datetime
) -> None:
    """Emit the breach, notify the manager, and take the ladder's step for this breach (a step
    with its own timer is left to that timer)."""
    await emit(conn, ctx, breach_events(ctx, a, due), now)
    if breach_step(ctx, a) is None:
        return
    level = a.escalation_level
    await take_step(conn, ctx, a, level, [a.id, "sla_breach"], "sla_breach", due, now)


@dataclass(frozen=True)
class _Step:
    """One escalation ladder step being taken: for which assignment, why and when."""

    conn: AsyncConnection
    ctx: RoutingContext
    a: Assignment
    index: int
    cause: Sequence[str]
    reason: str
    due: datetime
    now: datetime


async def _reassign(s: _Step) -> Assignment:
    """Give the lead to the next available rep who has not had it yet; nobody: queue it."""
    exclude = await repo.previous_owners(s.conn, s.a.lead_id)
    # Release the lead first: only one active assignment per lead may exist.
    await save_assignment(s.conn, s.a, s.a.reassign(s.now), from_=ACTIVE)
    made = await assign(
        s.conn,
        s.ctx,
        lead_of(s.a.lead),
        s.cause,
        s.now,
        exclude=exclude,
        reason=s.reason,
        previous=s.a,
        level=s.index + 1,
    )
    if made is not None:
        await queues.cancel_timers(s.conn, s.a.id)  # the old owner's clock is over
        return made
    # Nobody else can take it: the assignment stands, escalated to the queue instead.
    await repo.transition(s.conn, s.a.id, from_={State.REASSIGNED}, to=s.a.state)
    return await _queue(s)


async def _queue(s: _Step) -> Assignment:
    """Park the lead in the escalation queue for a manager to handle."""
    queue = s.ctx.config.escalation_queue
    if await repo.queue_lead(
        s.conn,
        {
            "lead_id": s.a.lead_id,
            "lead_key": s.a.lead_key,
            "lead": dict(s.a.lead),
            "reason": s.reason,
            "queue": queue,
            "escalation_level": s.index + 1,
            "exclude": [],
            "attempts": 0,
            "created_at": s.now,
        },
    ):
        unassigned = unassigned_event(s.a.lead, s.reason, queue, *s.cause, at=s.now)
        await emit(s.conn, s.ctx, [unassigned], s.now)
    return s.a


async def _notify_manager(s: _Step) -> Assignment:
    """Tell the team's manager (``routing.escalated``)."""
    manager = _manager(s.ctx, s.a.team)
    data = clock_data(s.a, s.due, action=Action.NOTIFY_MANAGER, manager=manager, step=s.index)
    # Its own id (the breach's notification has the assignment's): one event per step.
    escalated = event(
        ESCALATED,
        data,
        *s.cause,
        f"step:{s.index}",
        subject=s.a.lead_id,
        key=s.a.lead_key,
        at=s.due,
    )
    await emit(s.conn, s.ctx, [escalated], s.now)
    return s.a


async def _nothing(s: _Step) -> Assignment:
    return s.a


#: What each escalation action does; each returns the assignment active afterwards.
LADDER_ACTIONS: dict[Action, Callable[[_Step], Awaitable[Assignment]]] = {
    Action.REASSIGN: _reassign,
    Action.QUEUE: _queue,
    Action.NOTIFY_MANAGER: _notify_manager,
    Action.NONE: _nothing,
}


async def take_step(
    conn: AsyncConnection,
    ctx: RoutingContext,
    a: Assignment,
    index: int,
    cause: Sequence[str],
    reason: str,
    due: datetime,
    now: datetime,
) -> None:
    """Take ladder step ``index`` for the active assignment ``a``, then arm the next step's
    timer (if it has one) on whichever assignment is active afterwards."""
    step = ctx.config.ladder_step(index)
    if step is None:
        return
    active = await LADDER_ACTIONS[step.action](_Step(conn, ctx, a, index, cause, reason, due, now))
    await after_step(conn, ctx, a, active, index, due)


async def after_step(
    conn: AsyncConnection,
    ctx: RoutingContext,
    a: Assignment,
    active: Assignment,
    index: int,
    due: datetime,
) -> None:
    """Step ``index`` was taken for ``a`` and left ``active`` active: record the level on an
    assignment that stays, and arm the next step's timer (if it has one)."""
    if active is a:
        await repo.transition(conn, a.id, from_=ACTIVE, escalation_level=index + 1)
    nxt = ctx.config.ladder_step(index + 1)
    if nxt is not None and nxt.after_seconds is not None:
        base = max(due, active.assigned_at) if active is not a else due
        at = add_business_time(base, nxt.after_seconds, team_calendar(ctx, active.team))
        await queues.add_timer(conn, active.id, f"{ESCALATE_PREFIX}{index + 1}", at)
