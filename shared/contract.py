"""The event contract as types: one frozen type per event family (docs/events.md).

Producers build these and publish ``to_data()``; consumers call ``from_data(event.data)`` once,
at their edge, and work with the type from then on. ``from_data`` checks what the contract
promises (an email is lower-case, a phone is E.164, a country is ISO 3166-1 alpha-2, a company
size is a whole number, no text holds NUL) and raises :class:`InvalidEvent`, which the consumer
runner dead-letters like a malformed envelope. Nothing is normalised here: capture normalises
what people typed, once; a consumer that finds a value out of shape refuses the event rather
than guessing what the producer meant.

The JSON Schemas in ``shared/schemas/`` (:mod:`shared.event_schemas`) describe the same data for
other languages; ``tests/shared/test_contract.py`` keeps the two in step.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Final, Literal, get_args

import orjson

from shared.events import InvalidEvent, parse_time, rfc3339

__all__ = [
    "CHANNELS",
    "INTENTS",
    "Assigned",
    "Contact",
    "Interaction",
    "InvalidEvent",
    "LeadEvent",
    "LeadSnapshot",
    "Owner",
    "SalesActivity",
    "Score",
]

Channel = Literal["form", "download", "webinar", "ad", "tracking"]
Intent = Literal["newsletter", "contact", "demo_request", "quote", "trial", "generic"]
CHANNELS: Final = frozenset(get_args(Channel))
INTENTS: Final = frozenset(get_args(Intent))
STATUSES: Final = ("lead", "prospect", "client", "disqualified")
STAGES: Final = ("IQL", "MQL", "SQL")
TEMPERATURES: Final = ("cold", "warm", "hot")

#: The optional object-valued parts of an interaction, passed on as they are (rules match on
#: paths into them, e.g. ``asset.type`` or ``track.event``).
INTERACTION_PARTS: Final = (
    "attribution",
    "consent",
    "custom",
    "asset",
    "webinar",
    "ad",
    "track",
)

EMAIL_PATTERN = re.compile(r"^[^@\sA-Z]+@[^@\sA-Z]+$")
E164_PATTERN = re.compile(r"^\+[1-9][0-9]{1,14}$")
COUNTRY_PATTERN = re.compile(r"^[A-Z]{2}$")
MAX_EMAIL_LENGTH: Final = 254
MAX_COMPANY_SIZE: Final = 10**9


# -- checks ---------------------------------------------------------------------------------


def _object(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidEvent(f"{where}: must be an object")
    return value


def _opt_object(data: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any] | None:
    value = data.get(name)
    return None if value is None else _object(value, f"{where}/{name}")


def _opt_str(data: Mapping[str, Any], name: str, where: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEvent(f"{where}/{name}: must be a string or null")
    return value


def _str(data: Mapping[str, Any], name: str, where: str) -> str:
    value = _opt_str(data, name, where)
    if not value:
        raise InvalidEvent(f"{where}/{name}: a non-empty string is required")
    return value


def _opt_time(data: Mapping[str, Any], name: str, where: str) -> datetime | None:
    value = _opt_str(data, name, where)
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError:
        raise InvalidEvent(f"{where}/{name}: not an RFC 3339 time") from None


def _time(data: Mapping[str, Any], name: str, where: str) -> datetime:
    value = _opt_time(data, name, where)
    if value is None:
        raise InvalidEvent(f"{where}/{name}: a time is required")
    return value


def _number(data: Mapping[str, Any], name: str, where: str) -> float:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent(f"{where}/{name}: must be a number")
    return value


def _one_of(value: str | None, allowed: Any, where: str) -> Any:
    if value not in allowed:
        raise InvalidEvent(f"{where}: {value!r} is not one of {sorted(allowed)}")
    return value


def _no_nul(data: Mapping[str, Any]) -> None:
    # PostgreSQL's JSON cannot store U+0000; capture strips it from what people type, so one
    # here came from elsewhere, and storing it would fail anyway.
    if b"\\u0000" in orjson.dumps(data):
        raise InvalidEvent("text holds a NUL character")


# -- interactions ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Contact:
    """Who the person says they are; every field optional, every value already normalised."""

    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    job_title: str | None = None
    industry: str | None = None
    company_size: int | None = None
    company_size_raw: str | None = None
    country: str | None = None

    def __post_init__(self) -> None:
        where = "contact"
        if self.email is not None and (
            len(self.email) > MAX_EMAIL_LENGTH
            or self.email != self.email.lower()
            or not EMAIL_PATTERN.match(self.email)
        ):
            raise InvalidEvent(f"{where}/email: not a lower-case email address")
        if self.phone is not None and not E164_PATTERN.match(self.phone):
            raise InvalidEvent(f"{where}/phone: not an E.164 number")
        if self.country is not None and not COUNTRY_PATTERN.match(self.country):
            raise InvalidEvent(f"{where}/country: not an ISO 3166-1 alpha-2 code")
        size = self.company_size
        if size is not None and (
            isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < MAX_COMPANY_SIZE
        ):
            raise InvalidEvent(f"{where}/company_size: not a whole number of employees")

    @property
    def is_empty(self) -> bool:
        """Whether no field is set."""
        return all(getattr(self, f) is None for f in CONTACT_FIELDS)

    def to_data(self) -> dict[str, Any]:
        """The ``contact`` object of an interaction's data."""
        return {name: getattr(self, name) for name in CONTACT_FIELDS}

    @classmethod
    def from_data(cls, value: object) -> Contact:
        """Check and read a ``contact`` object; unknown keys are ignored."""
        data = _object(value, "contact")
        size = data.get("company_size")
        values: dict[str, Any] = {
            name: _opt_str(data, name, "contact")
            for name in CONTACT_FIELDS
            if name != "company_size"
        }
        return cls(company_size=size, **values)


