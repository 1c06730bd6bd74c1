"""SLA deadlines and the attainment report, on business time."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.routing.domain.assignment import State
from services.routing.domain.business_time import Calendar, add_business_time


@dataclass(frozen=True)
class Deadlines:
    """When an assignment's warning and breach are due."""

    warn_at: datetime
    due_at: datetime


def deadlines(
    start: datetime, seconds: float, warn_fraction: float, calendar: Calendar
) -> Deadlines:
    """Due after ``seconds`` of business time, warned after ``warn_fraction`` of it."""
    return Deadlines(
        warn_at=add_business_time(start, seconds * warn_fraction, calendar),
        due_at=add_business_time(start, seconds, calendar),
    )


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` percentile (0..1) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def summarize(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Attainment and response times of assignment rows (``state``, ``*_seconds``, ``breached``).

    Attainment is met / (met + breached) over assignments whose outcome is known.
    """
    rows = list(rows)
    met = sum(1 for r in rows if r["state"] == State.MET)
    breached = sum(1 for r in rows if r.get("breached"))
    wall = [float(r["response_seconds"]) for r in rows if r.get("response_seconds") is not None]
    biz = [float(r["business_seconds"]) for r in rows if r.get("business_seconds") is not None]
    decided = met + breached
    return {
        "assignments": len(rows),
        "open": sum(1 for r in rows if r["state"] == State.OPEN),
        "met": met,
        "breaches": breached,
        "attainment_pct": round(100.0 * met / decided, 1) if decided else None,
        "median_first_touch_seconds": percentile(wall, 0.5),
        "p90_first_touch_seconds": percentile(wall, 0.9),
        "median_first_touch_business_seconds": percentile(biz, 0.5),
        "p90_first_touch_business_seconds": percentile(biz, 0.9),
    }


def report(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The overall summary plus one per team and one per rep."""
    by_team: dict[str, list[Mapping[str, Any]]] = {}
    by_rep: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_team.setdefault(r["team"], []).append(r)
        by_rep.setdefault(r["owner_id"], []).append(r)
    return {
        "overall": summarize(rows),
        "by_team": [{"team": t, **summarize(v)} for t, v in sorted(by_team.items())],
        "by_rep": [{"rep_id": k, **summarize(v)} for k, v in sorted(by_rep.items())],
    }
