"""Builders shared by the scoring tests: default rules, interaction data, a domain driver."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from services.scoring.domain import lifecycle, profile
from services.scoring.domain.identity import identifiers_of
from services.scoring.domain.model import Lead
from services.scoring.domain.rules import Rules, parse_rules
from services.scoring.main import load_rules
from shared.config import load_config
from shared.events import CloudEvent, InteractionType, rfc3339, utcnow

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def default_rules() -> Rules:
    """The rules of the packaged default config."""
    return load_rules(load_config())


def rules_from(section: dict[str, Any]) -> Rules:
    """Rules from an inline ``scoring:`` section."""
    return parse_rules(section)


def interaction(
    type_: str = InteractionType.FORM_SUBMITTED,
    *,
    email: str | None = "jane@acme.com",
    at: datetime | None = None,
    intent: str | None = None,
    contact: dict[str, Any] | None = None,
    event_id: str | None = None,
    **extra: Any,
) -> CloudEvent:
    """An interaction event as capture writes it (docs/events.md)."""
    at = at or utcnow()
    data: dict[str, Any] = {
        "lead_key": email or extra.get("anonymous_id"),
        "occurred_at": rfc3339(at),
        "channel": "form",
        "form_id": None,
        "intent": intent,
        "contact": {"email": email, **(contact or {})},
        "anonymous_id": None,
        "user_id": None,
        "attribution": None,
        "consent": None,
        "custom": {},
        "asset": None,
        "webinar": None,
        "ad": None,
        "track": None,
    }
    data.update(extra)
    return CloudEvent(
        type=type_,
        source="/leadflow/capture",
        data=data,
        id=event_id or str(uuid.uuid4()),
        time=at,
        key=data["lead_key"],
    )


def drive(events: list[CloudEvent], rules: Rules, now: datetime | None = None) -> Lead:
    """Apply interactions of one person to a fresh lead through the pure domain."""
    first = events[0]
    lead = profile.new_lead("lead-1", identifiers_of(dict(first.data), first.key), first.time)
    for ev in events:
        profile.add_identifiers(lead, identifiers_of(dict(ev.data), ev.key))
        lifecycle.apply_interaction(
            lead, ev.id, ev.type, ev.data, ev.time, rules, now or ev.time + timedelta(minutes=1)
        )
    return lead


VP_SALES = {"job_title": "VP of Sales", "company_size": 500, "industry": "software"}
