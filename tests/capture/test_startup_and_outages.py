"""Config validation, layering, and the broker being away (not yet up, or gone with the DB)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from services.capture.config import parse_config
from services.capture.main import build_app
from services.capture.tables import idempotency
from shared.broker import BundledBroker, free_port
from shared.config import ConfigError, load_config
from shared.db import create_engine
from shared.messaging_tables import outbox
from shared.outbox import pending_count
from tests.capture.conftest import make_config
from tests.support import make_settings, wait_for, wait_for_events
from tests.tcpproxy import TcpProxy


def test_packaged_config_is_valid() -> None:
    config = parse_config(load_config())
    assert {"newsletter", "contact-sales", "demo-request"} <= set(config.forms)
    assert config.forms["demo-request"].intent == "demo_request"


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"forms": {"x": {"intent": "buy-now"}}}, "forms.x.intent"),
        ({"forms": {"x": {"name": "no intent"}}}, "forms.x"),
        (
            {"forms": {"x": {"intent": "quote", "allowed_origins": ["not a url"]}}},
            "forms.x.allowed_origins[0]",
        ),
        ({"capture": {"rate_limit": {"burst": 0}}}, "capture.rate_limit.burst"),
        ({"capture": {"surprise": 1}}, "capture"),
    ],
)
def test_bad_config_names_the_key(patch: dict, key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(patch)
    assert f"invalid config at {key}:" in str(exc.value)


async def test_broker_not_up_yet_spools_then_delivers(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    settings = make_settings(f"127.0.0.1:{port}", db_url)
    topic = f"{settings.leadflow_topic_prefix}interactions"
    broker = BundledBroker(port=port, log_path=tmp_path / "tansu.log")
    app = build_app(settings, make_config())
    try:
        async with app.router.lifespan_context(app):
            engine = app.state.runtime.engine
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                ids = []
                for i in range(5):
                    resp = await c.post(
                        "/v1/forms/newsletter/submissions", json={"email": f"early{i}@example.com"}
                    )
                    assert resp.status_code == 202, resp.text
                    ids.append(resp.json()["event_id"])
                assert await pending_count(engine, "capture") == 5
                # Still ready (capture spools), the broker reported as degraded.
                ready = await c.get("/readyz")
                assert ready.status_code == 200, ready.text
                assert ready.json()["degraded"] == ["broker unreachable"]
                broker.start()
                await app.state.runtime.wait_ready()
                events = await wait_for_events(
                    broker.bootstrap, topic, lambda evs: len(evs) >= 5, timeout=30
                )
                assert sorted(e.id for e in events) == sorted(ids)

                async def drained() -> bool:
                    return await pending_count(engine, "capture") == 0

                await wait_for(drained)
    finally:
        broker.stop()


async def test_503_when_neither_kafka_nor_database_works(pg_db_url: str) -> None:
    # No broker at all, and PostgreSQL behind a proxy that is cut: connections are refused, as
    # when the database host is down. Nothing can make the event durable, so nothing may be
    # stored or published, and the answer must say that retrying with the same key is safe.
    with TcpProxy("127.0.0.1", 5432) as proxy:
        proxied = pg_db_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
        assert proxied != pg_db_url
        app = build_app(make_settings("127.0.0.1:1", proxied), make_config())
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                proxy.cut()

                async def post() -> httpx.Response:
                    return await c.post(
                        "/v1/forms/newsletter/submissions",
                        json={"email": "a@b.co"},
                        headers={"Idempotency-Key": "k-1"},
                    )

                resp = await post()
                assert resp.status_code == 503
                assert resp.headers["content-type"] == "application/problem+json"
                assert "retry-after" in resp.headers
                assert "same Idempotency-Key" in resp.json()["detail"]
                proxy.restore()
                engine = create_engine(pg_db_url)
                try:
                    async with engine.connect() as conn:
                        assert (
                            await conn.execute(select(func.count()).select_from(outbox))
                        ).scalar_one() == 0
                        assert (
                            await conn.execute(select(func.count()).select_from(idempotency))
                        ).scalar_one() == 0
                finally:
                    await engine.dispose()

                # The database is back (Kafka still away): the retry with the same key is
                # spooled once, with the event id the key derives.
                async def accepted() -> httpx.Response | None:
                    again = await post()
                    return again if again.status_code == 202 else None

                again = await wait_for(accepted, timeout=20, interval=0.2)
                assert await pending_count(app.state.runtime.engine, "capture") == 1
                assert (await post()).json() == again.json()
                assert await pending_count(app.state.runtime.engine, "capture") == 1
