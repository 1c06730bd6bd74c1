"""The data of ``io.leadflow.interaction.*`` events, built from flat submitted fields.

One function turns what a website form (or a download / webinar registration) posted into the
event data of docs/events.md: normalised contact, attribution, consent and ``custom``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
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

CONTACT_FIELDS = (
    "email",
    "phone",
    "first_name",
    "last_name",
    "company",
    "job_title",
    "industry",
    "company_size",
    "country",
)
ATTRIBUTION_FIELDS = (
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "page_url",
    "referrer",
)
OTHER_FIELDS = ("message", "consent_marketing", "anonymous_id")
KNOWN_FIELDS = frozenset(CONTACT_FIELDS + ATTRIBUTION_FIELDS + OTHER_FIELDS)
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
    intent: str
    allowed_origins: tuple[str, ...] = ()
    default_region: str | None = None
    consent_text_version: str | None = None


@dataclass(slots=True)
class Interaction:
    """A captured interaction: its lead key and its event data."""

    lead_key: str
    data: dict[str, Any] = field(default_factory=dict)


def empty_data(channel: str, lead_key: str, occurred_at: str) -> dict[str, Any]:
    """Event data with every part of docs/events.md present and null."""
    return {
        "lead_key": lead_key,
        "occurred_at": occurred_at,
        "channel": channel,
        "form_id": None,
        "intent": None,
        "contact": None,
        "anonymous_id": None,
        "user_id": None,
        "attribution": None,
        "consent": None,
        "custom": None,
        "asset": None,
        "webinar": None,
        "ad": None,
        "track": None,
    }


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


def lead_key_of(contact: Mapping[str, Any] | None, anonymous_id: str | None) -> str | None:
    """The lead key: normalised email, else E.164 phone, else the anonymous id."""
    contact = contact or {}
    return contact.get("email") or contact.get("phone") or anonymous_id or None


def parse_contact(
    fields: Mapping[str, Any], default_region: str | None, errors: list[dict[str, str]]
) -> dict[str, Any]:
    """Normalise the contact fields; problems are appended to ``errors``."""
    texts = {name: _text(fields, name, errors) for name in CONTACT_FIELDS if name != "company_size"}
    contact: dict[str, Any] = {name: None for name in CONTACT_FIELDS}
    contact["company_size_raw"] = None
    for name in ("first_name", "last_name", "company", "job_title", "industry"):
        contact[name] = texts[name]
    if texts["country"]:
        contact["country"] = normalize_country(texts["country"])
    region = contact["country"] or default_region
    for name, parse in (
        ("email", normalize_email),
        ("phone", lambda v: normalize_phone(v, region)),
    ):
        value = texts[name]
        if value:
            try:
                contact[name] = parse(value)
            except InvalidValue as exc:
                errors.append({"loc": f"/body/{name}", "msg": str(exc)})
    raw_size = fields.get("company_size")
    if isinstance(raw_size, str | int) and not isinstance(raw_size, bool):
        contact["company_size"] = parse_company_size(raw_size)
        contact["company_size_raw"] = clean_text(str(raw_size), 100)
    elif raw_size is not None:
        errors.append({"loc": "/body/company_size", "msg": "must be a string or a number"})
    return contact


def build_interaction(
    fields: Mapping[str, Any],
    *,
    channel: str,
    occurred_at: str,
    form: FormSettings | None = None,
    default_region: str | None = None,
    consent_form_id: str | None = None,
) -> Interaction:
    """Turn submitted fields into an interaction; raise :class:`InvalidSubmission` if unusable.

    Email or phone is required: a website submission without either cannot reach a person.
    Fields whose name starts with ``_`` are controls (honeypot, redirect) and are dropped.
    """
    errors: list[dict[str, str]] = []
    region = (form.default_region if form else None) or default_region
    contact = parse_contact(fields, region, errors)
    attribution = {name: _text(fields, name, errors) for name in ATTRIBUTION_FIELDS}
    anonymous_id = _text(fields, "anonymous_id", errors)
    message = _text(fields, "message", errors)
    consent = None
    if fields.get("consent_marketing") is not None:
        try:
            consent = {
                "marketing": parse_bool(fields["consent_marketing"]),
                "at": occurred_at,
                "form_id": form.form_id if form else consent_form_id,
                "text_version": form.consent_text_version if form else None,
            }
        except InvalidValue as exc:
            errors.append({"loc": "/body/consent_marketing", "msg": str(exc)})
    custom = {k: v for k, v in fields.items() if k not in KNOWN_FIELDS and not k.startswith("_")}
    if len(custom) > MAX_CUSTOM_FIELDS:
        errors.append({"loc": "/body", "msg": f"more than {MAX_CUSTOM_FIELDS} custom fields"})
    if (
        not contact["email"]
        and not contact["phone"]
        and not any(e["loc"] in ("/body/email", "/body/phone") for e in errors)
    ):
        errors.append({"loc": "/body/email", "msg": "email or phone is required"})
    if errors:
        raise InvalidSubmission(errors)
    lead_key = lead_key_of(contact, anonymous_id)
    assert lead_key is not None  # email or phone is present, checked above
    data = empty_data(channel, lead_key, occurred_at)
    data.update(
        contact=contact,
        anonymous_id=anonymous_id,
        attribution=attribution if any(attribution.values()) else None,
        consent=consent,
        custom=custom or None,
        message=message,
    )
    if form is not None:
        data.update(form_id=form.form_id, intent=form.intent)
    return Interaction(lead_key=lead_key, data=data)
