"""The consumer runner and the outbox on the real broker, on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.bus import ConsumerRunner, claim
from shared.db import create_engine
from shared.events import CloudEvent, derived_event_id
from shared.messaging_tables import processed_events
from shared.outbox import enqueue
from shared.runtime import Runtime
from shared.topics import Topics
from tests.support import make_settings, wait_for, wait_for_events


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
        echoes = [
            CloudEvent(
                type="io.test.echo",
                source="t",
                data={"of": e.id},
                id=derived_event_id(e.id, "echo"),
                key=e.key,
            )
            for e in events
        ]
        await enqueue(conn, "t", topics.leads, echoes)

    runtime = Runtime("t", settings, engine)
    runner = ConsumerRunner(
        settings=settings,
        engine=engine,
        topics=[topics.interactions],
        group_id="t-group",
        handler=handler,
        source="t",
        after_commit=runtime.relay.wake,
    )
    runtime.add_worker(runner)
    await runtime.start()
    try:
        await runtime.wait_ready()
        originals = [
            CloudEvent(type="io.test.in", source="t", data={"n": i}, key=f"k{i % 3}")
            for i in range(20)
        ]
        async with engine.begin() as conn:
            await enqueue(conn, "t", topics.interactions, originals)
            # the same event twice in the outbox is one row
            await enqueue(conn, "t", topics.interactions, originals[:2])
        runtime.relay.wake()
        echoes = await wait_for_events(kafka_bootstrap, topics.leads, lambda evs: len(evs) >= 20)
        assert sorted(e.data["of"] for e in echoes) == sorted(e.id for e in originals)
        assert sorted(seen) == sorted(e.id for e in originals)
        # A redelivered copy (same id) is not handled again.
        async with engine.begin() as conn:
            dup = CloudEvent(type="io.test.in", source="t", data={}, id=originals[0].id, key="k0")
            await enqueue(
                conn,
                "t",
                topics.interactions,
                [CloudEvent(type=dup.type, source="t", data={}, id="dup-wrapper", key="k0")],
            )
        await wait_for(lambda: _count(engine), what="wrapper processed")
        assert seen.count(originals[0].id) == 1
    finally:
        await runtime.stop()


async def _count(engine: object) -> bool:
    eng = create_engine(str(engine.url))  # type: ignore[attr-defined]
    try:
        async with eng.connect() as conn:
            n = (
                await conn.execute(select(func.count()).select_from(processed_events))
            ).scalar_one()
        return bool(n >= 21)
    finally:
        await eng.dispose()


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
