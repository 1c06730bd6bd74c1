"""Speed to lead for the dashboard: time to first touch, SLA outcomes, and who is waiting now.

Read-only: scoring's dashboard fetches ``GET /v1/reports/speed-to-lead`` over HTTP (the services
never import each other). Everything is computed from ``routing_assignments`` made in the window
(one narrow select), plus the open assignments of hot leads for the queue.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.routing.api_common import aware
from services.routing.tables import assignments
from shared.auth import ReadAuth
from shared.events import rfc3339, utcnow
from shared.http import RuntimeDep
from shared.problems import Problem

router = APIRouter(prefix="/v1/reports", tags=["reports"])

#: Upper bounds (seconds) of the time-to-first-touch histogram's buckets; the last is open.
BUCKETS: tuple[tuple[str, float], ...] = (
    ("< 5 min", 300),
    ("5-15 min", 900),
    ("15-30 min", 1800),
    ("30-60 min", 3600),
    ("1-4 h", 4 * 3600),
    ("4-24 h", 24 * 3600),
    ("> 24 h", math.inf),
)
OUTCOMES = ("met", "warned", "breached", "escalated", "open")
WAITING_LIMIT = 50


class OutcomeCounts(BaseModel):
    """Assignments by SLA outcome: ``met`` before the warning, ``warned`` (met after the
    warning, or still open past it), ``breached``, ``escalated`` (breached and escalated),
    ``open`` (clock running, not yet warned)."""

    assignments: int
    met: int
    warned: int
    breached: int
    escalated: int
    open: int
    attainment: float | None = Field(description="touched in time / (touched in time + breached)")
    median_seconds: float | None
    p90_seconds: float | None


class GroupOut(OutcomeCounts):
    """One team's or rep's figures."""

    key: str
    name: str | None = None
    team: str | None = None


class BucketOut(BaseModel):
    """One bar of the time-to-first-touch histogram."""

    label: str
    le_seconds: float | None
    count: int


class DayOut(BaseModel):
    """SLA outcomes of the assignments made on one day (UTC)."""

    day: str
    met: int
    warned: int
    breached: int
    escalated: int
    open: int


class WaitingOut(BaseModel):
    """A hot lead assigned and not yet touched."""

    assignment_id: str
    lead_id: str
    lead: str
    company: str | None
    owner: str
    team: str
    assigned_at: str
    warn_at: str
    due_at: str
    seconds_left: float


class SpeedToLeadOut(BaseModel):
    """Speed to lead for assignments made in [from, to), and the hot leads waiting now."""

    from_: str = Field(serialization_alias="from")
    to: str
    now: str
    overall: OutcomeCounts
    by_team: list[GroupOut]
    by_rep: list[GroupOut]
    histogram: list[BucketOut]
    daily: list[DayOut]
    waiting: list[WaitingOut]


def outcome(row: Mapping[str, Any], now: datetime) -> str:
    """One assignment's SLA outcome (see :class:`OutcomeCounts`)."""
    if row["breached"]:
        escalated = row["escalation_level"] > 0 or row["state"] == "reassigned"
        return "escalated" if escalated else "breached"
    met_at, warn_at = aware(row["met_at"]), aware(row["warn_at"])
    assert warn_at is not None
    if met_at is not None:
        return "met" if met_at <= warn_at else "warned"
    if row["state"] != "open":
        return "open" if now < warn_at else "warned"
    return "warned" if now >= warn_at else "open"


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th quantile (0..1) by linear interpolation; None for no values."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return round(s[lo] + (s[hi] - s[lo]) * (pos - lo), 1)


def summarize(rows: Iterable[Mapping[str, Any]], now: datetime) -> dict[str, Any]:
    """Outcome counts, attainment, and median/p90 time to first touch of some assignments."""
    counts = dict.fromkeys(OUTCOMES, 0)
    seconds: list[float] = []
    n = 0
    ok = 0
    for r in rows:
        n += 1
        kind = r.get("_outcome") or outcome(r, now)
        counts[kind] += 1
        if r["met_at"] is not None and not r["breached"]:
            ok += 1
        if r["response_seconds"] is not None:
            seconds.append(float(r["response_seconds"]))
    # decided: touched in time, or breached (one still open past its warning is not yet)
    decided = ok + counts["breached"] + counts["escalated"]
    return {
        "assignments": n,
        **counts,
        "attainment": round(ok / decided, 4) if decided else None,
        "median_seconds": percentile(seconds, 0.5),
        "p90_seconds": percentile(seconds, 0.9),
    }