CONTACT_FIELDS: Final = tuple(f.name for f in fields(Contact))


@dataclass(frozen=True, slots=True)
class Interaction:
    """The data of every ``io.leadflow.interaction.*`` event."""

    lead_key: str
    occurred_at: datetime
    channel: Channel
    form_id: str | None = None
    intent: Intent | None = None
    contact: Contact | None = None
    anonymous_id: str | None = None
    user_id: str | None = None
    attribution: Mapping[str, Any] | None = None
    consent: Mapping[str, Any] | None = None
    custom: Mapping[str, Any] | None = None
    asset: Mapping[str, Any] | None = None
    webinar: Mapping[str, Any] | None = None
    ad: Mapping[str, Any] | None = None
    track: Mapping[str, Any] | None = None
    #: the free-text message of a contact form
    message: str | None = None

    def to_data(self) -> dict[str, Any]:
        """The event data: every part present, absent ones null (docs/events.md)."""
        out: dict[str, Any] = {
            "lead_key": self.lead_key,
            "occurred_at": rfc3339(self.occurred_at),
            "channel": self.channel,
            "form_id": self.form_id,
            "intent": self.intent,
            "contact": self.contact.to_data() if self.contact is not None else None,
            "anonymous_id": self.anonymous_id,
            "user_id": self.user_id,
        }
        for name in INTERACTION_PARTS:
            part = getattr(self, name)
            out[name] = dict(part) if part is not None else None
        out["message"] = self.message
        return out

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Interaction:
        """Check and read an interaction's data; raise :class:`InvalidEvent` if it breaks the
        contract. Unknown top-level keys are ignored (the contract may grow)."""
        where = "data"
        data = _object(data, where)
        _no_nul(data)
        contact = data.get("contact")
        parts = {name: _opt_object(data, name, where) for name in INTERACTION_PARTS}
        intent = _opt_str(data, "intent", where)
        return cls(
            lead_key=_str(data, "lead_key", where),
            occurred_at=_time(data, "occurred_at", where),
            channel=_one_of(_opt_str(data, "channel", where), CHANNELS, f"{where}/channel"),
            form_id=_opt_str(data, "form_id", where),
            intent=None if intent is None else _one_of(intent, INTENTS, f"{where}/intent"),
            contact=None if contact is None else Contact.from_data(contact),
            anonymous_id=_opt_str(data, "anonymous_id", where),
            user_id=_opt_str(data, "user_id", where),
            message=_opt_str(data, "message", where),
            **parts,
        )

    def part(self, name: str) -> Mapping[str, Any]:
        """One of :data:`INTERACTION_PARTS`, empty when absent."""
        value = getattr(self, name)
        return value if value is not None else {}


