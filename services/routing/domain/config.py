"""Turn the validated ``routing:`` config mapping into a :class:`RoutingConfig`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from services.routing.domain.business_time import Calendar, make_calendar
from services.routing.domain.model import (
    Action,
    EscalationStep,
    Rep,
    RoutingConfig,
    Rule,
    SlaPolicy,
    Team,
    Webhook,
)
from services.routing.domain.nurture import NurtureConfigError, parse_nurture

_UNITS = {"business_seconds": 1, "business_minutes": 60, "business_hours": 3600}


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_SHORT = {"s": 1, "m": 60, "h": 3600}


class RoutingConfigError(ValueError):
    """A config value that the JSON Schema cannot check (unknown reference, bad time zone)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"invalid config at {key}: {message}")
        self.key = key


def policy_seconds(spec: Mapping[str, Any], hours_per_day: float) -> float:
    """Business seconds of a policy given in seconds, minutes, hours or business days."""
    total = sum(float(spec.get(k, 0)) * mult for k, mult in _UNITS.items())
    total += float(spec.get("business_days", 0)) * hours_per_day * 3600
    return total


def parse_duration(value: Any, hours_per_day: float) -> float:
    """Business seconds of ``"90s"``, ``"10m"``, ``"2h"``, ``"1d"`` (a business day), a number
    of seconds, or a policy-like mapping (``{business_minutes: 10}``); ValueError if invalid."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError(f"{value!r} is not a duration like '30s', '10m', '2h' or '1d'")
        n, unit = float(m.group(1)), m.group(2)
        seconds = n * hours_per_day * 3600 if unit == "d" else n * _SHORT[unit]
    elif isinstance(value, Mapping):
        unknown = set(value) - {*_UNITS, "business_days"}
        if unknown or not value:
            raise ValueError(f"{dict(value)!r} is not a duration")
        seconds = policy_seconds(value, hours_per_day)
    else:
        raise ValueError(f"{value!r} is not a duration")
    if not seconds > 0:
        raise ValueError("a duration must be > 0")
    return seconds


def parse_ladder(raw: Any, hours_per_day: float) -> list[EscalationStep]:
    """The escalation ladder: each step a name (taken at a breach) or ``{action, after}``."""
    steps = []
    for i, spec in enumerate(raw):
        key = f"routing.escalation.ladder[{i}]"
        action: Any
        after: Any
        if isinstance(spec, str):
            action, after = spec, None
        elif isinstance(spec, Mapping):
            action, after = spec.get("action"), spec.get("after")
        else:
            raise RoutingConfigError(key, "a step is an action name or {action, after}")
        if action not in list(Action):
            raise RoutingConfigError(f"{key}.action", f"unknown action {action!r}")
        seconds = None
        if after is not None:
            if i == 0:
                raise RoutingConfigError(f"{key}.after", "the first step is taken at the breach")
            try:
                seconds = parse_duration(after, hours_per_day)
            except ValueError as exc:
                raise RoutingConfigError(f"{key}.after", str(exc)) from None
        steps.append(EscalationStep(Action(action), seconds))
    return steps


Calendars = Mapping[str, Calendar]


def _calendar(ref: Any, key: str, calendars: Calendars) -> Calendar:
    """A calendar by name, or an inline ``{timezone, hours, holidays}``."""
    if isinstance(ref, str):
        if ref not in calendars:
            raise RoutingConfigError(key, f"unknown calendar {ref!r}")
        return calendars[ref]
    try:
        return _make(ref)
    except ValueError as exc:
        raise RoutingConfigError(key, str(exc)) from None


def _make(spec: Mapping[str, Any], name: str = "") -> Calendar:
    """A calendar from ``{timezone, hours, holidays, holidays_country, holidays_subdivision}``."""
    return make_calendar(
        spec["timezone"],
        spec["hours"],
        spec.get("holidays", ()),
        name=name,
        holidays_country=spec.get("holidays_country"),
        holidays_subdivision=spec.get("holidays_subdivision"),
    )


def _calendars(section: Mapping[str, Any]) -> dict[str, Calendar]:
    """``routing.calendars``: the named opening hours."""
    calendars = {}
    for name, spec in (section.get("calendars") or {}).items():
        try:
            calendars[name] = _make(spec, name=name)
        except ValueError as exc:
            raise RoutingConfigError(f"routing.calendars.{name}", str(exc)) from None
    return calendars


def _teams(section: Mapping[str, Any], calendars: Calendars) -> dict[str, Team]:
    """``routing.teams``: each with the calendar its SLA clock counts, and a manager."""
    return {
        name: Team(
            name,
            _calendar(spec["calendar"], f"routing.teams.{name}.calendar", calendars),
            spec.get("manager"),
        )
        for name, spec in (section.get("teams") or {}).items()
    }


def _rep_calendar(spec: Mapping[str, Any], key: str, team: Team, calendars: Calendars) -> Calendar:
    """A rep's working hours: their own ``hours``, a ``calendar``, else the team's."""
    if "hours" in spec:
        tz = spec.get("timezone", team.calendar.tz.key)
        # Without their own holidays, reps are off on the team's holidays (its dates, and
        # its country's public holidays unless they name their own country).
        team_cal = team.calendar
        own: dict[str, Any] = {
            "timezone": tz,
            "hours": spec["hours"],
            "holidays": spec.get("holidays", sorted(d.isoformat() for d in team_cal.holidays)),
        }
        if "holidays_country" in spec:
            own["holidays_country"] = spec["holidays_country"]
            if "holidays_subdivision" in spec:
                own["holidays_subdivision"] = spec["holidays_subdivision"]
        elif "holidays" not in spec and team_cal.holidays_country is not None:
            own["holidays_country"] = team_cal.holidays_country
            own["holidays_subdivision"] = team_cal.holidays_subdivision
        return _calendar(own, f"{key}.hours", calendars)
    if "calendar" in spec:
        return _calendar(spec["calendar"], f"{key}.calendar", calendars)
    return team.calendar


def _reps(
    section: Mapping[str, Any], teams: Mapping[str, Team], calendars: Calendars
) -> dict[str, Rep]:
    """``routing.reps``: who takes leads, in which team, how many and when."""
    reps: dict[str, Rep] = {}
    for i, spec in enumerate(section.get("reps") or []):
        key = f"routing.reps[{i}]"
        if spec["team"] not in teams:
            raise RoutingConfigError(f"{key}.team", f"unknown team {spec['team']!r}")
        if spec["id"] in reps:
            raise RoutingConfigError(f"{key}.id", f"duplicate rep id {spec['id']!r}")
        cap = spec.get("capacity") or {}
        reps[spec["id"]] = Rep(
            id=spec["id"],
            name=spec["name"],
            email=spec["email"],
            team=spec["team"],
            weight=int(spec.get("weight", 1)),
            calendar=_rep_calendar(spec, key, teams[spec["team"]], calendars),
            max_open=cap.get("max_open"),
            max_per_day=cap.get("max_per_day"),
            hours=spec.get("hours"),
        )
    return reps


def _sla(sla: Mapping[str, Any], hours_per_day: float) -> tuple[dict[str, SlaPolicy], str]:
    """``routing.sla``: the response-time policies and the default one."""
    policies = {
        name: SlaPolicy(name, policy_seconds(spec, hours_per_day))
        for name, spec in (sla.get("policies") or {}).items()
    }
    for name, pol in policies.items():
        if pol.seconds <= 0:
            raise RoutingConfigError(f"routing.sla.policies.{name}", "the target must be > 0")
    default_policy = sla.get("default_policy", "warm")
    if default_policy not in policies:
        raise RoutingConfigError("routing.sla.default_policy", f"unknown policy {default_policy!r}")
    return policies, default_policy


def _rules(
    section: Mapping[str, Any], teams: Mapping[str, Team], policies: Mapping[str, SlaPolicy]
) -> list[Rule]:
    """``routing.rules``, in order; each names a known team and, maybe, a known policy."""
    rules = []
    for i, spec in enumerate(section.get("rules") or []):
        if spec["team"] not in teams:
            raise RoutingConfigError(f"routing.rules[{i}].team", f"unknown team {spec['team']!r}")
        pol = spec.get("sla_policy")
        if pol is not None and pol not in policies:
            raise RoutingConfigError(f"routing.rules[{i}].sla_policy", f"unknown policy {pol!r}")
        rules.append(Rule(spec["name"], spec["team"], spec.get("when") or {}, pol))
    return rules


def _webhooks(section: Mapping[str, Any], env: Mapping[str, str]) -> list[Webhook]:
    """``routing.webhooks``: each with a secret (inline or from ``secret_env``), names unique."""
    webhooks: list[Webhook] = []
    for i, spec in enumerate(section.get("webhooks") or []):
        secret = spec.get("secret") or env.get(spec.get("secret_env", ""), "")
        if not secret:
            raise RoutingConfigError(f"routing.webhooks[{i}]", "no secret (or secret_env unset)")
        name = spec.get("name", f"webhook-{i}")
        # Deliveries are unique per (webhook, event) and signed with the named hook's secret:
        # two hooks with one name would silently share (and lose) deliveries.
        if any(h.name == name for h in webhooks):
            raise RoutingConfigError(
                f"routing.webhooks[{i}].name", f"duplicate webhook name {name!r}"
            )
        webhooks.append(
            Webhook(
                name=name,
                url=spec["url"],
                secret=secret,
                events=frozenset(spec.get("events") or []),
                max_attempts=int(spec.get("max_attempts", 8)),
                backoff_seconds=float(spec.get("backoff_seconds", 2.0)),
            )
        )
    return webhooks


def parse_routing_config(
    section: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> RoutingConfig:
    """Build the routing config; raise :class:`RoutingConfigError` naming the bad key.

    ``env`` holds the environment that webhook ``secret_env`` names are looked up in.
    """
    calendars = _calendars(section)
    teams = _teams(section, calendars)
    reps = _reps(section, teams, calendars)
    sla = section.get("sla") or {}
    hours_per_day = float(sla.get("business_day_hours", 8))
    policies, default_policy = _sla(sla, hours_per_day)
    rules = _rules(section, teams, policies)
    fallback = section.get("fallback_team")
    if fallback is not None and fallback not in teams:
        raise RoutingConfigError("routing.fallback_team", f"unknown team {fallback!r}")
    webhooks = _webhooks(section, env or {})
    esc = section.get("escalation") or {}
    try:
        nurture = parse_nurture(
            section.get("nurture"),
            calendar_of=lambda ref, key: _calendar(ref, key, calendars),
            teams=list(teams),
            segments=section.get("segments") or {},
            hours_per_day=hours_per_day,
        )
    except NurtureConfigError as exc:
        raise RoutingConfigError(exc.key, exc.message) from None
    return RoutingConfig(
        teams=teams,
        reps=reps,
        rules=rules,
        territories={
            k: frozenset(c.upper() for c in v)
            for k, v in (section.get("territories") or {}).items()
        },
        segments={
            k: (v.get("min"), v.get("max")) for k, v in (section.get("segments") or {}).items()
        },
        fallback_team=fallback,
        policies=policies,
        default_policy=default_policy,
        warn_fraction=float(sla.get("warn_fraction", 0.8)),
        escalation_ladder=parse_ladder(esc.get("ladder", ["reassign", "queue"]), hours_per_day),
        notify_manager=bool(esc.get("notify_manager", True)),
        escalation_queue=str(esc.get("queue", "escalations")),
        unassigned_retry_seconds=float(section.get("unassigned_retry_seconds", 60)),
        webhooks=webhooks,
        nurture=nurture,
    )
