"""Dead letters: what the handler cannot process is parked once, visible, and replayable.

Poison records must never stop the group (PostgreSQL refuses NUL and over-long ids, so the
dead-letter path is tested there above all), and a replay must apply the event exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.bus import ConsumerRunner
from shared.db import create_engine
from shared.deadletters import decode_bytes, get_deadletter, list_deadletters, replay
from shared.events import CloudEvent
from shared.messaging_tables import deadletters, outbox
from shared.outbox import enqueue
from shared.runtime import Runtime
from shared.topics import Topics
from tests.support import (
    echoes,
    make_settings,
    read_topic,
    running_consumer,
    wait_for,
    wait_for_events,
)


async def _send(bootstrap: str, topic: str, records: Sequence[tuple[Any, Any, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


def _record(ev: CloudEvent) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    return (ev.key or "k").encode(), ev.value(), ev.headers()


async def _count(engine: AsyncEngine, table: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def _settled(bootstrap: str, topic: str, engine: AsyncEngine, source: str = "t") -> None:
    """Wait until the outbox of ``source`` is empty, so a topic read sees all it will get."""

    async def drained() -> bool:
        async with engine.connect() as conn:
            pending = await conn.execute(
                select(func.count())
                .select_from(outbox)
                .where(outbox.c.sent_at.is_(None), outbox.c.source == source)
            )
            return pending.scalar_one() == 0

    await wait_for(drained, what="outbox drained")


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

    try:
        async with running_consumer(settings, engine, handler, "t-dl"):
            good = [
                CloudEvent(type="io.test.in", source="t", data={"n": i}, key="k") for i in range(5)
            ]
            poison = CloudEvent(type="io.test.in", source="t", data={"poison": "raise"}, key="k")
            conflict = CloudEvent(
                type="io.test.in", source="t", data={"poison": "conflict"}, key="k"
            )
            await _send(
                kafka_bootstrap,
                topics.interactions,
                [
                    *(_record(e) for e in [*good[:2], poison, *good[2:4], conflict, good[4]]),
                    (b"k", b"not json", [("ce_id", b"1")]),
                ],
            )

            dead = await wait_for_events(
                kafka_bootstrap, topics.deadletter, lambda evs: len(evs) >= 3
            )
            ok = await wait_for_events(kafka_bootstrap, topics.leads, lambda evs: len(evs) >= 5)
            assert sorted(e.data["of"] for e in ok) == sorted(e.id for e in good)
            # Settle before counting: a marker behind everything on the same key is processed,
            # and the outbox is drained, so a late duplicate dead letter would show up now.
            marker = CloudEvent(type="io.test.in", source="t", data={"marker": 1}, key="k")
            await _send(kafka_bootstrap, topics.interactions, [_record(marker)])
            await wait_for_events(
                kafka_bootstrap,
                topics.leads,
                lambda evs: any(e.data["of"] == marker.id for e in evs),
            )
            await _settled(kafka_bootstrap, topics.deadletter, engine)
            dead = await read_topic(kafka_bootstrap, topics.deadletter)
            assert len(dead) == 3, [e.type for e in dead]
            reasons = {e.extensions.get("deadletterreason", "") for e in dead}
            assert any("cannot score this" in r for r in reasons)
            assert any("IntegrityError" in r for r in reasons)
            assert any("missing ce_" in r for r in reasons)
            # No SQL or parameters in what goes to Kafka.
            assert not any("INSERT" in r or "parameters" in r for r in reasons)
            assert {e.id for e in dead} >= {
                f"deadletter:t-dl:{poison.id}",
                f"deadletter:t-dl:{conflict.id}",
            }
            # A persistent unique violation is retried a bounded number of times, not forever:
            # at most three times within its batch, then three times alone.
            assert attempts[conflict.id] <= 6
            rows = await list_deadletters(engine)
            assert len(rows) == 3
            assert {r["kind"] for r in rows} == {"event", "record"}
            assert {r["event_id"] for r in rows if r["kind"] == "event"} == {poison.id, conflict.id}
    finally:
        await engine.dispose()


async def test_poison_records_do_not_stop_the_group_on_postgresql(
    kafka_bootstrap: str, pg_db_url: str
) -> None:
    settings = make_settings(kafka_bootstrap, pg_db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    engine = create_engine(pg_db_url)
    applied: list[str] = []

    async def handler(conn: AsyncConnection, events: Sequence[CloudEvent]) -> None:
        for ev in events:
            if ev.data.get("fail"):
                raise ValueError("handler refuses this one")
            applied.append(ev.id)
        await enqueue(conn, "t", topics.leads, echoes(events))

    valid = CloudEvent(type="io.test.in", source="t", data={}, id="v").headers()
    no_id = [h for h in valid if h[0] != "ce_id"]
    poison: list[tuple[Any, Any, Any]] = [
        # Avro with Schema Registry framing: magic byte 0, schema id, NULs; no ce_ headers.
        (b"k", b"\x00\x00\x00\x00\x07\x02\x00avro\x00", []),
        # A 300-character id (the inbox and outbox keep 200).
        (b"k", b"{}", [*no_id, ("ce_id", b"u" * 300)]),
        # No CloudEvents headers at all, JSON value.
        (b"k", b'{"email": "dana@acme.example"}', [("content-type", b"application/json")]),
        # Invalid JSON with every header.
        (b"k", b"{not json", valid),
        # A binary key with NUL (another partition) and a NUL-laden value.
        (b"\x00\xffbin", b"\x00\x00", []),
    ]
    # A well-formed event whose handler fails, with NUL in its data (JSONB refuses \u0000).
    failing = CloudEvent(
        type="io.test.in", source="t", data={"fail": True, "note": "a\u0000b"}, key="k"
    )
    good = [CloudEvent(type="io.test.in", source="t", data={"n": i}, key="k") for i in range(10)]
    try:
        async with running_consumer(settings, engine, handler, "t-poison"):
            await _send(
                kafka_bootstrap,
                topics.interactions,
                [*poison, _record(failing), *(_record(e) for e in good)],
            )
            out = await wait_for_events(
                kafka_bootstrap, topics.leads, lambda evs: len({e.data["of"] for e in evs}) >= 10
            )
            assert {e.data["of"] for e in out} == {e.id for e in good}
            await wait_for(
                lambda: _count(engine, deadletters), what="dead letters written", timeout=30
            )
            await wait_for(
                lambda: _has(engine, len(poison) + 1), what="all poison parked", timeout=30
            )
            await _settled(kafka_bootstrap, topics.deadletter, engine)
            on_topic = await read_topic(kafka_bootstrap, topics.deadletter)
            assert len(on_topic) == len(poison) + 1
            rows = await list_deadletters(engine)
            assert len(rows) == len(poison) + 1
            assert sorted(applied) == sorted(e.id for e in good)
            # What was stored gives back the original bytes.
            for row in rows:
                full = await get_deadletter(engine, row["id"])
                assert full is not None
                if full["kafka_partition"] is not None and full["kind"] == "record":
                    value = decode_bytes(full["value"], full["value_encoding"])
                    assert value in {v for _, v, _ in poison}
            event_rows = [r for r in rows if r["kind"] == "event"]
            assert [r["event_id"] for r in event_rows] == [failing.id]
            copy = next(e for e in on_topic if e.id == f"deadletter:t-poison:{failing.id}")
            assert copy.data["note"] == "ab"
    finally:
        await engine.dispose()


async def _has(engine: AsyncEngine, n: int) -> bool:
    return await _count(engine, deadletters) >= n


async def test_replay_applies_a_fixed_event_exactly_once(kafka_bootstrap: str, db_url: str) -> None:
    """Dead-lettered because the handler failed; handler fixed; replayed twice: applied once.

    A second consumer group on the same topic processed the original and must ignore the replay.
    """
    settings = make_settings(kafka_bootstrap, db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    engine = create_engine(db_url)
    broken = {"yes": True}
    applied: dict[str, list[str]] = {"fragile": [], "other": []}

    def handler_for(group: str) -> Any:
        async def handler(conn: AsyncConnection, events: Sequence[CloudEvent]) -> None:
            for ev in events:
                if group == "fragile" and ev.data.get("needs_fix") and broken["yes"]:
                    raise RuntimeError("bug in the handler")
            # Record the effect in the transaction: it counts only if it commits.
            for ev in events:
                await conn.execute(
                    text("INSERT INTO processed_events VALUES (:c, :e, '2026-01-01')"),
                    {"c": f"applied-{group}", "e": ev.id},
                )
            applied[group].extend(ev.id for ev in events)
            await enqueue(conn, "t", topics.leads, echoes(events, f"io.test.{group}"))

        return handler

    runtime = Runtime("t", settings, engine)
    for group in ("fragile", "other"):
        runtime.add_worker(
            ConsumerRunner(
                settings=settings,
                engine=engine,
                topics=[topics.interactions],
                group_id=group,
                handler=handler_for(group),
                source="t",
                after_commit=runtime.relay.wake,
            )
        )
    target = CloudEvent(type="io.test.in", source="t", data={"needs_fix": True}, key="k")
    await runtime.start()
    try:
        await runtime.wait_ready()
        await _send(kafka_bootstrap, topics.interactions, [_record(target)])
        await wait_for(lambda: _has(engine, 1), what="dead letter")
        await wait_for(_async(lambda: target.id in applied["other"]), what="other group")
        [dead] = await list_deadletters(engine)
        assert dead["consumer"] == "fragile" and dead["event_id"] == target.id
        assert target.id not in applied["fragile"]

        broken["yes"] = False
        first = await replay(engine, dead["id"])
        second = await replay(engine, dead["id"])
        assert first == second
        runtime.relay.wake()
        await wait_for(_async(lambda: target.id in applied["fragile"]), what="replay applied")
        # Barrier: a later event on the same key went through both groups.
        marker = CloudEvent(type="io.test.in", source="t", data={"m": 1}, key="k")
        await _send(kafka_bootstrap, topics.interactions, [_record(marker)])
        await wait_for(
            _async(lambda: marker.id in applied["fragile"] and marker.id in applied["other"]),
            what="marker",
        )
        # The original redelivered after the fix is a duplicate too.
        await _send(kafka_bootstrap, topics.interactions, [_record(target)])
        marker2 = CloudEvent(type="io.test.in", source="t", data={"m": 2}, key="k")
        await _send(kafka_bootstrap, topics.interactions, [_record(marker2)])
        await wait_for(
            _async(lambda: marker2.id in applied["fragile"] and marker2.id in applied["other"]),
            what="marker 2",
        )
        async with engine.connect() as conn:
            effects = (
                await conn.execute(
                    text(
                        "SELECT consumer, count(*) FROM processed_events"
                        " WHERE event_id = :e AND consumer LIKE 'applied-%' GROUP BY consumer"
                    ),
                    {"e": target.id},
                )
            ).all()
            replays = (
                await conn.execute(
                    select(func.count()).select_from(outbox).where(outbox.c.event_id == first)
                )
            ).scalar_one()
        assert sorted(tuple(r) for r in effects) == [("applied-fragile", 1), ("applied-other", 1)]
        assert replays == 1
        assert applied["fragile"].count(target.id) == 1
        assert applied["other"].count(target.id) == 1
        [after] = await list_deadletters(engine, include_replayed=True)
        assert after["replay_event_id"] == first and after["replayed_at"] is not None
        assert await list_deadletters(engine) == []
    finally:
        await runtime.stop()


def _async(check: Any) -> Any:
    async def probe() -> bool:
        await asyncio.sleep(0)
        return bool(check())

    return probe