# -- leads -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Owner:
    """The rep a lead is assigned to."""

    id: str
    name: str | None = None
    email: str | None = None
    team: str | None = None

    def to_data(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "email": self.email, "team": self.team}

    @classmethod
    def from_data(cls, value: object, where: str = "owner") -> Owner:
        data = _object(value, where)
        return cls(
            id=_str(data, "id", where),
            name=_opt_str(data, "name", where),
            email=_opt_str(data, "email", where),
            team=_opt_str(data, "team", where),
        )


@dataclass(frozen=True, slots=True)
class Score:
    """A score and its reasons (each reason names a rule and its points; they add up)."""

    total: float
    fit: float
    engagement: float
    reasons: tuple[Mapping[str, Any], ...] = ()

    def to_data(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "fit": self.fit,
            "engagement": self.engagement,
            "reasons": [dict(r) for r in self.reasons],
        }

    @classmethod
    def from_data(cls, value: object, where: str = "lead/score") -> Score:
        data = _object(value, where)
        reasons = data.get("reasons", [])
        if not isinstance(reasons, list):
            raise InvalidEvent(f"{where}/reasons: must be a list")
        for i, reason in enumerate(reasons):
            _str(_object(reason, f"{where}/reasons/{i}"), "rule", f"{where}/reasons/{i}")
        return cls(
            total=_number(data, "total", where),
            fit=_number(data, "fit", where),
            engagement=_number(data, "engagement", where),
            reasons=tuple(reasons),
        )


@dataclass(frozen=True, slots=True)
class LeadSnapshot:
    """The lead as ``io.leadflow.lead.*`` events carry it (the API resource without cookies).

    ``data`` keeps the whole object as published, for the fields a consumer matches on by
    name (routing rules name any profile field) and passes on unchanged.
    """

    id: str
    status: str
    stage: str
    temperature: str
    score: Score
    created_at: datetime
    key: str | None = None
    email: str | None = None
    owner: Owner | None = None
    erased: bool = False
    data: Mapping[str, Any] | None = None

    def field(self, name: str) -> Any:
        """A field of the lead by name (``country``, ``company_size``, ``job_title`` …)."""
        return (self.data or {}).get(name)

    def to_data(self) -> dict[str, Any]:
        out = dict(self.data or {})
        out.update(
            id=self.id,
            key=self.key,
            email=self.email,
            status=self.status,
            stage=self.stage,
            temperature=self.temperature,
            score=self.score.to_data(),
            owner=self.owner.to_data() if self.owner else None,
            created_at=rfc3339(self.created_at),
            erased=self.erased,
        )
        return out

    @classmethod
    def from_data(cls, value: object, where: str = "lead") -> LeadSnapshot:
        data = _object(value, where)
        owner = data.get("owner")
        return cls(
            id=_str(data, "id", where),
            status=_one_of(_opt_str(data, "status", where), STATUSES, f"{where}/status"),
            stage=_one_of(_opt_str(data, "stage", where), STAGES, f"{where}/stage"),
            temperature=_one_of(
                _opt_str(data, "temperature", where), TEMPERATURES, f"{where}/temperature"
            ),
            score=Score.from_data(data.get("score"), f"{where}/score"),
            created_at=_time(data, "created_at", where),
            key=_opt_str(data, "key", where),
            email=_opt_str(data, "email", where),
            owner=None if owner is None else Owner.from_data(owner, f"{where}/owner"),
            erased=data.get("erased") is True,
            data=data,
        )


