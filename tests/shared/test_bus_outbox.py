"""The consumer runner and the outbox on the real broker, on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.bus import claim
from shared.db import create_engine
from shared.events import CloudEvent
from shared.messaging_tables import processed_events
from shared.outbox import enqueue
from shared.runtime import Runtime
from shared.topics import Topics
from tests.support import echoes, make_settings, running_consumer, wait_for_events


async def test_claim_returns_only_new_ids(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            assert await claim(conn, "c", ["a", "b"]) == {"a", "b"}
        async with engine.begin() as conn:
            assert await claim(conn, "c", ["b", "c", "c"]) == {"c"}
            assert await claim(conn, "other", ["a"]) == {"a"}
    finally:
        await engine.dispose()


async def test_events_flow_through_outbox_and_consumer_once(
    kafka_bootstrap: str, db_url: str
) -> None:
    settings = make_settings(kafka_bootstrap, db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    engine = create_engine(db_url)
    seen: list[str] = []

    async def handler(conn: AsyncConnection, events: Sequence[CloudEvent]) -> None:
        seen.extend(e.id for e in events)
        await enqueue(conn, "t", topics.leads, echoes(events))

    async with running_consumer(settings, engine, handler, "t-group") as runtime:
        originals = [
            CloudEvent(type="io.test.in", source="t", data={"n": i}, key=f"k{i % 3}")
            for i in range(20)
        ]
        async with engine.begin() as conn:
            await enqueue(conn, "t", topics.interactions, originals)
            # the same event twice in the outbox is one row
            await enqueue(conn, "t", topics.interactions, originals[:2])
        runtime.relay.wake()
        out = await wait_for_events(kafka_bootstrap, topics.leads, lambda evs: len(evs) >= 20)
        assert sorted(e.data["of"] for e in out) == sorted(e.id for e in originals)
        assert sorted(seen) == sorted(e.id for e in originals)

        # Kafka redelivers the first event (same ce_id), then a marker follows it.
        marker = CloudEvent(type="io.test.in", source="t", data={"marker": True}, key="k0")
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for ev in (originals[0], marker):
                await producer.send_and_wait(
                    topics.interactions, ev.value(), key=b"k0", headers=ev.headers()
                )
        finally:
            await producer.stop()
        out = await wait_for_events(
            kafka_bootstrap, topics.leads, lambda evs: any(e.data["of"] == marker.id for e in evs)
        )
        assert seen.count(originals[0].id) == 1
        assert [e.data["of"] for e in out].count(originals[0].id) == 1
        async with engine.connect() as conn:
            inbox = (
                await conn.execute(select(func.count()).select_from(processed_events))
            ).scalar_one()
        assert inbox == 21


async def test_relay_keeps_rows_until_broker_acknowledges(db_url: str) -> None:
    # No broker at all: rows stay pending, nothing is lost.
    settings = make_settings("127.0.0.1:1", db_url)
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            await enqueue(conn, "t", "x", [CloudEvent(type="a", source="t", data={})])
        from shared.outbox import pending_count

        assert await pending_count(engine, "t") == 1
        runtime = Runtime("t", settings, engine)
        await runtime.start()
        await asyncio.sleep(0.3)
        assert not runtime.kafka_ready.is_set()
        assert await pending_count(runtime.engine, "t") == 1
        await runtime.stop()
    finally:
        await engine.dispose()
