"""The outbox relay: refused rows are parked, not retried forever; one relay per source."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.bus import ensure_topics
from shared.db import create_engine
from shared.deadletters import list_deadletters, replay
from shared.events import CloudEvent, headers_dict
from shared.messaging_tables import outbox
from shared.outbox import OutboxRelay, enqueue, pending_count
from shared.topics import Topics
from tests.support import make_settings, read_topic, wait_for


class CountingProducer(AIOKafkaProducer):
    """A real producer that counts send() calls per event id."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sends: dict[str, int] = defaultdict(int)

    async def send(self, topic: str, value: Any = None, key: Any = None, **kw: Any) -> Any:  # type: ignore[override]
        self.sends[headers_dict(kw.get("headers")).get("ce_id", "?")] += 1
        return await super().send(topic, value=value, key=key, **kw)


async def test_relay_parks_a_refused_row_and_sends_the_rest_once(
    kafka_bootstrap: str, db_url: str
) -> None:
    settings = make_settings(kafka_bootstrap, db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    await ensure_topics(settings)
    engine = create_engine(db_url)
    first = CloudEvent(type="io.test.a", source="t", data={"n": 1}, key="k")
    big = CloudEvent(type="io.test.big", source="t", data={"blob": "x" * 20_000}, key="k")
    last = CloudEvent(type="io.test.a", source="t", data={"n": 2}, key="k")
    rows = [first, big, last]
    if engine.dialect.name == "sqlite":
        # SQLite stores a lone surrogate (escaped); orjson refuses to serialise it.
        rows.insert(2, CloudEvent(type="io.test.bad", source="t", data={"s": "\ud800"}, key="k"))
    async with engine.begin() as conn:
        await enqueue(conn, "t", topics.leads, rows)
    producer = CountingProducer(bootstrap_servers=kafka_bootstrap, max_request_size=4096)
    await producer.start()
    relay = OutboxRelay(engine, producer, "t")
    relay.deadletter_topic = topics.deadletter
    try:
        assert await relay.relay_once() == len(rows)
        while await relay.relay_once():  # the dead-letter notices
            pass
        assert await relay.relay_once() == 0
        assert await pending_count(engine, "t") == 0
        assert producer.sends[first.id] == 1 and producer.sends[last.id] == 1
        assert producer.sends[big.id] <= 1
        published = await read_topic(kafka_bootstrap, topics.leads)
        assert [e.id for e in published] == [first.id, last.id]
        parked = await list_deadletters(engine)
        assert [p["event_id"] for p in parked] == [r.id for r in rows if r not in (first, last)]
        assert parked[0]["kind"] == "outbox" and "MessageSize" in parked[0]["reason"]
        notices = await read_topic(kafka_bootstrap, topics.deadletter)
        assert sorted(n.data["event_id"] for n in notices) == sorted(p["event_id"] for p in parked)

        # Replay hands the row back to the relay; refused again, it is parked again (reopened).
        await replay(engine, parked[0]["id"])
        assert await pending_count(engine, "t") == 1
        assert await relay.relay_once() == 1
        assert await pending_count(engine, "t") == 0
        [again] = [p for p in await list_deadletters(engine) if p["id"] == parked[0]["id"]]
        assert again["replayed_at"] is None
        assert [e.id for e in await read_topic(kafka_bootstrap, topics.leads)] == [
            first.id,
            last.id,
        ]
    finally:
        await relay._release()
        await producer.stop()
        await engine.dispose()


class SlowProducer(AIOKafkaProducer):
    """A producer with 2 ms of latency per send, as over a real network."""

    async def send(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        await asyncio.sleep(0.002)
        return await super().send(*args, **kwargs)


async def _lock_holder_pid(engine: AsyncEngine) -> int | None:
    async with engine.connect() as conn:
        return (
            await conn.execute(
                text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database())"
                )
            )
        ).scalar()


