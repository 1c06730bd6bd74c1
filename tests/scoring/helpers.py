"""Builders shared by the scoring tests: default rules, interaction data, a domain driver."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from services.scoring.config import load_rules
from services.scoring.domain import lifecycle, profile
from services.scoring.domain.identity import identifiers_of
from services.scoring.domain.model import Lead
from services.scoring.domain.ruleset import Rules, parse_rules
from shared.config import load_config
from shared.contract import Assigned, Contact, Interaction, Owner
from shared.events import CloudEvent, InteractionType, utcnow

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
    **parts: Any,
) -> CloudEvent:
    """An interaction event as capture writes it (``shared.contract.Interaction``); ``parts``
    are the other fields of the interaction (``anonymous_id``, ``asset``, ``consent`` …)."""
    at = at or utcnow()
    who = Contact(email=email, **(contact or {}))
    parts.setdefault("lead_key", email or who.phone or parts.get("anonymous_id"))
    parts.setdefault("channel", "form")
    ix = Interaction(occurred_at=at, intent=intent, contact=who, **parts)
    return CloudEvent(
        type=type_,
        source="/leadflow/capture",
        data=ix.to_data(),
        id=event_id or str(uuid.uuid4()),
        time=at,
        key=ix.lead_key,
    )


def ix(**fields: Any) -> Interaction:
    """An interaction for the pure domain: a form of ``k@x.io`` at T0 unless told otherwise."""
    fields.setdefault("lead_key", "k@x.io")
    fields.setdefault("occurred_at", T0)
    fields.setdefault("channel", "form")
    return Interaction(**fields)


def ad_lead(
    platform: str,
    lead_id: str,
    contact: Contact | None = None,
    *,
    custom: dict[str, Any] | None = None,
    **ad: Any,
) -> Interaction:
    """An ad platform's lead as capture builds it (``ad_lead_received``, or with ``custom`` the
    ``erasure_requested`` of a deleted one): keyed by the email, else the phone, else
    ``<platform>:<lead id>``."""
    key = (contact.email or contact.phone) if contact is not None else None
    return Interaction(
        lead_key=key or f"{platform}:{lead_id}",
        occurred_at=T0,
        channel="ad",
        contact=contact,
        custom=custom,
        ad={"platform": platform, "lead_id": lead_id, "is_test": False, **ad},
    )


def drive(events: list[CloudEvent], rules: Rules, now: datetime | None = None) -> Lead:
    """Apply interactions of one person to a fresh lead through the pure domain."""
    first = events[0]
    lead = profile.new_lead(
        "lead-1", identifiers_of(Interaction.from_data(first.data), first.key), first.time
    )
    for ev in events:
        msg = Interaction.from_data(ev.data)
        profile.add_identifiers(lead, identifiers_of(msg, ev.key))
        lifecycle.apply_interaction(
            lead, ev.id, ev.type, msg, rules, now or ev.time + timedelta(minutes=1)
        )
    return lead


VP_SALES = {"job_title": "VP of Sales", "company_size": 500, "industry": "software"}


def assigned_data(lead_id: str, owner: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The data of a ``routing.assigned`` event, as routing publishes it (shared.contract)."""
    return Assigned(
        assignment_id=extra.pop("assignment_id", "a-1"),
        lead_id=lead_id,
        owner=Owner.from_data(owner),
        assigned_at=extra.pop("assigned_at", utcnow()),
        reason=extra.pop("reason", "rule: test"),
        lead=extra.pop("lead", {}),
        sla=extra.pop("sla", {"policy": "hot", "due_at": "2026-01-01T00:00:00Z"}),
        **extra,
    ).to_data()
