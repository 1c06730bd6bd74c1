"""Use cases: event or request -> domain decision -> repository and outbox, in one transaction.

:data:`EVENT_HANDLERS` says what each consumed event type does (``batch_handler`` is the
consumer's handler for ``leadflow.leads`` and ``leadflow.sales``); the timer worker calls
:func:`fire_timer`, the queue retrier :func:`retry_queued`, the API :func:`first_touch` and
:func:`log_sales_activity`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.routing import durable_queues as queues
from services.routing import repository as repo
from services.routing.deps import RoutingContext
from services.routing.domain.assignment import (
    ACTIVE,
    Assignment,
    IllegalTransition,
    Owner,
    State,
)
from services.routing.domain.business_time import (
    Calendar,
    add_business_time,
    make_calendar,
)
from services.routing.domain.model import Action, RepState
from services.routing.domain.rules import route
from services.routing.domain.sla import deadlines
from services.routing.events import (
    ESCALATED,
    assigned_event,
    clock_data,
    clock_event,
    event,
    sales_activity_event,
    sales_activity_id,
    scrub_body,
    scrub_data,
    unassigned_event,
)
from shared.contract import LeadEvent, LeadSnapshot
from shared.events import (
    CloudEvent,
    LeadType,
    RoutingType,
    SalesType,
    derived_event_id,
    parse_time,
    rfc3339,
    utcnow,
)
from shared.outbox import enqueue, rewrite_rows

log = logging.getLogger(__name__)

UNASSIGNED_QUEUE = "unassigned"
TOUCH_TYPES = {SalesType.CONTACTED, SalesType.MEETING_BOOKED, SalesType.OPPORTUNITY_CREATED}
CLOSE_TYPES = {SalesType.WON, SalesType.LOST, SalesType.DISQUALIFIED}
_ALWAYS = make_calendar("UTC", "24x7", name="always")


class NotFound(LookupError):
    """No such assignment or rep."""


class Conflict(RuntimeError):
    """The assignment is not in a state that allows this."""


async def emit(
    conn: AsyncConnection, ctx: RoutingContext, events: Sequence[CloudEvent], now: datetime
) -> None:
    """Publish routing events in the caller's transaction: the outbox row for Kafka and one
    delivery per subscribed webhook commit together with the state change they report."""
    if not events:
        return
    await enqueue(conn, ctx.source, ctx.topics.routing, events)
    await queues.add_webhook_copies(conn, ctx.config.webhooks, events, now)


def team_calendar(ctx: RoutingContext, team: str) -> Calendar:
    """The team's calendar (a 24x7 one if the team left the config since)."""
    t = ctx.config.teams.get(team)
    return t.calendar if t else _ALWAYS


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
) -> Assignment | None:
    """Route ``lead`` and store the assignment with its SLA timers; None if nobody can take it."""
    await repo.ensure_rep_states(conn, ctx.config.reps, now)
    states = await repo.load_rep_states(conn, ctx.config, now)
    decision = route(lead, ctx.config, states, now, exclude)
    if decision.rep is None or decision.team is None:
        return None
    rep = decision.rep
    policy = ctx.config.policies[decision.policy]
    dl = deadlines(now, policy.seconds, ctx.config.warn_fraction, team_calendar(ctx, decision.team))
    a = Assignment(
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
        lead=_stored(lead),
        escalation_level=level,
        previous_assignment_id=previous.id if previous else None,
        updated_at=now,
    )
    await repo.insert_assignment(conn, a)
    await queues.add_timers(conn, a.id, a.warn_at, a.due_at)
    await repo.save_credits(conn, decision.credits, now)
    prev_owner = previous.owner if previous else None
    await emit(conn, ctx, [assigned_event(a, *cause, previous_owner=prev_owner)], now)
    return a


def _stored(lead: LeadSnapshot) -> dict[str, Any]:
    """The lead as routing keeps it (with an assignment or in a queue): as it was published."""
    return dict(lead.data) if lead.data is not None else lead.to_data()


def _lead_of(stored: Mapping[str, Any]) -> LeadSnapshot:
    """A kept lead, to route again (it was checked when its ``lead.qualified`` came in)."""
    return LeadSnapshot.from_data(stored)


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
    lead_id, erased = await repo.resolve_lead(conn, lead.id)
    if erased:
        log.info("lead %s was erased; its qualified event is ignored", lead.id)
        return
    if lead_id != lead.id:
        await repo.lock_person(conn, lead_id)
        lead = replace(lead, id=lead_id, data={**_stored(lead), "id": lead_id})
    if await repo.lead_known(conn, lead_id):
        return  # assigned (or queued) before: a repeated qualified changes nothing
    now = utcnow()
    if await assign(conn, ctx, lead, [ev.id], now) is None:
        stored = _stored(lead)
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
        _lead_of(row["lead"]),
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


