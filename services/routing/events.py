"""What routing publishes: the routing events (CloudEvents on ``leadflow.routing``, copied to
outbound webhooks) and the sales activities its API accepts (on ``leadflow.sales``).

Pure: builds CloudEvents and derives their ids, no I/O. An id derived from what caused the
event (the consumed event, the timer, an Idempotency-Key) makes a replay publish the same
event, which the outbox and consumers then ignore. ``handlers.emit`` writes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from services.routing.domain.assignment import Assignment
from shared.contract import Assigned, Owner
from shared.events import CloudEvent, RoutingType, derived_event_id, new_event_id, rfc3339

#: The CloudEvents ``source`` of every event routing publishes.
SOURCE_URI = "/leadflow/routing"
#: Extension type: the breach escalated to the team's manager.
ESCALATED = RoutingType.ESCALATED


def lead_snapshot(lead: Mapping[str, Any]) -> dict[str, Any]:
    """The lead fields an assignment carries (score is the total number)."""
    score = lead.get("score")
    total = score.get("total") if isinstance(score, Mapping) else score
    snap = {
        k: lead.get(k)
        for k in (
            "email",
            "first_name",
            "last_name",
            "company",
            "job_title",
            "temperature",
            "stage",
        )
    }
    snap["score"] = total
    return snap


#: What an erased lead's snapshot becomes in stored events: every field there, all empty.
ERASED_SNAPSHOT: dict[str, Any] = {k: None for k in lead_snapshot({})}


def scrub_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """Event data without the lead's personal data (the snapshot's fields emptied)."""
    out = dict(data)
    if "lead" in out:
        out["lead"] = dict(ERASED_SNAPSHOT)
    return out


def scrub_body(body: str) -> str:
    """A structured CloudEvent (a webhook body) without the lead's personal data: the snapshot
    is emptied and the partition key (the lead's email or phone) dropped."""
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "{}"
    if not isinstance(event, dict):
        return "{}"
    event.pop("partitionkey", None)
    if isinstance(event.get("data"), Mapping):
        event["data"] = scrub_data(event["data"])
    return orjson.dumps(event).decode()


def sla_block(a: Assignment) -> dict[str, Any]:
    """The ``sla`` object of routing events."""
    return {"policy": a.policy, "due_at": rfc3339(a.due_at), "warn_at": rfc3339(a.warn_at)}


def event(
    type_: str,
    data: Mapping[str, Any],
    *cause: str,
    subject: str,
    key: str | None,
    at: datetime | None = None,
) -> CloudEvent:
    """A routing event about lead ``subject`` (Kafka key ``key``, the lead's key); its id
    derives from ``cause`` so a replay repeats it."""
    kwargs: dict[str, Any] = {"time": at} if at else {}
    return CloudEvent(
        type=type_,
        source=SOURCE_URI,
        data=dict(data),
        id=derived_event_id(*cause, type_),
        subject=subject,
        key=key,
        **kwargs,
    )


def assigned_event(
    a: Assignment,
    *cause: str,
    previous_owner: Owner | None = None,
    nurture: Sequence[Mapping[str, Any]] | None = None,
) -> CloudEvent:
    """``routing.assigned`` (or ``routing.reassigned`` when there is a previous owner), with the
    lead's nurture history when it went through a track."""
    data = Assigned(
        assignment_id=a.id,
        lead_id=a.lead_id,
        owner=a.owner,
        assigned_at=a.assigned_at,
        reason=a.reason,
        lead=lead_snapshot(a.lead),
        sla=sla_block(a),
        previous_owner=previous_owner,
        previous_assignment_id=a.previous_assignment_id if previous_owner else None,
        nurture=nurture or None,
    )
    type_ = RoutingType.ASSIGNED if previous_owner is None else RoutingType.REASSIGNED
    return event(type_, data.to_data(), *cause, subject=a.lead_id, key=a.lead_key, at=a.assigned_at)


def clock_data(a: Assignment, at: datetime, **extra: Any) -> dict[str, Any]:
    """The data of an assignment's clock events: who holds it, its SLA, when, and ``extra``."""
    return {
        "assignment_id": a.id,
        "lead_id": a.lead_id,
        "owner": a.owner.to_data(),
        "team": a.team,
        "sla": sla_block(a),
        "at": rfc3339(at),
        **extra,
    }


def clock_event(type_: str, a: Assignment, at: datetime, **extra: Any) -> CloudEvent:
    """``sla_warning``, ``sla_breached``, ``sla_met`` or ``escalated`` for an assignment."""
    data = clock_data(a, at, **extra)
    return event(type_, data, a.id, subject=a.lead_id, key=a.lead_key, at=at)


def unassigned_event(
    lead: Mapping[str, Any], reason: str, queue: str, *cause: str, at: datetime
) -> CloudEvent:
    """``routing.unassigned``: nobody could take the lead (or it moved to a queue)."""
    data = {"lead_id": lead["id"], "lead": lead_snapshot(lead), "reason": reason, "queue": queue}
    return event(
        RoutingType.UNASSIGNED, data, *cause, subject=lead["id"], key=lead.get("key"), at=at
    )


def sales_activity_id(idempotency_key: str | None) -> str:
    """The id of a sales activity posted to the API: the same for a retry with the same
    Idempotency-Key, else a fresh one."""
    if idempotency_key:
        return derived_event_id("sales-activity", idempotency_key)
    return new_event_id()


def sales_activity_event(
    kind: str, data: Mapping[str, Any], *, id: str, at: datetime, lead_id: str, key: str
) -> CloudEvent:
    """``io.leadflow.sales.<kind>``, as a sales tool would publish it (scoring consumes it)."""
    return CloudEvent(
        type=f"io.leadflow.sales.{kind}",
        source=SOURCE_URI,
        data=dict(data),
        id=id,
        time=at,
        subject=lead_id,
        key=key,
    )
