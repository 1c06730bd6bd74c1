"""What scoring publishes: the ``leadflow.leads`` events of a lead's changes (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from services.scoring.domain.lifecycle import Change
from services.scoring.domain.model import Lead
from shared.contract import LeadSnapshot, Owner, Score
from shared.events import CloudEvent, derived_event_id

#: The service's name as the outbox and the dead letters know it.
SOURCE = "scoring"
#: The CloudEvents ``source`` of what scoring publishes.
SOURCE_URI = "/leadflow/scoring"


def snapshot(lead: Lead) -> LeadSnapshot:
    """The lead as its events carry it (:meth:`Lead.to_snapshot`, typed)."""
    return LeadSnapshot(
        id=lead.id,
        status=lead.status,
        stage=lead.stage,
        temperature=lead.temperature,
        score=Score(lead.total, lead.fit, lead.engagement, tuple(lead.reasons)),
        created_at=lead.created_at,
        key=lead.key,
        email=lead.email,
        owner=Owner.from_data(lead.owner) if lead.owner else None,
        erased=lead.erased_at is not None,
        data=lead.to_snapshot(),
    )


def snapshot_data(lead: Lead) -> dict[str, Any]:
    """``snapshot(lead).to_data()``, without copying the score's reasons twice."""
    out = lead.to_snapshot()
    out["owner"] = Owner.from_data(lead.owner).to_data() if lead.owner else None
    return out


def lead_events(
    lead: Lead, changes: Sequence[Change], cause_id: str, cause_type: str, now: datetime
) -> list[CloudEvent]:
    """The ``leadflow.leads`` events for changes of one lead caused by one event.

    Keyed by the lead key, as the public contract says. That key can change (a visitor
    identifies; an erasure resets it to the lead id), so ``lead.erased`` may reach a consumer
    before an earlier ``lead.qualified``: routing keeps a tombstone of erased ids for that.
    """
    if not changes:
        return []
    # LeadEvent(snapshot, cause, change).to_data(), with the snapshot's data built once
    lead_data = snapshot_data(lead)
    cause = {"event_id": cause_id, "type": cause_type}
    return [
        CloudEvent(
            type=change.type,
            source=SOURCE_URI,
            data=_event_data(lead_data, cause, change.change),
            time=now,
            subject=lead.id,
            key=lead.key,
            id=derived_event_id(cause_id, lead.id, change.type),
        )
        for change in changes
    ]


def _event_data(
    lead_data: dict[str, Any], cause: dict[str, Any], change: dict[str, Any] | None
) -> dict[str, Any]:
    out: dict[str, Any] = {"lead": lead_data, "cause": cause}
    if change is not None:
        out["change"] = dict(change)
    return out


def scrubbed(lead_id: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """How an already published event about ``lead_id`` is kept once the person is erased:
    the cause and the change stay, the lead shrinks to its id."""

    def rewrite(data: dict[str, Any]) -> dict[str, Any]:
        return {
            "lead": {"id": lead_id, "erased": True},
            "cause": data.get("cause"),
            "change": data.get("change"),
        }

    return rewrite