async def _save(
    conn: AsyncConnection,
    before: Assignment,
    after: Assignment,
    *,
    from_: Collection[State] | None = None,
) -> bool:
    """Write a transition's changes, only while the assignment is still in ``from_`` (default:
    the state it was read in); True if this caller made it."""
    return await repo.transition(
        conn, before.id, from_=from_ or {before.state}, **after.changes_since(before)
    )


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
    if touched is a or not await _save(conn, a, touched):
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
    if a.active and await _save(conn, a, a.close(utcnow()), from_=ACTIVE):
        await queues.cancel_timers(conn, a.id)


async def on_sales(conn: AsyncConnection, ctx: RoutingContext, ev: CloudEvent) -> None:
    """A sales activity: a contact stops the clock; won/lost/disqualified closes."""
    data = ev.data
    a = None
    if data.get("assignment_id"):
        a = await repo.get_assignment(conn, str(data["assignment_id"]))
    if (a is None or a.ended) and data.get("lead_id"):
        lead_id, _ = await repo.resolve_lead(conn, str(data["lead_id"]))  # merged: survivor
        a = await repo.active_assignment(conn, lead_id)
    if a is None or a.ended:
        return
    at = ev.time
    if data.get("occurred_at"):
        try:
            at = parse_time(str(data["occurred_at"]))
        except ValueError:
            at = ev.time
    at = min(at, utcnow())  # a tool's clock running ahead must not stretch the response time
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
    await handle_event(conn, ctx, ev)
    return ev


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
    if not await _save(conn, a, breached):
        return False
    await escalate(conn, ctx, breached, timer["due_at"], now)
    return True


def _manager(ctx: RoutingContext, team_id: str) -> dict[str, Any] | None:
    team = ctx.config.teams.get(team_id)
    return dict(team.manager) if team and team.manager else None


