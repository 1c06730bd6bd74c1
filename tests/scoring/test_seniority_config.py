"""Job-title seniority patterns from ``scoring.seniority`` (table-driven)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from services.scoring.config import load_rules
from services.scoring.domain.engine import compute_fit, seniority
from services.scoring.domain.model import Lead
from services.scoring.domain.ruleset import (
    DEFAULT_SENIORITY,
    DEFAULT_SENIORITY_PATTERNS,
    parse_rules,
)
from services.scoring.main import build_app
from shared.config import ConfigError, load_config
from tests.scoring.helpers import T0
from tests.support import make_settings


def _with(mutate: Any) -> dict[str, Any]:
    config = copy.deepcopy(load_config())
    mutate(config["scoring"])
    return config


def _levels(rules: Any) -> list[tuple[str, str, int]]:
    return [(s.level, s.pattern.pattern, s.pattern.flags) for s in rules.seniority]


def test_the_default_config_spells_out_the_built_in_patterns() -> None:
    assert [(s["level"], s["pattern"]) for s in load_config()["scoring"]["seniority"]] == list(
        DEFAULT_SENIORITY_PATTERNS
    )
    built_in = [(s.level, s.pattern.pattern, s.pattern.flags) for s in DEFAULT_SENIORITY]
    assert _levels(load_rules(load_config())) == built_in
    assert _levels(load_rules(_with(lambda s: s.pop("seniority")))) == built_in
    assert _levels(parse_rules({})) == built_in


CUSTOM = [
    {"level": "founder", "pattern": r"\bfound(er|ing)\b"},
    {"level": "c_level", "pattern": r"\b(ceo|cto|chief)\b"},
    {"level": "engineering_lead", "pattern": r"\b(staff|principal) engineer\b"},
]


@pytest.mark.parametrize(
    ("patterns", "title", "level"),
    [
        (None, "CEO", "c_level"),
        (None, "Chief Revenue Officer", "c_level"),
        (None, "Vice President Marketing", "vp"),
        (None, "Head of Growth", "director"),
        (None, "Team Lead", "manager"),
        (None, "Engineer", "individual"),
        (CUSTOM, "Founding Partner", "founder"),
        (CUSTOM, "Founder & CEO", "founder"),  # first match wins
        (CUSTOM, "cto", "c_level"),  # case-insensitive
        (CUSTOM, "Principal Engineer", "engineering_lead"),
        (CUSTOM, "VP of Sales", "individual"),  # the list replaces the built-in one
        (CUSTOM, "  ", None),
        ([], "CEO", "individual"),
    ],
)
def test_seniority_patterns(patterns: list[dict[str, str]] | None, title: str, level: str) -> None:
    config = _with(lambda s: s.update(seniority=patterns) if patterns is not None else None)
    rules = load_rules(config)
    assert seniority(title, rules.seniority) == level


def test_fit_rules_see_the_configured_levels() -> None:
    def mutate(s: dict[str, Any]) -> None:
        s["seniority"] = CUSTOM
        s["fit"] = [
            {"id": "founders", "field": "seniority", "match": "founder", "points": 30},
            {"id": "ic", "field": "seniority", "match": "individual", "points": 1},
        ]

    rules = load_rules(_with(mutate))
    lead = Lead(id="l1", key="k", created_at=T0, job_title="Founding CEO")
    assert compute_fit(lead, rules)[0] == 30
    lead.job_title = "VP of Sales"
    assert compute_fit(lead, rules)[0] == 1


@pytest.mark.parametrize(
    ("seniority_value", "where"),
    [
        (
            [{"level": "vp", "pattern": "vp"}, {"level": "x", "pattern": "(unclosed"}],
            "scoring.seniority[1].pattern",
        ),
        ([{"level": "vp", "pattern": "(?<=a+)b"}], "scoring.seniority[0].pattern"),
        ([{"level": "vp"}], "scoring.seniority[0]"),
        ([{"level": "Not A Level", "pattern": "x"}], "scoring.seniority[0].level"),
        ([{"level": "vp", "pattern": ""}], "scoring.seniority[0].pattern"),
        ([{"level": "vp", "pattern": "x", "flags": "i"}], "scoring.seniority[0]"),
        ({"vp": "x"}, "scoring.seniority"),
    ],
)
def test_bad_seniority_config_names_the_key(seniority_value: Any, where: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_rules(_with(lambda s: s.update(seniority=seniority_value)))
    assert where in str(exc.value)


def test_build_app_refuses_a_bad_seniority_regex(sqlite_db_url: str) -> None:
    bad = _with(lambda s: s["seniority"][2].update(pattern="[director"))
    with pytest.raises(ConfigError, match=r"scoring\.seniority\[2\]\.pattern"):
        build_app(make_settings("127.0.0.1:1", sqlite_db_url), bad)


def test_an_engagement_rule_naming_an_unknown_group_is_refused_with_its_path() -> None:
    def misspell(scoring: dict[str, Any]) -> None:
        scoring["engagement"]["rules"][2]["group"] = "froms"

    with pytest.raises(ConfigError) as err:
        parse_rules(_with(misspell)["scoring"])
    message = str(err.value)
    assert "scoring.engagement.rules[2].group" in message
    assert "'froms'" in message
    # Every group the default config's rules name is defined, and a rule without a group
    # still lands in the implicit uncapped "default" group.
    config = _with(lambda s: s["engagement"]["rules"][2].pop("group"))
    rules = parse_rules(config["scoring"])
    assert rules.engagement[2].group == "default"
    assert rules.groups["default"].cap is None
    assert {r.group for r in parse_rules(load_config()["scoring"]).engagement} <= set(
        load_config()["scoring"]["engagement"]["groups"]
    )
