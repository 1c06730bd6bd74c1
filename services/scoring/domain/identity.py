"""Identifiers of a person: email, phone, anonymous id and ad-platform lead id.

An interaction's contact is already normalised (``shared.contract`` refuses an email that is
not lower-case or a phone that is not E.164); what is decided here is scoring's own: which
values count as identifiers, in which order, and the ``<platform>:<lead id>`` ad identity.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from shared.contract import EMAIL_PATTERN, Interaction

EMAIL = "email"
PHONE = "phone"
ANON = "anon"
#: Longer identifiers are not identifiers (and would not fit the identity index).
MAX_ID_LENGTH = 320
#: A lead id that was merged into another lead keeps pointing at its survivor.
MERGED = "merged"
#: An ad platform's lead id (``linkedin:<id>``): a platform's later deletion notice may name
#: only this, after capture has dropped the email and phone it kept (review M4).
AD = "ad"


def normalise_email(value: object) -> str | None:
    """Lower-case, trimmed email, or None if it does not look like one (an API query's)."""
    if not isinstance(value, str):
        return None
    email = value.strip().lower()
    if "@" not in email or email.startswith("@") or email.endswith("@") or " " in email:
        return None
    return email if len(email) <= MAX_ID_LENGTH else None


def email_domain(email: str | None) -> str | None:
    """The domain part of an email."""
    return email.rsplit("@", 1)[1] if email and "@" in email else None


def email_hash(email: str) -> str:
    """The hash kept for an erased email (the email itself is forgotten)."""
    return hashlib.sha256(email.encode()).hexdigest()


def identifier_hash(kind: str, value: str) -> str:
    """The hash kept for an erased identifier: an email's is :func:`email_hash` (unchanged);
    other kinds are prefixed with the kind and a NUL, which no stored identifier contains."""
    if kind == EMAIL:
        return email_hash(value)
    return hashlib.sha256(f"{kind}\x00{value}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Identifiers:
    """What an event tells us about who it is: each part may be missing."""

    email: str | None
    phone: str | None
    anonymous_id: str | None
    #: ``<platform>:<platform lead id>`` of an ad lead, weakest of all
    ad_lead: str | None = None
    #: a second visitor id of the same event: Segment's ``userId`` beside its ``anonymousId``
    #: (an ``identify`` or an ``alias`` names both), so both lead to, and join, one lead
    user_id: str | None = None

    def pairs(self) -> list[tuple[str, str]]:
        """(kind, value) pairs, in resolution priority: email, phone, anonymous id, ad lead."""
        out = []
        if self.email:
            out.append((EMAIL, self.email))
        if self.phone:
            out.append((PHONE, self.phone))
        if self.anonymous_id:
            out.append((ANON, self.anonymous_id))
        if self.user_id and self.user_id != self.anonymous_id:
            out.append((ANON, self.user_id))
        if self.ad_lead:
            out.append((AD, self.ad_lead))
        return out

    def without(self, pairs: Collection[tuple[str, str]]) -> Identifiers:
        """These identifiers minus the given (kind, value) pairs."""
        return Identifiers(
            None if (EMAIL, self.email) in pairs else self.email,
            None if (PHONE, self.phone) in pairs else self.phone,
            None if (ANON, self.anonymous_id) in pairs else self.anonymous_id,
            None if (AD, self.ad_lead) in pairs else self.ad_lead,
            None if (ANON, self.user_id) in pairs else self.user_id,
        )

    @property
    def key(self) -> str | None:
        """The lead key: normalised email, else phone, else anonymous id."""
        return self.email or self.phone or self.anonymous_id


def identifiers_of(ix: Interaction, partition_key: str | None = None) -> Identifiers:
    """Identifiers of an interaction (``lead_key``, then the Kafka key, are the last resort)."""
    contact = ix.contact
    email = contact.email if contact is not None else None
    phone = contact.phone if contact is not None else None
    anonymous_id, user_id = _plain_id(ix.anonymous_id), _plain_id(ix.user_id)
    if anonymous_id is None:  # a server-side call names the user only: that is its visitor id
        anonymous_id, user_id = user_id, None
    if not (email or phone or anonymous_id):
        # The lead key is capture's normalised email, else phone, else anonymous id.
        fallback = _plain_id(ix.lead_key) or _plain_id(partition_key)
        if fallback:
            email = fallback if EMAIL_PATTERN.match(fallback) else None
            anonymous_id = None if email else fallback
    return Identifiers(email, phone, anonymous_id, ad_lead_of(ix.ad), user_id)


def ad_lead_of(ad: object) -> str | None:
    """``<platform>:<lead id>`` of an event's ``ad`` part (as capture builds its lead key)."""
    if not isinstance(ad, Mapping):
        return None
    platform, lead_id = _plain_id(ad.get("platform")), _plain_id(ad.get("lead_id"))
    if not (platform and lead_id):
        return None
    value = f"{platform.lower()}:{lead_id}"
    return value if len(value) <= MAX_ID_LENGTH else None


def _plain_id(value: object) -> str | None:
    """A usable anonymous id: a non-empty string or number of sane length."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    return text if 0 < len(text) <= MAX_ID_LENGTH else None
