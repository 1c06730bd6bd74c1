"""Nurture tracks: which leads marketing keeps warm, with which steps, until when. Pure.

A track (``routing.nurture.tracks.<name>`` in the config) has an ``entry`` (stage, temperature,
status, segment, source, or a stall such as "MQL with no activity for 14 days"), ``steps`` each
due a business-time delay after the previous one (``send_content``, ``invite_webinar``,
``call_task``, ``wait``), ``exit`` conditions and ``reentry`` rules. A lead is in at most one
track at a time; tracks are tried in config order and the first that admits the lead wins.

Exits every track has: the lead becomes SQL (``sql``: routing assigns it), is disqualified,
withdraws marketing consent, is erased or merged away. A track may add ``exit.score_above``
(``re_engaged``) and ``exit.temperature`` (e.g. ``[hot]``).

Steps that contact the person (every action but ``wait``) need recorded marketing consent
(``lead.consent.marketing is true``): without a record the step is skipped; a withdrawn consent
ends the enrolment.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from services.routing.domain.business_time import Calendar, add_business_time, make_calendar
from shared.contract import STAGES, STATUSES, TEMPERATURES, LeadSnapshot
from shared.events import parse_time

#: Step actions; every one but ``wait`` contacts the person.
ACTIONS: Final = ("send_content", "invite_webinar", "call_task", "wait")
CONTACT_ACTIONS: Final = frozenset({"send_content", "invite_webinar", "call_task"})
#: What each action needs besides ``id`` and ``after``.
REQUIRED_PARAMS: Final = {
    "send_content": ("content",),
    "invite_webinar": ("webinar",),
    "call_task": ("team",),
    "wait": (),
}

# Exit reasons.
SQL: Final = "sql"
RE_ENGAGED: Final = "re_engaged"
TEMPERATURE: Final = "temperature"
DISQUALIFIED: Final = "disqualified"
CONSENT_WITHDRAWN: Final = "consent_withdrawn"
ERASED: Final = "erased"
MERGED: Final = "merged"
COMPLETED: Final = "completed"
EXIT_REASONS: Final = (
    SQL,
    RE_ENGAGED,
    TEMPERATURE,
    DISQUALIFIED,
    CONSENT_WITHDRAWN,
    ERASED,
    MERGED,
    COMPLETED,
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_SHORT = {"s": 1, "m": 60, "h": 3600}
_ALWAYS = make_calendar("UTC", "24x7", name="always")


class NurtureConfigError(ValueError):
    """A nurture config value that is wrong; ``key`` names it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"invalid config at {key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True)
class Step:
    """One step of a track: what to do, ``after_seconds`` of business time after the previous
    step (or the enrolment)."""

    id: str
    action: str
    after_seconds: float
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def contacts(self) -> bool:
        """Whether the step reaches the person (and so needs marketing consent)."""
        return self.action in CONTACT_ACTIONS

    def to_data(self, index: int) -> dict[str, Any]:
        """The ``step`` object of nurture events."""
        return {
            "index": index,
            "id": self.id,
            "action": self.action,
            "after_seconds": self.after_seconds,
            "contacts": self.contacts,
            **self.params,
        }


@dataclass(frozen=True)
class Stall:
    """A lead at ``stage`` without activity for ``days`` (calendar days)."""

    stage: str
    days: float


@dataclass(frozen=True)
class Entry:
    """Who enters: every given condition holds (an empty set means any)."""

    stages: frozenset[str] = frozenset()
    temperatures: frozenset[str] = frozenset()
    statuses: frozenset[str] = frozenset()
    segments: frozenset[str] = frozenset()
    sources: frozenset[str] = frozenset()
    stall: Stall | None = None


@dataclass(frozen=True)
class Track:
    """A nurture track as configured."""

    name: str
    entry: Entry
    steps: tuple[Step, ...]
    calendar: Calendar = _ALWAYS
    score_above: float | None = None
    exit_temperatures: frozenset[str] = frozenset()
    reentry: bool = False
    reentry_cooldown_days: float = 0.0


