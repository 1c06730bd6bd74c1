"""What capture publishes: interaction events (docs/events.md), their source and their ids.

Pure: builds CloudEvents and derives ids, no I/O. An id derived from what identifies the
submission (an Idempotency-Key, a Segment ``messageId``, a platform's lead id) makes a repeat
the same event, which the outbox and consumers then ignore.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.contract import Interaction
from shared.events import CloudEvent, InteractionType, derived_event_id, utcnow

#: The CloudEvents ``source`` of every event capture publishes.
SOURCE_URI = "/leadflow/capture"
#: Capture's source in the outbox (its spool, see ``services.capture.intake``).
SOURCE = "capture"
#: Event types whose data holds answers fetched from an ad platform (or identifiers).
AD_EVENT_TYPES = (InteractionType.AD_LEAD_RECEIVED, InteractionType.ERASURE_REQUESTED)


def interaction_event(
    type_: str, ix: Interaction, *, id: str, time: datetime | None = None
) -> CloudEvent:
    """The ``io.leadflow.interaction.*`` event of ``ix``, keyed by its lead key."""
    return CloudEvent(
        type=type_,
        source=SOURCE_URI,
        data=ix.to_data(),
        id=id,
        time=time or utcnow(),
        key=ix.lead_key,
    )


def submission_event_id(scope: str, key: str) -> str:
    """The id of a keyed submission (a form, download, webinar or attendance) in ``scope``."""
    return derived_event_id("capture", scope, key)


def tracking_event_id(message_id: str) -> str:
    """The id of a Segment call with a ``messageId``."""
    return derived_event_id("capture", "segment", message_id)


def ad_event_id(platform: str, lead_id: str) -> str:
    """The id of an ad lead: redeliveries and refetches give the same id."""
    return derived_event_id("capture", f"ad:{platform}", lead_id)


def erasure_event_id(platform: str, lead_id: str) -> str:
    """The id of the erasure request of a platform lead (redeliveries dedupe)."""
    return derived_event_id("capture", f"ad:{platform}:erasure", lead_id)


def fetch_deadletter_event(
    platform: str, lead_id: str, attempts: int, error: str, notification: dict[str, Any]
) -> CloudEvent:
    """The dead letter of an ad lead whose details could not be fetched."""
    return CloudEvent(
        type="io.leadflow.deadletter",
        source=SOURCE_URI,
        id=derived_event_id("capture", "ad-deadletter", platform, lead_id),
        data={
            "platform": platform,
            "lead_id": lead_id,
            "attempts": attempts,
            "error": error,
            "notification": notification,
        },
        key=f"{platform}:{lead_id}",
        extensions={
            "deadletterreason": error[:500],
            "deadletterconsumer": "capture-ad-fetcher",
        },
    )
