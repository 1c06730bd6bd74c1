"""Segment's ``group`` and ``alias`` calls, message dispatch, batch triage and body decoding.

``group`` ties the lead to its account: the group's traits (``name``, ``industry``,
``employees``, ``country``) become the lead's company fields on an ``identified`` interaction,
which scoring already applies to the profile. ``alias`` names one person by two ids
(``previousId`` and ``userId``): an ``identified`` interaction carrying both, like the
anonymous to known join of ``identify``. All pure: no I/O.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import orjson

from services.capture.domain.interaction import InvalidSubmission, parse_contact
from services.capture.domain.tracking import (
    TRACK_TYPES,
    TrackedCall,
    _attribution,
    _id,
    _obj,
    _occurred_at,
    parse_call,
)
from shared.contract import Interaction
from shared.events import InteractionType

#: analytics.js (analytics-next) posts to ``{apiHost}/<first letter of the call type>``.
SHORT_PATHS = {
    "t": "track",
    "p": "page",
    "i": "identify",
    "g": "group",
    "a": "alias",
    "s": "screen",
    "b": "batch",
}
CALL_TYPES = (*TRACK_TYPES, "group", "alias")

#: group traits (Segment's reserved names) → our contact fields
_GROUP_TRAITS = {
    "name": "company",
    "industry": "industry",
    "employees": "company_size",
    "country": "country",
}


def parse_group(
    message: Mapping[str, Any], received_at: datetime, loc: str = "/body"
) -> TrackedCall:
    """A ``group`` call: the lead's company traits; raise :class:`InvalidSubmission`."""
    errors: list[dict[str, str]] = []
    anonymous_id, user_id = _id(message.get("anonymousId")), _id(message.get("userId"))
    if not anonymous_id and not user_id:
        errors.append({"loc": f"{loc}/anonymousId", "msg": "userId or anonymousId is required"})
    group_id = _id(message.get("groupId"))
    if not group_id:
        errors.append({"loc": f"{loc}/groupId", "msg": "group needs a groupId"})
    traits = _obj(message, "traits", loc, errors)
    context = _obj(message, "context", loc, errors)
    fields: dict[str, Any] = {}
    for theirs, ours in _GROUP_TRAITS.items():
        if traits.get(theirs) is not None:
            fields[ours] = traits[theirs]
    address = traits.get("address")
    if "country" not in fields and isinstance(address, dict) and address.get("country"):
        fields["country"] = address["country"]
    contact_errors: list[dict[str, str]] = []
    # The group's own email or phone is the account's, not the person's: never contact data.
    contact = parse_contact(fields, None, contact_errors)
    reverse = {ours: theirs for theirs, ours in _GROUP_TRAITS.items()}
    for e in contact_errors:
        name = e["loc"].rsplit("/", 1)[-1]
        errors.append({"loc": f"{loc}/traits/{reverse.get(name, name)}", "msg": e["msg"]})
    if errors:
        raise InvalidSubmission(errors)
    lead_key = anonymous_id or user_id
    assert lead_key is not None and group_id is not None
    interaction = Interaction(
        lead_key=lead_key,
        occurred_at=_occurred_at(message, received_at),
        channel="tracking",
        contact=None if contact.is_empty else contact,
        anonymous_id=anonymous_id,
        user_id=user_id,
        attribution=_attribution(context, {}),
        custom={"group": {"group_id": group_id, "traits": dict(traits)}},
    )
    return TrackedCall(InteractionType.IDENTIFIED, interaction, _id(message.get("messageId")))


def parse_alias(
    message: Mapping[str, Any], received_at: datetime, loc: str = "/body"
) -> TrackedCall:
    """An ``alias`` call: ``previousId`` and ``userId`` are the same person."""
    errors: list[dict[str, str]] = []
    previous_id, user_id = _id(message.get("previousId")), _id(message.get("userId"))
    if not previous_id:
        errors.append({"loc": f"{loc}/previousId", "msg": "alias needs a previousId"})
    if not user_id:
        errors.append({"loc": f"{loc}/userId", "msg": "alias needs a userId"})
    context = _obj(message, "context", loc, errors)
    if errors:
        raise InvalidSubmission(errors)
    assert previous_id is not None and user_id is not None
    interaction = Interaction(
        # Keyed by the id being kept, so the alias is ordered with that person's later calls.
        lead_key=user_id,
        occurred_at=_occurred_at(message, received_at),
        channel="tracking",
        anonymous_id=previous_id,
        user_id=user_id,
        attribution=_attribution(context, {}),
        custom={"alias": {"previous_id": previous_id, "user_id": user_id}},
    )
    return TrackedCall(InteractionType.IDENTIFIED, interaction, _id(message.get("messageId")))


#: Segment's reserved identify traits (camelCase, as analytics.js and the SDKs send them)
_RESERVED_TRAITS = {"firstName": "first_name", "lastName": "last_name", "title": "job_title"}
_COMPANY_TRAITS = {"name": "company", "industry": "industry", "employee_count": "company_size"}


