"""What a person does to a lead through the API: override stage/status, erase. One unit of work."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.scoring import repository
from services.scoring.domain import lifecycle, profile
from services.scoring.domain.identity import email_hash
from services.scoring.domain.lifecycle import Change
from services.scoring.domain.model import Lead
from services.scoring.domain.privacy import scrub_interaction
from services.scoring.events import SOURCE, lead_events, scrubbed
from services.scoring.repository import LeadRepository
from shared.events import LeadType, new_event_id
from shared.outbox import rewrite_rows
from shared.topics import Topics

OVERRIDE_TYPE = "io.leadflow.scoring.override"
ERASURE_TYPE = "io.leadflow.scoring.erasure"


async def override_lead(
    conn: AsyncConnection,
    topics: Topics,
    lead_id: str,
    *,
    stage: str | None,
    status: str | None,
    reason: str | None,
    now: datetime,
) -> Lead | None:
    """Set stage and/or status by hand (any direction), audited in the timeline."""
    repo = LeadRepository(conn, topics.leads)
    lead = (await repo.load([lead_id])).get(lead_id)
    if lead is None:
        return None
    changes = lifecycle.override(lead, stage=stage, status=status, now=now)
    cause = new_event_id()
    repo.touch(lead)
    repo.add_timeline(
        lead.id,
        now,
        "override",
        OVERRIDE_TYPE,
        cause,
        {
            "stage": stage,
            "status": status,
            "reason": reason,
            "by": "api",
            "changes": [c.change for c in changes],
        },
    )
    await repo.commit(now, lead_events(lead, changes, cause, OVERRIDE_TYPE, now))
    return lead


async def erase_lead(
    conn: AsyncConnection,
    topics: Topics,
    lead_id: str,
    now: datetime,
    *,
    cause_id: str | None = None,
    cause_type: str = ERASURE_TYPE,
    details: dict[str, Any] | None = None,
    extra_hashes: Iterable[str] = (),
) -> Lead | None:
    """Remove the person's data from the lead and its stored interactions; remember the email.

    ``DELETE /v1/leads/{id}`` and an ``erasure_requested`` event both come here; the event
    passes its own id as ``cause_id`` (so ``lead.erased`` gets a stable id) and the hashes of
    the identifiers it named as ``extra_hashes``.
    """
    repo = LeadRepository(conn, topics.leads)
    lead = (await repo.load([lead_id])).get(lead_id)
    if lead is None:
        return None
    hashes = [email_hash(e) for e in lead.emails] + list(extra_hashes)
    profile.erase(lead, now)
    await repository.erase(conn, lead.id, hashes, now, scrub_interaction)
    # What scoring already published about the person is only history now; rows the relay
    # still owes to Kafka are left alone (``lead.erased`` follows them).
    await rewrite_rows(conn, SOURCE, scrubbed(lead.id), subject=lead.id)
    cause = cause_id or new_event_id()
    repo.touch(lead)
    repo.add_timeline(lead.id, now, "erased", cause_type, cause, details or {"by": "api"})
    await repo.commit(now, lead_events(lead, [Change(LeadType.ERASED)], cause, cause_type, now))
    return lead
