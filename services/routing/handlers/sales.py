"""Sales activity: a first touch stops the clock (met, or late after a breach); a close ends
the assignment."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from services.routing import durable_queues as queues
from services.routing import repository as repo
from services.routing.deps import RoutingContext
from services.routing.domain.assignment import (
    ACTIVE,
    Assignment,
    IllegalTransition,
    State,
)
from services.routing.events import (
    clock_event,
    sales_activity_event,
    sales_activity_id,
)
from services.routing.handlers.common import (
    Conflict,
    NotFound,
    emit,
    save_assignment,
    team_calendar,
)
from shared.contract import SalesActivity
from shared.events import (
    CloudEvent,
    RoutingType,
    SalesType,
    rfc3339,
    utcnow,
)
from shared.outbox import enqueue

log = logging.getLogger(__name__)

TOUCH_TYPES = {SalesType.CONTACTED, SalesType.MEETING_BOOKED, SalesType.OPPORTUNITY_CREATED}
CLOSE_TYPES = {SalesType.WON, SalesType.LOST, SalesType.DISQUALIFIED}


async def first_touch(
    conn: AsyncConnection, ctx: RoutingContext, assignment_id: str, at: datetime, *, via: str
) -> Assignment:
    """Stop the SLA clock at the first touch; emit ``sla_met`` if it came in time."""
    # Locked: a timer firing meanwhile waits, so the state read here is the one written over.
    a = await repo.get_assignment(conn, assignment_id, lock=True)
    if a is None:
        raise NotFound(assignment_id)
    try:
        touched = a.first_touch(at, team_calendar(ctx, a.team), utcnow())
    except IllegalTransition as exc:
        raise Conflict(str(exc)) from None
    if touched is a or not await save_assignment(conn, a, touched):
        return a  # touched before: the first touch counts
    await queues.cancel_timers(conn, a.id)  # a late touch stops pending escalation steps too
    if touched.state is State.MET:
        assert touched.met_at is not None
        met = clock_event(
            RoutingType.SLA_MET,
            touched,
            touched.met_at,
            response_seconds=touched.response_seconds,
            business_seconds=touched.business_seconds,
            via=via,
        )
        await emit(conn, ctx, [met], touched.updated_at or utcnow())
    return touched


async def close(conn: AsyncConnection, ctx: RoutingContext, a: Assignment) -> None:
    """Close an active assignment (the lead was won, lost or disqualified)."""
    if a.active and await save_assignment(conn, a, a.close(utcnow()), from_=ACTIVE):
        await queues.cancel_timers(conn, a.id)


async def on_sales(conn: AsyncConnection, ctx: RoutingContext, ev: CloudEvent) -> None:
    """A sales activity: a contact stops the clock; won/lost/disqualified closes."""
    activity = SalesActivity.from_data(ev.data)  # out of contract: dead-lettered
    a = None
    if activity.assignment_id:
        a = await repo.get_assignment(conn, activity.assignment_id)
    if (a is None or a.ended) and activity.lead_id:
        lead_id, _ = await repo.resolve_lead(conn, activity.lead_id)  # merged: survivor
        a = await repo.active_assignment(conn, lead_id)
    if a is None or a.ended:
        return
    # a tool's clock running ahead must not stretch the response time
    at = min(activity.occurred_at or ev.time, utcnow())
    await first_touch(conn, ctx, a.id, at, via=ev.type)
    if ev.type in CLOSE_TYPES:
        fresh = await repo.get_assignment(conn, a.id)
        if fresh is not None:
            await close(conn, ctx, fresh)


@dataclass(frozen=True)
class LogSalesActivity:
    """A sales activity logged through the API (a rep called, booked a meeting, won …)."""

    kind: str
    lead_id: str
    at: datetime
    rep_id: str | None = None
    assignment_id: str | None = None
    email: str | None = None
    note: str | None = None
    idempotency_key: str | None = None


async def log_sales_activity(
    conn: AsyncConnection, ctx: RoutingContext, cmd: LogSalesActivity
) -> CloudEvent:
    """Publish ``io.leadflow.sales.<kind>`` on ``leadflow.sales`` (scoring consumes it) and
    apply it to the assignment's clock here and now, in the same transaction."""
    a = None
    if cmd.assignment_id:
        a = await repo.get_assignment(conn, cmd.assignment_id)
    a = a or await repo.active_assignment(conn, cmd.lead_id)
    key = (a.lead_key if a else None) or (cmd.email or "").strip().lower() or cmd.lead_id
    data = {
        "lead_id": cmd.lead_id,
        "email": cmd.email,
        "assignment_id": cmd.assignment_id or (a.id if a else None),
        "rep_id": cmd.rep_id,
        "occurred_at": rfc3339(cmd.at),
        "note": cmd.note,
    }
    eid = sales_activity_id(cmd.idempotency_key)
    ev = sales_activity_event(cmd.kind, data, id=eid, at=cmd.at, lead_id=cmd.lead_id, key=key)
    await enqueue(conn, ctx.source, ctx.topics.sales, [ev])
    await on_sales(conn, ctx, ev)  # every sales type is a touch or a close
    return ev
