"""The lead: profile, identifiers, score facts (hits) and lifecycle state, as plain data."""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from shared.contract import STAGES
from shared.events import parse_time, rfc3339

#: Automatic status moves only go up this rank; client and disqualified are both final.
STATUS_RANK = {"lead": 0, "prospect": 1, "client": 2, "disqualified": 2}
PROFILE_FIELDS = (
    "first_name",
    "last_name",
    "company",
    "job_title",
    "industry",
    "company_size",
    "country",
)


class Hit(NamedTuple):
    """One engagement rule applied to one interaction: the fact a score is computed from.

    Stored as an array ``[rule, group, points, at, event_id]`` (:meth:`Lead.to_state`): a lead
    keeps up to 50 per repeatable rule, and the state is written back with every batch that
    touches the lead. States written before hold objects; :meth:`Lead.from_state` reads both.
    """

    rule: str
    group: str
    points: int
    at: datetime
    event_id: str


def hits_added(seen: Sequence[Hit], hits: Sequence[Hit]) -> Sequence[Hit] | None:
    """The hits ``hits`` gained since it held ``seen``: None unless its first hits are still,
    one by one, the very hits of ``seen`` (hits are immutable, so what was derived from them
    holds). How a lead's derived data, remembered per hit list, is extended, not rebuilt."""
    known = len(seen)
    if known <= len(hits) and all(map(operator.is_, seen, hits)):
        return hits[known:]
    return None


@dataclass(slots=True)
class Lead:
    """A person (known or anonymous) and everything scoring knows about them."""

    id: str
    key: str
    created_at: datetime
    email: str | None = None
    emails: list[str] = field(default_factory=list)
    phone: str | None = None
    phones: list[str] = field(default_factory=list)
    anonymous_ids: list[str] = field(default_factory=list)
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    job_title: str | None = None
    industry: str | None = None
    company_size: int | None = None
    country: str | None = None
    status: str = "lead"
    stage: str = "IQL"
    temperature: str = "cold"
    fit: int = 0
    engagement: int = 0
    reasons: list[dict[str, Any]] = field(default_factory=list)
    hits: list[Hit] = field(default_factory=list)
    owner: dict[str, Any] | None = None
    consent: dict[str, Any] | None = None
    first_touch: dict[str, Any] | None = None
    last_touch: dict[str, Any] | None = None
    last_activity_at: datetime | None = None
    last_engaged_at: datetime | None = None
    profile_at: datetime | None = None
    sales_intent: bool = False
    qualified_at: datetime | None = None
    mql_at: datetime | None = None
    first_form_id: str | None = None
    disqualified_by: str | None = None
    erased_at: datetime | None = None

    @property
    def total(self) -> int:
        """Fit plus engagement."""
        return self.fit + self.engagement

    def has_hit(self, event_id: str, rule: str) -> bool:
        """Whether this rule already counted this event (a rescore cannot count it twice)."""
        return any(h.event_id == event_id and h.rule == rule for h in self.hits)

    def to_resource(self) -> dict[str, Any]:
        """The public lead resource (GET /v1/leads/{id} and the ``lead`` of lead events)."""
        return {
            "id": self.id,
            "key": self.key,
            "email": self.email,
            "emails": list(self.emails),
            "phone": self.phone,
            **{f: getattr(self, f) for f in PROFILE_FIELDS},
            "status": self.status,
            "stage": self.stage,
            "temperature": self.temperature,
            "score": {
                "total": self.total,
                "fit": self.fit,
                "engagement": self.engagement,
                "reasons": [dict(r) for r in self.reasons],
            },
            "owner": dict(self.owner) if self.owner else None,
            "consent": dict(self.consent) if self.consent else None,
            "first_touch": dict(self.first_touch) if self.first_touch else None,
            "last_touch": dict(self.last_touch) if self.last_touch else None,
            "anonymous_ids": list(self.anonymous_ids),
            "created_at": rfc3339(self.created_at),
            "last_activity_at": _time(self.last_activity_at),
            "qualified_at": _time(self.qualified_at),
            "erased": self.erased_at is not None,
        }

    def to_snapshot(self) -> dict[str, Any]:
        """The lead in ``leadflow.leads`` events: the resource without its anonymous ids.

        An event needs who the person is (email, phone), not every cookie that led to them;
        the list is also the part anyone with the public write key can grow (review C5).
        """
        out = self.to_resource()
        del out["anonymous_ids"]
        return out

    def to_state(self) -> dict[str, Any]:
        """JSON-safe state for storage (times as RFC 3339 strings)."""
        # Field by field rather than dataclasses.asdict: asdict deep-copies every value, and
        # this runs once per lead per batch.
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, datetime):
                value = time_text(value)
            elif isinstance(value, list):
                value = [dict(v) if isinstance(v, dict) else v for v in value]
            elif isinstance(value, dict):
                value = dict(value)
            out[name] = value
        out["hits"] = [[h.rule, h.group, h.points, time_text(h.at), h.event_id] for h in self.hits]
        return out

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Lead:
        """The inverse of :meth:`to_state`."""
        values = {k: v for k, v in state.items() if k in _FIELDS}
        for name in _TIME_FIELDS:
            if values.get(name):
                values[name] = parsed_time(values[name])
        hits = values.get("hits") or []
        if all(type(h) is list for h in hits):
            # tuple.__new__ rather than Hit(...): a named tuple's own __new__ is Python code,
            # and a lead has up to 50 hits per repeatable rule
            time_of, new = parsed_time, tuple.__new__
            values["hits"] = [new(Hit, (r, g, p, time_of(at), e)) for r, g, p, at, e in hits]
        else:  # stored before hits were arrays
            values["hits"] = [
                Hit(h[0], h[1], h[2], parsed_time(h[3]), h[4])
                if isinstance(h, list)
                else Hit(h["rule"], h["group"], h["points"], parsed_time(h["at"]), h["event_id"])
                for h in hits
            ]
        return cls(**values)


#: The lead's fields, and those that are times: every datetime field of the dataclass, so a
#: new one cannot be forgotten by :meth:`Lead.from_state`.
_FIELDS = frozenset(Lead.__dataclass_fields__)
_TIME_FIELDS = tuple(n for n, f in Lead.__dataclass_fields__.items() if "datetime" in str(f.type))


#: RFC 3339 text of a time and back, remembered: a lead's hit times are written and read again
#: with every batch that touches it (datetimes are immutable, so sharing them is safe).
time_text = functools.lru_cache(maxsize=65_536)(rfc3339)
parsed_time = functools.lru_cache(maxsize=65_536)(parse_time)


def _time(value: datetime | None) -> str | None:
    return rfc3339(value) if value else None


def stage_rank(stage: str) -> int:
    """Position of a stage in IQL → MQL → SQL."""
    return STAGES.index(stage)


def status_moves_forward(current: str, new: str) -> bool:
    """Whether an automatic move from ``current`` to ``new`` is forward."""
    return STATUS_RANK[new] > STATUS_RANK[current]
