"""The routing choice: which team a lead goes to, and which rep of that team takes it.

Within a team, reps share leads by smooth weighted round-robin (the scheme nginx uses): every
available rep earns its weight in credit, the richest takes the lead and pays back the total.
Over many leads each rep gets ``weight / sum(weights)`` of them, evenly spread, and skipping an
absent rep does not let anyone "catch up" unfairly. The credits live in the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from services.routing.domain.model import (
    Decision,
    Rep,
    RepState,
    RoutingConfig,
    Rule,
    effective_calendar,
    effective_weight,
)
from shared.contract import LeadSnapshot


def _text(value: Any) -> str:
    return str(value).strip().lower() if value is not None else ""


def _one_of(value: Any, allowed: Any) -> bool:
    options = allowed if isinstance(allowed, list) else [allowed]
    return _text(value) in {_text(o) for o in options}


def lead_source(lead: LeadSnapshot) -> str | None:
    """The lead's original source (first touch, else last touch)."""
    for key in ("first_touch", "last_touch"):
        touch = lead.field(key)
        if isinstance(touch, Mapping) and touch.get("source"):
            return str(touch["source"])
    return None


def segment_of(size: Any, segments: Mapping[str, tuple[int | None, int | None]]) -> str | None:
    """The first company-size segment whose [min, max] range holds ``size``."""
    if not isinstance(size, int | float) or isinstance(size, bool):
        return None
    for name, (lo, hi) in segments.items():
        if (lo is None or size >= lo) and (hi is None or size <= hi):
            return name
    return None


def rule_matches(rule: Rule, lead: LeadSnapshot, config: RoutingConfig) -> bool:
    """Whether every condition of ``rule`` holds for ``lead`` (no conditions: always)."""
    for cond, expected in rule.when.items():
        if cond == "country":
            ok = _one_of(lead.field("country"), expected)
        elif cond == "territory":
            names = expected if isinstance(expected, list) else [expected]
            country = _text(lead.field("country")).upper()
            ok = any(country in config.territories.get(n, frozenset()) for n in names)
        elif cond == "segment":
            ok = _one_of(segment_of(lead.field("company_size"), config.segments), expected)
        elif cond == "company_size":
            size = lead.field("company_size")
            ok = (
                isinstance(size, int | float)
                and not isinstance(size, bool)
                and (
                    size >= expected.get("min", float("-inf"))
                    and size <= expected.get("max", float("inf"))
                )
            )
        elif cond == "source":
            ok = _one_of(lead_source(lead), expected)
        elif cond in ("industry", "temperature", "stage", "status", "job_title"):
            ok = _one_of(lead.field(cond), expected)
        else:
            ok = False  # the schema rejects unknown conditions; be strict anyway
        if not ok:
            return False
    return True


def can_take(rep: Rep, state: RepState, now: datetime) -> str | None:
    """Why ``rep`` cannot take a lead now, or None when they can."""
    if state.paused:
        return "paused"
    if any(a <= now < b for a, b in state.out_of_office):
        return "out_of_office"
    max_open = state.max_open if state.max_open is not None else rep.max_open
    if max_open is not None and state.open_count >= max_open:
        return "at_open_capacity"
    max_day = state.max_per_day if state.max_per_day is not None else rep.max_per_day
    if max_day is not None and state.today_count >= max_day:
        return "at_daily_capacity"
    if not effective_calendar(rep, state).is_open(now):
        return "outside_working_hours"
    return None


def pick_weighted(
    candidates: Sequence[tuple[str, int]], credits: Mapping[str, float]
) -> tuple[str, dict[str, float]]:
    """Smooth weighted round-robin over ``(rep_id, weight)``; return the pick and new credits."""
    if not candidates:
        raise ValueError("no candidates")
    new = {rid: credits.get(rid, 0.0) + weight for rid, weight in candidates}
    chosen = max(candidates, key=lambda c: (new[c[0]], -candidates.index(c)))[0]
    new[chosen] -= sum(w for _, w in candidates)
    return chosen, new


