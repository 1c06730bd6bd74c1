"""Routing rules and weighted round-robin (pure domain)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.routing.domain.config import RoutingConfigError, parse_routing_config
from services.routing.domain.model import RepState
from services.routing.domain.rules import can_take, pick_weighted, route, rule_matches
from shared.contract import LeadSnapshot
from tests.routing.helpers import config, snapshot

NOW = datetime(2026, 11, 26, 10, tzinfo=UTC)  # a Thursday


def make(**overrides: object) -> object:
    return parse_routing_config(config(**overrides)["routing"])


CFG = parse_routing_config(
    config(
        segments={"enterprise": {"min": 1000}, "smb": {"max": 999}},
        rules=[
            {
                "name": "emea-enterprise",
                "team": "emea",
                "when": {"territory": "emea", "segment": "enterprise"},
                "sla_policy": "hot",
            },
            {
                "name": "us-software",
                "team": "americas",
                "when": {"country": ["us"], "industry": "Software", "source": "google"},
            },
            {"name": "cold-to-desk", "team": "desk", "when": {"temperature": "cold"}},
            {"name": "emea", "team": "emea", "when": {"territory": "emea"}},
        ],
    )["routing"]
)


@pytest.mark.parametrize(
    ("the_lead", "rule"),
    [
        (snapshot("DE", company_size=5000), "emea-enterprise"),
        (snapshot("DE", company_size=50), "emea"),
        (snapshot("US"), "us-software"),
        (snapshot("US", industry="retail"), None),
        (snapshot("US", first_touch={"source": "bing"}), None),
        (snapshot("CA", temperature="cold"), "cold-to-desk"),
        (snapshot("FR", temperature="cold", company_size=2000), "emea-enterprise"),
        (snapshot(None), None),
    ],
)
def test_first_matching_rule_wins(the_lead: LeadSnapshot, rule: str | None) -> None:
    matched = next((r.name for r in CFG.rules if rule_matches(r, the_lead, CFG)), None)
    assert matched == rule


def test_rule_policy_overrides_temperature_and_fallback_catches_the_rest() -> None:
    d = route(snapshot("DE", "cold", company_size=5000), CFG, {}, NOW)
    assert (d.team, d.reason, d.policy) == ("emea", "rule:emea-enterprise", "hot")
    d = route(snapshot("JP", "warm"), CFG, {}, NOW)
    assert (d.team, d.rep.id if d.rep else None, d.reason) == ("desk", "desk", "fallback:no_rule")
    no_cold = make(
        sla={"policies": {"hot": {"business_minutes": 5}, "warm": {"business_hours": 4}}}
    )
    d = route(snapshot("JP", "cold"), no_cold, {}, NOW)
    assert d.policy == "warm"  # no policy named after its temperature: the default policy


def _assign_many(cfg, n: int, states: dict[str, RepState], team_lead: LeadSnapshot) -> Counter[str]:
    counts: Counter[str] = Counter()
    for _ in range(n):
        d = route(team_lead, cfg, states, NOW)
        assert d.rep is not None
        counts[d.rep.id] += 1
        for rid, credit in d.credits.items():
            states.setdefault(rid, RepState(rid)).credit = credit
    return counts


def test_weights_are_respected_over_many_leads() -> None:
    counts = _assign_many(CFG, 300, {}, snapshot("GB"))
    assert counts == {"anna": 200, "ben": 100}  # weights 2:1, exactly


def test_paused_absent_and_capped_reps_are_skipped() -> None:
    states = {"anna": RepState("anna", paused=True)}
    assert _assign_many(CFG, 10, states, snapshot("GB")) == {"ben": 10}
    states = {
        "anna": RepState(
            "anna", out_of_office=[(NOW - timedelta(hours=1), NOW + timedelta(hours=1))]
        )
    }
    assert _assign_many(CFG, 10, states, snapshot("GB")) == {"ben": 10}
    states = {
        "anna": RepState("anna", max_open=3, open_count=3),
        "ben": RepState("ben", max_per_day=2, today_count=2),
    }
    d = route(snapshot("GB"), CFG, states, NOW)
    assert (d.rep.id if d.rep else None, d.reason) == ("desk", "fallback:emea")
    states["desk"] = RepState("desk", paused=True)
    d = route(snapshot("GB"), CFG, states, NOW)
    assert d.rep is None and d.reason == "no_available_rep"


def test_working_hours_decide_availability() -> None:
    cfg = make(
        reps=[
            {
                "id": "early",
                "name": "E",
                "email": "e@x",
                "team": "emea",
                "timezone": "Europe/Berlin",
                "hours": {"thu": ["08:00-12:00"]},
            },
            {
                "id": "late",
                "name": "L",
                "email": "l@x",
                "team": "emea",
                "timezone": "Europe/Berlin",
                "hours": {"thu": ["12:00-20:00"]},
            },
            {"id": "desk", "name": "D", "email": "d@x", "team": "desk", "hours": "24x7"},
        ]
    )
    assert route(snapshot("DE"), cfg, {}, NOW).rep.id == "early"  # 11:00 Berlin
    assert route(snapshot("DE"), cfg, {}, NOW + timedelta(hours=2)).rep.id == "late"
    assert route(snapshot("DE"), cfg, {}, NOW + timedelta(hours=12)).rep.id == "desk"
    early = cfg.reps["early"]
    assert can_take(early, RepState("early"), NOW + timedelta(hours=2)) == "outside_working_hours"


def test_exclude_skips_previous_owners() -> None:
    d = route(snapshot("GB"), CFG, {}, NOW, exclude=["anna"])
    assert d.rep is not None and d.rep.id == "ben"


@settings(max_examples=100, deadline=None)
@given(weights=st.lists(st.integers(1, 5), min_size=1, max_size=5), rounds=st.integers(1, 4))
def test_smooth_round_robin_is_exactly_proportional(weights: list[int], rounds: int) -> None:
    reps = [(f"r{i}", w) for i, w in enumerate(weights)]
    credits: dict[str, float] = {}
    counts: Counter[str] = Counter()
    for _ in range(sum(weights) * rounds):
        chosen, credits = pick_weighted(reps, credits)
        counts[chosen] += 1
    assert counts == {rid: w * rounds for rid, w in reps}


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"fallback_team": "nope"}, "routing.fallback_team"),
        ({"rules": [{"name": "x", "team": "ghost"}]}, "routing.rules[0].team"),
        (
            {"calendars": {"bad": {"timezone": "Mars/Base", "hours": "24x7"}}},
            "routing.calendars.bad",
        ),
    ],
)
def test_config_errors_name_the_key(overrides: dict, key: str) -> None:
    with pytest.raises(RoutingConfigError) as err:
        make(**overrides)
    assert key in str(err.value)
