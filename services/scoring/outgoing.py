"""What scoring publishes: the ``leadflow.leads`` events of a lead's changes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from services.scoring.domain.lifecycle import Change
from services.scoring.domain.model import Lead
from shared.events import CloudEvent, derived_event_id

SOURCE = "scoring"
CE_SOURCE = "/leadflow/scoring"


def lead_events(
    lead: Lead, changes: Sequence[Change], cause_id: str, cause_type: str, now: datetime
) -> list[CloudEvent]:
    """The ``leadflow.leads`` events for changes of one lead caused by one event.

    Keyed by the lead key, as the public contract says. That key can change (a visitor
    identifies; an erasure resets it to the lead id), so ``lead.erased`` may reach a consumer
    before an earlier ``lead.qualified``: routing keeps a tombstone of erased ids for that.
    """
    snapshot = lead.to_snapshot()
    out = []
    for change in changes:
        data: dict[str, Any] = {
            "lead": snapshot,
            "cause": {"event_id": cause_id, "type": cause_type},
        }
        if change.change is not None:
            data["change"] = change.change
        out.append(
            CloudEvent(
                type=change.type,
                source=CE_SOURCE,
                data=data,
                time=now,
                subject=lead.id,
                key=lead.key,
                id=derived_event_id(cause_id, lead.id, change.type),
            )
        )
    return out