def choose_in_team(
    team: str,
    config: RoutingConfig,
    states: Mapping[str, RepState],
    now: datetime,
    exclude: Iterable[str] = (),
) -> tuple[Rep | None, dict[str, float]]:
    """The next available rep of ``team`` and the updated credits (empty if nobody)."""
    skip = set(exclude)

    def state(r: Rep) -> RepState:
        return states.get(r.id) or RepState(r.id)

    reps = [
        r for r in config.team_reps(team) if r.id not in skip and can_take(r, state(r), now) is None
    ]
    if not reps:
        return None, {}
    credits = {r.id: state(r).credit for r in reps}
    chosen, new = pick_weighted([(r.id, effective_weight(r, state(r))) for r in reps], credits)
    return config.reps[chosen], new


def policy_for(lead: LeadSnapshot, rule: Rule | None, config: RoutingConfig) -> str:
    """The SLA policy: the rule's, else the one named after the temperature, else the default."""
    if rule is not None and rule.sla_policy:
        return rule.sla_policy
    temp = _text(lead.temperature)
    return temp if temp in config.policies else config.default_policy


def candidate_teams(lead: LeadSnapshot, config: RoutingConfig) -> list[str]:
    """The teams :func:`route` may give ``lead`` to: the first matching rule's, then the
    fallback team. Only their reps' states decide the choice (and only theirs change)."""
    rule = next((r for r in config.rules if rule_matches(r, lead, config)), None)
    teams = [rule.team] if rule is not None else []
    if config.fallback_team is not None and config.fallback_team not in teams:
        teams.append(config.fallback_team)
    return teams


def candidate_reps(leads: Iterable[LeadSnapshot], config: RoutingConfig) -> list[str]:
    """The reps of every team the leads may be routed to, in rep id order."""
    teams = {t for lead in leads for t in candidate_teams(lead, config)}
    return sorted(rid for rid, rep in config.reps.items() if rep.team in teams)


def route(
    lead: LeadSnapshot,
    config: RoutingConfig,
    states: Mapping[str, RepState],
    now: datetime,
    exclude: Iterable[str] = (),
) -> Decision:
    """Route a lead: first matching rule's team, then the fallback team, else nobody."""
    exclude = list(exclude)
    rule = next((r for r in config.rules if rule_matches(r, lead, config)), None)
    policy = policy_for(lead, rule, config)
    tried: list[str] = []
    if rule is not None:
        rep, credits = choose_in_team(rule.team, config, states, now, exclude)
        if rep is not None:
            return Decision(rep, rule.team, f"rule:{rule.name}", policy, credits)
        tried.append(rule.team)
    fb = config.fallback_team
    if fb is not None and fb not in tried:
        rep, credits = choose_in_team(fb, config, states, now, exclude)
        if rep is not None:
            why = f"fallback:{rule.name}" if rule is not None else "fallback:no_rule"
            return Decision(rep, fb, why, policy, credits)
    why = "no_available_rep" if rule is not None or fb is not None else "no_matching_rule"
    return Decision(None, rule.team if rule else fb, why, policy)


def after_pick(states: Mapping[str, RepState], decision: Decision) -> dict[str, RepState]:
    """The reps' states once ``decision``'s pick is recorded: the new round-robin credits, and
    the chosen rep with one more open lead and one more assigned today (so the next lead of a
    batch is routed as if the states had been read again)."""
    out = dict(states)
    for rid, credit in decision.credits.items():
        out[rid] = replace(out.get(rid) or RepState(rid), credit=credit)
    if decision.rep is not None:
        rid = decision.rep.id
        st = out.get(rid) or RepState(rid)
        out[rid] = replace(st, open_count=st.open_count + 1, today_count=st.today_count + 1)
    return out


def next_available_at(
    config: RoutingConfig, states: Mapping[str, RepState], now: datetime
) -> datetime | None:
    """The next instant after ``now`` when a rep who is away for a time reason (out of office,
    outside working hours) may become available; None if nothing is due to change by itself."""
    times: list[datetime] = []
    for rid, rep in config.reps.items():
        st = states.get(rid) or RepState(rid)
        if st.paused:
            continue
        times.extend(b for a, b in st.out_of_office if a <= now < b)
        cal = effective_calendar(rep, st)
        if not cal.is_open(now):
            nxt = next((a for a, _ in cal.intervals(now) if a > now), None)
            if nxt is not None:
                times.append(nxt)
    return min(times, default=None)
