"""Assigning a qualified lead: the routing choice, the SLA clock, the queue of the unassigned,
and rep changes that move assignments."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.routing import durable_queues as queues
from services.routing import nurture_store
from services.routing import repository as repo
from services.routing.deps import RoutingContext
from services.routing.domain.assignment import (
    Assignment,
    Owner,
    State,
)
from services.routing.domain.business_time import local_day_start
from services.routing.domain.model import Decision, RepState
from services.routing.domain.rules import route
from services.routing.domain.sla import deadlines
from services.routing.events import (
    assigned_event,
    unassigned_event,
)
from services.routing.handlers.common import (
    UNASSIGNED_QUEUE,
    emit,
    lead_of,
    stored_lead,
    team_calendar,
)
from shared.contract import LeadEvent, LeadSnapshot
from shared.events import (
    CloudEvent,
    derived_event_id,
    utcnow,
)

log = logging.getLogger(__name__)


async def assign(
    conn: AsyncConnection,
    ctx: RoutingContext,
    lead: LeadSnapshot,
    cause: Sequence[str],
    now: datetime,
    *,
    exclude: Sequence[str] = (),
    reason: str | None = None,
    previous: Assignment | None = None,
    level: int = 0,
    nurture: Sequence[Mapping[str, Any]] | None = None,
) -> Assignment | None:
    """Route ``lead`` and store the assignment with its SLA timers; None if nobody can take it."""
    states = await repo.load_rep_states(conn, ctx.config, now)  # creates missing rep rows
    decision = route(lead, ctx.config, states, now, exclude)
    a = planned_assignment(ctx, lead, decision, cause, now, reason, previous, level)
    if a is None or decision.rep is None:
        return None
    rep = decision.rep
    await repo.insert_assignment(conn, a)
    await queues.add_timers(conn, a.id, a.warn_at, a.due_at)
    day_start = local_day_start(now, rep.calendar.tz)
    today = states[rep.id].today_count + 1 if rep.id in states else 1
    await repo.record_pick(conn, decision.credits, rep.id, day_start, today, now)
    prev_owner = previous.owner if previous else None
    assigned = assigned_event(a, *cause, previous_owner=prev_owner, nurture=nurture)
    await emit(conn, ctx, [assigned], now)
    return a


def planned_assignment(
    ctx: RoutingContext,
    lead: LeadSnapshot,
    decision: Decision,
    cause: Sequence[str],
    now: datetime,
    reason: str | None = None,
    previous: Assignment | None = None,
    level: int = 0,
) -> Assignment | None:
    """The assignment a routing decision makes, with its SLA deadlines (None: nobody)."""
    rep = decision.rep
    if rep is None or decision.team is None:
        return None
    policy = ctx.config.policies[decision.policy]
    dl = deadlines(now, policy.seconds, ctx.config.warn_fraction, team_calendar(ctx, decision.team))
    return Assignment(
        id=derived_event_id(*cause, "assignment"),
        lead_id=lead.id,
        lead_key=lead.key,
        owner=Owner(rep.id, rep.name, rep.email, rep.team),
        team=decision.team,
        state=State.OPEN,
        policy=policy.name,
        warn_at=dl.warn_at,
        due_at=dl.due_at,
        assigned_at=now,
        reason=reason or decision.reason,
        lead=stored_lead(lead),
        escalation_level=level,
        previous_assignment_id=previous.id if previous else None,
        updated_at=now,
    )


async def change_rep(
    conn: AsyncConnection,
    ctx: RoutingContext,
    rep_id: str,
    values: Mapping[str, Any],
    now: datetime,
) -> RepState:
    """An operator's change to a rep (pause, out of office, capacity, weight, working hours),
    stored; the rep's state after it, with its current load."""
    await repo.ensure_rep_states(conn, ctx.config.reps, now)
    await repo.update_rep_state(conn, rep_id, values)
    states = await repo.load_rep_states(conn, ctx.config, now, lock=False)
    return states[rep_id]


async def on_qualified(conn: AsyncConnection, ctx: RoutingContext, ev: CloudEvent) -> None:
    """Assign a newly sales-qualified lead exactly once; queue it if nobody can take it."""
    # Parsed once, here: a lead out of the contract's shape is refused (dead-lettered).
    lead = LeadEvent.from_data(ev.data).lead
    # ``erased`` and ``merged`` are keyed by other identifiers than this event, so they may
    # have been consumed first: an erased person is never assigned (nor their data stored),
    # and a merged-away lead is routed as the lead it lives on in.
    await repo.lock_person(conn, lead.id)
    lead_id, erased, known = await repo.resolve_known(conn, lead.id)
    if erased:
        log.info("lead %s was erased; its qualified event is ignored", lead.id)
        return
    if lead_id != lead.id:
        await repo.lock_person(conn, lead_id)
        lead = replace(lead, id=lead_id, data={**stored_lead(lead), "id": lead_id})
        known = await repo.lead_known(conn, lead_id)
    if known:
        return  # assigned (or queued) before: a repeated qualified changes nothing
    now = utcnow()
    # What marketing already sent (the track it leaves by qualifying, too) goes to sales with it.
    history = await nurture_store.nurture_history(conn, lead_id)
    if await assign(conn, ctx, lead, [ev.id], now, nurture=history) is None:
        stored = stored_lead(lead)
        await repo.queue_lead(
            conn,
            {
                "lead_id": lead.id,
                "lead_key": lead.key,
                "lead": stored,
                "reason": "no_available_rep",
                "queue": UNASSIGNED_QUEUE,
                "escalation_level": 0,
                "exclude": [],
                "attempts": 0,
                "created_at": now,
            },
        )
        await emit(
            conn,
            ctx,
            [unassigned_event(stored, "no_available_rep", UNASSIGNED_QUEUE, ev.id, at=now)],
            now,
        )


async def retry_queued(
    conn: AsyncConnection, ctx: RoutingContext, row: Mapping[str, Any], now: datetime
) -> bool:
    """Try again to assign a queued lead; True when it got an owner."""
    # Taking the row first makes a concurrent retry by another replica wait, then find nothing.
    if not await repo.take_from_queue(conn, row["lead_id"]):
        return False
    cause = [row["lead_id"], "retry", str(row["attempts"]), row["created_at"].isoformat()]
    made = await assign(
        conn,
        ctx,
        lead_of(row["lead"]),
        cause,
        now,
        exclude=row["exclude"] or [],
        reason=None,
        level=row["escalation_level"],
    )
    if made is None:
        await repo.queue_lead(conn, {**row, "attempts": int(row["attempts"]) + 1})
        return False
    return True
