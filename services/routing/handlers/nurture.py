"""Nurture tracks: lead events enrol and exit leads, step timers announce each due step.

Every change happens in the caller's transaction (the consumer's batch, with its inbox row; the
step worker's or the stall scan's own), and what it announces goes through the outbox to
``leadflow.nurture`` and, as signed webhook deliveries, to the marketing tools that send the
content, in that same transaction. Event ids derive from the enrolment and the step, so a
replay announces nothing new. Each lead is locked (:func:`repo.lock_person`) before its
enrolment is read, so the consumer, the step worker and the scan never decide on it at once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from services.routing import durable_queues as queues
from services.routing import nurture_store as store
from services.routing import repository as repo
from services.routing.deps import RoutingContext
from services.routing.domain import nurture as domain
from services.routing.events import event, lead_snapshot
from shared.contract import LeadSnapshot
from shared.events import (
    CloudEvent,
    InvalidEvent,
    LeadType,
    NurtureType,
    derived_event_id,
    rfc3339,
    utcnow,
)
from shared.outbox import enqueue

log = logging.getLogger(__name__)

#: The lead events that may enrol or exit a lead.
LEAD_EVENTS = frozenset(
    {
        LeadType.CREATED,
        LeadType.SCORED,
        LeadType.TEMPERATURE_CHANGED,
        LeadType.STAGE_CHANGED,
        LeadType.QUALIFIED,
        LeadType.STATUS_CHANGED,
        LeadType.MERGED,
        LeadType.ERASED,
        LeadType.CONSENT_CHANGED,
    }
)


async def emit_nurture(
    conn: AsyncConnection, ctx: RoutingContext, events: Sequence[CloudEvent], now: datetime
) -> None:
    """Publish nurture events in the caller's transaction: the outbox row for
    ``leadflow.nurture`` and one delivery per subscribed webhook."""
    if not events:
        return
    await enqueue(conn, ctx.source, ctx.topics.nurture, events)
    await queues.add_webhook_copies(conn, ctx.config.webhooks, events, now)


def nurture_lead(lead: Mapping[str, Any]) -> dict[str, Any]:
    """The lead in nurture events: who to contact, in which language and country, its
    score, and its recorded consent."""
    snap = lead_snapshot(lead)
    snap.update(
        id=lead.get("id"),
        country=lead.get("country"),
        consent=lead.get("consent"),
        last_activity_at=lead.get("last_activity_at"),
    )
    return snap


def _event(
    type_: str, enrolment: Mapping[str, Any], data: Mapping[str, Any], *cause: str, at: datetime
) -> CloudEvent:
    body = {
        "enrolment_id": enrolment["id"],
        "lead_id": enrolment["lead_id"],
        "track": enrolment["track"],
        "at": rfc3339(at),
        **data,
    }
    return event(
        type_,
        body,
        str(enrolment["id"]),
        *cause,
        subject=str(enrolment["lead_id"]),
        key=enrolment.get("lead_key") or str(enrolment["lead_id"]),
        at=at,
    )


def _history(rows: Sequence[Mapping[str, Any]]) -> list[domain.PastEnrolment]:
    return [domain.PastEnrolment(str(r["track"]), r["exited_at"]) for r in rows]


async def exit_enrolment(
    conn: AsyncConnection,
    ctx: RoutingContext,
    enrolment: Mapping[str, Any],
    reason: str,
    now: datetime,
    *,
    lead: Mapping[str, Any] | None = None,
) -> bool:
    """End an active enrolment for ``reason`` (its pending step is cancelled) and announce
    ``nurture.exited``; False if it had ended already."""
    stage = str(lead["stage"]) if lead is not None and lead.get("stage") else None
    if not await store.end_enrolment(conn, str(enrolment["id"]), reason, now, stage):
        return False
    shown = enrolment["lead"] if lead is None else lead
    if reason == domain.ERASED:
        shown = {"id": enrolment["lead_id"]}
        enrolment = {**enrolment, "lead_key": None}
    history = await store.steps_of(conn, [str(enrolment["id"])])
    data = {
        "reason": reason,
        "enrolled_at": rfc3339(enrolment["enrolled_at"]),
        "steps_done": int(enrolment["step_index"]),
        # what the lead got before leaving (sales sees it with the lead it is assigned)
        "history": [
            {
                "step_id": h["step_id"],
                "due_at": rfc3339(h["due_at"]),
                "state": h["state"],
                "outcome": h["outcome"],
            }
            for h in history
        ],
        "lead": nurture_lead(shown),
    }
    await emit_nurture(
        conn, ctx, [_event(NurtureType.EXITED, enrolment, data, "exit", at=now)], now
    )
    return True


async def enrol(
    conn: AsyncConnection,
    ctx: RoutingContext,
    lead: LeadSnapshot,
    choice: domain.Enrol,
    cause: str,
    now: datetime,
) -> str | None:
    """Start ``choice.track`` for the lead: the enrolment, its first step's timer and
    ``nurture.enrolled``; the enrolment id, or None if this cause enrolled it already."""
    track = choice.track
    enrolment_id = "nur-" + derived_event_id(lead.id, track.name, cause)
    stored = dict(lead.data) if lead.data is not None else lead.to_data()
    row = {
        "id": enrolment_id,
        "lead_id": lead.id,
        "lead_key": lead.key,
        "track": track.name,
        "state": "active",
        "reason": dict(choice.reason),
        "lead": stored,
        "step_index": 0,
        "entry_stage": lead.stage,
        "last_stage": lead.stage,
        "enrolled_at": now,
        "updated_at": now,
    }
    if not await store.add_enrolment(conn, row):
        return None
    due = domain.step_due_at(track, 0, now)
    assert due is not None  # a track has steps
    await store.add_step(conn, enrolment_id, lead.id, 0, track.steps[0].id, due)
    data = {
        "reason": dict(choice.reason),
        "steps": [s.to_data(i) for i, s in enumerate(track.steps)],
        "first_step_due_at": rfc3339(due),
        "lead": nurture_lead(stored),
    }
    await emit_nurture(
        conn, ctx, [_event(NurtureType.ENROLLED, row, data, "enrolled", at=now)], now
    )
    return enrolment_id


async def consider(
    conn: AsyncConnection, ctx: RoutingContext, lead: LeadSnapshot, cause: str, now: datetime
) -> None:
    """The lead as it is now (its lock held): exit its track if it should leave, refresh it if
    it stays, else enrol it in the first track that admits it."""
    cfg = ctx.config.nurture
    stored = dict(lead.data) if lead.data is not None else lead.to_data()
    if _stall_candidate(ctx, lead):
        await store.keep_lead(conn, lead.id, lead.stage, domain.last_activity(lead), stored, now)
    else:
        await store.forget_lead(conn, lead.id)
    active = await store.active_enrolment(conn, lead.id)
    if active is not None:
        reason = domain.exit_reason(cfg.track(str(active["track"])), lead)
        if reason is None:
            await store.refresh_enrolment(conn, str(active["id"]), stored, lead.key, now)
            return
        await exit_enrolment(conn, ctx, active, reason, now, lead=stored)
    past = _history(await store.enrolments_of(conn, lead.id))
    choice = domain.choose_track(cfg, lead, past, now, ctx.config.segments)
    if choice is not None:
        await enrol(conn, ctx, lead, choice, cause, now)


def _stall_candidate(ctx: RoutingContext, lead: LeadSnapshot) -> bool:
    """Whether a stall rule may concern the lead (the scan should know it)."""
    stall_stages = {t.entry.stall.stage for t in ctx.config.nurture.tracks if t.entry.stall}
    return lead.stage in stall_stages and domain.exit_reason(None, lead) == domain.COMPLETED


#: Lead changes that may take a lead out of the stall scan's sight.
_MOVES = frozenset({LeadType.STAGE_CHANGED, LeadType.STATUS_CHANGED, LeadType.QUALIFIED})


@dataclass(slots=True)
class BatchView:
    """What one consumer batch knows of nurture before its first event: the leads that had an
    active enrolment then (one read for the whole batch instead of one per event), and the
    leads this batch has considered since (whose enrolment it may have started)."""

    enrolled: set[str]
    considered: set[str] = field(default_factory=set)
    #: the lead snapshots considered (lead id, the snapshot as JSON): the events one
    #: interaction caused (created, scored, stage_changed, qualified…) carry the same
    #: snapshot, and considering it again would only repeat the same reads to do nothing
    snapshots: set[tuple[str, bytes]] = field(default_factory=set)

    def may_be_enrolled(self, lead_id: str) -> bool:
        return lead_id in self.enrolled or lead_id in self.considered


async def batch_view(
    conn: AsyncConnection, ctx: RoutingContext, events: Sequence[CloudEvent]
) -> BatchView:
    """The :class:`BatchView` of a batch's lead events (no read when there are no tracks)."""
    ids = {i for ev in events if ev.type in LEAD_EVENTS and (i := _lead_id(ev))}
    if not ctx.config.nurture.tracks or not ids:
        return BatchView(set())
    return BatchView(await store.actively_enrolled(conn, sorted(ids)))