@dataclass(frozen=True)
class NurtureConfig:
    """``routing.nurture``: the tracks, in priority order, and the stall scan's period."""

    tracks: tuple[Track, ...] = ()
    scan_every_seconds: float = 3600.0

    def track(self, name: str) -> Track | None:
        """A track by name (None if it left the config)."""
        return next((t for t in self.tracks if t.name == name), None)

    @property
    def has_stalls(self) -> bool:
        """Whether some track enters on a stall (only then is the periodic scan needed)."""
        return any(t.entry.stall is not None for t in self.tracks)


# ---- config -----------------------------------------------------------------------------------


def parse_delay(value: Any, hours_per_day: float) -> float:
    """Business seconds of ``0``, ``"90s"``, ``"10m"``, ``"2h"``, ``"1d"`` (a business day of
    ``hours_per_day`` hours) or a number of seconds; ValueError if invalid."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a delay")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError(f"{value!r} is not a delay like '0', '30s', '10m', '2h' or '1d'")
        n, unit = float(m.group(1)), m.group(2)
        seconds = n * hours_per_day * 3600 if unit == "d" else n * _SHORT[unit]
    else:
        raise ValueError(f"{value!r} is not a delay")
    if seconds < 0:
        raise ValueError("a delay must be >= 0")
    return seconds


def _names(
    spec: Mapping[str, Any], name: str, key: str, allowed: Sequence[str] | None = None
) -> frozenset[str]:
    raw = spec.get(name)
    if raw is None:
        return frozenset()
    values = [raw] if isinstance(raw, str) else raw
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise NurtureConfigError(f"{key}.{name}", "a name or a list of names")
    for v in values:
        if allowed is not None and v not in allowed:
            raise NurtureConfigError(f"{key}.{name}", f"{v!r} is not one of {list(allowed)}")
    return frozenset(values)


def _entry(spec: Mapping[str, Any], key: str, segments: Mapping[str, Any]) -> Entry:
    stall = None
    raw_stall = spec.get("stall")
    if raw_stall is not None:
        stage = raw_stall.get("stage", "MQL")
        if stage not in STAGES:
            raise NurtureConfigError(f"{key}.stall.stage", f"{stage!r} is not one of {STAGES}")
        days = raw_stall.get("no_activity_days")
        if isinstance(days, bool) or not isinstance(days, int | float) or days <= 0:
            raise NurtureConfigError(f"{key}.stall.no_activity_days", "a number of days > 0")
        stall = Stall(stage, float(days))
    entry = Entry(
        stages=_names(spec, "stage", key, STAGES),
        temperatures=_names(spec, "temperature", key, TEMPERATURES),
        statuses=_names(spec, "status", key, STATUSES),
        segments=_names(spec, "segment", key, list(segments)),
        sources=_names(spec, "source", key),
        stall=stall,
    )
    if SQL_STAGE in entry.stages:
        raise NurtureConfigError(f"{key}.stage", "SQL leads go to sales, not to nurture")
    if entry == Entry():
        raise NurtureConfigError(key, "an entry needs at least one condition")
    return entry


SQL_STAGE: Final = "SQL"


def _steps(raw: Any, key: str, hours_per_day: float, teams: Sequence[str]) -> tuple[Step, ...]:
    if not isinstance(raw, list) or not raw:
        raise NurtureConfigError(key, "a track needs a list of steps")
    steps: list[Step] = []
    for i, spec in enumerate(raw):
        where = f"{key}[{i}]"
        if not isinstance(spec, Mapping):
            raise NurtureConfigError(where, "a step is {id, action, after, ...}")
        action = spec.get("action")
        if action not in ACTIONS:
            raise NurtureConfigError(f"{where}.action", f"{action!r} is not one of {ACTIONS}")
        step_id = str(spec.get("id") or f"step-{i + 1}")
        if any(s.id == step_id for s in steps):
            raise NurtureConfigError(f"{where}.id", f"duplicate step id {step_id!r}")
        try:
            after = parse_delay(spec.get("after", 0), hours_per_day)
        except ValueError as exc:
            raise NurtureConfigError(f"{where}.after", str(exc)) from None
        params = {k: v for k, v in spec.items() if k not in ("id", "action", "after")}
        for needed in REQUIRED_PARAMS[action]:
            if not params.get(needed):
                raise NurtureConfigError(f"{where}.{needed}", f"{action} needs a {needed}")
        team = params.get("team")
        if team is not None and team not in teams:
            raise NurtureConfigError(f"{where}.team", f"unknown team {team!r}")
        steps.append(Step(step_id, str(action), after, params))
    return tuple(steps)


def parse_nurture(
    section: Mapping[str, Any] | None,
    *,
    calendar_of: Callable[[Any, str], Calendar],
    teams: Sequence[str],
    segments: Mapping[str, Any],
    hours_per_day: float,
) -> NurtureConfig:
    """``routing.nurture`` as a :class:`NurtureConfig`; :class:`NurtureConfigError` names the
    bad key. ``calendar_of(ref, key)`` resolves a calendar name or inline calendar."""
    if not section:
        return NurtureConfig()
    base = "routing.nurture"
    default_cal = (
        calendar_of(section["calendar"], f"{base}.calendar") if "calendar" in section else _ALWAYS
    )
    tracks: list[Track] = []
    for name, spec in (section.get("tracks") or {}).items():
        key = f"{base}.tracks.{name}"
        if not isinstance(spec, Mapping):
            raise NurtureConfigError(key, "a track is {entry, steps, exit, reentry}")
        cal = (
            calendar_of(spec["calendar"], f"{key}.calendar") if "calendar" in spec else default_cal
        )
        exit_spec = spec.get("exit") or {}
        reentry = spec.get("reentry") or {}
        score_above = exit_spec.get("score_above")
        tracks.append(
            Track(
                name=str(name),
                entry=_entry(spec.get("entry") or {}, f"{key}.entry", segments),
                steps=_steps(spec.get("steps"), f"{key}.steps", hours_per_day, teams),
                calendar=cal,
                score_above=None if score_above is None else float(score_above),
                exit_temperatures=_names(exit_spec, "temperature", f"{key}.exit", TEMPERATURES),
                reentry=bool(reentry.get("allowed", False)),
                reentry_cooldown_days=float(reentry.get("cooldown_days", 0)),
            )
        )
    return NurtureConfig(
        tracks=tuple(tracks), scan_every_seconds=float(section.get("scan_every_seconds", 3600))
    )


# ---- the lead ---------------------------------------------------------------------------------


def consent(lead: LeadSnapshot) -> str:
    """``given``, ``withdrawn`` or ``unknown``: the lead's recorded marketing consent."""
    raw = lead.field("consent")
    value = raw.get("marketing") if isinstance(raw, Mapping) else None
    if value is True:
        return "given"
    if value is False:
        return "withdrawn"
    return "unknown"


