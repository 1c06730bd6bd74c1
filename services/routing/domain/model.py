"""Routing configuration and state as plain dataclasses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.routing.domain.business_time import Calendar

ACTIVE_STATES = ("open", "breached")
ASSIGNMENT_STATES = ("open", "met", "breached", "reassigned", "closed")


@dataclass(frozen=True)
class Rep:
    """A sales rep as configured: who they are, their share of leads and their hours."""

    id: str
    name: str
    email: str
    team: str
    weight: int
    calendar: Calendar
    max_open: int | None = None
    max_per_day: int | None = None


@dataclass(frozen=True)
class Team:
    """A team of reps; its calendar is the one the SLA clock counts."""

    id: str
    calendar: Calendar
    manager: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Rule:
    """An ordered routing rule: when every condition holds, the lead goes to ``team``."""

    name: str
    team: str
    when: Mapping[str, Any]
    sla_policy: str | None = None


@dataclass(frozen=True)
class SlaPolicy:
    """A response-time target in business seconds of the team's calendar."""

    name: str
    seconds: float


@dataclass(frozen=True)
class Webhook:
    """An outbound webhook receiving routing events as structured CloudEvents."""

    name: str
    url: str
    secret: str
    events: frozenset[str]
    max_attempts: int = 8
    backoff_seconds: float = 2.0


@dataclass(frozen=True)
class RoutingConfig:
    """The whole ``routing:`` section, parsed and cross-checked."""

    teams: Mapping[str, Team]
    reps: Mapping[str, Rep]
    rules: Sequence[Rule]
    territories: Mapping[str, frozenset[str]]
    segments: Mapping[str, tuple[int | None, int | None]]
    fallback_team: str | None
    policies: Mapping[str, SlaPolicy]
    default_policy: str
    warn_fraction: float
    escalation_ladder: Sequence[str]
    notify_manager: bool
    escalation_queue: str
    unassigned_retry_seconds: float
    webhooks: Sequence[Webhook] = ()

    def team_reps(self, team: str) -> list[Rep]:
        """The reps of a team, in config order."""
        return [r for r in self.reps.values() if r.team == team]


@dataclass
class RepState:
    """What changes about a rep at run time (kept in the database)."""

    rep_id: str
    paused: bool = False
    out_of_office: list[tuple[datetime, datetime]] = field(default_factory=list)
    max_open: int | None = None
    max_per_day: int | None = None
    credit: float = 0.0
    open_count: int = 0
    today_count: int = 0


@dataclass(frozen=True)
class Decision:
    """The outcome of routing one lead: a rep (or None) and why."""

    rep: Rep | None
    team: str | None
    reason: str
    policy: str
    credits: Mapping[str, float] = field(default_factory=dict)