def _lead_id(ev: CloudEvent) -> str | None:
    raw = ev.data.get("lead")
    return str(raw.get("id")) if isinstance(raw, Mapping) and raw.get("id") else ev.subject


async def _concerns_nurture(
    conn: AsyncConnection,
    ctx: RoutingContext,
    lead: LeadSnapshot,
    ev: CloudEvent,
    now: datetime,
    view: BatchView | None,
) -> bool:
    """Whether this lead event can change anything in nurture (no lock): the lead is in a
    track, may enter one, is one the stall scan should know, or just left its sight. Most
    lead events (a cold lead scored again) are none of these, and with the batch's
    :class:`BatchView` they cost no read."""
    cfg = ctx.config.nurture
    if _stall_candidate(ctx, lead) or ev.type in _MOVES:
        return True
    if any(domain.entry_reason(t, lead, now, ctx.config.segments) for t in cfg.tracks):
        return True
    if view is not None:
        return view.may_be_enrolled(lead.id)
    return await store.active_enrolment(conn, lead.id) is not None


async def _end_all(
    conn: AsyncConnection, ctx: RoutingContext, lead_id: str, reason: str, now: datetime
) -> None:
    active = await store.active_enrolment(conn, lead_id)
    if active is not None:
        await exit_enrolment(conn, ctx, active, reason, now)
    await store.forget_lead(conn, lead_id)


