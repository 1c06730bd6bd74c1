"""The rules engine: fit from the profile, engagement from hits (decayed, capped), and the
temperature and stage they imply. Pure functions of (lead, rules, now)."""

from __future__ import annotations

import bisect
import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.scoring.domain.identity import email_domain
from services.scoring.domain.model import Hit, Lead, hits_added, stage_rank, time_text
from services.scoring.domain.ruleset import (
    DEFAULT_SENIORITY,
    Decay,
    EngagementRule,
    Rules,
    SeniorityLevel,
    path_value,
)

DAY = 86_400.0


def seniority(
    job_title: str | None, levels: Sequence[SeniorityLevel] = DEFAULT_SENIORITY
) -> str | None:
    """Role seniority from a job title: the first matching level (by default c_level, vp,
    director, manager), else individual."""
    if not job_title or not job_title.strip():
        return None
    for level in levels:
        if level.pattern.search(job_title):
            return level.level
    return "individual"


def fit_fields(lead: Lead, levels: Sequence[SeniorityLevel] = DEFAULT_SENIORITY) -> dict[str, Any]:
    """The values fit rules can test, including derived ones (seniority, email_domain)."""
    return {
        "email": lead.email,
        "email_domain": email_domain(lead.email),
        "email_domains": [email_domain(e) for e in lead.emails],
        "phone": lead.phone,
        "first_name": lead.first_name,
        "last_name": lead.last_name,
        "company": lead.company,
        "job_title": lead.job_title,
        "seniority": seniority(lead.job_title, levels),
        "industry": lead.industry,
        "company_size": lead.company_size,
        "country": lead.country,
    }


@dataclass(slots=True)
class ScoreCard:
    """A computed score: its parts, its reasons, and the disqualifying rule if one matched."""

    fit: int
    engagement: int
    reasons: list[dict[str, Any]] = field(default_factory=list)
    disqualified_by: str | None = None

    @property
    def total(self) -> int:
        return self.fit + self.engagement


def compute_fit(lead: Lead, rules: Rules) -> tuple[int, list[dict[str, Any]], str | None]:
    """Fit points, their reasons, and the first disqualifying rule that matched.

    Fit depends only on the profile fields the rules test, so the outcome is remembered per
    combination of those values (:class:`_FitMemo`): a lead's profile rarely changes between
    its interactions, and many leads share a combination.
    """
    memo = _fit_memo(rules)
    key = memo.key(lead)
    outcome = memo.outcomes.get(key)
    if outcome is None:
        outcome = _fit_outcome(lead, rules)
        if len(memo.outcomes) >= _FIT_MEMO_SIZE:
            memo.outcomes.clear()
        memo.outcomes[key] = outcome
    points, matched, disqualified = outcome
    at = time_text(lead.profile_at or lead.created_at)
    return points, [{"rule": r, "points": p, "at": at} for r, p in matched], disqualified


#: A fit outcome: points, (rule id, points) of each matching rule, the disqualifying rule.
FitOutcome = tuple[int, tuple[tuple[str, int], ...], str | None]
_FIT_MEMO_SIZE = 50_000


def _fit_outcome(lead: Lead, rules: Rules) -> FitOutcome:
    values = fit_fields(lead, rules.seniority)
    points, matched, disqualified = 0, [], None
    for rule in rules.fit:
        if rule.field == "email_domain":  # any of the person's emails counts
            candidates: Iterable[Any] = values["email_domains"] or [None]
        else:
            candidates = [values.get(rule.field)]
        if any(rule.condition.matches(v) for v in candidates):
            points += rule.points
            matched.append((rule.id, rule.points))
            if rule.disqualify and disqualified is None:
                disqualified = rule.id
    return points, tuple(matched), disqualified


