"""Funnel KPIs per source, campaign or form, with ad spend (cost per lead, cost per SQL)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scoring.tables import ad_spend, leads
from shared.db import insert_for

GROUPS = {
    "source": leads.c.first_source,
    "campaign": leads.c.first_campaign,
    "form": leads.c.first_form_id,
}
NONE_KEY = "(none)"


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def _money(value: Decimal | float | None) -> float | None:
    return round(float(value), 2) if value is not None else None


async def funnel(
    conn: AsyncConnection, start: datetime, end: datetime, group_by: str
) -> dict[str, Any]:
    """Leads created in [start, end) grouped, with how many reached MQL, SQL and client."""
    key = GROUPS[group_by]
    rows = (
        await conn.execute(
            select(
                key.label("key"),
                func.count().label("leads"),
                func.sum(case((leads.c.mql_at.is_not(None), 1), else_=0)).label("mqls"),
                func.sum(case((leads.c.qualified_at.is_not(None), 1), else_=0)).label("sqls"),
                func.sum(case((leads.c.status == "client", 1), else_=0)).label("clients"),
            )
            .where(leads.c.created_at >= start, leads.c.created_at < end)
            .group_by(key)
        )
    ).all()
    spend: dict[str, tuple[Decimal, str]] = {}
    if group_by in ("source", "campaign"):
        column = ad_spend.c.source if group_by == "source" else ad_spend.c.campaign
        spent = await conn.execute(
            select(
                column.label("key"),
                func.sum(ad_spend.c.amount).label("amount"),
                func.max(ad_spend.c.currency).label("currency"),
            )
            .where(ad_spend.c.day >= start.date(), ad_spend.c.day < _day_after(end))
            .group_by(column)
        )
        spend = {(r.key or NONE_KEY): (r.amount, r.currency) for r in spent}
    items: dict[str, dict[str, Any]] = {}
    for r in rows:
        name = r.key or NONE_KEY
        items[name] = _item(
            name,
            int(r.leads),
            int(r.mqls or 0),
            int(r.sqls or 0),
            int(r.clients or 0),
            spend.get(name),
        )
    for name, money in spend.items():
        items.setdefault(name, _item(name, 0, 0, 0, 0, money))
    ordered = sorted(items.values(), key=lambda i: (-i["leads"], i["key"]))
    total_spend = sum((Decimal(str(i["spend"] or 0)) for i in ordered), Decimal(0))
    currency = next((i["currency"] for i in ordered if i["currency"]), None)
    totals = _item(
        "total",
        sum(i["leads"] for i in ordered),
        sum(i["mqls"] for i in ordered),
        sum(i["sqls"] for i in ordered),
        sum(i["clients"] for i in ordered),
        (total_spend, currency or "") if spend else None,
    )
    return {"items": ordered, "totals": totals}


def _item(
    key: str, n: int, mqls: int, sqls: int, clients: int, money: tuple[Decimal, str] | None
) -> dict[str, Any]:
    amount = _money(money[0]) if money else None
    return {
        "key": key,
        "leads": n,
        "mqls": mqls,
        "sqls": sqls,
        "clients": clients,
        "mql_rate": _ratio(mqls, n),
        "sql_rate": _ratio(sqls, n),
        "client_rate": _ratio(clients, n),
        "spend": amount,
        "currency": money[1] if money else None,
        "cost_per_lead": _money(amount / n) if amount is not None and n else None,
        "cost_per_sql": _money(amount / sqls) if amount is not None and sqls else None,
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
    """How many leads per (stage, temperature), for the dashboard."""
    rows = await conn.execute(
        select(leads.c.stage, leads.c.temperature, func.count()).group_by(
            leads.c.stage, leads.c.temperature
        )
    )
    return [(r[0], r[1], int(r[2])) for r in rows]


__all__ = ["GROUPS", "funnel", "funnel_counts", "record_spend"]