async def test_two_replicas_relay_one_source_in_order(kafka_bootstrap: str, pg_db_url: str) -> None:
    """M2: two relays of one source; one is active, per-key order holds, nothing is lost or
    sent twice; when the active one dies, the other takes over."""
    settings = make_settings(kafka_bootstrap, pg_db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    await ensure_topics(settings)
    engines = [create_engine(pg_db_url), create_engine(pg_db_url)]
    producers = [SlowProducer(bootstrap_servers=kafka_bootstrap) for _ in engines]
    for p in producers:
        await p.start()
    relays = [
        OutboxRelay(e, p, "t", poll_seconds=0.05, batch_size=40)
        for e, p in zip(engines, producers, strict=True)
    ]
    tasks: list[asyncio.Task[None]] = []
    seq: dict[str, int] = defaultdict(int)

    async def burst(n: int) -> None:
        for _ in range(n // 50):
            batch = []
            for i in range(50):
                key = f"k{i % 5}"
                seq[key] += 1
                batch.append(
                    CloudEvent(type="io.test.seq", source="t", data={"seq": seq[key]}, key=key)
                )
            async with engines[0].begin() as conn:
                await enqueue(conn, "t", topics.leads, batch)
            for r in relays:
                r.wake()

    async def drained() -> bool:
        return await pending_count(engines[0], "t") == 0

    def check_order(events: list[CloudEvent], total: int) -> None:
        ids = [e.id for e in events]
        assert len(ids) == len(set(ids)) == total
        by_key: dict[str, list[int]] = defaultdict(list)
        for e in events:
            by_key[e.key or ""].append(e.data["seq"])
        for key, seqs in by_key.items():
            assert seqs == list(range(1, len(seqs) + 1)), key

    try:
        # A backlog (a drain after an outage), then both replicas' relays start at once.
        await burst(600)
        tasks.extend(asyncio.create_task(r.run()) for r in relays)
        await wait_for(drained, what="first 600 published", timeout=60)
        check_order(await read_topic(kafka_bootstrap, topics.leads, timeout=15), 600)
        assert sum(r.active for r in relays) == 1
        holder = next(i for i, r in enumerate(relays) if r.active)
        standby = 1 - holder

        # The holder dies: its session ends (the lock goes with it) and it runs no more.
        pid = await _lock_holder_pid(engines[standby])
        assert pid is not None
        tasks[holder].cancel()
        async with engines[standby].connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await tasks[holder]
        await burst(300)
        await wait_for(drained, what="the standby took over", timeout=60)
        assert relays[standby].active

        check_order(await read_topic(kafka_bootstrap, topics.leads, timeout=15), 900)
        async with engines[0].connect() as conn:
            sent = (
                await conn.execute(
                    select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_not(None))
                )
            ).scalar_one()
        assert sent == 900
    finally:
        for r in relays:
            await r.stop()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(t, 10)
        for p in producers:
            await p.stop()
        for engine in engines:
            await engine.dispose()


@pytest.mark.parametrize("source", ["t"])
async def test_standby_relay_publishes_nothing(
    kafka_bootstrap: str, pg_db_url: str, source: str
) -> None:
    """While another session holds the source's lock, relay_once publishes nothing."""
    settings = make_settings(kafka_bootstrap, pg_db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    engine = create_engine(pg_db_url)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    holder = OutboxRelay(engine, producer, source)
    standby = OutboxRelay(engine, producer, source)
    try:
        async with engine.begin() as conn:
            await enqueue(conn, source, topics.leads, [CloudEvent(type="a", source="t", data={})])
        assert await holder._leader() is not None
        assert await standby.relay_once() == 0
        assert not standby.active
        assert await pending_count(engine, source) == 1
        assert await holder.relay_once() == 1
    finally:
        await holder._release()
        await standby._release()
        await producer.stop()
        await engine.dispose()


class TickingProducer(AIOKafkaProducer):
    """A real producer that notes, at each send(), how often the event loop has let other
    tasks run so far (see the test below)."""

    def __init__(self, ticks: list[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ticks = ticks
        self.seen: list[int] = []

    async def send(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.seen.append(self.ticks[0])
        return await super().send(*args, **kwargs)


async def test_a_pass_hands_all_its_rows_to_the_producer_without_yielding(
    kafka_bootstrap: str, pg_db_url: str
) -> None:
    """The producer sends what accumulated whenever its sender task runs: a pass that let the
    loop run between rows (a wait_for per row did) sent almost every row in a produce request
    of its own, about 2.5 times the relay's CPU per row."""
    settings = make_settings(kafka_bootstrap, pg_db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    await ensure_topics(settings)
    engine = create_engine(pg_db_url)
    rows = [CloudEvent(type="io.test.a", source="t", data={"n": i}, key=f"k{i}") for i in range(50)]
    async with engine.begin() as conn:
        await enqueue(conn, "t", topics.leads, rows)
    ticks = [0]

    async def tick() -> None:
        while True:
            ticks[0] += 1
            await asyncio.sleep(0)

    producer = TickingProducer(ticks, bootstrap_servers=kafka_bootstrap)
    await producer.start()
    await producer.client._wait_on_metadata(topics.leads)  # not a pass's business
    relay = OutboxRelay(engine, producer, "t")
    ticker = asyncio.create_task(tick())
    try:
        assert await relay.relay_once() == len(rows)
        assert len(producer.seen) == len(rows)
        assert min(producer.seen) == max(producer.seen)
    finally:
        ticker.cancel()
        await relay._release()
        await producer.stop()
        await engine.dispose()


class SilentProducer(AIOKafkaProducer):
    """A producer whose send() never returns, as with a broker that stopped answering."""

    async def send(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        await asyncio.Event().wait()


async def test_a_broker_that_never_answers_fails_the_pass_and_keeps_the_rows(
    kafka_bootstrap: str, db_url: str
) -> None:
    settings = make_settings(kafka_bootstrap, db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    engine = create_engine(db_url)
    rows = [CloudEvent(type="io.test.a", source="t", data={"n": i}, key="k") for i in range(3)]
    async with engine.begin() as conn:
        await enqueue(conn, "t", topics.leads, rows)
    producer = SilentProducer(bootstrap_servers=kafka_bootstrap)
    relay = OutboxRelay(engine, producer, "t", send_timeout=0.3)
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(relay.relay_once(), 10)
        assert await pending_count(engine, "t") == len(rows)
    finally:
        await relay._release()
        await engine.dispose()
