"""Shared bits of the routing tests: a test config, lead events, running the app."""

from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from services.routing.main import build_app
from shared.contract import LeadSnapshot
from shared.events import CloudEvent, LeadType
from shared.outbox import enqueue
from shared.settings import Settings

AUTH = {"Authorization": "Bearer test-token"}

BASE_CONFIG: dict[str, Any] = {
    "routing": {
        "calendars": {"always": {"timezone": "UTC", "hours": "24x7"}},
        "territories": {"emea": ["DE", "FR", "GB"], "americas": ["US", "CA"]},
        "segments": {"enterprise": {"min": 1000}, "smb": {"max": 999}},
        "teams": {
            "emea": {"calendar": "always", "manager": {"name": "Eva", "email": "eva@example.com"}},
            "americas": {"calendar": "always"},
            "desk": {"calendar": "always"},
        },
        "fallback_team": "desk",
        "reps": [
            {
                "id": "anna",
                "name": "Anna",
                "email": "anna@example.com",
                "team": "emea",
                "weight": 2,
                "hours": "24x7",
            },
            {
                "id": "ben",
                "name": "Ben",
                "email": "ben@example.com",
                "team": "emea",
                "weight": 1,
                "hours": "24x7",
            },
            {
                "id": "carla",
                "name": "Carla",
                "email": "carla@example.com",
                "team": "americas",
                "hours": "24x7",
            },
            {
                "id": "desk",
                "name": "Desk",
                "email": "desk@example.com",
                "team": "desk",
                "hours": "24x7",
            },
        ],
        "rules": [
            {"name": "emea", "team": "emea", "when": {"territory": "emea"}},
            {"name": "americas", "team": "americas", "when": {"territory": "americas"}},
        ],
        "sla": {
            "warn_fraction": 0.5,
            "default_policy": "warm",
            "policies": {
                "hot": {"business_seconds": 2},
                "warm": {"business_hours": 4},
                "cold": {"business_days": 2},
            },
        },
        "escalation": {"notify_manager": True, "ladder": ["reassign", "queue"]},
        "unassigned_retry_seconds": 30,
    }
}


def config(**routing_overrides: Any) -> dict[str, Any]:
    """A deep copy of the test config with top-level routing keys replaced."""
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["routing"].update(routing_overrides)
    return cfg


def lead(country: str | None = "DE", temperature: str = "hot", **extra: Any) -> dict[str, Any]:
    """A lead resource as scoring publishes it."""
    lid = extra.pop("id", f"lead-{uuid.uuid4().hex[:8]}")
    email = f"{lid}@acme.example"
    return {
        "id": lid,
        "key": email,
        "email": email,
        "first_name": "Jane",
        "last_name": "Doe",
        "company": "Acme",
        "job_title": "VP Sales",
        "industry": "software",
        "company_size": 500,
        "country": country,
        "status": "prospect",
        "stage": "SQL",
        "temperature": temperature,
        "score": {"total": 87, "fit": 40, "engagement": 47, "reasons": []},
        "owner": None,
        "first_touch": {"source": "google", "medium": "cpc", "campaign": "q4"},
        "created_at": "2026-11-26T09:00:00Z",
        **extra,
    }


def snapshot(country: str | None = "DE", temperature: str = "hot", **extra: Any) -> LeadSnapshot:
    """:func:`lead` as routing reads it from ``lead.qualified`` (the typed contract)."""
    return LeadSnapshot.from_data(lead(country, temperature, **extra))


def qualified(the_lead: dict[str, Any], event_id: str | None = None) -> CloudEvent:
    """A ``lead.qualified`` event as scoring emits it."""
    kwargs: dict[str, Any] = {"id": event_id} if event_id else {}
    return CloudEvent(
        type=LeadType.QUALIFIED,
        source="/leadflow/scoring",
        data={
            "lead": the_lead,
            "cause": {"event_id": "x", "type": "t"},
            "change": {"from": "MQL", "to": "SQL"},
        },
        subject=the_lead["id"],
        key=the_lead["key"],
        **kwargs,
    )


async def publish(app: FastAPI, topic: str, events: list[CloudEvent]) -> None:
    """Put events on a topic through a test-only outbox source relayed by the app's runtime."""
    runtime = app.state.runtime
    async with runtime.engine.begin() as conn:
        await enqueue(conn, "routing", topic, events)
    runtime.relay.wake()


@asynccontextmanager
async def running(
    settings: Settings,
    cfg: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The routing app, started and ready, with an HTTP client on it."""
    app = build_app(settings, cfg or config())
    async with app.router.lifespan_context(app):
        await app.state.runtime.wait_ready()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=AUTH
        ) as client:
            yield app, client


def merged(survivor: dict[str, Any], *others: str) -> CloudEvent:
    """A ``lead.merged`` event as scoring emits it: ``others`` were joined into ``survivor``."""
    return CloudEvent(
        type=LeadType.MERGED,
        source="/leadflow/scoring",
        data={
            "lead": survivor,
            "cause": {"event_id": "x", "type": "t"},
            "change": {"merged_ids": list(others), "into": survivor["id"]},
        },
        subject=survivor["id"],
        key=survivor["key"],
    )


def erased(lead_id: str) -> CloudEvent:
    """A ``lead.erased`` event as scoring emits it (keyed by the lead id after erasure)."""
    return CloudEvent(
        type=LeadType.ERASED,
        source="/leadflow/scoring",
        data={"lead": {"id": lead_id}},
        subject=lead_id,
        key=lead_id,
    )
