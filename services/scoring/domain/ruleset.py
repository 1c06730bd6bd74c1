"""The scoring rules, read from the ``scoring:`` config section, and how a rule matches.

Everything here is data: a rule is a field (or event path), an operator and points. The JSON
Schema in ``config_schema.json`` checks the shape; :func:`parse_rules` checks what a schema
cannot (regexes compile, groups exist, rule ids are unique) and names the bad key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.config import ConfigError

SALES_INTENTS_DEFAULT = ("demo_request", "contact", "quote", "trial")

#: Job-title seniority levels, strongest first: (level, case-insensitive regex). The first
#: that matches wins; a title that matches none is ``individual``. ``scoring.seniority``
#: replaces the list.
DEFAULT_SENIORITY_PATTERNS: tuple[tuple[str, str], ...] = (
    (
        "c_level",
        r"\b(c[etofmior]o|chief|founder|co-founder|owner|(?<!vice[- ])president"
        r"|managing director|partner)\b",
    ),
    ("vp", r"\b(vp|svp|evp|vice[- ]president)\b"),
    ("director", r"\b(director|head of|head)\b"),
    ("manager", r"\b(manager|lead|supervisor)\b"),
)


@dataclass(frozen=True, slots=True)
class SeniorityLevel:
    """A seniority level and the job-title pattern that gives it."""

    level: str
    pattern: re.Pattern[str]


def parse_seniority(specs: Any, where: str = "scoring.seniority") -> tuple[SeniorityLevel, ...]:
    """Levels from ``[{level, pattern}, ...]``; a pattern that does not compile names its key."""
    out = []
    for i, spec in enumerate(specs):
        try:
            pattern = re.compile(spec["pattern"], re.IGNORECASE)
        except re.error as exc:
            raise ConfigError(f"invalid config at {where}[{i}].pattern: {exc}") from None
        out.append(SeniorityLevel(spec["level"], pattern))
    return tuple(out)


DEFAULT_SENIORITY = parse_seniority(
    {"level": level, "pattern": pattern} for level, pattern in DEFAULT_SENIORITY_PATTERNS
)


@dataclass(frozen=True, slots=True)
class Condition:
    """One test on a value: equals, in, regex, numeric range, or exists."""

    op: str
    value: Any = None
    values: tuple[Any, ...] = ()
    pattern: re.Pattern[str] | None = None
    min: float | None = None
    max: float | None = None
    #: ``value`` and ``values`` folded once (a condition is tested for every event)
    folded: Any = field(default=None, init=False, repr=False, compare=False)
    folded_values: frozenset[Any] = field(
        default=frozenset(), init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "folded", _fold(self.value))
        object.__setattr__(self, "folded_values", frozenset(_fold(v) for v in self.values))

    def matches(self, actual: Any) -> bool:
        """Whether ``actual`` passes this test (strings compare case-insensitively)."""
        if self.op == "exists":
            return (actual not in (None, "", [], {})) == bool(self.value)
        if actual is None:
            return False
        if self.op == "equals":
            return bool(_fold(actual) == self.folded)
        if self.op == "in":
            return _fold(actual) in self.folded_values
        if self.op == "regex":
            assert self.pattern is not None
            return bool(self.pattern.search(str(actual)))
        if self.op == "range":
            if isinstance(actual, bool) or not isinstance(actual, int | float):
                return False
            return (self.min is None or actual >= self.min) and (
                self.max is None or actual <= self.max
            )
        return False


def _fold(value: Any) -> Any:
    return value.strip().casefold() if isinstance(value, str) else value


@dataclass(frozen=True, slots=True)
class FitRule:
    """Points for a property of the lead (its profile), counted once."""

    id: str
    field: str
    condition: Condition
    points: int
    disqualify: bool = False


@dataclass(frozen=True, slots=True)
class Decay:
    """How a group's engagement points fade: ``half_life`` or ``linear`` per period."""

    mode: str = "none"
    half_life_days: float = 0.0
    points_per_period: float = 0.0
    period_days: float = 1.0


@dataclass(frozen=True, slots=True)
class Group:
    """A family of engagement rules sharing a cap and a decay."""

    name: str
    cap: float | None = None
    decay: Decay = field(default_factory=Decay)


@dataclass(frozen=True, slots=True)
class EngagementRule:
    """Points for an interaction of a type whose data passes every condition."""

    id: str
    group: str
    event: str
    when: tuple[tuple[str, Condition], ...]
    points: int
    repeatable: bool = False
    max_points: float | None = None


@dataclass(frozen=True, slots=True)
class Band:
    """A temperature band: at least this much engagement, active within so many days."""

    name: str
    min_engagement: float
    active_within_days: float


@dataclass(frozen=True, slots=True)
class StageGate:
    """The minimum fit and engagement for a stage."""

    min_fit: float
    min_engagement: float


DEFAULT_MQL = StageGate(10, 20)
DEFAULT_SQL = StageGate(30, 60)


@dataclass(frozen=True, slots=True)
class Rules:
    """The whole scoring configuration, parsed."""

    fit: tuple[FitRule, ...] = ()
    groups: Mapping[str, Group] = field(default_factory=dict)
    engagement: tuple[EngagementRule, ...] = ()
    bands: tuple[Band, ...] = ()
    mql: StageGate = field(default_factory=lambda: DEFAULT_MQL)
    sql: StageGate = field(default_factory=lambda: DEFAULT_SQL)
    sales_intents: frozenset[str] = frozenset(SALES_INTENTS_DEFAULT)
    sales_intent_min_fit: float = 30
    sweep_interval_seconds: float = 60.0
    seniority: tuple[SeniorityLevel, ...] = DEFAULT_SENIORITY

    def group(self, name: str) -> Group:
        """The group of that name (an unconfigured group has no cap and no decay)."""
        return self.groups.get(name) or Group(name)


