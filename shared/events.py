"""The CloudEvents 1.0 envelope and its Kafka encodings.

Leadflow produces binary mode: every attribute travels as a ``ce_*`` header, ``content-type``
carries the data content type, the value is the JSON data and the Kafka key is the lead key (the
CloudEvents ``partitionkey`` extension), so one lead's events stay in order. It consumes binary
and structured mode (``content-type: application/cloudevents+json``, the whole event as the
value), as the Kafka protocol binding asks of consumers, so any CloudEvents SDK can write to its
topics.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"
_SPECVERSION_BYTES = SPECVERSION.encode()
_CONTENT_TYPE_BYTES = CONTENT_TYPE.encode()
_NAMESPACE = uuid.UUID("6f1e2a52-6c86-4c5b-9a38-6d6f6c656164")
_NAMESPACE_BYTES = _NAMESPACE.bytes


class InteractionType:
    """``leadflow.interactions`` event types (written by capture)."""

    FORM_SUBMITTED = "io.leadflow.interaction.form_submitted"
    CONTENT_DOWNLOADED = "io.leadflow.interaction.content_downloaded"
    WEBINAR_REGISTERED = "io.leadflow.interaction.webinar_registered"
    WEBINAR_ATTENDED = "io.leadflow.interaction.webinar_attended"
    AD_LEAD_RECEIVED = "io.leadflow.interaction.ad_lead_received"
    TRACKED = "io.leadflow.interaction.tracked"
    IDENTIFIED = "io.leadflow.interaction.identified"
    #: An extension to the contract: a source asked for a person's data to be erased
    #: (a LinkedIn lead-form response DELETED, for instance).
    ERASURE_REQUESTED = "io.leadflow.interaction.erasure_requested"


class LeadType:
    """``leadflow.leads`` event types (written by scoring)."""

    CREATED = "io.leadflow.lead.created"
    SCORED = "io.leadflow.lead.scored"
    TEMPERATURE_CHANGED = "io.leadflow.lead.temperature_changed"
    STAGE_CHANGED = "io.leadflow.lead.stage_changed"
    QUALIFIED = "io.leadflow.lead.qualified"
    STATUS_CHANGED = "io.leadflow.lead.status_changed"
    MERGED = "io.leadflow.lead.merged"
    ERASED = "io.leadflow.lead.erased"
    #: An extension to the contract: the person's marketing consent was given or withdrawn.
    #: Nurture steps that contact the person stop at once on a withdrawal.
    CONSENT_CHANGED = "io.leadflow.lead.consent_changed"


class RoutingType:
    """``leadflow.routing`` event types (written by routing)."""

    ASSIGNED = "io.leadflow.routing.assigned"
    REASSIGNED = "io.leadflow.routing.reassigned"
    UNASSIGNED = "io.leadflow.routing.unassigned"
    SLA_WARNING = "io.leadflow.routing.sla_warning"
    SLA_BREACHED = "io.leadflow.routing.sla_breached"
    SLA_MET = "io.leadflow.routing.sla_met"
    #: An extension to the contract: a breach escalated to the team's manager.
    ESCALATED = "io.leadflow.routing.escalated"


class NurtureType:
    """``leadflow.nurture`` event types (written by routing's nurture tracks)."""

    ENROLLED = "io.leadflow.nurture.enrolled"
    STEP_DUE = "io.leadflow.nurture.step_due"
    EXITED = "io.leadflow.nurture.exited"


class SalesType:
    """``leadflow.sales`` event types (written by sales tools, or by routing's activity API)."""

    CONTACTED = "io.leadflow.sales.contacted"
    MEETING_BOOKED = "io.leadflow.sales.meeting_booked"
    OPPORTUNITY_CREATED = "io.leadflow.sales.opportunity_created"
    WON = "io.leadflow.sales.won"
    LOST = "io.leadflow.sales.lost"
    DISQUALIFIED = "io.leadflow.sales.disqualified"


def _values(cls: type) -> frozenset[str]:
    return frozenset(v for k, v in vars(cls).items() if k.isupper())


INTERACTION_TYPES = _values(InteractionType)
LEAD_TYPES = _values(LeadType)
ROUTING_TYPES = _values(RoutingType)
SALES_TYPES = _values(SalesType)
NURTURE_TYPES = _values(NurtureType)


class InvalidEvent(ValueError):
    """A Kafka record that is not a well-formed Leadflow CloudEvent."""


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


@lru_cache(maxsize=256)
def rfc3339(value: datetime) -> str:
    """Format an aware datetime as RFC 3339 in UTC with a ``Z``.

    Remembered for recent values: a batch's events share their receipt time, which each
    event's data and headers both carry. (Equal datetimes are the same instant, whose text
    in UTC is the same.)
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: str) -> datetime:
    """Parse an RFC 3339 / ISO 8601 timestamp into an aware UTC datetime."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def new_event_id() -> str:
    """A fresh random event id: ``str(uuid.uuid4())``, without building the UUID object."""
    return _uuid_text(bytearray(os.urandom(16)), 0x40)


def _uuid_text(raw: bytearray, version: int) -> str:
    raw[6] = (raw[6] & 0x0F) | version
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC 4122 variant
    h = raw[:16].hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def derived_event_id(*parts: str) -> str:
    """A deterministic event id from its causes, so a recomputation yields the same id.

    ``str(uuid.uuid5(_NAMESPACE, "\\x1f".join(parts)))``, without building the UUID object.
    """
    digest = hashlib.sha1(_NAMESPACE_BYTES + "\x1f".join(parts).encode()).digest()
    return _uuid_text(bytearray(digest), 0x50)


@dataclass(frozen=True, slots=True)
class CloudEvent:
    """One CloudEvents 1.0 event with JSON data and the Kafka partition key."""

    type: str
    source: str
    data: Mapping[str, Any]
    id: str = field(default_factory=new_event_id)
    time: datetime = field(default_factory=utcnow)
    subject: str | None = None
    key: str | None = None
    extensions: Mapping[str, str] = field(default_factory=dict)

    def headers(self) -> list[tuple[str, bytes]]:
        """The binary-mode Kafka headers of this event."""
        out = [
            ("ce_specversion", _SPECVERSION_BYTES),
            ("ce_id", self.id.encode()),
            ("ce_source", self.source.encode()),
            ("ce_type", self.type.encode()),
            ("ce_time", rfc3339(self.time).encode()),
            ("content-type", _CONTENT_TYPE_BYTES),
        ]
        if self.subject is not None:
            out.append(("ce_subject", self.subject.encode()))
        if self.key is not None:
            out.append(("ce_partitionkey", self.key.encode()))
        out.extend((f"ce_{k}", v.encode()) for k, v in self.extensions.items())
        return out

    def value(self) -> bytes:
        """The Kafka record value: the JSON data."""
        return orjson.dumps(self.data)

    def to_structured(self) -> dict[str, Any]:
        """The structured-mode JSON form (used by outbound webhooks)."""
        body: dict[str, Any] = {
            "specversion": SPECVERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "time": rfc3339(self.time),
            "datacontenttype": CONTENT_TYPE,
            "data": dict(self.data),
        }
        if self.subject is not None:
            body["subject"] = self.subject
        if self.key is not None:
            body["partitionkey"] = self.key
        body.update(self.extensions)
        return body


_CORE = {"specversion", "id", "source", "type", "time", "subject", "partitionkey"}

#: Longest accepted value of the attributes stored in fixed-width columns (inbox and outbox).
ATTRIBUTE_LIMITS = {"id": 200, "type": 200, "source": 200, "subject": 200}

#: ``content-type`` of a structured-mode record (CloudEvents JSON event format).
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"

#: Sources whose ids are unique across Leadflow (random or derived UUIDs): their inbox key is the
#: bare id, as it always was, so inbox rows written before keys included the source stay valid.
_OWN_SOURCE_PREFIX = "/leadflow/"


def from_kafka(
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] | None,
    timestamp_ms: int | None = None,
) -> CloudEvent:
    """Decode a Kafka record in either CloudEvents mode; raise :class:`InvalidEvent` if it is
    not a CloudEvent.

    *Binary mode*: attributes in ``ce_*`` headers, the value is the data. *Structured mode*
    (``content-type: application/cloudevents+json``, the Kafka binding says consumers should
    accept it): the value is the whole event as JSON, data in ``data`` (or ``data_base64``
    holding JSON). ``time`` comes from the event, or else from the record's timestamp
    (``timestamp_ms``); an event with neither is invalid rather than stamped "now", which would
    make a replay or a late redelivery look recent.

    Also invalid: ``id``, ``type``, ``source`` or ``subject`` longer than
    :data:`ATTRIBUTE_LIMITS` allows, or any attribute containing NUL; these values are stored in
    fixed-width, NUL-refusing columns (the inbox and the outbox).
    """
    content_type = ""
    attrs: dict[str, str] = {}
    for name, raw in headers or ():
        if name.startswith("ce_") or name.lower() == "content-type":
            try:
                text = raw.decode()
            except (UnicodeDecodeError, AttributeError) as exc:
                raise InvalidEvent(f"header {name} is not UTF-8") from exc
            if name.startswith("ce_"):
                attrs[name[3:]] = text
            else:
                content_type = text
    if not attrs and content_type.split(";")[0].strip().lower().startswith(
        "application/cloudevents"
    ):
        attrs, data = _structured(value)
        where = ""
    else:
        data = None  # decoded once the headers are known to be a CloudEvent's
        where = "ce_"
    for required in ("id", "source", "type", "specversion"):
        if not attrs.get(required):
            raise InvalidEvent(f"missing {where}{required}" + (" header" if where else ""))
    for name, limit in ATTRIBUTE_LIMITS.items():
        # These attributes become database keys and columns (inbox, outbox): a value that
        # cannot be stored there is a bad record, not a reason to stop the consumer.
        val = attrs.get(name)
        if val is not None and len(val) > limit:
            raise InvalidEvent(f"{where}{name} is longer than {limit} characters")
    for name, val in attrs.items():
        if "\x00" in val:
            raise InvalidEvent(f"attribute {where}{name} contains a NUL character")
    if attrs["specversion"] != SPECVERSION:
        raise InvalidEvent(f"unsupported specversion {attrs['specversion']}")
    if data is None:
        data = _json_object(value)
    time = _event_time(attrs.get("time"), timestamp_ms, where)
    # Keys are opaque bytes to Kafka but text in the outbox (which refuses NUL on PostgreSQL).
    partition_key = (
        key.decode(errors="replace").replace("\x00", "\ufffd") if key else attrs.get("partitionkey")
    )
    return CloudEvent(
        type=attrs["type"],
        source=attrs["source"],
        data=data,
        id=attrs["id"],
        time=time,
        subject=attrs.get("subject"),
        key=partition_key,
        extensions={k: v for k, v in attrs.items() if k not in _CORE},
    )


