"""Ad-platform lead callbacks (Meta, Google Ads, LinkedIn): signatures and field mapping.

The wire formats are those the platforms document (see docs/capture.md, ad platforms). Ids are
kept as strings exactly as sent (JSON is parsed so that big integers never pass through a float).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from services.capture.domain.interaction import parse_contact
from shared.contract import Contact, Interaction


class InvalidPayload(ValueError):
    """A webhook body that is not the platform's documented shape."""


def loads_exact(raw: bytes) -> Any:
    """Parse JSON keeping integers exact and never producing a float."""
    try:
        return json.loads(raw, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidPayload(f"body is not valid JSON: {exc}") from None


def id_str(value: Any) -> str | None:
    """An id as a string: numbers are rendered exactly, empty values give None."""
    if value is None or isinstance(value, bool | dict | list):
        return None
    if isinstance(value, Decimal):
        return format(value, "f")
    text = str(value).strip()
    return text or None


def hmac_hex(secret: str, message: bytes) -> str:
    """Hex HMAC-SHA256 of ``message``."""
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def meta_signature_ok(secret: str, raw: bytes, header: str | None) -> bool:
    """``X-Hub-Signature-256: sha256=<hex>`` over the raw body, compared in constant time."""
    if not header or not header.startswith("sha256="):
        return False
    return hmac.compare_digest(header[7:].strip().lower(), hmac_hex(secret, raw))


def linkedin_signature_ok(secret: str, raw: bytes, header: str | None) -> bool:
    """``X-LI-Signature``, accepting both readings of LinkedIn's documentation."""
    if not header:
        return False
    given = header.strip()
    prefixed = hmac_hex(secret, b"hmacsha256=" + raw)
    plain = "hmacsha256=" + hmac_hex(secret, raw)
    # Evaluate both comparisons so timing does not reveal which reading matched.
    first = hmac.compare_digest(given.lower(), prefixed)
    second = hmac.compare_digest(given.lower(), plain)
    return first or second


def meta_leadgen_changes(payload: Any) -> list[dict[str, str | None]]:
    """Every ``leadgen`` change of a Meta notification, ids as strings."""
    if not isinstance(payload, dict) or not isinstance(payload.get("entry", []), list):
        raise InvalidPayload("expected an object with an 'entry' list")
    out = []
    for entry in payload.get("entry") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("changes", []), list):
            continue
        for change in entry.get("changes") or []:
            if not isinstance(change, dict) or change.get("field") != "leadgen":
                continue
            value = change.get("value")
            if not isinstance(value, dict) or id_str(value.get("leadgen_id")) is None:
                continue
            out.append(
                {
                    name: id_str(value.get(name))
                    for name in (
                        "leadgen_id",
                        "page_id",
                        "form_id",
                        "adgroup_id",
                        "ad_id",
                        "created_time",
                    )
                }
            )
    return out


_META_NAMES = {
    "email": "email",
    "work_email": "email",
    "phone_number": "phone",
    "phone": "phone",
    "first_name": "first_name",
    "last_name": "last_name",
    "company_name": "company",
    "company": "company",
    "job_title": "job_title",
    "country": "country",
    "industry": "industry",
    "company_size": "company_size",
}
_GOOGLE_IDS = {
    "EMAIL": "email",
    "WORK_EMAIL": "email",
    "PHONE_NUMBER": "phone",
    "WORK_PHONE": "phone",
    "FIRST_NAME": "first_name",
    "LAST_NAME": "last_name",
    "COMPANY_NAME": "company",
    "JOB_TITLE": "job_title",
    "COUNTRY": "country",
}
_LINKEDIN_FIELDS = {
    "EMAIL": "email",
    "WORK_EMAIL": "email",
    "PHONE_NUMBER": "phone",
    "FIRST_NAME": "first_name",
    "LAST_NAME": "last_name",
    "COMPANY_NAME": "company",
    "JOB_TITLE": "job_title",
    "COUNTRY": "country",
    "INDUSTRY": "industry",
    "COMPANY_SIZE": "company_size",
}


def _put(fields: dict[str, Any], name: str, value: Any) -> None:
    # The first answer wins for a contact field (EMAIL before WORK_EMAIL); extra ones go to custom.
    if name in fields:
        fields.setdefault("custom", {})[name] = value
    else:
        fields[name] = value


def _split_full_name(fields: dict[str, Any], full: str) -> None:
    first, _, last = full.strip().partition(" ")
    fields.setdefault("first_name", first or None)
    fields.setdefault("last_name", last.strip() or None)


