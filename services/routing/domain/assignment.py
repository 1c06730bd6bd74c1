"""An assignment's lifecycle: who owns a lead and how its SLA clock ends, as a pure state machine.

::

    open ──first touch──> met
      │
      breach ──> breached ──late first touch──> breached (met_at recorded, the breach stands)
    open | breached ──reassign──> reassigned
    open | breached ──close─────> closed

``open`` and ``breached`` are the active states: a lead has at most one active assignment (the
database enforces it with a partial unique index). The methods return the assignment after the
change and refuse a transition its state does not allow; the repository writes the change
with a conditional UPDATE, so of two racing writers only one wins.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from services.routing.domain.business_time import Calendar, business_seconds_between
from shared.contract import Owner


class State(StrEnum):
    """An assignment's state, as stored in ``routing_assignments.state``."""

    OPEN = "open"
    MET = "met"
    BREACHED = "breached"
    REASSIGNED = "reassigned"
    CLOSED = "closed"


__all__ = ["ACTIVE", "Assignment", "IllegalTransition", "Owner", "State"]

#: The states in which an assignment's owner is still expected to act on the lead.
ACTIVE = frozenset({State.OPEN, State.BREACHED})


class IllegalTransition(ValueError):
    """The assignment's state does not allow this change."""

    def __init__(self, assignment: Assignment, action: str) -> None:
        super().__init__(f"assignment is {assignment.state}")
        self.state = assignment.state
        self.action = action


@dataclass(frozen=True)
class Assignment:
    """One assignment of a lead to a rep, with its SLA clock."""

    id: str
    lead_id: str
    lead_key: str | None
    owner: Owner
    team: str
    state: State
    policy: str
    warn_at: datetime
    due_at: datetime
    assigned_at: datetime
    reason: str
    #: The lead as routing saw it when assigning (emptied to ``{"id": ...}`` on erasure).
    lead: Mapping[str, Any] = field(default_factory=dict)
    met_at: datetime | None = None
    breached: bool = False
    response_seconds: float | None = None
    business_seconds: float | None = None
    escalation_level: int = 0
    previous_assignment_id: str | None = None
    updated_at: datetime | None = None

    @property
    def active(self) -> bool:
        """Whether the owner is still expected to act (open or breached)."""
        return self.state in ACTIVE

    @property
    def ended(self) -> bool:
        """Whether the assignment no longer stands: reassigned or closed (a met one still does:
        its owner keeps the lead)."""
        return self.state in (State.REASSIGNED, State.CLOSED)

    @property
    def touched(self) -> bool:
        """Whether the first touch was recorded (in time or late)."""
        return self.met_at is not None

    def _require(self, allowed: Collection[State], action: str) -> None:
        if self.state not in allowed:
            raise IllegalTransition(self, action)

    def first_touch(self, at: datetime, calendar: Calendar, now: datetime) -> Assignment:
        """The assignment after the rep first reached the lead at ``at``.

        In time (open): ``met``. After the breach: still ``breached``, with the touch recorded
        for the report. A later touch changes nothing (the first one counts). Response times
        are counted from the assignment, in wall-clock seconds and in business seconds of
        ``calendar``; a touch dated before the assignment counts as made at the assignment.
        """
        self._require(ACTIVE | {State.MET}, "first_touch")
        if self.touched:
            return self
        at = max(at, self.assigned_at)
        return replace(
            self,
            state=State.MET if self.state is State.OPEN else self.state,
            met_at=at,
            response_seconds=(at - self.assigned_at).total_seconds(),
            business_seconds=business_seconds_between(self.assigned_at, at, calendar),
            updated_at=now,
        )

    def breach(self, now: datetime) -> Assignment:
        """The assignment once its SLA deadline passed untouched."""
        self._require({State.OPEN}, "breach")
        return replace(self, state=State.BREACHED, breached=True, updated_at=now)

    def reassign(self, now: datetime) -> Assignment:
        """The assignment once the lead was given to someone else (its clock is over)."""
        self._require(ACTIVE, "reassign")
        return replace(self, state=State.REASSIGNED, updated_at=now)

    def close(self, now: datetime) -> Assignment:
        """The assignment once the lead was won, lost, disqualified, erased or merged away."""
        self._require(ACTIVE, "close")
        return replace(self, state=State.CLOSED, updated_at=now)

    def changes_since(self, before: Assignment) -> dict[str, Any]:
        """The stored fields that differ from ``before`` (what an UPDATE has to write)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) != getattr(before, f.name)
        }
