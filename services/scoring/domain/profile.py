"""A lead's profile from an interaction: identifiers, contact fields, consent, touches.

The contact arrives checked and normalised (``shared.contract.Interaction``), so it is taken as
it is. The free-form parts (attribution) are still coerced where they fill a column: text of a
sane length, anything else dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from services.scoring.domain.identity import ANON, EMAIL, PHONE, Identifiers
from services.scoring.domain.model import PROFILE_FIELDS, Lead
from shared.contract import Interaction

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
    for visitor in (ids.anonymous_id, ids.user_id):
        if visitor and visitor not in lead.anonymous_ids:
            lead.anonymous_ids.append(visitor)
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


def text_value(value: Any, limit: int = 200) -> str | None:
    """A profile or attribution value as trimmed text (numbers too); anything else is dropped."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = str(value).strip()
    return text[:limit] or None


def update_profile(lead: Lead, ix: Interaction, at: datetime) -> None:
    """Newer non-empty contact fields, consent and attribution replace older ones."""
    changed = False
    if ix.contact is not None:
        for name in PROFILE_FIELDS:
            value = getattr(ix.contact, name)
            if value is not None and value != "" and getattr(lead, name) != value:
                setattr(lead, name, value)
                changed = True
    if changed or lead.profile_at is None:
        lead.profile_at = at
    consent = ix.consent
    if consent is not None and consent.get("marketing") is not None:
        lead.consent = dict(consent)
    attribution = ix.attribution
    if attribution is not None:
        first = _touch(attribution, "utm_")
        # capture.js sends the visit's first touch as utm_* and, when a later campaign brought
        # the visitor back, that last touch as last_utm_*.
        last = _touch(attribution, "last_utm_") or first
        if first or last:
            lead.first_touch = lead.first_touch or first or last
            lead.last_touch = last


def _touch(attribution: Mapping[str, Any], prefix: str) -> dict[str, str | None] | None:
    """The campaign touch under ``prefix`` (``utm_`` or ``last_utm_``), None when absent."""
    touch = {
        "source": text_value(attribution.get(f"{prefix}source")),
        "medium": text_value(attribution.get(f"{prefix}medium")),
        "campaign": text_value(attribution.get(f"{prefix}campaign")),
    }
    return touch if any(touch.values()) else None


def erase(lead: Lead, now: datetime) -> None:
    """Forget the person: identifiers and profile go, the anonymous score history stays."""
    lead.email = lead.phone = None
    lead.emails, lead.phones, lead.anonymous_ids = [], [], []
    for name in PROFILE_FIELDS:
        setattr(lead, name, None)
    lead.consent = None
    lead.key = lead.id
    lead.erased_at = now
