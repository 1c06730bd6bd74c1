"""Webhook hardening: https required outside dev mode, and dead deliveries redelivered by API
(on PostgreSQL and SQLite)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from services.routing import api_admin
from services.routing import durable_queues as queues
from services.routing.config import load_routing_config, read_routing_config
from services.routing.deps import RoutingContext
from services.routing.tables import deliveries
from services.routing.workers import WebhookWorker
from shared.config import ConfigError
from shared.db import create_engine
from shared.events import utcnow
from shared.problems import install_problem_handlers
from shared.topics import Topics
from tests.routing.helpers import config
from tests.routing.test_webhooks import SECRET, Receiver, serve
from tests.support import AUTH, make_settings, wait_for

ERASED = "lead erased before delivery"

# ---- https outside dev mode (pure) ------------------------------------------------------------


def _hooks(*urls: str) -> dict[str, Any]:
    return config(
        webhooks=[{"name": f"h{i}", "url": u, "secret": SECRET} for i, u in enumerate(urls)]
    )


def test_http_webhook_refused_outside_dev_mode_naming_the_key() -> None:
    cfg = _hooks("https://crm.example.com/hook", "http://hooks.example.com/T0/B0/secretpath")
    with pytest.raises(ConfigError) as err:
        load_routing_config(cfg, require_https=True)
    message = str(err.value)
    assert "routing.webhooks[1].url" in message and "https" in message
    assert "secretpath" not in message  # the path may be the credential
    assert "webhooks[0]" not in message
    assert load_routing_config(_hooks("https://crm.example.com/x"), require_https=True).webhooks


def test_dev_mode_decides_whether_http_is_allowed() -> None:
    cfg = _hooks("http://127.0.0.1:9/hook")
    dev = make_settings("unused:9092", "sqlite+aiosqlite:///unused.db")
    assert read_routing_config(dev, cfg).webhooks[0].url == "http://127.0.0.1:9/hook"
    production = dev.model_copy(update={"leadflow_dev": False})
    with pytest.raises(ConfigError, match=r"routing\.webhooks\[0\]\.url"):
        read_routing_config(production, cfg)


# ---- redelivery --------------------------------------------------------------------------------


@asynccontextmanager
async def admin_api(db_url: str, cfg: dict[str, Any]) -> AsyncIterator[tuple[Any, Any]]:
    """Routing's operator routes on ``db_url`` (no broker needed), and an HTTP client."""
    settings = make_settings("unused:9092", db_url)
    ctx = RoutingContext(config=load_routing_config(cfg), topics=Topics("t."))
    engine = create_engine(db_url)
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(api_admin.router)
    app.state.runtime = SimpleNamespace(engine=engine, settings=settings)
    app.state.routing = ctx
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            yield (engine, ctx), client
    finally:
        await engine.dispose()


async def _add(engine: Any, hook: str, name: str, state: str, **extra: Any) -> int:
    now = utcnow()
    row = {
        "webhook": hook,
        "url": "https://unused.example/hook",
        "event_id": name,
        "event_type": "io.leadflow.routing.assigned",
        "lead_id": f"lead-{name}",
        "body": json.dumps({"id": name}),
        "state": state,
        "attempts": 8 if state == "dead" else 1,
        "last_status": 500 if state == "dead" else 204,
        "last_error": "HTTP 500" if state == "dead" else None,
        "next_attempt_at": now,
        "created_at": now,
        **extra,
    }
    async with engine.begin() as conn:
        await queues.add_deliveries(conn, [row])
        got = await conn.execute(select(deliveries.c.id).where(deliveries.c.event_id == name))
        return int(got.scalar_one())


async def _row(engine: Any, delivery_id: int) -> dict[str, Any]:
    async with engine.connect() as conn:
        got = await conn.execute(select(deliveries).where(deliveries.c.id == delivery_id))
        return dict(got.one()._mapping)