async def escalate(
    conn: AsyncConnection, ctx: RoutingContext, a: Assignment, due: datetime, now: datetime
) -> None:
    """Emit the breach, notify the manager, and take the ladder's step for this breach (a step
    with its own timer is left to that timer)."""
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
    await emit(conn, ctx, events, now)
    if step is None or timed:
        return
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
    await _save(s.conn, s.a, s.a.reassign(s.now), from_=ACTIVE)
    made = await assign(
        s.conn,
        s.ctx,
        _lead_of(s.a.lead),
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
    if active is a:
        await repo.transition(conn, a.id, from_=ACTIVE, escalation_level=index + 1)
    nxt = ctx.config.ladder_step(index + 1)
    if nxt is not None and nxt.after_seconds is not None:
        base = max(due, active.assigned_at) if active is not a else due
        at = add_business_time(base, nxt.after_seconds, team_calendar(ctx, active.team))
        await queues.add_timer(conn, active.id, f"{ESCALATE_PREFIX}{index + 1}", at)


async def on_lead_gone(conn: AsyncConnection, ctx: RoutingContext, ev: CloudEvent) -> None:
    """Erased or disqualified lead: close its clock, drop it from queues; erasure also scrubs
    the personal data kept in assignment snapshots."""
    lead = ev.data.get("lead")
    lead_id = str(lead.get("id")) if isinstance(lead, Mapping) and lead.get("id") else ev.subject
    if not lead_id:
        return
    if ev.type == LeadType.STATUS_CHANGED and (
        not isinstance(lead, Mapping) or lead.get("status") != "disqualified"
    ):
        return
    if ev.type != LeadType.ERASED:
        await repo.lock_person(conn, lead_id)
        lead_id, erased = await repo.resolve_lead(conn, lead_id)
        if erased:
            return
        await repo.lock_person(conn, lead_id)
        await _release(conn, ctx, lead_id)
        return
    now = utcnow()
    merged_ids = await repo.merged_into(conn, lead_id)
    for lid in sorted(merged_ids):  # merged-away ids before the survivor: see repo.lock_person
        await repo.lock_person(conn, lid)
    await repo.lock_person(conn, lead_id)  # a qualified racing this erasure waits, then sees it
    # The tombstone makes a later (or redelivered) qualified of this person a no-op; what was
    # kept under ids merged into this lead is this person's data too.
    await repo.add_tombstone(conn, lead_id, "erased", now)
    ids = [lead_id, *merged_ids]
    for lid in ids:
        await _release(conn, ctx, lid)
        await repo.scrub_lead(conn, lid)
        # Consumers of routing events read the owner and ids, not the lead snapshot, so unsent
        # rows are scrubbed too; a published row's key (an email or phone) becomes the lead id.
        await rewrite_rows(conn, ctx.source, scrub_data, subject=lid, unsent=True, sent_key=lid)
    await queues.scrub_deliveries(conn, ids, scrub_body, now)


async def _release(conn: AsyncConnection, ctx: RoutingContext, lead_id: str) -> None:
    """Close the lead's active assignment (its timers stop) and drop it from every queue."""
    a = await repo.active_assignment(conn, lead_id)
    if a is not None:
        await close(conn, ctx, a)
    await repo.take_from_queue(conn, lead_id)


async def on_merged(conn: AsyncConnection, ctx: RoutingContext, ev: CloudEvent) -> None:
    """Scoring merged leads into one person: that person keeps at most one live assignment.

    A merged-away lead's live assignment is handed to the survivor when the survivor has none
    (same owner, same SLA clock), else closed with its timers; its queue entry likewise moves
    or goes. A tombstone makes the merged-away id follow the survivor from now on.
    """
    data = ev.data
    lead = data.get("lead")
    change = data.get("change")
    if not isinstance(lead, Mapping) or not isinstance(change, Mapping):
        raise ValueError("lead.merged without data.lead or data.change")
    into = str(change.get("into") or lead.get("id") or ev.subject or "")
    merged = change.get("merged_ids")
    if not into or not isinstance(merged, list):
        raise ValueError("lead.merged without change.into or change.merged_ids")
    others = sorted({str(m) for m in merged if m and str(m) != into})
    for other in others:  # merged-away ids before the survivor: see repo.lock_person
        await repo.lock_person(conn, other)
    await repo.lock_person(conn, into)
    survivor, erased = await repo.resolve_lead(conn, into)
    if survivor != into:
        await repo.lock_person(conn, survivor)
    now = utcnow()
    for other in others:
        await repo.add_tombstone(conn, other, "merged", now, into=into)
        if erased:
            await _release(conn, ctx, other)  # the survivor is gone: so is this
            continue
        snapshot = {**lead, "id": survivor}
        old = await repo.active_assignment(conn, other)
        keep = await repo.active_assignment(conn, survivor)
        if old is not None and keep is None:
            await repo.repoint_assignment(conn, old.id, survivor, snapshot, now)
            await repo.take_from_queue(conn, survivor)  # it has an owner now
        elif old is not None:
            await close(conn, ctx, old)
        queued = await repo.take_from_queue_row(conn, other)
        if (
            queued is not None
            and old is None
            and keep is None
            and not await repo.lead_known(conn, survivor)
        ):
            await repo.queue_lead(
                conn,
                {**queued, "lead_id": survivor, "lead_key": snapshot.get("key"), "lead": snapshot},
            )


#: A consumed event's use case.
Handler = Callable[[AsyncConnection, RoutingContext, CloudEvent], Awaitable[None]]

#: What routing does with each event type it consumes (``leadflow.leads``, ``leadflow.sales``).
EVENT_HANDLERS: dict[str, Handler] = {
    LeadType.QUALIFIED: on_qualified,
    LeadType.ERASED: on_lead_gone,
    LeadType.STATUS_CHANGED: on_lead_gone,
    LeadType.MERGED: on_merged,
    **dict.fromkeys(TOUCH_TYPES | CLOSE_TYPES, on_sales),
}


async def handle_event(conn: AsyncConnection, ctx: RoutingContext, ev: CloudEvent) -> None:
    """Dispatch one consumed event (a type routing has no use for is skipped)."""
    handler = EVENT_HANDLERS.get(ev.type)
    if handler is not None:
        await handler(conn, ctx, ev)


def batch_handler(ctx: RoutingContext) -> Any:
    """The ConsumerRunner handler: every event of the batch in the batch's transaction."""

    async def handle(conn: AsyncConnection, events: Sequence[CloudEvent]) -> None:
        for ev in events:
            await handle_event(conn, ctx, ev)

    return handle