class _FitMemo:
    """What is remembered of one rule set: fit outcomes by the values of the fields its fit
    rules test, and the engagement rules of each event type."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.fields = tuple(sorted({r.field for r in rules.fit}))
        self.outcomes: dict[tuple[Any, ...], FitOutcome] = {}
        self.seniority: dict[str | None, str | None] = {}
        self.by_event: dict[str, tuple[EngagementRule, ...]] = {}
        self.paths: dict[str, tuple[str, ...]] = {}
        #: matching rules by event type and the values at their paths
        self.matches: dict[tuple[Any, ...], tuple[EngagementRule, ...]] = {}
        #: each engagement rule's ``max_points`` (None: uncapped)
        self.caps = {r.id: r.max_points for r in rules.engagement}

    def paths_for(self, event_type: str) -> tuple[str, ...]:
        """The data paths the event type's rules test (after :meth:`rules_for`)."""
        found = self.paths.get(event_type)
        if found is None:
            found = tuple(dict.fromkeys(p for r in self.rules_for(event_type) for p, _ in r.when))
            if len(self.paths) < 1024:
                self.paths[event_type] = found
        return found

    def rules_for(self, event_type: str) -> tuple[EngagementRule, ...]:
        """The engagement rules of an event type (by full or short name, or ``*``), in order."""
        found = self.by_event.get(event_type)
        if found is None:
            short = event_type.rsplit(".", 1)[-1]
            found = tuple(r for r in self.rules.engagement if r.event in (short, event_type, "*"))
            if len(self.by_event) < 1024:  # event types come from producers: keep it bounded
                self.by_event[event_type] = found
        return found

    def key(self, lead: Lead) -> tuple[Any, ...]:
        out: list[Any] = []
        for name in self.fields:
            if name in ("email_domain", "email_domains"):
                out.append(tuple(email_domain(e) for e in lead.emails))
            elif name == "seniority":
                title = lead.job_title
                if title not in self.seniority:
                    if len(self.seniority) >= _FIT_MEMO_SIZE:
                        self.seniority.clear()
                    self.seniority[title] = seniority(title, self.rules.seniority)
                out.append(self.seniority[title])
            elif name in _LEAD_FIT_FIELDS:
                value = getattr(lead, name)
                out.append(tuple(value) if isinstance(value, list) else value)
            else:  # not a field fit rules know: always None
                out.append(None)
        return tuple(out)


#: Fit fields read straight from the lead (the others are derived, see :func:`fit_fields`).
_LEAD_FIT_FIELDS = frozenset(
    {
        "email",
        "phone",
        "first_name",
        "last_name",
        "company",
        "job_title",
        "industry",
        "company_size",
        "country",
    }
)
#: One memo per rule set in use, by identity (a rule set holds dicts: it is not hashable).
_FIT_MEMOS: dict[int, _FitMemo] = {}


def _fit_memo(rules: Rules) -> _FitMemo:
    memo = _FIT_MEMOS.get(id(rules))
    if memo is None or memo.rules is not rules:
        if len(_FIT_MEMOS) >= 64:  # rule sets replaced over a long life (tests, reloads)
            _FIT_MEMOS.clear()
        memo = _FIT_MEMOS[id(rules)] = _FitMemo(rules)
    return memo


def decayed(points: float, decay: Decay, age_seconds: float) -> float:
    """Points after decay; negative points never decay (that would raise a score)."""
    if points <= 0 or decay.mode == "none":
        return float(points)
    age_days = max(age_seconds, 0.0) / DAY
    if decay.mode == "half_life":
        if decay.half_life_days <= 0:
            return float(points)
        return points * math.pow(0.5, age_days / decay.half_life_days)
    periods = math.floor(age_days / decay.period_days) if decay.period_days > 0 else 0
    return max(0.0, points - decay.points_per_period * periods)