def parse_condition(spec: Any, where: str, lists: Mapping[str, list[Any]]) -> Condition:
    """A condition from config: a scalar means equals; a mapping names its operator."""
    if not isinstance(spec, dict):
        return Condition("equals", value=spec)
    if "equals" in spec:
        return Condition("equals", value=spec["equals"])
    if "in" in spec:
        values = spec["in"]
        if isinstance(values, str):  # the name of a shared list, e.g. free_mail_domains
            if values not in lists:
                raise ConfigError(f"invalid config at {where}.in: unknown list {values!r}")
            values = lists[values]
        return Condition("in", values=tuple(values))
    if "regex" in spec:
        try:
            return Condition("regex", pattern=re.compile(spec["regex"]))
        except re.error as exc:
            raise ConfigError(f"invalid config at {where}.regex: {exc}") from None
    if "min" in spec or "max" in spec:
        return Condition("range", min=spec.get("min"), max=spec.get("max"))
    if "exists" in spec:
        return Condition("exists", value=bool(spec["exists"]))
    raise ConfigError(
        f"invalid config at {where}: no operator (equals, in, regex, min/max, exists)"
    )


def _decay(spec: Mapping[str, Any] | None) -> Decay:
    if not spec:
        return Decay()
    if "half_life_days" in spec:
        return Decay("half_life", half_life_days=float(spec["half_life_days"]))
    return Decay(
        "linear",
        points_per_period=float(spec.get("points_per_period", 0)),
        period_days=float(spec.get("period_days", 1)),
    )


def parse_rules(section: Mapping[str, Any]) -> Rules:
    """Build :class:`Rules` from a schema-valid ``scoring:`` section."""
    lists: dict[str, list[Any]] = dict(section.get("lists") or {})
    seen: set[str] = set()

    def unique(rule_id: str, where: str) -> str:
        if rule_id in seen:
            raise ConfigError(f"invalid config at {where}.id: duplicate rule id {rule_id!r}")
        seen.add(rule_id)
        return rule_id

    fit = tuple(
        FitRule(
            id=unique(r["id"], f"scoring.fit[{i}]"),
            field=r["field"],
            condition=parse_condition(r["match"], f"scoring.fit[{i}].match", lists),
            points=int(r.get("points", 0)),
            disqualify=bool(r.get("disqualify", False)),
        )
        for i, r in enumerate(section.get("fit") or [])
    )
    eng = section.get("engagement") or {}
    default_decay = eng.get("decay")
    groups = {
        name: Group(name, g.get("cap"), _decay(g.get("decay", default_decay)))
        for name, g in (eng.get("groups") or {}).items()
    }
    rules = []
    for i, r in enumerate(eng.get("rules") or []):
        where = f"scoring.engagement.rules[{i}]"
        if "group" in r:
            group = r["group"]
            if group not in groups:
                known = ", ".join(sorted(groups)) or "none defined"
                raise ConfigError(
                    f"invalid config at {where}.group: unknown group {group!r}"
                    f" (scoring.engagement.groups has: {known})"
                )
        else:  # no group named: an implicit uncapped "default" group
            group = "default"
            if group not in groups:
                groups[group] = Group(group, None, _decay(default_decay))
        when = tuple(
            (path, parse_condition(spec, f"{where}.when.{path}", lists))
            for path, spec in (r.get("when") or {}).items()
        )
        rules.append(
            EngagementRule(
                id=unique(r["id"], where),
                group=group,
                event=r["event"],
                when=when,
                points=int(r["points"]),
                repeatable=bool(r.get("repeatable", False)),
                max_points=r.get("max_points"),
            )
        )
    temp = section.get("temperature") or {}
    bands = tuple(
        Band(name, float(temp[name]["min_engagement"]), float(temp[name]["active_within_days"]))
        for name in ("hot", "warm")
        if name in temp
    )
    stages = section.get("stages") or {}
    intent = section.get("sales_intent") or {}
    return Rules(
        fit=fit,
        groups=groups,
        engagement=tuple(rules),
        bands=bands,
        mql=_gate(stages.get("MQL"), DEFAULT_MQL),
        sql=_gate(stages.get("SQL"), DEFAULT_SQL),
        sales_intents=frozenset(intent.get("intents", SALES_INTENTS_DEFAULT)),
        sales_intent_min_fit=float(intent.get("min_fit", 30)),
        sweep_interval_seconds=float(section.get("sweep_interval_seconds", 60)),
        seniority=(
            parse_seniority(section["seniority"])
            if section.get("seniority") is not None
            else DEFAULT_SENIORITY
        ),
    )


def _gate(spec: Mapping[str, Any] | None, default: StageGate) -> StageGate:
    if not spec:
        return default
    return StageGate(
        float(spec.get("min_fit", default.min_fit)),
        float(spec.get("min_engagement", default.min_engagement)),
    )


def path_value(data: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path of event data (``asset.gated``), or None."""
    current: Any = data
    for part in path.split("."):
        if not isinstance(current, dict) and not isinstance(current, Mapping):
            return None
        current = current.get(part)
    return current
