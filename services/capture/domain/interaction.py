"""Interactions (:class:`shared.contract.Interaction`) built from flat submitted fields.

One function turns what a website form (or a download / webinar registration) posted into the
interaction of docs/events.md: normalised contact, attribution, consent and ``custom``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.capture.domain.normalize import (
    InvalidValue,
    clean_text,
    normalize_country,
    normalize_email,
    normalize_phone,
    parse_bool,
    parse_company_size,
)
from shared.contract import CONTACT_FIELDS, Channel, Contact, Intent, Interaction, InvalidEvent
from shared.events import rfc3339

#: The contact fields a submission may carry (``company_size_raw`` is derived, not posted).
INPUT_CONTACT_FIELDS = tuple(name for name in CONTACT_FIELDS if name != "company_size_raw")
#: Ad click ids capture.js keeps from the landing URL (offline-conversion uploads need them).
CLICK_ID_FIELDS = ("gclid", "gbraid", "wbraid", "fbclid", "li_fat_id", "msclkid")
#: The first touch is ``utm_*``/``referrer``; the last touch, when it differs, ``last_*``.
LAST_TOUCH_FIELDS = (
    "last_utm_source",
    "last_utm_medium",
    "last_utm_campaign",
    "last_utm_term",
    "last_utm_content",
    "last_referrer",
)
ATTRIBUTION_FIELDS = (
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "page_url",
    "referrer",
    *CLICK_ID_FIELDS,
    *LAST_TOUCH_FIELDS,
    "landing_url",
    "first_touch_at",
    "last_touch_at",
)
OTHER_FIELDS = ("message", "consent_marketing", "anonymous_id")
KNOWN_FIELDS = frozenset(INPUT_CONTACT_FIELDS + ATTRIBUTION_FIELDS + OTHER_FIELDS)
MAX_CUSTOM_FIELDS = 100


class InvalidSubmission(ValueError):
    """Submitted fields that cannot become an event; ``errors`` are ``{"loc", "msg"}`` items."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['loc']}: {e['msg']}" for e in errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class FormSettings:
    """What the config says about one form."""

    form_id: str
    intent: Intent
    allowed_origins: tuple[str, ...] = ()
    default_region: str | None = None
    consent_text_version: str | None = None


def _text(fields: Mapping[str, Any], name: str, errors: list[dict[str, str]]) -> str | None:
    value = fields.get(name)
    if value is None or isinstance(value, bool):
        if isinstance(value, bool):
            errors.append({"loc": f"/body/{name}", "msg": "must be a string"})
        return None
    if isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str):
        errors.append({"loc": f"/body/{name}", "msg": "must be a string"})
        return None
    return clean_text(value, 2000 if name in ("message", "page_url", "referrer") else 500)


def lead_key_of(contact: Contact | None, anonymous_id: str | None) -> str | None:
    """The lead key: normalised email, else E.164 phone, else the anonymous id."""
    if contact is not None and (contact.email or contact.phone):
        return contact.email or contact.phone
    return anonymous_id or None


def _checked(name: str, value: str) -> str:
    # The contract's own check of the normalised value, so nothing off-contract is published.
    try:
        Contact(email=value) if name == "email" else Contact(phone=value)
    except InvalidEvent as exc:
        raise InvalidValue(str(exc).rsplit(": ", 1)[-1]) from None
    return value


#: The contact of fields that hold none of :data:`INPUT_CONTACT_FIELDS`.
NO_CONTACT = Contact()
_CONTACT_INPUTS = frozenset(INPUT_CONTACT_FIELDS)


def parse_contact(
    fields: Mapping[str, Any], default_region: str | None, errors: list[dict[str, str]]
) -> Contact:
    """Normalise the contact fields; problems are appended to ``errors``."""
    if not fields.keys() & _CONTACT_INPUTS:
        return NO_CONTACT  # a page view or track call without traits
    # The contact checks email and phone as :func:`_checked` does: when it takes them, checking
    # each on its own first would have passed too, so that is done only when it does not.
    mark = len(errors)
    try:
        return _parse_contact(fields, default_region, errors, check_each=False)
    except InvalidEvent:
        del errors[mark:]
    return _parse_contact(fields, default_region, errors, check_each=True)


