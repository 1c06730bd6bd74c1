"""Reps API (availability, pause, capacity) and the unassigned queue retried on availability."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import func, select, text

from services.routing.main import build_app
from services.routing.tables import rep_states
from shared.config import ConfigError
from shared.events import RoutingType
from shared.topics import Topics
from tests.routing.helpers import AUTH, config, lead, publish, qualified, running, snapshot
from tests.routing.test_rep_overrides import check_weight_and_hours_validation
from tests.support import make_settings, wait_for_events

ONE_REP = config(
    fallback_team=None,
    reps=[
        {
            "id": "anna",
            "name": "Anna",
            "email": "anna@example.com",
            "team": "emea",
            "hours": "24x7",
            "capacity": {"max_open": 5},
        }
    ],
)


async def test_unassigned_lead_is_assigned_when_a_rep_comes_back(
    kafka_bootstrap: str, db_url: str
) -> None:
    settings = make_settings(kafka_bootstrap, db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    waiting = lead("DE")
    async with running(settings, ONE_REP) as (app, client):
        r = await client.patch("/v1/reps/anna", headers=AUTH, json={"paused": True})
        assert r.status_code == 200, r.text
        assert r.json()["available"] is False and r.json()["unavailable_reason"] == "paused"
        await publish(app, topics.leads, [qualified(waiting)])
        events = await wait_for_events(
            kafka_bootstrap,
            topics.routing,
            lambda evs: any(e.type == RoutingType.UNASSIGNED for e in evs),
        )
        un = next(e for e in events if e.type == RoutingType.UNASSIGNED)
        assert un.data["lead_id"] == waiting["id"] and un.data["reason"] == "no_available_rep"
        assert un.data["lead"]["email"] == waiting["email"]
        queue = (await client.get("/v1/queue")).json()["items"]
        assert [q["lead_id"] for q in queue] == [waiting["id"]]

        r = await client.patch("/v1/reps/anna", headers=AUTH, json={"paused": False})
        assert r.json()["available"] is True
        events = await wait_for_events(
            kafka_bootstrap,
            topics.routing,
            lambda evs: any(e.type == RoutingType.ASSIGNED for e in evs),
            timeout=10,
        )
        assigned = next(e for e in events if e.type == RoutingType.ASSIGNED)
        assert assigned.data["owner"]["id"] == "anna"
        assert assigned.data["lead_id"] == waiting["id"]
        assert (await client.get("/v1/queue")).json()["items"] == []

        reps = (await client.get("/v1/reps")).json()
        assert reps["next_cursor"] is None
        anna = reps["items"][0]
        assert anna["load"] == {"open": 1, "today": 1}
        assert anna["capacity"] == {"max_open": 5, "max_per_day": None}


async def test_rep_patch_validation(kafka_bootstrap: str, sqlite_db_url: str) -> None:
    settings = make_settings(kafka_bootstrap, sqlite_db_url)
    async with running(settings, ONE_REP) as (_, client):
        assert (
            await client.patch(
                "/v1/reps/anna", json={"paused": True}, headers={"Authorization": ""}
            )
        ).status_code == 401
        assert (
            await client.patch(
                "/v1/reps/anna", json={"paused": True}, headers={"Authorization": "Bearer wrong"}
            )
        ).status_code == 403
        assert (await client.patch("/v1/reps/zed", headers=AUTH, json={})).status_code == 404
        r = await client.patch("/v1/reps/anna", headers=AUTH, json={"capacity": {"max_open": -1}})
        assert r.status_code == 422 and r.json()["errors"][0]["loc"].startswith("/body/capacity")
        r = await client.patch(
            "/v1/reps/anna",
            headers=AUTH,
            json={
                "out_of_office": [{"from": "2026-12-02T00:00:00Z", "to": "2026-12-01T00:00:00Z"}]
            },
        )
        assert r.status_code == 422
        r = await client.patch(
            "/v1/reps/anna",
            headers=AUTH,
            json={
                "out_of_office": [{"from": "2020-01-01T00:00:00Z", "to": "2099-01-01T00:00:00Z"}],
                "capacity": {"max_open": 1, "max_per_day": 2},
            },
        )
        assert r.status_code == 200
        body = r.json()
        assert body["unavailable_reason"] == "out_of_office"
        assert body["capacity"] == {"max_open": 1, "max_per_day": 2}
        r = await client.get(
            "/v1/sla/report", params={"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
        )
        assert r.status_code == 422
        assert (await client.get("/v1/sla/report", params={"from": "yesterday"})).status_code == 422
        assert (
            await client.get("/v1/webhooks/deliveries", params={"cursor": "x"})
        ).status_code == 400
        await check_weight_and_hours_validation(client)


async def test_listing_reps_writes_nothing(db_url: str) -> None:
    settings = make_settings("127.0.0.1:1", db_url)
    app = build_app(settings, ONE_REP)  # no broker needed: the runtime is not started
    engine = app.state.runtime.engine
    transport = httpx.ASGITransport(app=app)
    try:
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://t") as client,
            engine.connect() as side,
        ):
            if engine.dialect.name == "postgresql":
                # Readers pass this lock, writers wait for it: a write would hang the GET.
                await side.execute(text("LOCK TABLE routing_rep_states IN EXCLUSIVE MODE"))
            r = await asyncio.wait_for(client.get("/v1/reps", headers=AUTH), 10)
            await side.rollback()
        assert r.status_code == 200, r.text
        [anna] = r.json()["items"]
        assert anna["id"] == "anna" and anna["paused"] is False and anna["available"] is True
        assert anna["capacity"] == {"max_open": 5, "max_per_day": None}
        async with engine.connect() as conn:
            written = (
                await conn.execute(select(func.count()).select_from(rep_states))
            ).scalar_one()
        assert written == 0
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"reps": []}, "routing.reps"),
        ({"sla": {"policies": {"hot": {"business_minutes": "five"}}}}, "routing.sla.policies.hot"),
        ({"rules": [{"name": "r", "team": "ghost"}]}, "routing.rules[0].team"),
        ({"teams": {"emea": {"calendar": "nope"}}}, "routing.teams.emea.calendar"),
        # Two hooks of one name would share deliveries (unique per webhook and event) and one
        # would sign with the other's secret; an unnamed hook is "webhook-<index>".
        (
            {
                "webhooks": [
                    {"name": "crm", "url": "https://a.example/h", "secret": "s" * 8},
                    {"name": "crm", "url": "https://b.example/h", "secret": "t" * 8},
                ]
            },
            "routing.webhooks[1].name",
        ),
        (
            {
                "webhooks": [
                    {"url": "https://a.example/h", "secret": "s" * 8},
                    {"name": "webhook-0", "url": "https://b.example/h", "secret": "t" * 8},
                ]
            },
            "routing.webhooks[1].name",
        ),
    ],
)
def test_bad_config_stops_start_with_the_key(change: dict, key: str, tmp_path: Path) -> None:
    settings = make_settings("127.0.0.1:1", f"sqlite+aiosqlite:///{tmp_path}/x.db")
    with pytest.raises(ConfigError) as err:
        build_app(settings, config(**change))
    assert key in str(err.value)


async def test_default_config_is_valid_and_always_assignable(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from services.routing.config import load_routing_config
    from services.routing.domain.rules import route
    from shared.config import load_config

    cfg = load_routing_config(load_config())
    start = datetime(2026, 11, 28, 3, tzinfo=UTC)  # a Saturday night
    for hours in range(0, 24 * 7, 5):
        for country in ("DE", "US", "JP"):
            assert route(snapshot(country), cfg, {}, start + timedelta(hours=hours)).rep is not None
    # A config file given by path works the same way.
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(ONE_REP))
    settings = make_settings(
        "127.0.0.1:1", f"sqlite+aiosqlite:///{tmp_path}/x.db", leadflow_config=path
    )
    assert build_app(settings).state.routing.config.reps.keys() == {"anna"}


async def test_malformed_requests_get_4xx_problems(
    kafka_bootstrap: str, sqlite_db_url: str
) -> None:
    settings = make_settings(kafka_bootstrap, sqlite_db_url)
    json_ = {**AUTH, "content-type": "application/json"}
    # Each case with the one status it must get (a looser 4xx would pass a 401 or 404).
    cases = [
        ("PATCH", "/v1/reps/anna", b"[]", 422),
        ("PATCH", "/v1/reps/anna", b'{"paused": "maybe"}', 422),
        ("PATCH", "/v1/reps/anna", b'{"out_of_office": [{"from": "soon"}]}', 422),
        ("PATCH", "/v1/reps/anna", b"\xff\xfe", 400),  # not JSON at all: malformed
        ("POST", "/v1/assignments/x/first-touch", b'"now"', 422),
        ("POST", "/v1/assignments/x/first-touch", b'{"occurred_at": "2099-01-01T00:00:00Z"}', 422),
        # A number is read as Unix time (valid); what is wrong is the unknown assignment.
        ("POST", "/v1/assignments/x/first-touch", b'{"occurred_at": 12}', 404),
        ("POST", "/v1/sales/activities", b'{"type": "won"}', 422),
        ("POST", "/v1/sales/activities", b'{"type": "won", "lead_id": ""}', 422),
        (
            "POST",
            "/v1/sales/activities",
            b'{"type": "won", "lead_id": "x", "occurred_at": "x"}',
            422,
        ),
        ("GET", "/v1/sla/report?to=not-a-time", b"", 422),
        ("GET", "/v1/assignments?limit=abc", b"", 422),
        ("GET", "/v1/webhooks/deliveries?state=lost", b"", 422),
    ]
    async with running(settings, ONE_REP) as (_, client):
        spec = (await client.get("/openapi.json")).json()
        assert "/v1/assignments/{assignment_id}/first-touch" in spec["paths"]
        assert "/v1/reps/{rep_id}" in spec["paths"]
        for method, url, body, status in cases:
            r = await client.request(method, url, content=body or None, headers=json_)
            assert r.status_code == status, (method, url, body, r.status_code, r.text)
            if status == 422:
                assert r.json()["errors"], (method, url, body, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
