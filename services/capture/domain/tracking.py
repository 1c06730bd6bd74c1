"""Segment HTTP Tracking API messages (track, page, identify) as interaction events."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.capture.domain.interaction import NO_CONTACT, InvalidSubmission, parse_contact
from shared.contract import CONTACT_FIELDS, Contact, Interaction
from shared.events import InteractionType, parse_time

TRACK_TYPES = {
    "track": InteractionType.TRACKED,
    "page": InteractionType.TRACKED,
    "screen": InteractionType.TRACKED,
    "identify": InteractionType.IDENTIFIED,
}
_CAMPAIGN = {
    "source": "utm_source",
    "medium": "utm_medium",
    "name": "utm_campaign",
    "term": "utm_term",
    "content": "utm_content",
}


@dataclass(frozen=True, slots=True)
class TrackedCall:
    """One accepted Segment call: the event type, the interaction and Segment's messageId."""

    event_type: str
    interaction: Interaction
    message_id: str | None


def _id(value: Any) -> str | None:
    if isinstance(value, str):  # the usual case first
        return value.strip()[:200] or None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        text = str(value).strip()
        return text[:200] or None
    return None


def _obj(
    message: Mapping[str, Any], name: str, loc: str, errors: list[dict[str, str]]
) -> dict[str, Any]:
    value = message.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append({"loc": f"{loc}/{name}", "msg": "must be an object"})
        return {}
    return value


def _occurred_at(message: Mapping[str, Any], received_at: datetime) -> datetime:
    stamp = message.get("timestamp")
    if isinstance(stamp, str):
        try:
            return parse_time(stamp)
        except ValueError:
            pass  # Segment keeps the receipt time when a client clock sends garbage
    return received_at


def _attribution(
    context: Mapping[str, Any], properties: Mapping[str, Any]
) -> dict[str, Any] | None:
    raw_campaign, raw_page = context.get("campaign"), context.get("page")
    if not (raw_campaign or raw_page or properties.get("url") or properties.get("referrer")):
        return None  # nothing to attribute (a server-side call without context)
    campaign: Mapping[str, Any] = raw_campaign if isinstance(raw_campaign, dict) else {}
    page: Mapping[str, Any] = raw_page if isinstance(raw_page, dict) else {}
    out: dict[str, Any] = {key: None for key in _CAMPAIGN.values()}
    for segment_name, ours in _CAMPAIGN.items():
        value = campaign.get(segment_name)
        out[ours] = str(value)[:500] if isinstance(value, str | int) and value != "" else None
    url = page.get("url") or properties.get("url")
    referrer = page.get("referrer") or properties.get("referrer")
    out["page_url"] = url[:2000] if isinstance(url, str) and url else None
    out["referrer"] = referrer[:2000] if isinstance(referrer, str) and referrer else None
    return out if any(out.values()) else None


def parse_call(
    message: Mapping[str, Any], call_type: str, received_at: datetime, loc: str = "/body"
) -> TrackedCall:
    """Validate one Segment message of ``call_type``; raise :class:`InvalidSubmission`."""
    errors: list[dict[str, str]] = []
    if call_type not in TRACK_TYPES:
        raise InvalidSubmission([{"loc": f"{loc}/type", "msg": f"unsupported type {call_type!r}"}])
    anonymous_id, user_id = _id(message.get("anonymousId")), _id(message.get("userId"))
    if not anonymous_id and not user_id:
        errors.append({"loc": f"{loc}/anonymousId", "msg": "userId or anonymousId is required"})
    properties = _obj(message, "properties", loc, errors)
    traits = _obj(message, "traits", loc, errors)
    context = _obj(message, "context", loc, errors)
    if not traits and isinstance(context.get("traits"), dict):
        traits = context["traits"]
    event_name = message.get("event")
    if call_type == "track" and (not isinstance(event_name, str) or not event_name.strip()):
        errors.append({"loc": f"{loc}/event", "msg": "track needs an event name"})
    page_name = message.get("name")
    contact_errors: list[dict[str, str]] = []
    contact = parse_contact(traits, None, contact_errors)
    if call_type == "identify":
        errors.extend(
            {"loc": f"{loc}/traits{e['loc'][5:]}", "msg": e["msg"]} for e in contact_errors
        )
    elif contact_errors:
        contact = Contact()  # bad traits on a page view must not lose the view
    if errors:
        raise InvalidSubmission(errors)
    lead_key = contact.email or anonymous_id or user_id
    assert lead_key is not None
    track, custom = None, None
    if call_type != "identify":
        track = {
            "event": "page" if call_type in ("page", "screen") else str(event_name).strip()[:200],
            "name": page_name[:200] if isinstance(page_name, str) else None,
            "properties": properties,
        }
    else:
        custom = {k: v for k, v in traits.items() if k not in CONTACT_FIELDS} or None
    interaction = Interaction(
        lead_key=lead_key,
        occurred_at=_occurred_at(message, received_at),
        channel="tracking",
        contact=None if contact is NO_CONTACT or contact.is_empty else contact,
        anonymous_id=anonymous_id,
        user_id=user_id,
        attribution=_attribution(context, properties),
        custom=custom,
        track=track,
    )
    return TrackedCall(TRACK_TYPES[call_type], interaction, _id(message.get("messageId")))
