"""A scripted scenario for the dashboard tests: scoring's leads (test_kpis' script) and
routing's assignments, with the scoring and routing apps wired the way the dashboard reaches
routing (HTTP; here an in-process transport)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from services.routing.main import build_app as build_routing
from services.routing.tables import assignments
from services.scoring import kpis
from services.scoring.main import build_app as build_scoring
from shared.settings import Settings
from shared.topics import Topics
from tests.scoring.test_kpis import _play
from tests.support import make_settings

EMEA = {"id": "rep-emea", "name": "Emma Stone", "email": "emma@x.example", "team": "emea"}
NA = {"id": "rep-na", "name": "Nate Diaz", "email": "nate@x.example", "team": "na"}
#: Ad spend of the scenario's week: google in EUR and USD, linkedin in EUR.
SPEND = [
    {
        "day": date(2026, 11, 2),
        "source": "google",
        "campaign": "q4",
        "amount": 300,
        "currency": "EUR",
    },
    {
        "day": date(2026, 11, 3),
        "source": "google",
        "campaign": "us",
        "amount": 80,
        "currency": "USD",
    },
    {
        "day": date(2026, 11, 4),
        "source": "linkedin",
        "campaign": "abm",
        "amount": 400,
        "currency": "EUR",
    },
]


def assignment(
    n: int,
    owner: dict[str, str],
    assigned_at: datetime,
    *,
    met_after: float | None = None,
    breached: bool = False,
    escalation_level: int = 0,
    state: str | None = None,
    lead: dict[str, Any] | None = None,
    sla_minutes: float = 60,
) -> dict[str, Any]:
    """A routing_assignments row (warning at 80% of the SLA)."""
    met_at = assigned_at + timedelta(seconds=met_after) if met_after is not None else None
    if state is None:
        state = "met" if met_at and not breached else ("breached" if breached else "open")
    return {
        "id": f"a-{n}",
        "lead_id": f"lead-{n}",
        "lead_key": f"lead-{n}",
        "owner_id": owner["id"],
        "owner": owner,
        "team": owner["team"],
        "state": state,
        "policy": "hot",
        "warn_at": assigned_at + timedelta(minutes=sla_minutes * 0.8),
        "due_at": assigned_at + timedelta(minutes=sla_minutes),
        "met_at": met_at,
        "breached": breached,
        "response_seconds": met_after,
        "business_seconds": met_after,
        "assigned_at": assigned_at,
        "reason": "rule: test",
        "lead": lead or {"id": f"lead-{n}", "temperature": "warm"},
        "escalation_level": escalation_level,
        "previous_assignment_id": None,
        "updated_at": assigned_at,
    }


def routing_rows(t0: datetime, now: datetime) -> list[dict[str, Any]]:
    """Assignments on two days of the window, and two hot leads waiting now."""
    day2 = t0 + timedelta(days=1)
    hot = {"temperature": "hot", "first_name": "Hana", "last_name": "Hot", "company": "Acme"}
    return [
        assignment(1, EMEA, t0 + timedelta(hours=1), met_after=120),  # met, < 5 min
        assignment(2, EMEA, t0 + timedelta(hours=2), met_after=600),  # met, 5-15 min
        assignment(3, EMEA, t0 + timedelta(hours=3), met_after=3000),  # warned (> 48 min)
        assignment(4, NA, day2, met_after=7200, breached=True),  # breached
        assignment(5, NA, day2 + timedelta(hours=1), breached=True, escalation_level=1),
        assignment(6, EMEA, now - timedelta(minutes=10), lead={"id": "lead-6", **hot}),
        assignment(7, NA, now - timedelta(minutes=5), lead={"id": "lead-7", "temperature": "warm"}),
    ]


@asynccontextmanager
async def dashboard_apps(db_url: str, **overrides: Any) -> AsyncIterator[tuple[FastAPI, Settings]]:
    """Scoring (with the scenario played) whose dashboard reaches an in-process routing."""
    settings = make_settings("127.0.0.1:1", db_url, **overrides)
    scoring = build_scoring(settings)
    routing = build_routing(settings)
    engine = scoring.state.runtime.engine
    await _play(engine, Topics(settings.leadflow_topic_prefix))
    from tests.scoring.helpers import T0

    async with engine.begin() as conn:
        await conn.execute(assignments.insert(), routing_rows(T0, datetime.now(T0.tzinfo)))
        await kpis.record_spend(conn, SPEND, T0)
    scoring.state.routing_transport = httpx.ASGITransport(app=routing)
    try:
        yield scoring, settings
    finally:
        await engine.dispose()
        await routing.state.runtime.engine.dispose()