def reserved_traits(traits: Mapping[str, Any]) -> dict[str, Any]:
    """Segment's reserved traits under our contact names: ``firstName`` → ``first_name``,
    ``lastName``, ``title`` → ``job_title``, ``company.name`` / ``.industry`` /
    ``.employee_count``, ``address.country``. A field already given our way wins."""
    out = dict(traits)
    for theirs, ours in _RESERVED_TRAITS.items():
        if theirs in out and out.get(ours) is None:
            out[ours] = out.pop(theirs)
    company = out.get("company")
    if isinstance(company, dict):
        del out["company"]
        for theirs, ours in _COMPANY_TRAITS.items():
            if company.get(theirs) is not None and out.get(ours) is None:
                out[ours] = company[theirs]
    address = out.get("address")
    if isinstance(address, dict) and address.get("country") and out.get("country") is None:
        out["country"] = address["country"]
    return out


def parse_message(
    message: Mapping[str, Any], call_type: str, received_at: datetime, loc: str = "/body"
) -> TrackedCall:
    """Any supported Segment call of ``call_type``; raise :class:`InvalidSubmission`."""
    if call_type == "group":
        return parse_group(message, received_at, loc)
    if call_type == "alias":
        return parse_alias(message, received_at, loc)
    if call_type == "identify" and isinstance(message.get("traits"), dict):
        message = {**message, "traits": reserved_traits(message["traits"])}
    return parse_call(message, call_type, received_at, loc)


@dataclass(slots=True)
class Triage:
    """A batch split into the calls to accept and the messages rejected one by one."""

    calls: list[TrackedCall] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)


def triage_batch(
    items: Sequence[Any],
    received_at: datetime,
    shared_context: Mapping[str, Any] | None,
    event_limit: int,
) -> Triage:
    """Validate each message of a batch on its own, as Segment does: a bad one is rejected
    (with its index, ``messageId`` and errors) and the others are still accepted."""
    out = Triage()
    for i, item in enumerate(items):
        loc = f"/body/batch/{i}"
        if not isinstance(item, dict):
            out.rejected.append(_rejected(i, None, [{"loc": loc, "msg": "must be an object"}]))
            continue
        message_id = _id(item.get("messageId"))
        if len(orjson.dumps(item)) > event_limit:
            msg = f"larger than {event_limit} bytes"
            out.rejected.append(_rejected(i, message_id, [{"loc": loc, "msg": msg}]))
            continue
        if shared_context and "context" not in item:
            item = {**item, "context": dict(shared_context)}
        raw_type = item.get("type")
        call_type = raw_type if isinstance(raw_type, str) else ""
        try:
            out.calls.append(parse_message(item, call_type, received_at, loc))
        except InvalidSubmission as exc:
            out.rejected.append(_rejected(i, message_id, exc.errors[:20]))
    return out


def _rejected(index: int, message_id: str | None, errors: list[dict[str, str]]) -> dict[str, Any]:
    return {"index": index, "messageId": message_id, "errors": errors}


# -- Content-Encoding ------------------------------------------------------------------------


class BodyTooLarge(ValueError):
    """The decoded body is over the limit."""


class CorruptBody(ValueError):
    """The body is not valid data of its declared content coding."""


class UnsupportedEncoding(ValueError):
    """A content coding other than gzip, deflate or identity."""


def _inflate(data: bytes, limit: int, make: Callable[[], Any], multi_member: bool) -> bytes:
    """Inflate ``data`` with decompressors from ``make`` without ever holding more than
    ``limit + 1`` bytes of output (a small zip bomb cannot blow up memory)."""
    out = bytearray()
    rest = data
    while True:
        d = make()
        try:
            out += d.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise CorruptBody(str(exc)) from None
        if len(out) > limit or d.unconsumed_tail:
            raise BodyTooLarge(f"the decoded body is larger than {limit} bytes")
        if not d.eof:
            raise CorruptBody("the compressed data is truncated")
        rest = d.unused_data
        if not (multi_member and rest):
            break
    if rest and rest.strip(b"\x00"):
        raise CorruptBody("data after the end of the compressed stream")
    return bytes(out)


def decode_content(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` decoded by its ``Content-Encoding`` (gzip, x-gzip, deflate, identity, or a
    list of them applied in order), at most ``limit`` bytes decoded.

    Raises :class:`BodyTooLarge`, :class:`CorruptBody` or :class:`UnsupportedEncoding`.
    """
    codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
    for coding in reversed(codings):
        if coding in ("gzip", "x-gzip"):
            body = _inflate(body, limit, partial(zlib.decompressobj, 16 + zlib.MAX_WBITS), True)
        elif coding == "deflate":
            # RFC 9110 deflate is zlib-wrapped; some clients send a raw deflate stream.
            wrapped = (
                len(body) >= 2 and body[0] & 0x0F == 8 and int.from_bytes(body[:2], "big") % 31 == 0
            )
            wbits = zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS
            body = _inflate(body, limit, partial(zlib.decompressobj, wbits), False)
        elif coding != "identity":
            raise UnsupportedEncoding(coding)
    if len(body) > limit:
        raise BodyTooLarge(f"the body is larger than {limit} bytes")
    return body
