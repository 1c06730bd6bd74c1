"""Capture's /readyz stays green while Kafka is away as long as its database spool accepts leads
(a red /readyz would take capture out of the load balancer exactly when the spool should keep
leads coming in); the broker is reported as degraded. Other services stay red without Kafka."""

from __future__ import annotations

import httpx

from services.capture.main import build_app
from shared.broker import free_port
from shared.db import create_engine
from shared.runtime import Runtime
from tests.capture.conftest import make_config
from tests.support import make_settings


async def test_capture_is_ready_and_degraded_while_kafka_is_away(sqlite_db_url: str) -> None:
    settings = make_settings(f"127.0.0.1:{free_port()}", sqlite_db_url)  # nothing listens there
    app = build_app(settings, make_config())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            resp = await c.post("/v1/forms/newsletter/submissions", json={"email": "a@b.co"})
            assert resp.status_code == 202, resp.text
            ready = await c.get("/readyz")
            assert ready.status_code == 200, ready.text
            body = ready.json()
            assert body["status"] == "degraded" and body["broker"] == "down"
            assert body["degraded"] == ["broker unreachable"] and body["problems"] == []


async def test_a_service_that_needs_kafka_is_not_ready_without_it(sqlite_db_url: str) -> None:
    settings = make_settings(f"127.0.0.1:{free_port()}", sqlite_db_url)
    runtime = Runtime("scoring", settings, create_engine(sqlite_db_url))
    try:
        ok, report = await runtime.readiness()
        assert not ok and report["problems"] == ["broker unreachable"]
        assert "degraded" not in report
    finally:
        await runtime.engine.dispose()


async def test_a_missing_topic_permission_is_not_ready_even_for_capture(
    sqlite_db_url: str,
) -> None:
    settings = make_settings(f"127.0.0.1:{free_port()}", sqlite_db_url)
    runtime = Runtime("capture", settings, create_engine(sqlite_db_url))
    runtime.broker_required = False
    runtime.setup_problem = "topics cannot be created: TopicAuthorizationFailed: ..."
    try:
        ok, report = await runtime.readiness()
        assert not ok and report["problems"] == [runtime.setup_problem]
    finally:
        await runtime.engine.dispose()