def speed_report(
    rows: Sequence[Mapping[str, Any]], start: datetime, end: datetime, now: datetime
) -> dict[str, Any]:
    """The whole report but the waiting queue, from the window's assignment rows (pure)."""
    by_team: dict[str, list[Mapping[str, Any]]] = {}
    by_rep: dict[str, list[Mapping[str, Any]]] = {}
    hist = [0] * len(BUCKETS)
    days: dict[str, dict[str, int]] = {}
    day = start.date()
    while day <= (end - timedelta(microseconds=1)).date() and len(days) < 400:
        days[day.isoformat()] = dict.fromkeys(OUTCOMES, 0)
        day += timedelta(days=1)
    rows = [{**r, "_outcome": outcome(r, now)} for r in rows]  # once per row, used 4 times
    for r in rows:
        by_team.setdefault(r["team"], []).append(r)
        by_rep.setdefault(r["owner_id"], []).append(r)
        if r["response_seconds"] is not None:
            secs = float(r["response_seconds"])
            hist[next(i for i, (_, le) in enumerate(BUCKETS) if secs < le)] += 1
        assigned = aware(r["assigned_at"])
        assert assigned is not None
        bucket = days.get(assigned.date().isoformat())
        if bucket is not None:
            bucket[r["_outcome"]] += 1
    reps = []
    for rep_id, rep_rows in sorted(by_rep.items()):
        owner = rep_rows[0]["owner"] or {}
        reps.append(
            {
                "key": rep_id,
                "name": owner.get("name"),
                "team": rep_rows[0]["team"],
                **summarize(rep_rows, now),
            }
        )
    return {
        "overall": summarize(rows, now),
        "by_team": [{"key": t, **summarize(v, now)} for t, v in sorted(by_team.items())],
        "by_rep": reps,
        "histogram": [
            {"label": label, "le_seconds": None if math.isinf(le) else le, "count": hist[i]}
            for i, (label, le) in enumerate(BUCKETS)
        ],
        "daily": [{"day": d, **c} for d, c in days.items()],
    }


def waiting_item(r: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """One open assignment of a hot lead, as the queue shows it."""
    lead = r["lead"] or {}
    name = " ".join(p for p in (lead.get("first_name"), lead.get("last_name")) if p)
    due = aware(r["due_at"])
    assert due is not None
    return {
        "assignment_id": r["id"],
        "lead_id": r["lead_id"],
        "lead": name or lead.get("email") or r["lead_id"],
        "company": lead.get("company"),
        "owner": (r["owner"] or {}).get("name") or r["owner_id"],
        "team": r["team"],
        "assigned_at": rfc3339(aware(r["assigned_at"]) or now),
        "warn_at": rfc3339(aware(r["warn_at"]) or now),
        "due_at": rfc3339(due),
        "seconds_left": round((due - now).total_seconds(), 1),
    }


_COLUMNS = (
    assignments.c.id,
    assignments.c.lead_id,
    assignments.c.team,
    assignments.c.owner_id,
    assignments.c.owner,
    assignments.c.state,
    assignments.c.breached,
    assignments.c.escalation_level,
    assignments.c.met_at,
    assignments.c.warn_at,
    assignments.c.due_at,
    assignments.c.assigned_at,
    assignments.c.response_seconds,
)


_NARROW = tuple(c for c in _COLUMNS if c.name not in ("id", "lead_id", "owner"))


async def window_rows(conn: AsyncConnection, start: datetime, end: datetime) -> list[Any]:
    """Assignments made in [start, end), the columns the report needs (each rep's ``owner``
    is read once, not per row: a year holds tens of thousands of assignments)."""
    result = await conn.execute(
        select(*_NARROW).where(assignments.c.assigned_at >= start, assignments.c.assigned_at < end)
    )
    rows = [dict(r._mapping) for r in result]
    owners: dict[str, Any] = {}
    for rep_id in {r["owner_id"] for r in rows}:
        owners[rep_id] = (
            await conn.execute(
                select(assignments.c.owner).where(assignments.c.owner_id == rep_id).limit(1)
            )
        ).scalar()
    for r in rows:
        r["owner"] = owners.get(r["owner_id"])
    return rows


async def hot_waiting(conn: AsyncConnection, now: datetime) -> list[dict[str, Any]]:
    """Open assignments of hot leads (no first touch yet), the soonest due first."""
    result = await conn.execute(
        select(*_COLUMNS, assignments.c.lead)
        .where(assignments.c.state == "open", assignments.c.met_at.is_(None))
        .order_by(assignments.c.due_at)
        .limit(500)
    )
    rows = [dict(r._mapping) for r in result]
    hot = [r for r in rows if (r["lead"] or {}).get("temperature") == "hot"]
    return [waiting_item(r, now) for r in hot[:WAITING_LIMIT]]


@router.get("/speed-to-lead", dependencies=[ReadAuth])
async def speed_to_lead(
    runtime: RuntimeDep,
    from_: Annotated[datetime | None, Query(alias="from")] = None,
    to: datetime | None = None,
) -> SpeedToLeadOut:
    """Time to first touch (median, p90, histogram) and SLA outcomes (met, warned, breached,
    escalated) of the assignments made in [from, to), overall, per team, per rep and per day;
    and the hot leads assigned but not yet touched, with the seconds left on their clock."""
    now = utcnow()
    end = aware(to) or now
    start = aware(from_) or end - timedelta(days=30)
    if start >= end:
        raise Problem(
            422,
            "'from' must be before 'to'",
            errors=[{"loc": "/query/from", "msg": "must be before 'to'"}],
        )
    if end - start > timedelta(days=400):
        raise Problem(
            422,
            "the window is longer than 400 days",
            errors=[{"loc": "/query/from", "msg": "at most 400 days before 'to'"}],
        )
    async with runtime.engine.connect() as conn:
        rows = await window_rows(conn, start, end)
        waiting = await hot_waiting(conn, now)
    return SpeedToLeadOut(
        from_=rfc3339(start),
        to=rfc3339(end),
        now=rfc3339(now),
        waiting=[WaitingOut(**w) for w in waiting],
        **speed_report(rows, start, end, now),
    )
