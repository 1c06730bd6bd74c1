"""docs/capture.md "Never lost, never doubled": with the database unreachable and Kafka up, capture
still accepts, straight to Kafka, and the event is there exactly once
(services/capture/intake.py)."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select

from services.capture.main import build_app
from shared.db import create_engine
from shared.messaging_tables import outbox
from shared.topics import Topics
from tests.capture.conftest import make_config
from tests.support import make_settings, read_topic, wait_for_events
from tests.tcpproxy import TcpProxy


async def test_database_down_kafka_up_still_accepts_once(
    kafka_bootstrap: str, pg_db_url: str
) -> None:
    with TcpProxy("127.0.0.1", 5432) as proxy:
        proxied = pg_db_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
        assert proxied != pg_db_url
        settings = make_settings(kafka_bootstrap, proxied)
        topic = Topics(settings.leadflow_topic_prefix).interactions
        app = build_app(settings, make_config())
        async with app.router.lifespan_context(app):
            await app.state.runtime.wait_ready()
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                proxy.cut()  # the database host is down: connections refused
                keyed = await c.post(
                    "/v1/forms/newsletter/submissions",
                    json={"email": "keyed@example.com"},
                    headers={"Idempotency-Key": "db-down-1"},
                )
                plain = await c.post(
                    "/v1/forms/newsletter/submissions", json={"email": "plain@example.com"}
                )
                assert keyed.status_code == 202, keyed.text
                assert plain.status_code == 202, plain.text
                ids = {keyed.json()["event_id"], plain.json()["event_id"]}

                # Both are on Kafka while the database is still down (nothing could be spooled).
                await wait_for_events(
                    kafka_bootstrap, topic, lambda evs: ids <= {e.id for e in evs}, timeout=20
                )
                proxy.restore()
                # Nothing was left in the spool for the relay to send a second time.
                engine = create_engine(pg_db_url)
                try:
                    async with engine.connect() as conn:
                        spooled = (
                            await conn.execute(
                                select(func.count())
                                .select_from(outbox)
                                .where(outbox.c.event_id.in_(list(ids)))
                            )
                        ).scalar_one()
                    assert spooled == 0
                finally:
                    await engine.dispose()
        events = await read_topic(kafka_bootstrap, topic)
        assert sorted(e.id for e in events) == sorted(ids)  # each exactly once
