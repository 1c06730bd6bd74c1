"""The routing events (CloudEvents on ``leadflow.routing``) and their outbound-webhook copies.

Every event is written with :func:`emit` in the transaction of the state change it reports:
the outbox row for Kafka and one delivery row per subscribed webhook commit together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from services.routing import durable_queues as queues
from services.routing.domain.model import RoutingConfig
from shared.events import CloudEvent, RoutingType, derived_event_id, rfc3339
from shared.outbox import enqueue
from shared.topics import Topics

EVENT_SOURCE = "/leadflow/routing"
#: Extension type: the breach escalated to the team's manager.
ESCALATED = RoutingType.ESCALATED


@dataclass
class RoutingContext:
    """What handlers need besides the connection: config, topics, and post-commit wake-ups."""

    config: RoutingConfig
    topics: Topics
    source: str = "routing"
    wakers: list[Callable[[], None]] = field(default_factory=list)

    def after_commit(self) -> None:
        """Wake the relay and the workers (call after a commit that wrote something)."""
        for wake in self.wakers:
            wake()


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


def sla_block(row: Mapping[str, Any]) -> dict[str, Any]:
    """The ``sla`` object of routing events."""
    return {
        "policy": row["policy"],
        "due_at": rfc3339(row["due_at"]),
        "warn_at": rfc3339(row["warn_at"]),
    }


def event(
    type_: str,
    row: Mapping[str, Any],
    data: Mapping[str, Any],
    *cause: str,
    at: datetime | None = None,
) -> CloudEvent:
    """A routing event about a lead; its id derives from ``cause`` so a replay repeats it."""
    kwargs: dict[str, Any] = {"time": at} if at else {}
    return CloudEvent(
        type=type_,
        source=EVENT_SOURCE,
        data=dict(data),
        id=derived_event_id(*cause, type_),
        subject=row["lead_id"],
        key=row.get("lead_key"),
        **kwargs,
    )


def assigned_event(
    row: Mapping[str, Any], *cause: str, previous_owner: Mapping[str, Any] | None = None
) -> CloudEvent:
    """``routing.assigned`` (or ``routing.reassigned`` when there is a previous owner)."""
    data = {
        "assignment_id": row["id"],
        "lead_id": row["lead_id"],
        "owner": row["owner"],
        "lead": lead_snapshot(row["lead"]),
        "sla": sla_block(row),
        "assigned_at": rfc3339(row["assigned_at"]),
        "reason": row["reason"],
    }
    if previous_owner is not None:
        data["previous_owner"] = dict(previous_owner)
        data["previous_assignment_id"] = row["previous_assignment_id"]
        return event(RoutingType.REASSIGNED, row, data, *cause, at=row["assigned_at"])
    return event(RoutingType.ASSIGNED, row, data, *cause, at=row["assigned_at"])


def clock_data(row: Mapping[str, Any], at: datetime, **extra: Any) -> dict[str, Any]:
    """The data of an assignment's clock events: who holds it, its SLA, when, and ``extra``."""
    return {
        "assignment_id": row["id"],
        "lead_id": row["lead_id"],
        "owner": row["owner"],
        "team": row["team"],
        "sla": sla_block(row),
        "at": rfc3339(at),
        **extra,
    }


def clock_event(type_: str, row: Mapping[str, Any], at: datetime, **extra: Any) -> CloudEvent:
    """``sla_warning``, ``sla_breached``, ``sla_met`` or ``escalated`` for an assignment."""
    return event(type_, row, clock_data(row, at, **extra), row["id"], at=at)


def unassigned_event(
    lead: Mapping[str, Any], reason: str, queue: str, *cause: str, at: datetime
) -> CloudEvent:
    """``routing.unassigned``: nobody could take the lead (or it moved to a queue)."""
    row = {"lead_id": lead["id"], "lead_key": lead.get("key")}
    data = {"lead_id": lead["id"], "lead": lead_snapshot(lead), "reason": reason, "queue": queue}
    return event(RoutingType.UNASSIGNED, row, data, *cause, at=at)


async def emit(
    conn: AsyncConnection, ctx: RoutingContext, events: Sequence[CloudEvent], now: datetime
) -> None:
    """Write events to the outbox and queue their webhook deliveries, in the caller's tx."""
    if not events:
        return
    await enqueue(conn, ctx.source, ctx.topics.routing, events)
    rows = []
    for hook in ctx.config.webhooks:
        for ev in events:
            if hook.events and ev.type not in hook.events:
                continue
            rows.append(
                {
                    "webhook": hook.name,
                    "url": hook.url,
                    "event_id": ev.id,
                    "event_type": ev.type,
                    "lead_id": ev.subject,
                    "body": orjson.dumps(ev.to_structured()).decode(),
                    "state": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
            )
    await queues.add_deliveries(conn, rows)