def source_of(lead: LeadSnapshot) -> str | None:
    """Where the lead came from: its first touch's source, else its last touch's."""
    for name in ("first_touch", "last_touch"):
        touch = lead.field(name)
        if isinstance(touch, Mapping) and touch.get("source"):
            return str(touch["source"])
    return None


def last_activity(lead: LeadSnapshot) -> datetime:
    """When the lead was last active (its creation if it never was since)."""
    raw = lead.field("last_activity_at")
    if isinstance(raw, str):
        try:
            return parse_time(raw)
        except ValueError:
            pass
    return lead.created_at


def segment_of(lead: LeadSnapshot, segments: Mapping[str, tuple[int | None, int | None]]) -> str:
    """The first company-size segment holding the lead's size ('' if none)."""
    size = lead.field("company_size")
    if isinstance(size, bool) or not isinstance(size, int):
        return ""
    for name, (lo, hi) in segments.items():
        if (lo is None or size >= lo) and (hi is None or size <= hi):
            return name
    return ""


def stalled(stall: Stall, lead: LeadSnapshot, now: datetime) -> bool:
    """Whether the lead sits at the stall's stage with no activity for its days."""
    return lead.stage == stall.stage and now - last_activity(lead) >= timedelta(days=stall.days)


def entry_reason(
    track: Track,
    lead: LeadSnapshot,
    now: datetime,
    segments: Mapping[str, tuple[int | None, int | None]],
) -> dict[str, Any] | None:
    """Why the lead enters ``track`` now (the conditions it met), or None if it does not."""
    if lead.erased or lead.status == "disqualified" or lead.stage == SQL_STAGE:
        return None
    if consent(lead) == "withdrawn":
        return None
    e = track.entry
    why: dict[str, Any] = {}
    checks: list[tuple[str, frozenset[str], str | None]] = [
        ("stage", e.stages, lead.stage),
        ("temperature", e.temperatures, lead.temperature),
        ("status", e.statuses, lead.status),
        ("segment", e.segments, segment_of(lead, segments) if e.segments else None),
        ("source", e.sources, source_of(lead) if e.sources else None),
    ]
    for name, allowed, value in checks:
        if allowed:
            if value not in allowed:
                return None
            why[name] = value
    if e.stall is not None:
        if not stalled(e.stall, lead, now):
            return None
        why["stall"] = {
            "stage": e.stall.stage,
            "no_activity_days": e.stall.days,
            "last_activity_at": last_activity(lead).isoformat(),
        }
    return why


