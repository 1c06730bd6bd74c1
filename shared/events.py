"""The CloudEvents 1.0 envelope and its Kafka binary-mode encoding.

Binary mode: every attribute travels as a ``ce_*`` header, ``content-type`` carries the data
content type, the value is the JSON data and the Kafka key is the lead key (the CloudEvents
``partitionkey`` extension), so one lead's events stay in order.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"
_NAMESPACE = uuid.UUID("6f1e2a52-6c86-4c5b-9a38-6d6f6c656164")


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


class InvalidEvent(ValueError):
    """A Kafka record that is not a well-formed Leadflow CloudEvent."""


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def rfc3339(value: datetime) -> str:
    """Format an aware datetime as RFC 3339 in UTC with a ``Z``."""
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
    """A fresh random event id."""
    return str(uuid.uuid4())


def derived_event_id(*parts: str) -> str:
    """A deterministic event id from its causes, so a recomputation yields the same id."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)))


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
            ("ce_specversion", SPECVERSION.encode()),
            ("ce_id", self.id.encode()),
            ("ce_source", self.source.encode()),
            ("ce_type", self.type.encode()),
            ("ce_time", rfc3339(self.time).encode()),
            ("content-type", CONTENT_TYPE.encode()),
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


def from_kafka(
    key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]] | None
) -> CloudEvent:
    """Decode a binary-mode Kafka record; raise :class:`InvalidEvent` if it is not one.

    Also invalid: ``ce_id``, ``ce_type``, ``ce_source`` or ``ce_subject`` longer than
    :data:`ATTRIBUTE_LIMITS` allows, or any ``ce_`` header containing NUL; these values are
    stored in fixed-width, NUL-refusing columns (the inbox and the outbox).
    """
    attrs: dict[str, str] = {}
    for name, raw in headers or ():
        if name.startswith("ce_"):
            try:
                attrs[name[3:]] = raw.decode()
            except (UnicodeDecodeError, AttributeError) as exc:
                raise InvalidEvent(f"header {name} is not UTF-8") from exc
    for required in ("id", "source", "type", "specversion"):
        if not attrs.get(required):
            raise InvalidEvent(f"missing ce_{required} header")
    for name, limit in ATTRIBUTE_LIMITS.items():
        # These attributes become database keys and columns (inbox, outbox): a value that
        # cannot be stored there is a bad record, not a reason to stop the consumer.
        val = attrs.get(name)
        if val is not None and len(val) > limit:
            raise InvalidEvent(f"ce_{name} is longer than {limit} characters")
    for name, val in attrs.items():
        if "\x00" in val:
            raise InvalidEvent(f"header ce_{name} contains a NUL character")
    if attrs["specversion"] != SPECVERSION:
        raise InvalidEvent(f"unsupported specversion {attrs['specversion']}")
    try:
        data = orjson.loads(value) if value else {}
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"data is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidEvent("data is not a JSON object")
    try:
        time = parse_time(attrs["time"]) if attrs.get("time") else utcnow()
    except ValueError as exc:
        raise InvalidEvent(f"bad ce_time: {exc}") from exc
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


def headers_dict(headers: Iterable[tuple[str, bytes]] | None) -> dict[str, str]:
    """Kafka headers as a str dict (last one wins), for tests and diagnostics."""
    return {k: v.decode(errors="replace") for k, v in headers or ()}
