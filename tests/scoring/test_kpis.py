"""KPIs against a scripted scenario whose funnel this test computes itself (PostgreSQL, SQLite).

Each person follows an archetype whose stage the default rules give (newsletter → IQL, content
plus webinar with a good fit → MQL, demo request with a good fit → SQL), on a given day, then
sales activities. The expected figures are counted from the script, not read back.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from services.scoring.handlers import ScoringHandler
from services.scoring.main import build_app
from services.scoring.tables import leads
from shared.events import CloudEvent, InteractionType, RoutingType, SalesType
from shared.topics import Topics
from tests.scoring.helpers import T0, VP_SALES, assigned_data, default_rules, interaction
from tests.support import AUTH, make_settings

DAY = timedelta(days=1)
START, END = T0, T0 + 7 * DAY
RULES = default_rules()
STAGE_OF = {"newsletter": "IQL", "nurture": "MQL", "demo": "SQL", "visitor": None}


@dataclass
class Person:
    name: str
    archetype: str
    source: str
    campaign: str
    day: float
    sales: list[tuple[str, float]] = field(default_factory=list)
    #: an earlier newsletter signup (days before ``day``): created then, not on ``day``
    signed_up_before: float | None = None
    team: str | None = None

    @property
    def email(self) -> str | None:
        return None if self.archetype == "visitor" else f"{self.name}@corp.example"

    @property
    def created(self) -> datetime:
        before = self.signed_up_before
        return T0 + (self.day - before) * DAY if before else T0 + self.day * DAY


SCENARIO = [
    Person("ann", "demo", "google", "q4", 0.1, [("contacted", 0.2), ("opportunity_created", 1)]),
    Person("bob", "demo", "google", "q4", 1, [("contacted", 1.1), ("opportunity_created", 2)]),
    Person("cid", "demo", "google", "brand", 2, [("contacted", 2.5), ("won", 4)], team="emea"),
    Person("dee", "demo", "linkedin", "abm", 3, [("contacted", 3.1), ("lost", 5)], team="emea"),
    Person("eve", "demo", "linkedin", "abm", 6.5, team="na"),
    Person("fay", "nurture", "google", "q4", 1),
    Person("gus", "nurture", "linkedin", "abm", 2),
    Person("hal", "newsletter", "google", "q4", 0.5),
    Person("ivy", "newsletter", "newsletter", "", 4),
    Person("jon", "newsletter", "linkedin", "abm", 5),
    Person("kim", "visitor", "google", "q4", 1),
    Person("lea", "visitor", "google", "q4", 2),
    # created before the window, MQL inside it: in the MQL cohort, not among the leads
    Person("max", "nurture", "google", "q4", 2, signed_up_before=5),
    # SQL before the window, opportunity and win inside: in no cohort of the window
    Person("ned", "demo", "linkedin", "abm", -3, [("opportunity_created", 1), ("won", 2)]),
    # created in the window, SQL after it: a lead and an MQL of the window, not yet an SQL
    Person("ola", "demo", "google", "q4", 8, signed_up_before=5),
]
OWNERS = {
    "emea": {"id": "rep-emea", "name": "Emma", "email": "emma@x.example", "team": "emea"},
    "na": {"id": "rep-na", "name": "Nate", "email": "nate@x.example", "team": "na"},
}


def _events(p: Person) -> list[tuple[datetime, CloudEvent]]:
    at = T0 + p.day * DAY
    attribution = {"utm_source": p.source, "utm_medium": "cpc", "utm_campaign": p.campaign}
    if not p.campaign:
        attribution = {"utm_source": p.source}
    out: list[tuple[datetime, CloudEvent]] = []
    if p.signed_up_before:
        first = p.created
        ev = interaction(
            intent="newsletter",
            email=p.email,
            at=first,
            form_id="newsletter",
            attribution=attribution,
        )
        out.append((first, ev))
    if p.archetype == "visitor":
        anon = f"anon-{p.name}"
        ev = interaction(
            InteractionType.TRACKED,
            email=None,
            at=at,
            anonymous_id=anon,
            channel="tracking",
            track={"event": "page", "name": "Home"},
            attribution=attribution,
        )
        out.append((at, ev))
    elif p.archetype == "newsletter":
        ev = interaction(
            intent="newsletter", email=p.email, at=at, form_id="newsletter", attribution=attribution
        )
        out.append((at, ev))
    elif p.archetype == "demo":
        ev = interaction(
            intent="demo_request",
            email=p.email,
            at=at,
            contact=VP_SALES,
            form_id="demo-request",
            attribution=attribution,
        )
        out.append((at, ev))
    else:  # nurture: a download, a webinar registration and attendance → MQL at the last one
        common: dict[str, Any] = {"email": p.email, "contact": VP_SALES, "attribution": attribution}
        t1, t2, t3 = at - timedelta(hours=2), at - timedelta(hours=1), at
        out += [
            (
                t1,
                interaction(
                    InteractionType.CONTENT_DOWNLOADED,
                    at=t1,
                    asset={"id": "ebook", "type": "ebook"},
                    **common,
                ),
            ),
            (
                t2,
                interaction(
                    InteractionType.WEBINAR_REGISTERED, at=t2, webinar={"id": "w1"}, **common
                ),
            ),
            (
                t3,
                interaction(
                    InteractionType.WEBINAR_ATTENDED,
                    at=t3,
                    webinar={"id": "w1", "attended_minutes": 40},
                    **common,
                ),
            ),
        ]
    for kind, day in p.sales:
        when = T0 + day * DAY
        data = {"email": p.email, "occurred_at": when.isoformat()}
        sales_type = getattr(SalesType, kind.upper())
        ev = CloudEvent(type=sales_type, source="/crm", data=data, key=p.email, time=when)
        out.append((when, ev))
    return out


def _expected(group_of: Any) -> dict[str, dict[str, int]]:
    """The funnel of the window per group, counted from the script."""
    exp: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def inside(t: datetime) -> bool:
        return START <= t < END

    for p in SCENARIO:
        g = exp[group_of(p)]
        stage = STAGE_OF[p.archetype]
        stage_at = T0 + p.day * DAY
        kinds = {k for k, _ in p.sales}
        if inside(p.created):
            if stage is None:
                g["visitors"] += 1
                continue
            g["leads"] += 1
            g["mqls"] += stage in ("MQL", "SQL")
            g["sqls"] += stage == "SQL"
            g["prospects"] += bool(kinds)
            g["clients"] += "won" in kinds
            g["opportunities"] += "opportunity_created" in kinds
            g["won"] += "won" in kinds
        if stage in ("MQL", "SQL") and inside(stage_at):
            g["mql_cohort"] += 1
            g["mql_cohort_sqls"] += stage == "SQL"
        if stage == "SQL" and inside(stage_at):
            g["sql_cohort"] += 1
            g["sql_cohort_opportunities"] += "opportunity_created" in kinds
            g["sql_cohort_won"] += "won" in kinds
    return exp


async def _play(engine: Any, topics: Topics) -> None:
    timeline = sorted((at, i, ev) for i, p in enumerate(SCENARIO) for at, ev in _events(p))
    for at, _, ev in timeline:
        handler = ScoringHandler(RULES, topics, clock=lambda at=at: at)
        async with engine.begin() as conn:
            await handler(conn, [ev])
    # routing's assignments reach scoring as events: the owner's team is the lead's team
    for p in SCENARIO:
        if p.team is None:
            continue
        async with engine.connect() as conn:
            from sqlalchemy import select

            lead_id = (
                await conn.execute(select(leads.c.id).where(leads.c.email == p.email))
            ).scalar_one()
        at = T0 + p.day * DAY + timedelta(minutes=1)
        data = assigned_data(
            lead_id, OWNERS[p.team], assignment_id=str(uuid.uuid4()), assigned_at=at
        )
        ev = CloudEvent(type=RoutingType.ASSIGNED, source="/routing", data=data, key=p.email)
        async with engine.begin() as conn:
            await ScoringHandler(RULES, topics, clock=lambda at=at: at)(conn, [ev])


COUNTED = (
    "visitors",
    "leads",
    "mqls",
    "sqls",
    "prospects",
    "clients",
    "opportunities",
    "won",
    "mql_cohort",
    "mql_cohort_sqls",
    "sql_cohort",
    "sql_cohort_opportunities",
    "sql_cohort_won",
)


@pytest.fixture
async def scenario_app(db_url: str) -> Any:
    settings = make_settings("127.0.0.1:1", db_url)
    app = build_app(settings)
    await _play(app.state.runtime.engine, Topics(settings.leadflow_topic_prefix))
    try:
        yield app
    finally:
        await app.state.runtime.engine.dispose()


async def test_funnel_by_cohort_matches_the_script(scenario_app: Any) -> None:
    window = {"from": START.isoformat(), "to": END.isoformat()}
    transport = httpx.ASGITransport(app=scenario_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=AUTH) as http:
        spend = [
            {"day": "2026-11-02", "source": "google", "campaign": "q4", "amount": 300},
            {"day": "2026-11-03", "source": "google", "campaign": "brand", "amount": 100},
            {
                "day": "2026-11-03",
                "source": "google",
                "campaign": "q4-us",
                "amount": 50,
                "currency": "USD",
            },
            {"day": "2026-11-04", "source": "linkedin", "campaign": "abm", "amount": 200},
            {"day": "2026-11-20", "source": "linkedin", "campaign": "abm", "amount": 999},
        ]
        assert (await http.post("/v1/ad-spend", json={"items": spend})).status_code == 200
        reports = {}
        for group_by in ("source", "campaign", "team"):
            r = await http.get("/v1/kpis", params={**window, "group_by": group_by})
            assert r.status_code == 200, r.text
            reports[group_by] = r.json()

    groupings = {
        "source": lambda p: p.source,
        "campaign": lambda p: p.campaign or "(none)",
        "team": lambda p: p.team or "(none)",
    }
    for group_by, group_of in groupings.items():
        expected = _expected(group_of)
        got = {i["key"]: {c: i[c] for c in COUNTED} for i in reports[group_by]["items"]}
        for key, counts in expected.items():
            assert got[key] == {c: counts.get(c, 0) for c in COUNTED}, (group_by, key)
        totals = reports[group_by]["totals"]
        assert {c: totals[c] for c in COUNTED} == {
            c: sum(e.get(c, 0) for e in expected.values()) for c in COUNTED
        }, group_by

    by_source = {i["key"]: i for i in reports["source"]["items"]}
    google, linkedin = by_source["google"], by_source["linkedin"]
    exp = _expected(groupings["source"])
    g = exp["google"]
    # rates are the counts' ratios
    assert google["opportunity_rate"] == round(g["opportunities"] / g["leads"], 4)
    assert google["mql_to_sql_rate"] == round(g["mql_cohort_sqls"] / g["mql_cohort"], 4)
    assert linkedin["win_rate"] is None  # no opportunity among linkedin's leads of the window
    # currencies kept apart: google has EUR and USD, so no single spend figure
    costs = {c["currency"]: c for c in google["costs"]}
    assert google["spend"] is None and set(costs) == {"EUR", "USD"}
    assert costs["EUR"]["spend"] == 400.0
    assert costs["EUR"]["per_lead"] == round(400 / g["leads"], 2)
    assert costs["EUR"]["per_sql"] == round(400 / g["sqls"], 2)
    assert costs["EUR"]["per_opportunity"] == round(400 / g["opportunities"], 2)
    assert costs["EUR"]["per_client"] == round(400 / g["clients"], 2)
    assert costs["USD"]["per_lead"] == round(50 / g["leads"], 2)
    # spend outside the window is not counted
    assert linkedin["spend"] == 200.0 and linkedin["currency"] == "EUR"
    total_costs = {c["currency"]: c["spend"] for c in reports["source"]["totals"]["costs"]}
    assert total_costs == {"EUR": 600.0, "USD": 50.0}
    assert reports["source"]["totals"]["spend"] is None