def exit_reason(track: Track | None, lead: LeadSnapshot) -> str | None:
    """Why an enrolment in ``track`` (None: a track gone from the config) ends given the lead
    as it is now, or None if it goes on."""
    if lead.erased:
        return ERASED
    if lead.stage == SQL_STAGE:
        return SQL
    if lead.status == "disqualified":
        return DISQUALIFIED
    if consent(lead) == "withdrawn":
        return CONSENT_WITHDRAWN
    if track is None:
        return COMPLETED
    if track.score_above is not None and lead.score.total >= track.score_above:
        return RE_ENGAGED
    if lead.temperature in track.exit_temperatures:
        return TEMPERATURE
    return None


@dataclass(frozen=True)
class PastEnrolment:
    """A lead's earlier time in a track: when it ended."""

    track: str
    exited_at: datetime | None


def may_enter(track: Track, past: Sequence[PastEnrolment], now: datetime) -> bool:
    """Re-entry rule: a first time always; again only if the track allows re-entry and its
    cool-down has passed since the last exit."""
    mine = [p for p in past if p.track == track.name]
    if not mine:
        return True
    if not track.reentry:
        return False
    ends = [p.exited_at for p in mine]
    if any(e is None for e in ends):
        return False  # still in it
    last = max(e for e in ends if e is not None)
    return now - last >= timedelta(days=track.reentry_cooldown_days)


@dataclass(frozen=True)
class Enrol:
    """Enter ``track`` for ``reason``."""

    track: Track
    reason: Mapping[str, Any]


def choose_track(
    config: NurtureConfig,
    lead: LeadSnapshot,
    past: Sequence[PastEnrolment],
    now: datetime,
    segments: Mapping[str, tuple[int | None, int | None]],
) -> Enrol | None:
    """The first track (config order) the lead enters now, with why; None for none."""
    for track in config.tracks:
        why = entry_reason(track, lead, now, segments)
        if why is not None and may_enter(track, past, now):
            return Enrol(track, why)
    return None


# ---- steps ------------------------------------------------------------------------------------


def step_due_at(track: Track, index: int, after: datetime) -> datetime | None:
    """When step ``index`` falls due, counted in business time from ``after`` (the enrolment
    or the previous step's due time); None past the last step."""
    if not 0 <= index < len(track.steps):
        return None
    seconds = track.steps[index].after_seconds
    if seconds > 0:
        return add_business_time(after, seconds, track.calendar)
    return next_open(after, track.calendar)


def next_open(at: datetime, calendar: Calendar) -> datetime:
    """``at`` if the calendar is open then, else when it next opens (a step with no delay
    still waits for business hours)."""
    for a, b in calendar.intervals(at):
        if b > at:
            return max(a, at)
    raise ValueError(f"calendar {calendar.name or '?'} has no open hours ahead")


#: What becomes of a due step.
SEND: Final = "sent"
SKIP_NO_CONSENT: Final = "skipped_no_consent"


def step_outcome(step: Step, lead: LeadSnapshot) -> str:
    """``sent`` (announce it) or ``skipped_no_consent`` (it contacts the person, who gave no
    recorded marketing consent). A withdrawn consent ends the enrolment before this."""
    if step.contacts and consent(lead) != "given":
        return SKIP_NO_CONSENT
    return SEND
