"""Funnel KPIs per source, campaign, form or team, by cohort, with ad spend per currency.

A *lead* here is a known person (an email or a phone): anonymous visitors are counted apart.
Every rate is cohort-based: of the leads that entered a stage in the period, how many reached
the next one, whenever that happened:

- created in the period → reached MQL (or SQL directly), prospect, client, an opportunity;
- became MQL in the period → reached SQL;
- became SQL in the period → got an opportunity → won.

Opportunities and wins come from the ``sales`` entries of the lead's timeline
(``sales.opportunity_created``, ``sales.won``). Spend is summed per group *and currency*, never
added across currencies; costs per lead, SQL, opportunity and client are per currency.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scoring.tables import ad_spend, leads, timeline
from shared.db import insert_for
from shared.events import SalesType

GROUPS: dict[str, ColumnElement[Any]] = {
    "source": leads.c.first_source,
    "campaign": leads.c.first_campaign,
    "form": leads.c.first_form_id,
    "team": leads.c.owner_id,  # mapped to the owner's team after the query
}
NONE_KEY = "(none)"
KNOWN = or_(leads.c.email.is_not(None), leads.c.phone.is_not(None))
REACHED_MQL = or_(leads.c.mql_at.is_not(None), leads.c.qualified_at.is_not(None))
PROSPECT_STATUSES = ("prospect", "client")
OPPORTUNITY = SalesType.OPPORTUNITY_CREATED
WON = SalesType.WON
#: Sales activities after which a lead counts as having been a prospect (lost/disqualified
#: leads that were contacted first still went through "prospect").
PROSPECT_TYPES = (SalesType.CONTACTED, SalesType.MEETING_BOOKED, OPPORTUNITY, WON)

COUNTS = (
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


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def _money(value: Decimal | float | None) -> float | None:
    return round(float(value), 2) if value is not None else None


def _sum_if(cond: ColumnElement[bool]) -> Any:
    return func.sum(case((cond, 1), else_=0))


async def funnel(
    conn: AsyncConnection, start: datetime, end: datetime, group_by: str
) -> dict[str, Any]:
    """The funnel of [start, end) per group, plus totals (see the module docstring)."""
    key = GROUPS[group_by]
    raw: dict[str | None, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTS, 0))

    def add(group: str | None, values: dict[str, Any]) -> None:
        for name, value in values.items():
            raw[group][name] += int(value or 0)

    created = and_(leads.c.created_at >= start, leads.c.created_at < end)
    for r in await conn.execute(
        select(
            key.label("key"),
            _sum_if(~KNOWN).label("visitors"),
            _sum_if(KNOWN).label("leads"),
            _sum_if(and_(KNOWN, REACHED_MQL)).label("mqls"),
            _sum_if(and_(KNOWN, leads.c.qualified_at.is_not(None))).label("sqls"),
            _sum_if(and_(KNOWN, leads.c.status.in_(PROSPECT_STATUSES))).label("prospects"),
            _sum_if(and_(KNOWN, leads.c.status == "client")).label("clients"),
        )
        .where(created)
        .group_by(key)
    ):
        add(r.key, {n: getattr(r, n) for n in ("visitors", "leads", "mqls", "sqls")})
        add(r.key, {"prospects": r.prospects, "clients": r.clients})
    # Of the leads created in the window: which had sales activities (prospect, opportunity, won)
    for group, n in (await _sales_of(conn, key, and_(created, KNOWN))).items():
        # contacted leads that were later lost still went through "prospect"
        add(group, {"opportunities": n["opp"], "won": n["won"], "prospects": n["lapsed"]})
    # MQL cohort: became MQL in the window (a lead qualified straight to SQL counts as MQL then)
    became_mql = or_(
        and_(leads.c.mql_at >= start, leads.c.mql_at < end),
        and_(leads.c.mql_at.is_(None), leads.c.qualified_at >= start, leads.c.qualified_at < end),
    )
    for r in await conn.execute(
        select(
            key.label("key"),
            func.count().label("n"),
            _sum_if(leads.c.qualified_at.is_not(None)).label("sqls"),
        )
        .where(KNOWN, became_mql)
        .group_by(key)
    ):
        add(r.key, {"mql_cohort": r.n, "mql_cohort_sqls": r.sqls})
    # SQL cohort: became SQL in the window → opportunity → won
    qualified = and_(KNOWN, leads.c.qualified_at >= start, leads.c.qualified_at < end)
    for r in await conn.execute(
        select(key.label("key"), func.count().label("n")).where(qualified).group_by(key)
    ):
        add(r.key, {"sql_cohort": r.n})
    for group, n in (await _sales_of(conn, key, qualified)).items():
        add(group, {"sql_cohort_opportunities": n["opp"], "sql_cohort_won": n["won"]})

    if group_by == "team":
        raw = await _by_team(conn, raw)
    spend = await _spend(conn, start, end, group_by)
    names = {(g or NONE_KEY) for g in raw} | set(spend)
    merged: dict[str, dict[str, int]] = {n: dict.fromkeys(COUNTS, 0) for n in names}
    for group, values in raw.items():
        for name, value in values.items():
            merged[group or NONE_KEY][name] += value
    items = [_item(n, merged[n], spend.get(n, {})) for n in names]
    items.sort(key=lambda i: (-i["leads"], i["key"]))
    total_counts = {c: sum(merged[n][c] for n in names) for c in COUNTS}
    total_spend: dict[str, Decimal] = defaultdict(Decimal)
    for per_currency in spend.values():
        for currency, amount in per_currency.items():
            total_spend[currency] += amount
    return {"items": items, "totals": _item("total", total_counts, dict(total_spend))}


async def _sales_of(
    conn: AsyncConnection, key: ColumnElement[Any], cohort: ColumnElement[bool]
) -> dict[str | None, dict[str, int]]:
    """Per group, how many of the cohort's leads got an opportunity, a win, and how many had a
    prospect-making activity but are neither prospect nor client now (lost, disqualified)."""
    lead = leads.c.id
    rows = await conn.execute(
        select(
            key.label("key"),
            func.count(func.distinct(case((timeline.c.type == OPPORTUNITY, lead)))).label("opp"),
            func.count(func.distinct(case((timeline.c.type == WON, lead)))).label("won"),
            func.count(func.distinct(case((leads.c.status.not_in(PROSPECT_STATUSES), lead)))).label(
                "lapsed"
            ),
        )
        .select_from(leads.join(timeline, timeline.c.lead_id == leads.c.id))
        .where(cohort, timeline.c.kind == "sales", timeline.c.type.in_(PROSPECT_TYPES))
        .group_by(key)
    )
    return {r.key: {"opp": int(r.opp), "won": int(r.won), "lapsed": int(r.lapsed)} for r in rows}


async def _by_team(
    conn: AsyncConnection, raw: dict[str | None, dict[str, int]]
) -> dict[str | None, dict[str, int]]:
    """Counts grouped by owner id, regrouped by the owner's team (as the lead keeps it)."""
    teams: dict[str | None, str | None] = {None: None}
    owners = [o for o in raw if o is not None]
    for owner_id in owners:
        state = (
            await conn.execute(select(leads.c.state).where(leads.c.owner_id == owner_id).limit(1))
        ).scalar()
        owner = (state or {}).get("owner") or {}
        teams[owner_id] = owner.get("team") or owner_id
    out: dict[str | None, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTS, 0))
    for owner, values in raw.items():
        for name, value in values.items():
            out[teams.get(owner)][name] += value
    return out