def compute_engagement(
    hits: Sequence[Hit], rules: Rules, now: datetime
) -> tuple[int, list[dict[str, Any]]]:
    """Engagement points at ``now``: decayed per group, capped per rule then per group.

    Each rule that counted is one reason: its hits' current (decayed) points summed, at its
    latest hit. (One reason per hit made every snapshot, stored state and lead event grow with
    the lead's history: up to 50 hits per repeatable rule.) A cap shows as one negative
    ``<rule>:cap`` reason, so the reasons always add up to the score.
    """
    caps = _fit_memo(rules).caps
    by_group = hit_index(hits).by_group
    total = 0.0
    reasons: list[dict[str, Any]] = []
    append = reasons.append
    now_text = ""
    for group_name in sorted(by_group):
        group = rules.group(group_name)
        decay = group.decay
        positive = negative = 0.0
        for rule_id, tally in sorted(by_group[group_name].items()):
            items = tally.items
            if tally.ints_only and _undecayed(items[0].at, tally.positive > 0, decay, now):
                # every hit is worth its points: whole numbers, whose sum is exact in any
                # order, so the running sums give the loop's result without a step per hit
                pos, neg = float(tally.positive), float(tally.negative)
            else:
                # sums in hit order, as sum() over the values would add them
                pos = neg = 0.0
                for hit in items:
                    points_ = hit.points
                    if points_ > 0 and decay.mode != "none":
                        value = decayed(points_, decay, (now - hit.at).total_seconds())
                    else:
                        value = float(points_)
                    if value > 0:
                        pos += value
                    elif value < 0:
                        neg += value
            append({"rule": rule_id, "points": round(pos + neg, 2), "at": time_text(items[-1].at)})
            negative += neg
            cap = caps.get(rule_id)
            if cap is not None and pos > cap:
                now_text = now_text or time_text(now)
                append({"rule": f"{rule_id}:cap", "points": round(cap - pos, 2), "at": now_text})
                pos = float(cap)
            positive += pos
        group_cap = group.cap
        if group_cap is not None and positive > group_cap:
            now_text = now_text or time_text(now)
            append(
                {
                    "rule": f"group:{group_name}:cap",
                    "points": round(group_cap - positive, 2),
                    "at": now_text,
                }
            )
            positive = float(group_cap)
        total += positive + negative
    return math.floor(total + 0.5), reasons


class _Tally:
    """One rule's hits of a lead, in time order then by event id, with running sums of their
    points while every one is a whole number (``bool`` is not one here, as for
    :func:`decayed`): an event then adds its hit to the sums instead of walking them all."""

    __slots__ = ("ints_only", "items", "negative", "positive")

    def __init__(self) -> None:
        self.items: list[Hit] = []
        self.ints_only = True
        self.positive = 0
        self.negative = 0

    def count(self, points: Any) -> None:
        if not self.ints_only:
            return
        if type(points) is not int:
            self.ints_only = False
        elif points > 0:
            self.positive += points
        else:
            self.negative += points


class HitIndex:
    """A lead's hits by group, then rule (each rule's in time order then by event id, with
    their sums), and the event ids and rules they hold: what scoring an event needs to know
    of the hits, kept up to date as the lead gains hits (:func:`hit_index`)."""

    __slots__ = ("by_group", "event_ids", "rules", "seen")

    def __init__(self) -> None:
        #: the hits the index was made from, in list order
        self.seen: list[Hit] = []
        self.by_group: dict[str, dict[str, _Tally]] = {}
        self.event_ids: set[str] = set()
        self.rules: set[str] = set()

    def add(self, hit: Hit, *, in_order: bool) -> None:
        of_group = self.by_group.get(hit.group)
        if of_group is None:
            of_group = self.by_group[hit.group] = {}
        tally = of_group.get(hit.rule)
        if tally is None:
            tally = of_group[hit.rule] = _Tally()
        if in_order:
            tally.items.append(hit)
        else:
            # after the equal ones, as the stable sort of :func:`hit_index` puts a later hit
            bisect.insort(tally.items, hit, key=_HIT_ORDER)
        tally.count(hit.points)
        self.event_ids.add(hit.event_id)
        self.rules.add(hit.rule)


#: The last index of each hit list seen (:func:`hit_index`), by the list's identity. A lead
#: kept between batches (the scoring consumer's cache) gains a hit or two per event: sorting,
#: grouping, summing and scanning all of them again was most of the time scoring an event.
_INDEXES: dict[int, HitIndex] = {}
_INDEXES_SIZE = 4096