async def on_lead_event(
    conn: AsyncConnection, ctx: RoutingContext, ev: CloudEvent, view: BatchView | None = None
) -> None:
    """A ``lead.*`` event: enrol, refresh or exit the lead's nurture track. ``view``: the
    consumer batch's :class:`BatchView` (without one, the enrolment is read per event)."""
    if ev.type not in LEAD_EVENTS:
        return
    now = utcnow()
    data = ev.data
    raw = data.get("lead")
    lead_id = _lead_id(ev)
    if not lead_id:
        return
    if ev.type == LeadType.ERASED:
        # Erasure stops every track at once; what is kept of the person goes.
        ids = sorted(await repo.merged_into(conn, lead_id))
        for lid in [*ids, lead_id]:
            await repo.lock_person(conn, lid)
        for lid in [*ids, lead_id]:
            await _end_all(conn, ctx, lid, domain.ERASED, now)
            await store.scrub_enrolments(conn, lid)
        return
    if ev.type == LeadType.MERGED:
        change = data.get("change")
        merged = change.get("merged_ids") if isinstance(change, Mapping) else None
        for other in sorted({str(m) for m in merged or [] if m and str(m) != lead_id}):
            await repo.lock_person(conn, other)
            await _end_all(conn, ctx, other, domain.MERGED, now)
    try:
        lead = LeadSnapshot.from_data(raw)
    except InvalidEvent as exc:
        log.warning("nurture: %s %s carries no usable lead (%s); skipped", ev.type, ev.id, exc)
        return
    if not ctx.config.nurture.tracks or not await _concerns_nurture(conn, ctx, lead, ev, now, view):
        # Without tracks, enrolments made under an earlier config end when their step is due.
        return
    if view is not None:
        seen = (lead.id, orjson.dumps(raw, option=orjson.OPT_SORT_KEYS))
        if seen in view.snapshots:
            return
        view.snapshots.add(seen)
    await repo.lock_person(conn, lead.id)
    survivor, erased = await repo.resolve_lead(conn, lead.id)
    if erased or survivor != lead.id:
        return  # an erased or merged-away lead: its survivor's own events count
    if view is not None:
        view.considered.add(lead.id)
    await consider(conn, ctx, lead, ev.id, now)