def meta_fields(lead: Mapping[str, Any]) -> dict[str, Any]:
    """Contact fields from a Graph API lead (``field_data``); unknown names go to ``custom``."""
    fields: dict[str, Any] = {}
    for item in lead.get("field_data") or []:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            continue
        values = item.get("values") or []
        value = values[0] if isinstance(values, list) and values else None
        if value is None:
            continue
        name = item["name"].strip().lower()
        if name == "full_name":
            _split_full_name(fields, str(value))
        elif name in _META_NAMES:
            _put(fields, _META_NAMES[name], str(value))
        else:
            fields.setdefault("custom", {})[item["name"]] = value
    return fields


def google_fields(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Contact fields from Google Ads ``user_column_data``; custom questions by their text."""
    fields: dict[str, Any] = {}
    columns = payload.get("user_column_data")
    if not isinstance(columns, list):
        raise InvalidPayload("user_column_data must be a list")
    for col in columns:
        if not isinstance(col, dict):
            continue
        column_id, value = col.get("column_id"), col.get("string_value")
        if value is None:
            continue
        if column_id == "FULL_NAME":
            _split_full_name(fields, str(value))
        elif column_id in _GOOGLE_IDS:
            _put(fields, _GOOGLE_IDS[column_id], str(value))
        else:
            label = col.get("column_name") or column_id or "unknown"
            fields.setdefault("custom", {})[str(label)] = value
    return fields


def linkedin_fields(response: Mapping[str, Any], form: Mapping[str, Any]) -> dict[str, Any]:
    """Contact fields from a Lead Sync form response, mapped through the form's questions."""
    questions: dict[str, str] = {}
    raw_content = form.get("content")
    content: Mapping[str, Any] = raw_content if isinstance(raw_content, dict) else form
    for q in content.get("questions") or []:
        if isinstance(q, dict) and q.get("questionId") is not None:
            questions[str(q["questionId"])] = str(q.get("predefinedField") or q.get("name") or "")
    fields: dict[str, Any] = {}
    answers = (response.get("formResponse") or {}).get("answers") or []
    for answer in answers if isinstance(answers, list) else []:
        if not isinstance(answer, dict):
            continue
        details = answer.get("answerDetails") or {}
        text = (details.get("textQuestionAnswer") or {}).get("answer")
        if text is None:
            continue
        key = questions.get(str(answer.get("questionId")), str(answer.get("questionId")))
        if key in _LINKEDIN_FIELDS:
            _put(fields, _LINKEDIN_FIELDS[key], str(text))
        else:
            fields.setdefault("custom", {})[key] = text
    return fields


def ad_interaction(
    platform: str,
    lead_id: str,
    fields: Mapping[str, Any],
    ad: Mapping[str, Any],
    occurred_at: datetime,
) -> Interaction:
    """An ``ad_lead_received`` interaction. Lenient: the platform already collected the lead,
    so an unparseable email or phone is kept raw under ``custom`` rather than refused."""
    errors: list[dict[str, str]] = []
    contact = parse_contact(fields, None, errors)
    custom = dict(fields.get("custom") or {})
    for err in errors:
        name = err["loc"].rsplit("/", 1)[-1]
        custom[f"{name}_raw"] = fields.get(name)
    return Interaction(
        lead_key=contact.email or contact.phone or f"{platform}:{lead_id}",
        occurred_at=occurred_at,
        channel="ad",
        contact=contact,
        custom=custom or None,
        ad={
            "platform": platform,
            "lead_id": lead_id,
            "form_id": ad.get("form_id"),
            "campaign_id": ad.get("campaign_id"),
            "ad_id": ad.get("ad_id"),
            "is_test": bool(ad.get("is_test", False)),
            **{
                k: v
                for k, v in ad.items()
                if k not in ("form_id", "campaign_id", "ad_id", "is_test")
            },
        },
    )


def erasure_interaction(
    platform: str,
    lead_id: str,
    email: str | None,
    phone: str | None,
    occurred_at: datetime,
    reason: str,
) -> Interaction:
    """An ``erasure_requested`` interaction for a platform lead (docs/events.md): the person's
    identifiers when known, ``ad`` naming the lead, ``custom.reason``. The lead key is the
    email, else the phone, else the platform lead id (as for ``ad_lead_received``)."""
    return Interaction(
        lead_key=email or phone or f"{platform}:{lead_id}",
        occurred_at=occurred_at,
        channel="ad",
        contact=Contact(email=email or None, phone=phone or None) if email or phone else None,
        custom={"reason": reason},
        ad={
            "platform": platform,
            "lead_id": lead_id,
            "form_id": None,
            "campaign_id": None,
            "ad_id": None,
            "is_test": False,
        },
    )
