"""Routing configuration and state as plain dataclasses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from services.routing.domain.business_time import Calendar
from services.routing.domain.nurture import NurtureConfig


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
    #: The configured ``hours`` (``"24x7"`` or ``{mon: [...]}``), or None for a named calendar.
    hours: Any = None


class Action(StrEnum):
    """What an escalation ladder step does, as the config names it."""

    #: Give the lead to the next available rep who has not had it yet (none: queue it).
    REASSIGN = "reassign"
    #: Park the lead in the escalation queue for a manager.
    QUEUE = "queue"
    #: Tell the team's manager (``routing.escalated``).
    NOTIFY_MANAGER = "notify_manager"
    NONE = "none"


@dataclass(frozen=True)
class EscalationStep:
    """One rung of the escalation ladder.

    Without
    ``after_seconds`` the step is taken at a breach (the first step always is); with it, the
    step fires on its own durable timer that many business seconds after the previous step,
    if the lead is still untouched.
    """

    action: Action
    after_seconds: float | None = None


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
    escalation_ladder: Sequence[EscalationStep]
    notify_manager: bool
    escalation_queue: str
    unassigned_retry_seconds: float
    webhooks: Sequence[Webhook] = ()
    nurture: NurtureConfig = field(default_factory=NurtureConfig)

    def team_reps(self, team: str) -> list[Rep]:
        """The reps of a team, in config order."""
        return [r for r in self.reps.values() if r.team == team]

    def ladder_step(self, index: int) -> EscalationStep | None:
        """The ladder's step ``index`` (0-based), or None past its end."""
        ladder = self.escalation_ladder
        return ladder[index] if 0 <= index < len(ladder) else None


@dataclass
class RepState:
    """What changes about a rep at run time (kept in the database)."""

    rep_id: str
    paused: bool = False
    out_of_office: list[tuple[datetime, datetime]] = field(default_factory=list)
    max_open: int | None = None
    max_per_day: int | None = None
    credit: float = 0.0
    #: Run-time overrides of the configured weight and working hours (None: as configured).
    weight: int | None = None
    calendar: Calendar | None = None
    working_hours: Mapping[str, Any] | None = None
    open_count: int = 0
    today_count: int = 0


def effective_weight(rep: Rep, state: RepState) -> int:
    """The rep's weight: the run-time override, else the configured one."""
    return state.weight if state.weight is not None else rep.weight


def effective_calendar(rep: Rep, state: RepState) -> Calendar:
    """The rep's working hours: the run-time override, else the configured ones."""
    return state.calendar if state.calendar is not None else rep.calendar


@dataclass(frozen=True)
class Decision:
    """The outcome of routing one lead: a rep (or None) and why."""

    rep: Rep | None
    team: str | None
    reason: str
    policy: str
    credits: Mapping[str, float] = field(default_factory=dict)