@dataclass(frozen=True, slots=True)
class LeadEvent:
    """The data of every ``io.leadflow.lead.*`` event: the lead after the change, what caused
    it (``{"event_id", "type"}``) and, for some types, what changed."""

    lead: LeadSnapshot
    cause: Mapping[str, Any] | None = None
    change: Mapping[str, Any] | None = None

    def to_data(self) -> dict[str, Any]:
        out: dict[str, Any] = {"lead": self.lead.to_data(), "cause": self.cause}
        if self.change is not None:
            out["change"] = dict(self.change)
        return out

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> LeadEvent:
        where = "data"
        data = _object(data, where)
        return cls(
            lead=LeadSnapshot.from_data(data.get("lead")),
            cause=_opt_object(data, "cause", where),
            change=_opt_object(data, "change", where),
        )


# -- routing ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Assigned:
    """The data of ``io.leadflow.routing.assigned`` and ``reassigned``: who owns the lead now.

    ``lead`` (the routed lead's contact and score) and ``sla`` (policy, due and warning times)
    are passed on as published; a reassignment also names the previous owner and assignment.
    """

    assignment_id: str
    lead_id: str
    owner: Owner
    assigned_at: datetime
    reason: str
    lead: Mapping[str, Any]
    sla: Mapping[str, Any]
    previous_owner: Owner | None = None
    previous_assignment_id: str | None = None
    #: The nurture tracks the lead went through before it qualified (an extension): track,
    #: enrolled_at, exited_at, exit_reason and the steps announced, so sales sees what
    #: marketing already sent.
    nurture: Sequence[Mapping[str, Any]] | None = None

    def to_data(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "assignment_id": self.assignment_id,
            "lead_id": self.lead_id,
            "owner": self.owner.to_data(),
            "lead": dict(self.lead),
            "sla": dict(self.sla),
            "assigned_at": rfc3339(self.assigned_at),
            "reason": self.reason,
        }
        if self.previous_owner is not None:
            out["previous_owner"] = self.previous_owner.to_data()
            out["previous_assignment_id"] = self.previous_assignment_id
        if self.nurture:
            out["nurture"] = [dict(n) for n in self.nurture]
        return out

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Assigned:
        where = "data"
        data = _object(data, where)
        _no_nul(data)
        previous = data.get("previous_owner")
        return cls(
            assignment_id=_str(data, "assignment_id", where),
            lead_id=_str(data, "lead_id", where),
            owner=Owner.from_data(data.get("owner"), f"{where}/owner"),
            assigned_at=_time(data, "assigned_at", where),
            reason=_opt_str(data, "reason", where) or "",
            lead=_object(data.get("lead"), f"{where}/lead"),
            sla=_object(data.get("sla"), f"{where}/sla"),
            previous_owner=(
                None if previous is None else Owner.from_data(previous, f"{where}/previous_owner")
            ),
            previous_assignment_id=_opt_str(data, "previous_assignment_id", where),
            nurture=_objects(data.get("nurture"), f"{where}/nurture"),
        )


def _objects(value: Any, where: str) -> list[Mapping[str, Any]] | None:
    """An optional list of JSON objects."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidEvent(f"{where}: must be a list")
    return [_object(item, f"{where}/{i}") for i, item in enumerate(value)]


# -- sales -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SalesActivity:
    """The data of ``io.leadflow.sales.*`` events, which sales tools outside Leadflow send.

    They name the lead by id or by email; an email is compared lower-cased and trimmed.
    """

    lead_id: str | None = None
    email: str | None = None
    assignment_id: str | None = None
    rep_id: str | None = None
    occurred_at: datetime | None = None
    note: str | None = None

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> SalesActivity:
        where = "data"
        data = _object(data, where)
        _no_nul(data)
        email = _opt_str(data, "email", where)
        email = email.strip().lower() or None if email is not None else None
        activity = cls(
            lead_id=_opt_str(data, "lead_id", where) or None,
            email=email,
            assignment_id=_opt_str(data, "assignment_id", where),
            rep_id=_opt_str(data, "rep_id", where),
            # a sales tool's own time format is not worth losing the touch over: the envelope
            # time stands in for one that cannot be read
            occurred_at=_lenient_time(data.get("occurred_at")),
            note=_opt_str(data, "note", where),
        )
        if activity.lead_id is None and activity.email is None:
            raise InvalidEvent(f"{where}: lead_id or email is required")
        return activity


def _lenient_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_time(value)
    except ValueError:
        return None
