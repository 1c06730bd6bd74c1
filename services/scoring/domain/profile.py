"""A lead's profile from interaction data: identifiers, contact fields, consent, touches.

Input comes from outside (forms, ad platforms, tracking), so every value is coerced here:
text stays text of a sane length, sizes are numbers, anything else is dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from services.scoring.domain.identity import ANON, EMAIL, PHONE, Identifiers
from services.scoring.domain.model import PROFILE_FIELDS, Lead
from shared.events import parse_time

#: A lead keeps at most this many identifiers of each kind, the latest ones (plus its primary
#: email, phone and key). Anyone with the public write key can attach anonymous ids to a lead,
#: and an unbounded list grew a lead's state and events past Kafka's 1 MB limit (review C5).
MAX_EMAILS = 10
MAX_PHONES = 10
MAX_ANONYMOUS_IDS = 50
_LISTS = (
    (EMAIL, "emails", MAX_EMAILS),
    (PHONE, "phones", MAX_PHONES),
    (ANON, "anonymous_ids", MAX_ANONYMOUS_IDS),
)


def event_time(data: Mapping[str, Any], fallback: datetime) -> datetime:
    """``occurred_at`` of event data, or the envelope time when absent or unreadable."""
    raw = data.get("occurred_at")
    if isinstance(raw, str):
        try:
            return parse_time(raw)
        except ValueError:
            pass
    return fallback


def new_lead(lead_id: str, ids: Identifiers, now: datetime) -> Lead:
    """A fresh lead for identifiers never seen before."""
    return Lead(id=lead_id, key=ids.key or lead_id, created_at=now)


def add_identifiers(lead: Lead, ids: Identifiers) -> list[tuple[str, str]]:
    """Attach identifiers to the lead; the first email and phone become the primary ones.

    Returns the (kind, value) pairs dropped to keep the lists bounded (:func:`trim_identifiers`).
    """
    if ids.email and ids.email not in lead.emails:
        lead.emails.append(ids.email)
    if ids.phone and ids.phone not in lead.phones:
        lead.phones.append(ids.phone)
    if ids.anonymous_id and ids.anonymous_id not in lead.anonymous_ids:
        lead.anonymous_ids.append(ids.anonymous_id)
    lead.email = lead.email or (lead.emails[0] if lead.emails else None)
    lead.phone = lead.phone or (lead.phones[0] if lead.phones else None)
    lead.key = (
        lead.email or lead.phone or (lead.anonymous_ids[0] if lead.anonymous_ids else lead.key)
    )
    return trim_identifiers(lead)


def identifier_pairs(lead: Lead) -> set[tuple[str, str]]:
    """The (kind, value) pairs of the lead's email, phone and anonymous id lists."""
    return {(kind, v) for kind, name, _ in _LISTS for v in getattr(lead, name)}


def trim_identifiers(lead: Lead) -> list[tuple[str, str]]:
    """Keep the latest identifiers of each kind (lists are oldest first); return those dropped.

    The primary email and phone and the lead key are never dropped: they say who the lead is.
    """
    dropped: list[tuple[str, str]] = []
    pinned = {lead.email, lead.phone, lead.key}
    for kind, name, limit in _LISTS:
        values: list[str] = getattr(lead, name)
        excess = len(values) - limit
        if excess <= 0:
            continue
        kept = []
        for value in values:
            if excess > 0 and value not in pinned:
                dropped.append((kind, value))
                excess -= 1
            else:
                kept.append(value)
        setattr(lead, name, kept)
    return dropped


def _company_size(value: Any) -> int | None:
    """An employee count from a number or text such as ``51-200`` or ``500+`` (lower bound)."""
    count: int | None = None
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and math.isfinite(value):
        count = int(value)
    elif isinstance(value, str):
        digits = "".join(ch if ch.isdigit() else " " for ch in value).split()
        count = int(digits[0][:9]) if digits else None
    return count if count is not None and 0 <= count <= 100_000_000 else None


def text_value(value: Any, limit: int = 200) -> str | None:
    """A profile or attribution value as trimmed text (numbers too); anything else is dropped."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = str(value).strip()
    return text[:limit] or None


def update_profile(lead: Lead, data: Mapping[str, Any], at: datetime) -> None:
    """Newer non-empty contact fields, consent and attribution replace older ones."""
    contact = data.get("contact") if isinstance(data.get("contact"), Mapping) else {}
    assert isinstance(contact, Mapping)
    changed = False
    for name in PROFILE_FIELDS:
        value = contact.get(name)
        value = _company_size(value) if name == "company_size" else text_value(value)
        if value is not None and getattr(lead, name) != value:
            setattr(lead, name, value)
            changed = True
    if changed or lead.profile_at is None:
        lead.profile_at = at
    consent = data.get("consent")
    if isinstance(consent, Mapping) and consent.get("marketing") is not None:
        lead.consent = dict(consent)
    attribution = data.get("attribution")
    if isinstance(attribution, Mapping) and any(
        attribution.get(k) for k in ("utm_source", "utm_medium", "utm_campaign")
    ):
        touch = {
            "source": text_value(attribution.get("utm_source")),
            "medium": text_value(attribution.get("utm_medium")),
            "campaign": text_value(attribution.get("utm_campaign")),
        }
        lead.first_touch = lead.first_touch or touch
        lead.last_touch = touch


def erase(lead: Lead, now: datetime) -> None:
    """Forget the person: identifiers and profile go, the anonymous score history stays."""
    lead.email = lead.phone = None
    lead.emails, lead.phones, lead.anonymous_ids = [], [], []
    for name in PROFILE_FIELDS:
        setattr(lead, name, None)
    lead.consent = None
    lead.key = lead.id
    lead.erased_at = now