async def test_a_dead_delivery_is_redelivered_by_api_and_sent_once(db_url: str) -> None:
    receiver = Receiver()
    async with serve(receiver) as base:
        cfg = config(webhooks=[{"name": "crm", "url": f"{base}/fast", "secret": SECRET}])
        async with admin_api(db_url, cfg) as ((engine, ctx), client):
            dead = await _add(engine, "crm", "dead-1", "dead")
            erased = await _add(engine, "crm", "erased-1", "dead", last_error=ERASED)
            delivered = await _add(engine, "crm", "ok-1", "delivered")
            gone = await _add(engine, "removed-hook", "gone-1", "dead")
            url = f"/v1/webhooks/deliveries/{dead}/redeliver"

            assert (await client.post(url)).status_code == 401
            r = await client.post(url, headers={"Authorization": "Bearer wrong"})
            assert r.status_code == 403
            for bad, status in [
                (erased, 409),
                (delivered, 409),
                (gone, 409),
                ("999999", 404),
                ("abc", 404),
                ("²", 404),
                ("9" * 30, 404),
            ]:
                r = await client.post(f"/v1/webhooks/deliveries/{bad}/redeliver", headers=AUTH)
                assert r.status_code == status, (bad, r.text)
                assert r.headers["content-type"].startswith("application/problem+json")
            assert (
                "erased"
                in (
                    await client.post(f"/v1/webhooks/deliveries/{erased}/redeliver", headers=AUTH)
                ).json()["detail"]
            )

            r = await client.post(url, headers=AUTH)
            assert r.status_code == 202, r.text
            assert r.json()["state"] == "pending" and r.json()["attempts"] == 0
            # Asking twice queues it once: it is no longer dead.
            assert (await client.post(url, headers=AUTH)).status_code == 409

            worker = WebhookWorker(engine, ctx, timeout=2.0)
            ctx.wakers.append(worker.wake)
            task = asyncio.create_task(worker.run())
            try:

                async def sent() -> dict[str, Any] | None:
                    row = await _row(engine, dead)
                    return row if row["state"] == "delivered" else None

                row = await wait_for(sent, timeout=10, what="redelivered")
            finally:
                await worker.stop()
                await task
            assert row["attempts"] == 1 and row["lease_token"] is None
            assert [c["delivery"] for c in receiver.calls] == [str(dead)]
            assert all(c["ok"] for c in receiver.calls)
            assert (await _row(engine, erased))["state"] == "dead"


async def test_dead_deliveries_of_a_webhook_are_redelivered_in_bulk(db_url: str) -> None:
    hooks = [
        {"name": "a", "url": "https://a.example/hook", "secret": SECRET},
        {"name": "b", "url": "https://b.example/hook", "secret": SECRET},
    ]
    async with admin_api(db_url, config(webhooks=hooks)) as ((engine, _), client):
        old = utcnow() - timedelta(days=2)
        a_old = await _add(engine, "a", "a-old", "dead", created_at=old)
        a_new = [await _add(engine, "a", f"a-{i}", "dead") for i in range(3)]
        a_erased = await _add(engine, "a", "a-erased", "dead", last_error=ERASED)
        b_dead = await _add(engine, "b", "b-1", "dead")
        url = "/v1/webhooks/deliveries/redeliver"

        assert (await client.post(url, json={"webhook": "a"})).status_code == 401
        r = await client.post(url, json={"webhook": "nope"}, headers=AUTH)
        assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "/body/webhook"
        assert (await client.post(url, json={"extra": 1}, headers=AUTH)).status_code == 422

        since = (utcnow() - timedelta(days=1)).isoformat()
        r = await client.post(url, json={"webhook": "a", "since": since}, headers=AUTH)
        assert r.status_code == 202 and r.json() == {"redelivered": 3}
        states = {i: (await _row(engine, i))["state"] for i in [a_old, *a_new, a_erased, b_dead]}
        assert [states[i] for i in a_new] == ["pending"] * 3
        assert states[a_old] == states[a_erased] == states[b_dead] == "dead"

        r = await client.post(url, json={}, headers=AUTH)  # every configured webhook
        assert r.json() == {"redelivered": 2}  # a_old and b_dead; never the erased one
        assert (await _row(engine, a_erased))["state"] == "dead"
        assert (await _row(engine, b_dead))["attempts"] == 0


async def test_a_malformed_delivery_log_cursor_is_a_400_not_a_500(pg_db_url: str) -> None:
    # "²" passes str.isdigit but not int(); 30 digits overflow PostgreSQL's BIGINT.
    async with admin_api(pg_db_url, config()) as (_, client):
        for cursor in ("²", "9" * 30, "-1", "abc"):
            r = await client.get("/v1/webhooks/deliveries", params={"cursor": cursor}, headers=AUTH)
            assert r.status_code == 400, (cursor, r.text)
            assert r.headers["content-type"] == "application/problem+json"
        ok = await client.get("/v1/webhooks/deliveries", params={"cursor": "12"}, headers=AUTH)
        assert ok.status_code == 200
