"""Normalised identifiers of a person: email, phone, anonymous id and ad-platform lead id."""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass

import phonenumbers

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
    """Lower-case, trimmed email, or None if it does not look like one."""
    if not isinstance(value, str):
        return None
    email = value.strip().lower()
    if "@" not in email or email.startswith("@") or email.endswith("@") or " " in email:
        return None
    return email if len(email) <= MAX_ID_LENGTH else None


def normalise_phone(value: object, region: object = None) -> str | None:
    """E.164 phone, or None if it cannot be parsed.

    A number without ``+`` is read in the contact's country (ISO alpha-2) when known;
    otherwise it is not guessed.
    """
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        return None
    country = region.upper() if isinstance(region, str) and len(region) == 2 else None
    try:
        parsed = phonenumbers.parse(value.strip(), country)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


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

    def pairs(self) -> list[tuple[str, str]]:
        """(kind, value) pairs, in resolution priority: email, phone, anonymous id, ad lead."""
        out = []
        if self.email:
            out.append((EMAIL, self.email))
        if self.phone:
            out.append((PHONE, self.phone))
        if self.anonymous_id:
            out.append((ANON, self.anonymous_id))
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
        )

    @property
    def key(self) -> str | None:
        """The lead key: normalised email, else phone, else anonymous id."""
        return self.email or self.phone or self.anonymous_id


def identifiers_of(data: dict[str, object], partition_key: str | None = None) -> Identifiers:
    """Identifiers of an interaction event's data (``lead_key`` is the last resort)."""
    contact = data.get("contact") if isinstance(data.get("contact"), dict) else {}
    assert isinstance(contact, dict)
    email = normalise_email(contact.get("email"))
    phone = normalise_phone(contact.get("phone"), contact.get("country"))
    anonymous_id = _plain_id(data.get("anonymous_id")) or _plain_id(data.get("user_id"))
    if not (email or phone or anonymous_id):
        fallback = _plain_id(data.get("lead_key")) or _plain_id(partition_key)
        if fallback:
            email = normalise_email(fallback)
            anonymous_id = None if email else fallback
    return Identifiers(email, phone, anonymous_id, ad_lead_of(data.get("ad")))


def ad_lead_of(ad: object) -> str | None:
    """``<platform>:<lead id>`` of an event's ``ad`` part (as capture builds its lead key)."""
    if not isinstance(ad, dict):
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