def _json_object(value: bytes | str | None) -> dict[str, Any]:
    try:
        data = orjson.loads(value) if value else {}
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"data is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidEvent("data is not a JSON object")
    return data


def _structured(value: bytes | None) -> tuple[dict[str, str], dict[str, Any]]:
    """Attributes and data of a structured-mode record value."""
    envelope = _json_object(value)
    if "data_base64" in envelope:
        try:
            raw = base64.b64decode(str(envelope["data_base64"]), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidEvent("data_base64 is not base64") from exc
        data = _json_object(raw)
    else:
        inner = envelope.get("data")
        if isinstance(inner, str):  # JSON data may arrive as a JSON string holding JSON
            data = _json_object(inner)
        elif inner is None:
            data = {}
        elif isinstance(inner, dict):
            data = inner
        else:
            raise InvalidEvent("data is not a JSON object")
    attrs: dict[str, str] = {}
    for name, val in envelope.items():
        if name in ("data", "data_base64", "datacontenttype", "dataschema"):
            continue
        if not isinstance(val, str | int | bool):
            raise InvalidEvent(f"attribute {name} is not a string")
        attrs[name] = str(val).lower() if isinstance(val, bool) else str(val)
    return attrs, data


def _event_time(value: str | None, timestamp_ms: int | None, where: str) -> datetime:
    if value:
        try:
            return parse_time(value)
        except ValueError as exc:
            raise InvalidEvent(f"bad {where}time: {exc}") from exc
    if timestamp_ms is not None and timestamp_ms >= 0:
        return datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    raise InvalidEvent(f"missing {where}time and no record timestamp")


def inbox_key(ev: CloudEvent) -> str:
    """The key a consumer's inbox records ``ev`` under.

    CloudEvents makes ``id`` unique only within a ``source``, and any sales tool may write
    ``leadflow.sales``: two tools' event 42 are two events. Leadflow's own events keep their
    bare id (UUIDs, unique across its sources) so existing inbox rows stay valid; any other
    source's events are keyed by source and id together.
    """
    if ev.source.startswith(_OWN_SOURCE_PREFIX):
        return ev.id
    return derived_event_id("inbox", ev.source, ev.id)


def headers_dict(headers: Iterable[tuple[str, bytes]] | None) -> dict[str, str]:
    """Kafka headers as a str dict (last one wins), for tests and diagnostics."""
    return {k: v.decode(errors="replace") for k, v in headers or ()}