def _parse_contact(
    fields: Mapping[str, Any],
    default_region: str | None,
    errors: list[dict[str, str]],
    *,
    check_each: bool,
) -> Contact:
    texts = {
        name: _text(fields, name, errors) if name in fields else None
        for name in INPUT_CONTACT_FIELDS
        if name != "company_size"
    }
    values: dict[str, Any] = {
        name: texts[name]
        for name in ("first_name", "last_name", "company", "job_title", "industry")
    }
    values["country"] = normalize_country(texts["country"]) if texts["country"] else None
    region = values["country"] or default_region
    parsers: tuple[tuple[str, Callable[[str], str]], ...] = (
        ("email", normalize_email),
        ("phone", lambda v: normalize_phone(v, region)),
    )
    for name, parse in parsers:
        value = texts[name]
        if value:
            try:
                values[name] = _checked(name, parse(value)) if check_each else parse(value)
            except InvalidValue as exc:
                errors.append({"loc": f"/body/{name}", "msg": str(exc)})
    raw_size = fields.get("company_size")
    if isinstance(raw_size, str | int) and not isinstance(raw_size, bool):
        values["company_size"] = parse_company_size(raw_size)
        values["company_size_raw"] = clean_text(str(raw_size), 100)
    elif raw_size is not None:
        errors.append({"loc": "/body/company_size", "msg": "must be a string or a number"})
    return Contact(**values)


def build_interaction(
    fields: Mapping[str, Any],
    *,
    channel: Channel,
    occurred_at: datetime,
    form: FormSettings | None = None,
    default_region: str | None = None,
) -> Interaction:
    """Turn submitted fields into an interaction; raise :class:`InvalidSubmission` if unusable.

    Email or phone is required: a website submission without either cannot reach a person.
    Fields whose name starts with ``_`` are controls (honeypot, redirect) and are dropped.
    """
    errors: list[dict[str, str]] = []
    region = (form.default_region if form else None) or default_region
    contact = parse_contact(fields, region, errors)
    attribution = dict.fromkeys(ATTRIBUTION_FIELDS)
    if not fields.keys().isdisjoint(ATTRIBUTION_FIELDS):
        for name in ATTRIBUTION_FIELDS:
            if name in fields:
                attribution[name] = _text(fields, name, errors)
    anonymous_id = _text(fields, "anonymous_id", errors)
    message = _text(fields, "message", errors)
    consent = None
    if fields.get("consent_marketing") is not None:
        try:
            consent = {
                "marketing": parse_bool(fields["consent_marketing"]),
                "at": rfc3339(occurred_at),
                "form_id": form.form_id if form else None,
                "text_version": form.consent_text_version if form else None,
            }
        except InvalidValue as exc:
            errors.append({"loc": "/body/consent_marketing", "msg": str(exc)})
    custom = {k: v for k, v in fields.items() if k not in KNOWN_FIELDS and not k.startswith("_")}
    if len(custom) > MAX_CUSTOM_FIELDS:
        errors.append({"loc": "/body", "msg": f"more than {MAX_CUSTOM_FIELDS} custom fields"})
    if (
        not contact.email
        and not contact.phone
        and not any(e["loc"] in ("/body/email", "/body/phone") for e in errors)
    ):
        errors.append({"loc": "/body/email", "msg": "email or phone is required"})
    if errors:
        raise InvalidSubmission(errors)
    lead_key = lead_key_of(contact, anonymous_id)
    assert lead_key is not None  # email or phone is present, checked above
    return Interaction(
        lead_key=lead_key,
        occurred_at=occurred_at,
        channel=channel,
        form_id=form.form_id if form else None,
        intent=form.intent if form else None,
        contact=contact,
        anonymous_id=anonymous_id,
        attribution=attribution if any(attribution.values()) else None,
        consent=consent,
        custom=custom or None,
        message=message,
    )