def hit_index(hits: Sequence[Hit]) -> HitIndex:
    """The index of ``hits``. Read-only for the caller: it is remembered and reused.

    Reused only for the same list whose first hits are still, one by one, the very hits it was
    made from (any other change, or another list at the same address, indexes it again); hits
    added since are inserted in order."""
    index = _INDEXES.get(id(hits))
    if index is not None:
        added = hits_added(index.seen, hits)
        if added is not None:
            for hit in added:
                index.add(hit, in_order=False)
                index.seen.append(hit)
            return index
    index = HitIndex()
    for hit in sorted(hits, key=_HIT_ORDER):
        index.add(hit, in_order=True)
    index.seen = list(hits)
    if isinstance(hits, list):
        if len(_INDEXES) >= _INDEXES_SIZE:
            _INDEXES.clear()
        _INDEXES[id(hits)] = index
    return index


def _undecayed(oldest: datetime, any_positive: bool, decay: Decay, now: datetime) -> bool:
    """Whether :func:`decayed` leaves every one of a rule's hits (whole numbers; ``oldest``
    is the time of the first) at its points: no decay, or a linear decay whose first period
    has not ended for the oldest hit (the most common case: a lead active in the last days or
    weeks)."""
    if decay.mode == "none" or not any_positive:
        return True
    if decay.mode == "half_life":
        return decay.half_life_days <= 0
    if decay.period_days <= 0:
        return True
    # decayed()'s own arithmetic: no period has passed for the oldest hit, hence for none
    age_days = max((now - oldest).total_seconds(), 0.0) / DAY
    return math.floor(age_days / decay.period_days) == 0


#: Hits in time order, then by event id (a :class:`Hit` is a named tuple: at, event_id).
_HIT_ORDER = operator.itemgetter(3, 4)


def score(lead: Lead, rules: Rules, now: datetime) -> ScoreCard:
    """The lead's full score at ``now``."""
    fit, fit_reasons, disqualified = compute_fit(lead, rules)
    engagement, eng_reasons = compute_engagement(lead.hits, rules, now)
    return ScoreCard(fit, engagement, fit_reasons + eng_reasons, disqualified)


def temperature(
    engagement: float, last_engaged_at: datetime | None, rules: Rules, now: datetime
) -> str:
    """hot / warm / cold from engagement and how recently the lead engaged."""
    if last_engaged_at is None:
        return "cold"
    idle_days = (now - last_engaged_at).total_seconds() / DAY
    for band in rules.bands:
        if engagement >= band.min_engagement and idle_days <= band.active_within_days:
            return band.name
    return "cold"


def earned_stage(card: ScoreCard, sales_intent: bool, rules: Rules) -> str:
    """The stage a score earns on its own (before the forward-only rule)."""
    if card.disqualified_by:
        return "IQL"
    if sales_intent and card.fit >= rules.sales_intent_min_fit:
        return "SQL"
    if card.fit >= rules.sql.min_fit and card.engagement >= rules.sql.min_engagement:
        return "SQL"
    if card.fit >= rules.mql.min_fit and card.engagement >= rules.mql.min_engagement:
        return "MQL"
    return "IQL"


def forward_stage(current: str, earned: str) -> str:
    """Stages only move forward automatically."""
    return earned if stage_rank(earned) > stage_rank(current) else current


def matching_rules(event_type: str, data: Mapping[str, Any], rules: Rules) -> list[EngagementRule]:
    """Engagement rules whose event type and every condition match this interaction.

    The outcome depends only on the values at the paths the type's rules test, so it is
    remembered per combination of those values when they are plain scalars (most events of
    a type share a few: a page name, a form intent).
    """
    memo = _fit_memo(rules)
    candidates = memo.rules_for(event_type)
    if not candidates:
        return []
    paths = memo.paths_for(event_type)
    values = tuple(path_value(data, path) for path in paths)
    key = (event_type, tuple((type(v), v) for v in values))
    if all(type(v) in _SCALARS for v in values):
        found = memo.matches.get(key)
        if found is None:
            found = _matching(candidates, dict(zip(paths, values, strict=True)))
            if len(memo.matches) >= _FIT_MEMO_SIZE:
                memo.matches.clear()
            memo.matches[key] = found
        return list(found)
    return list(_matching(candidates, dict(zip(paths, values, strict=True))))


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _matching(
    candidates: Sequence[EngagementRule], values: Mapping[str, Any]
) -> tuple[EngagementRule, ...]:
    return tuple(r for r in candidates if all(cond.matches(values[path]) for path, cond in r.when))
