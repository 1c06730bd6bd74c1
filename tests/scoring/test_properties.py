"""Properties of the rules engine (hypothesis): decay, caps, forward-only stages."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.scoring.domain import engine, lifecycle
from services.scoring.domain.model import Hit, Lead, stage_rank
from services.scoring.domain.ruleset import Rules
from shared.contract import Contact
from shared.events import InteractionType as IT
from shared.events import rfc3339
from tests.scoring.helpers import T0, default_rules, ix, rules_from

RULES = default_rules()
CAPPED = rules_from(
    {
        "engagement": {
            "groups": {
                "g": {"cap": 40, "decay": {"half_life_days": 10}},
                "h": {"cap": 25, "decay": {"points_per_period": 3, "period_days": 2}},
            },
            "rules": [
                {
                    "id": "a",
                    "group": "g",
                    "event": "tracked",
                    "points": 15,
                    "repeatable": True,
                    "max_points": 30,
                },
                {"id": "b", "group": "g", "event": "tracked", "points": 20, "repeatable": True},
                {
                    "id": "c",
                    "group": "h",
                    "event": "tracked",
                    "points": 9,
                    "repeatable": True,
                    "max_points": 18,
                },
                {"id": "n", "group": "h", "event": "tracked", "points": -7, "repeatable": True},
            ],
        },
    }
)

hits = st.lists(
    st.builds(
        lambda rule, days, n: Hit(
            rule,
            {"a": "g", "b": "g", "c": "h", "n": "h"}[rule],
            {"a": 15, "b": 20, "c": 9, "n": -7}[rule],
            T0 + timedelta(days=days),
            f"e{n}",
        ),
        st.sampled_from("abcn"),
        st.floats(0, 60),
        st.integers(0, 10_000),
    ),
    max_size=30,
)
offsets = st.floats(0, 400)


@given(hits, offsets, offsets)
def test_decay_never_increases_engagement(hs: list[Hit], a: float, b: float) -> None:
    early, late = sorted((a, b))
    base = T0 + timedelta(days=60)
    first, _ = engine.compute_engagement(hs, CAPPED, base + timedelta(days=early))
    second, _ = engine.compute_engagement(hs, CAPPED, base + timedelta(days=late))
    assert second <= first


@given(hits, offsets)
def test_caps_hold(hs: list[Hit], offset: float) -> None:
    now = T0 + timedelta(days=60 + offset)
    total, reasons = engine.compute_engagement(hs, CAPPED, now)
    positive_cap = 40 + 25
    assert total <= positive_cap
    by_rule: dict[str, float] = {}
    for r in reasons:
        by_rule[r["rule"]] = by_rule.get(r["rule"], 0) + r["points"]
    # each reason is rounded to cents on its own: up to half a cent each
    slack = 0.005 * len(reasons) + 1e-9
    assert by_rule.get("a", 0) + by_rule.get("a:cap", 0) <= 30 + slack
    assert by_rule.get("c", 0) + by_rule.get("c:cap", 0) <= 18 + slack
    # reasons are rounded to cents, the score to a whole number: that is the whole gap
    assert abs(sum(r["points"] for r in reasons) - total) <= 0.5 + 0.005 * len(reasons)


EVENT = st.one_of(
    st.builds(
        lambda i: (IT.FORM_SUBMITTED, ix(intent=i)),
        st.sampled_from(["newsletter", "contact", "demo_request", "generic", "trial"]),
    ),
    st.builds(lambda g: (IT.CONTENT_DOWNLOADED, ix(asset={"gated": g})), st.booleans()),
    st.builds(
        lambda m: (IT.WEBINAR_ATTENDED, ix(webinar={"attended_minutes": m})), st.integers(0, 120)
    ),
    st.builds(
        lambda n: (IT.TRACKED, ix(track={"event": "page", "name": n})),
        st.sampled_from(["Pricing", "Home", "Careers"]),
    ),
    st.builds(
        lambda t, s: (IT.IDENTIFIED, ix(contact=Contact(job_title=t, company_size=s))),
        st.sampled_from(["CEO", "Intern", "VP Sales", None]),
        st.integers(1, 5000),
    ),
)
STEPS = st.lists(st.tuples(EVENT, st.floats(0, 90)), min_size=1, max_size=25)


def _run(steps: list, rules: Rules) -> list[tuple[str, str]]:
    lead = Lead(id="l", key="k@x.io", created_at=T0, email="k@x.io", emails=["k@x.io"])
    seen = []
    now = T0
    for i, ((etype, data), gap) in enumerate(steps):
        now = now + timedelta(days=gap)
        lifecycle.apply_interaction(
            lead, f"e{i}", etype, replace(data, occurred_at=now), rules, now
        )
        seen.append((lead.stage, lead.status))
        lifecycle.refresh(lead, rules, now + timedelta(days=gap))  # the sweep, later on
        seen.append((lead.stage, lead.status))
    return seen


@settings(max_examples=150)
@given(STEPS)
def test_stage_and_status_never_move_back_automatically(steps: list) -> None:
    seen = _run(steps, RULES)
    ranks = [stage_rank(stage) for stage, _ in seen]
    assert ranks == sorted(ranks)
    statuses = [status for _, status in seen]
    if "disqualified" in statuses:
        assert statuses[statuses.index("disqualified") :] == ["disqualified"] * (
            len(statuses) - statuses.index("disqualified")
        )


@given(STEPS)
def test_applying_the_same_event_twice_changes_nothing(steps: list) -> None:
    lead = Lead(id="l", key="k@x.io", created_at=T0, email="k@x.io", emails=["k@x.io"])
    for i, ((etype, data), _) in enumerate(steps):
        lifecycle.apply_interaction(lead, f"e{i}", etype, data, RULES, T0)
    before = lead.to_state()
    for i, ((etype, data), _) in enumerate(steps):
        lifecycle.apply_interaction(lead, f"e{i}", etype, data, RULES, T0)
    assert lead.to_state()["hits"] == before["hits"]
    assert lead.total == before["fit"] + before["engagement"]


#: CAPPED with a third group that does not decay, and a linear group whose period is a day,
#: so random ages fall on both sides of a period's end.
MIXED = rules_from(
    {
        "engagement": {
            "groups": {
                "g": {"cap": 40, "decay": {"half_life_days": 10}},
                "h": {"cap": 25, "decay": {"points_per_period": 3, "period_days": 1}},
                "k": {"cap": 35, "decay": {"half_life_days": 0}},
            },
            "rules": [
                {"id": "a", "group": "g", "event": "tracked", "points": 15, "repeatable": True},
                {
                    "id": "c",
                    "group": "h",
                    "event": "tracked",
                    "points": 9,
                    "repeatable": True,
                    "max_points": 18,
                },
                {"id": "n", "group": "h", "event": "tracked", "points": -7, "repeatable": True},
                {
                    "id": "k",
                    "group": "k",
                    "event": "tracked",
                    "points": 4,
                    "repeatable": True,
                    "max_points": 20,
                },
            ],
        },
    }
)
MIXED_HITS = st.lists(
    st.builds(
        lambda rule, hours, n: Hit(
            rule,
            {"a": "g", "c": "h", "n": "h", "k": "k"}[rule],
            {"a": 15, "c": 9, "n": -7, "k": 4}[rule],
            T0 + timedelta(hours=hours),
            f"e{n}",
        ),
        st.sampled_from("acnk"),
        st.floats(0, 72),
        st.integers(0, 10_000),
    ),
    max_size=40,
)


def _engagement_hit_by_hit(
    hs: list[Hit], rules: Rules, now: datetime
) -> tuple[int, list[dict[str, Any]]]:
    """compute_engagement as it is defined: every hit decayed on its own, summed in hit order
    per rule, capped per rule then per group (the reference the shortcuts must equal)."""
    total, reasons = 0.0, list[dict[str, Any]]()
    for group_name in sorted({h.group for h in hs}):
        group = rules.group(group_name)
        positive = negative = 0.0
        for rule_id in sorted({h.rule for h in hs if h.group == group_name}):
            items = sorted(
                (h for h in hs if h.group == group_name and h.rule == rule_id),
                key=lambda h: (h.at, h.event_id),
            )
            values = [
                engine.decayed(h.points, group.decay, (now - h.at).total_seconds()) for h in items
            ]
            pos = neg = 0.0
            for v in values:
                if v > 0:
                    pos += v
                elif v < 0:
                    neg += v
            reasons.append(
                {"rule": rule_id, "points": round(pos + neg, 2), "at": rfc3339(items[-1].at)}
            )
            negative += neg
            cap = next(r.max_points for r in rules.engagement if r.id == rule_id)
            if cap is not None and pos > cap:
                reasons.append(
                    {"rule": f"{rule_id}:cap", "points": round(cap - pos, 2), "at": rfc3339(now)}
                )
                pos = float(cap)
            positive += pos
        if group.cap is not None and positive > group.cap:
            reasons.append(
                {
                    "rule": f"group:{group_name}:cap",
                    "points": round(group.cap - positive, 2),
                    "at": rfc3339(now),
                }
            )
            positive = float(group.cap)
        total += positive + negative
    return math.floor(total + 0.5), reasons


@settings(max_examples=300)
@given(MIXED_HITS, st.floats(0, 96))
def test_engagement_equals_its_hit_by_hit_definition(hs: list[Hit], hours: float) -> None:
    # the sweep, a rescore and the live path all call compute_engagement; its shortcut for
    # hits that have not decayed yet must give exactly what decaying each hit gives
    now = T0 + timedelta(hours=hours)
    assert engine.compute_engagement(hs, MIXED, now) == _engagement_hit_by_hit(hs, MIXED, now)


@settings(max_examples=200)
@given(MIXED_HITS, MIXED_HITS, st.lists(st.integers(0, 39), max_size=3), st.floats(0, 96))
def test_engagement_of_a_list_that_changes_between_calls(
    before: list[Hit], added: list[Hit], replaced: list[int], hours: float
) -> None:
    # compute_engagement remembers how it grouped a list (the consumer keeps its leads between
    # batches); the same list, grown or changed in place since, must score as a fresh one
    now = T0 + timedelta(hours=hours)
    hs = list(before)
    engine.compute_engagement(hs, MIXED, now)
    for hit in added:
        hs.append(hit)
        assert engine.compute_engagement(hs, MIXED, now) == _engagement_hit_by_hit(hs, MIXED, now)
    for i in replaced:  # a hit replaced by another, in place: same list, same length
        if i < len(hs):
            hs[i] = Hit("a", "g", 15, T0 + timedelta(hours=i), f"replaced-{i}")
            got = engine.compute_engagement(hs, MIXED, now)
            assert got == _engagement_hit_by_hit(hs, MIXED, now)
    if hs:  # and one dropped
        del hs[0]
        assert engine.compute_engagement(hs, MIXED, now) == _engagement_hit_by_hit(hs, MIXED, now)


@settings(max_examples=200)
@given(
    st.lists(st.tuples(EVENT, st.integers(0, 4)), min_size=1, max_size=20),
    st.lists(st.integers(0, 40), max_size=3),
)
def test_add_hits_on_a_list_kept_between_calls_counts_as_on_a_fresh_one(
    steps: list, replaced: list[int]
) -> None:
    # add_hits reads what a lead counted from the index of its hits, remembered per list (the
    # consumer keeps its leads); a lead whose list is a fresh copy before every call must
    # count exactly the same hits, events seen twice (the ids repeat) and lists changed in
    # place between calls included
    kept = Lead(id="l", key="k@x.io", created_at=T0)
    fresh = Lead(id="l", key="k@x.io", created_at=T0)
    for i, ((etype, interaction), n) in enumerate(steps):
        if i in replaced and kept.hits:
            swap = Hit("page-view", "web", 1, T0, f"swapped-{i}")
            kept.hits[i % len(kept.hits)] = swap
            fresh.hits[i % len(fresh.hits)] = swap
        at = T0 + timedelta(hours=i)
        data = interaction.to_data()
        got = lifecycle.add_hits(kept, f"e{n}", etype, data, at, RULES)
        fresh.hits = list(fresh.hits)
        want = lifecycle.add_hits(fresh, f"e{n}", etype, data, at, RULES)
        assert got == want
        assert kept.hits == fresh.hits
        index = engine.hit_index(kept.hits)
        assert index.event_ids == {h.event_id for h in kept.hits}
        assert index.rules == {h.rule for h in kept.hits}
