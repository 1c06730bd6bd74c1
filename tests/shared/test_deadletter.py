"""Events the handler cannot process are dead-lettered once; the rest of the batch goes on."""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db import create_engine
from shared.events import CloudEvent
from shared.outbox import enqueue
from shared.topics import Topics
from tests.support import echoes, make_settings, running_consumer, wait_for_events


async def test_poison_and_undecodable_events_are_dead_lettered_once(
    kafka_bootstrap: str, db_url: str
) -> None:
    settings = make_settings(kafka_bootstrap, db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    engine = create_engine(db_url)
    attempts: dict[str, int] = {}

    async def handler(conn: AsyncConnection, events: Sequence[CloudEvent]) -> None:
        for ev in events:
            attempts[ev.id] = attempts.get(ev.id, 0) + 1
            if ev.data.get("poison") == "raise":
                raise ValueError("cannot score this")
            if ev.data.get("poison") == "conflict":
                # A unique violation that no retry can fix (not a concurrent claim).
                await conn.execute(
                    text("INSERT INTO processed_events VALUES ('x', 'x', '2026-01-01')")
                )
                await conn.execute(
                    text("INSERT INTO processed_events VALUES ('x', 'x', '2026-01-01')")
                )
        await enqueue(conn, "t", topics.leads, echoes(events, "io.test.ok"))

    async with running_consumer(settings, engine, handler, "t-dl"):
        good = [CloudEvent(type="io.test.in", source="t", data={"n": i}, key="k") for i in range(5)]
        poison = CloudEvent(type="io.test.in", source="t", data={"poison": "raise"}, key="k")
        conflict = CloudEvent(type="io.test.in", source="t", data={"poison": "conflict"}, key="k")
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for ev in [*good[:2], poison, *good[2:4], conflict, good[4]]:
                await producer.send_and_wait(
                    topics.interactions, ev.value(), key=b"k", headers=ev.headers()
                )
            await producer.send_and_wait(
                topics.interactions, b"not json", key=b"k", headers=[("ce_id", b"1")]
            )
        finally:
            await producer.stop()

        dead = await wait_for_events(kafka_bootstrap, topics.deadletter, lambda evs: len(evs) >= 3)
        ok = await wait_for_events(kafka_bootstrap, topics.leads, lambda evs: len(evs) >= 5)
        assert sorted(e.data["of"] for e in ok) == sorted(e.id for e in good)
        reasons = {e.extensions.get("deadletterreason", "") for e in dead}
        assert len(dead) == 3, [e.type for e in dead]
        assert any("cannot score this" in r for r in reasons)
        assert any("IntegrityError" in r for r in reasons)
        assert any("missing ce_" in r for r in reasons)
        assert {e.id for e in dead} >= {
            f"deadletter:t-dl:{poison.id}",
            f"deadletter:t-dl:{conflict.id}",
        }
        # A persistent unique violation is retried a bounded number of times, not forever.
        assert attempts[conflict.id] <= 4