async def fire_step(
    conn: AsyncConnection, ctx: RoutingContext, step: Mapping[str, Any], now: datetime
) -> bool:
    """A due step (once: pending -> fired): announce it (``nurture.step_due``) unless the
    lead left, skip it without recorded consent, then schedule the next step or complete the
    track. True if this caller fired it."""
    lead_id = str(step["lead_id"])
    await repo.lock_person(conn, lead_id)
    step_pk = int(step["id"])
    if not await store.fire_step(conn, step_pk, now):
        return False
    enr = await store.enrolment(conn, str(step["enrolment_id"]))
    if enr is None or enr["state"] != "active":
        await store.set_outcome(conn, step_pk, "cancelled")
        return True
    track = ctx.config.nurture.track(str(enr["track"]))
    index = int(step["step_index"])
    if track is None or index >= len(track.steps):
        await store.set_outcome(conn, step_pk, "track_changed")
        await exit_enrolment(conn, ctx, enr, domain.COMPLETED, now)
        return True
    try:
        lead = LeadSnapshot.from_data(enr["lead"])
    except InvalidEvent:
        await store.set_outcome(conn, step_pk, "cancelled")
        await exit_enrolment(conn, ctx, enr, domain.ERASED, now)
        return True
    reason = domain.exit_reason(track, lead)
    if reason is not None:
        await store.set_outcome(conn, step_pk, f"exited:{reason}")
        await exit_enrolment(conn, ctx, enr, reason, now)
        return True
    the_step = track.steps[index]
    outcome = domain.step_outcome(the_step, lead)
    await store.set_outcome(conn, step_pk, outcome)
    events = []
    if outcome == domain.SEND:
        data = {
            "step": the_step.to_data(index),
            "due_at": rfc3339(step["due_at"]),
            "reason": {
                "enrolled_because": enr["reason"],
                "step": f"{index + 1} of {len(track.steps)}",
                "consent": domain.consent(lead),
            },
            "lead": nurture_lead(enr["lead"]),
        }
        events.append(_event(NurtureType.STEP_DUE, enr, data, "step", str(index), at=now))
    await emit_nurture(conn, ctx, events, now)
    nxt = domain.step_due_at(track, index + 1, step["due_at"])
    if nxt is None:
        await store.advance(conn, str(enr["id"]), index + 1, now)
        await exit_enrolment(conn, ctx, {**enr, "step_index": index + 1}, domain.COMPLETED, now)
    else:
        await store.add_step(
            conn, str(enr["id"]), lead_id, index + 1, track.steps[index + 1].id, nxt
        )
        await store.advance(conn, str(enr["id"]), index + 1, now)
    return True


async def enrol_stalled(
    conn: AsyncConnection, ctx: RoutingContext, row: Mapping[str, Any], now: datetime
) -> bool:
    """The stall scan found this lead idle: enrol it if a track admits it now (its lock held,
    re-read). True if it was enrolled."""
    lead_id = str(row["lead_id"])
    await repo.lock_person(conn, lead_id)
    if await store.active_enrolment(conn, lead_id) is not None:
        return False
    try:
        lead = LeadSnapshot.from_data(row["lead"])
    except InvalidEvent:
        await store.forget_lead(conn, lead_id)
        return False
    past = _history(await store.enrolments_of(conn, lead_id))
    choice = domain.choose_track(ctx.config.nurture, lead, past, now, ctx.config.segments)
    if choice is None:
        return False
    cause = f"stall:{domain.last_activity(lead).isoformat()}"
    return await enrol(conn, ctx, lead, choice, cause, now) is not None