async def _spend(
    conn: AsyncConnection, start: datetime, end: datetime, group_by: str
) -> dict[str, dict[str, Decimal]]:
    """Spend in the window per group (source or campaign) and currency."""
    if group_by not in ("source", "campaign"):
        return {}
    column = ad_spend.c.source if group_by == "source" else ad_spend.c.campaign
    rows = await conn.execute(
        select(column.label("key"), ad_spend.c.currency, func.sum(ad_spend.c.amount).label("amt"))
        .where(ad_spend.c.day >= start.date(), ad_spend.c.day < _day_after(end))
        .group_by(column, ad_spend.c.currency)
    )
    out: dict[str, dict[str, Decimal]] = defaultdict(dict)
    for r in rows:
        out[r.key or NONE_KEY][r.currency] = Decimal(str(r.amt))
    return out


def _item(key: str, c: dict[str, int], money: dict[str, Decimal]) -> dict[str, Any]:
    """One group's figures, rates and costs (one cost line per currency)."""
    n = c["leads"]
    costs = [
        {
            "currency": currency,
            "spend": _money(amount),
            "per_lead": _money(amount / n) if n else None,
            "per_sql": _money(amount / c["sqls"]) if c["sqls"] else None,
            "per_opportunity": _money(amount / c["opportunities"]) if c["opportunities"] else None,
            "per_client": _money(amount / c["clients"]) if c["clients"] else None,
        }
        for currency, amount in sorted(money.items())
    ]
    single = costs[0] if len(costs) == 1 else None
    return {
        "key": key,
        **c,
        "mql_rate": _ratio(c["mqls"], n),
        "sql_rate": _ratio(c["sqls"], n),
        "client_rate": _ratio(c["clients"], n),
        "prospect_rate": _ratio(c["prospects"], n),
        "opportunity_rate": _ratio(c["opportunities"], n),
        "win_rate": _ratio(c["won"], c["opportunities"]),
        "mql_to_sql_rate": _ratio(c["mql_cohort_sqls"], c["mql_cohort"]),
        "sql_to_opportunity_rate": _ratio(c["sql_cohort_opportunities"], c["sql_cohort"]),
        "prospect_to_client_rate": _ratio(c["clients"], c["prospects"]),
        # one currency: its figures here as well; several: see ``costs`` (never added up)
        "spend": single["spend"] if single else None,
        "currency": single["currency"] if single else None,
        "cost_per_lead": single["per_lead"] if single else None,
        "cost_per_sql": single["per_sql"] if single else None,
        "costs": costs,
    }


def _day_after(end: datetime) -> date:
    """Spend days are whole days: a window ending mid-day includes that day."""
    return date.fromordinal(end.date().toordinal() + (1 if end.time() != end.min.time() else 0))


async def record_spend(conn: AsyncConnection, entries: list[dict[str, Any]], now: datetime) -> None:
    """Insert or replace spend per (day, source, campaign)."""
    if not entries:
        return
    rows = [{**e, "updated_at": now} for e in entries]
    stmt = insert_for(conn)(ad_spend)
    stmt = stmt.on_conflict_do_update(
        index_elements=["day", "source", "campaign"],
        set_={
            "amount": stmt.excluded.amount,
            "currency": stmt.excluded.currency,
            "updated_at": stmt.excluded.updated_at,
        },
    )
    await conn.execute(stmt, rows)


async def funnel_counts(conn: AsyncConnection) -> list[tuple[str, str, int]]:
    """How many known leads per (stage, temperature), now."""
    rows = await conn.execute(
        select(leads.c.stage, leads.c.temperature, func.count())
        .where(KNOWN)
        .group_by(leads.c.stage, leads.c.temperature)
    )
    return [(r[0], r[1], int(r[2])) for r in rows]


def flatten(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items without their nested cost lines (for CSV-like tables)."""
    return [{k: v for k, v in i.items() if k != "costs"} for i in items]


__all__ = ["GROUPS", "flatten", "funnel", "funnel_counts", "record_spend"]
