"""A consumer outlives database outages, pool exhaustion and failed commits, and says so.

The outage is real: PostgreSQL behind a TCP proxy that drops every connection and refuses new
ones for 8 s while a consumer reads from the real broker. Nothing may be lost, applied twice or
dead-lettered, readiness must be red during the outage and green after, without a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.bus import ConsumerRunner, ensure_topics
from shared.db import create_engine
from shared.events import CloudEvent
from shared.messaging_tables import deadletters, processed_events
from shared.runtime import Runtime
from shared.settings import Settings
from shared.topics import Topics
from tests.support import make_settings, read_topic, wait_for
from tests.tcpproxy import TcpProxy


async def _produce(bootstrap: str, topic: str, events: Sequence[CloudEvent]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for ev in events:
            await producer.send_and_wait(
                topic, ev.value(), key=(ev.key or "k").encode(), headers=ev.headers()
            )
    finally:
        await producer.stop()


def _events(n: int, tag: str) -> list[CloudEvent]:
    return [
        CloudEvent(type="io.test.in", source="t", data={"tag": tag, "n": i}, key=f"k{i % 3}")
        for i in range(n)
    ]


async def _scalar(engine: AsyncEngine, query: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def _applied(engine: AsyncEngine) -> tuple[int, int]:
    """(rows, distinct event ids) in the test's effect table."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(text("SELECT count(*), count(DISTINCT event_id) FROM applied"))
        ).one()
    return int(row[0]), int(row[1])


async def _make_applied_table(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            # No unique key on purpose: an event applied twice shows up as two rows.
            await conn.execute(text("CREATE TABLE applied (event_id VARCHAR(200) NOT NULL)"))
    finally:
        await engine.dispose()


async def _record_effects(conn: AsyncConnection, events: Sequence[CloudEvent]) -> None:
    for ev in events:
        await conn.execute(text("INSERT INTO applied (event_id) VALUES (:e)"), {"e": ev.id})


class ShortPollInterval(ConsumerRunner):
    """A consumer whose group drops it after 3 s without a poll (Kafka's default is 300 s),
    so that an 8 s outage outlasts ``max_poll_interval_ms``."""

    def _make_consumer(self) -> AIOKafkaConsumer:
        consumer = super()._make_consumer()
        consumer._max_poll_interval_ms = 3000  # read when start() makes the coordinator
        return consumer


def _runtime(
    settings: Settings,
    engine: AsyncEngine,
    consumer_engine: AsyncEngine | None,
    group: str,
    runner_cls: type[ConsumerRunner] = ConsumerRunner,
) -> tuple[Runtime, ConsumerRunner]:
    """A runtime with one consumer; ``consumer_engine`` None: the runtime's own consumer
    engine, configured as in production (no ping before each batch)."""
    runtime = Runtime("t", settings, engine)
    runner = runner_cls(
        settings=settings,
        engine=consumer_engine or runtime.consumer_engine,
        topics=[Topics(settings.leadflow_topic_prefix).interactions],
        group_id=group,
        handler=_record_effects,
        source="t",
        after_commit=runtime.relay.wake,
        max_backoff=1.0,
    )
    runtime.add_worker(runner)
    return runtime, runner


@pytest.mark.parametrize(
    "runner_cls", [ConsumerRunner, ShortPollInterval], ids=["default", "past-max-poll-interval"]
)
async def test_consumer_waits_out_a_database_outage(
    kafka_bootstrap: str, pg_db_url: str, runner_cls: type[ConsumerRunner]
) -> None:
    await _make_applied_table(pg_db_url)
    parts = urlsplit(pg_db_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    proxied = pg_db_url.replace(parts.netloc, f"{parts.username}@127.0.0.1:{proxy.port}")
    settings = make_settings(kafka_bootstrap, proxied)
    topics = Topics(settings.leadflow_topic_prefix)
    engine = create_engine(proxied)
    direct = create_engine(pg_db_url)
    runtime, runner = _runtime(settings, engine, None, "t-outage", runner_cls)
    await runtime.start()
    try:
        await runtime.wait_ready()
        await wait_for(lambda: _ready(runtime), what="ready before the outage")
        before, during, after = _events(5, "before"), _events(5, "during"), _events(5, "after")
        await _produce(kafka_bootstrap, topics.interactions, before)
        await wait_for(lambda: _has_applied(direct, 5), what="5 applied before the outage")

        proxy.cut()
        cut_at = time.monotonic()
        await _produce(kafka_bootstrap, topics.interactions, during)
        report = await wait_for(
            lambda: _not_ready(runtime), what="readiness red during the outage", timeout=6
        )
        assert report is not None
        assert "database unreachable" in report["problems"]
        # The consumer itself says it is waiting (it holds the batch, it does not skip it).
        await wait_for(
            lambda: _async(runner.waiting_for is not None), what="consumer waiting", timeout=6
        )
        await asyncio.sleep(max(0.0, 8.0 - (time.monotonic() - cut_at)))  # the outage lasts 8 s
        assert (await _applied(direct))[0] == 5
        assert runner.waiting_for is not None
        proxy.restore()

        await _produce(kafka_bootstrap, topics.interactions, after)
        await wait_for(lambda: _has_applied(direct, 15), what="all 15 applied", timeout=60)
        await wait_for(lambda: _ready(runtime), what="ready again by itself", timeout=30)
        # Barrier, then exactly once: a marker behind everything on every key.
        markers = _events(3, "marker")
        await _produce(kafka_bootstrap, topics.interactions, markers)
        await wait_for(lambda: _has_applied(direct, 18), what="markers applied")
        rows, distinct = await _applied(direct)
        assert (rows, distinct) == (18, 18)
        assert await _scalar(direct, select(func.count()).select_from(deadletters)) == 0
        assert await read_topic(kafka_bootstrap, topics.deadletter) == []
        assert (
            await _scalar(
                direct,
                select(func.count())
                .select_from(processed_events)
                .where(processed_events.c.consumer == "t-outage"),
            )
            == 18
        )
    finally:
        proxy.restore()
        await runtime.stop()
        await direct.dispose()
        proxy.stop()


async def test_pool_timeout_is_waited_out_not_dead_lettered(
    kafka_bootstrap: str, db_url: str
) -> None:
    await _make_applied_table(db_url)
    settings = make_settings(kafka_bootstrap, db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    engine = create_engine(db_url)
    tight = create_engine(db_url, pool_size=1, max_overflow=0, pool_timeout=0.3)
    runtime, runner = _runtime(settings, engine, tight, "t-pool")
    await runtime.start()
    try:
        await runtime.wait_ready()
        async with tight.connect() as hog:
            await hog.execute(text("SELECT 1"))
            await _produce(kafka_bootstrap, topics.interactions, _events(3, "pool"))
            # The consumer cannot get a connection: it must wait, not park the events.
            await wait_for(
                lambda: _async(runner.waiting_for is not None), what="consumer waiting for pool"
            )
            assert "TimeoutError" in str(runner.waiting_for)
            await asyncio.sleep(1.0)  # several pool timeouts in a row
        await wait_for(lambda: _has_applied(engine, 3), what="applied once the pool frees")
        markers = _events(3, "marker")
        await _produce(kafka_bootstrap, topics.interactions, markers)
        await wait_for(lambda: _has_applied(engine, 6), what="markers applied")
        assert await _applied(engine) == (6, 6)
        assert await _scalar(engine, select(func.count()).select_from(deadletters)) == 0
    finally:
        await runtime.stop()
        await tight.dispose()


async def test_a_failed_commit_does_not_stop_consumption(kafka_bootstrap: str, db_url: str) -> None:
    await _make_applied_table(db_url)
    settings = make_settings(kafka_bootstrap, db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    engine = create_engine(db_url)
    runtime, runner = _runtime(settings, engine, engine, "t-commit")
    await ensure_topics(settings)
    # Join the group first, then make the next commit fail as after a rebalance.
    await runner.start()
    consumer = runner._consumer
    assert consumer is not None
    real_commit = consumer.commit
    failures: list[int] = []

    async def commit_failing_once(*args: Any, **kwargs: Any) -> None:
        if not failures:
            failures.append(1)
            raise CommitFailedError("injected: the group rebalanced before the commit")
        await real_commit(*args, **kwargs)

    consumer.commit = commit_failing_once  # type: ignore[method-assign]
    await runtime.start()
    try:
        await runtime.wait_ready()
        await _produce(kafka_bootstrap, topics.interactions, _events(5, "first"))
        await wait_for(lambda: _has_applied(engine, 5), what="first 5")
        await _produce(kafka_bootstrap, topics.interactions, _events(10, "later"))
        await wait_for(lambda: _has_applied(engine, 15), what="later 10 applied", timeout=30)
        assert failures == [1]
        assert await _applied(engine) == (15, 15)
        await wait_for(lambda: _ready(runtime), what="ready")
    finally:
        await runtime.stop()


async def test_readiness_names_a_dead_consumer_and_recovers(
    kafka_bootstrap: str, db_url: str
) -> None:
    settings = make_settings(kafka_bootstrap, db_url, leadflow_consumer_stall_seconds=1.0)
    engine = create_engine(db_url)
    runtime, runner = _runtime(settings, engine, engine, "t-ready")
    await runtime.start()
    try:
        await runtime.wait_ready()
        await wait_for(lambda: _ready(runtime), what="ready")
        # The consumer's loop crashes on every poll for a while (a bug, a broker quirk):
        # readiness names it; once the cause is gone the supervisor's restart makes it green.
        broken = {"on": True}
        real = runner._make_consumer

        def make() -> Any:
            consumer = real()
            real_getmany = consumer.getmany

            async def getmany(*a: Any, **k: Any) -> Any:
                if broken["on"]:
                    raise RuntimeError("injected poll failure")
                return await real_getmany(*a, **k)

            consumer.getmany = getmany  # type: ignore[method-assign]
            return consumer

        runner._make_consumer = make  # type: ignore[method-assign]
        # Force a restart so that the next consumer is a broken one.
        assert runner._consumer is not None
        await runner._consumer.stop()
        report = await wait_for(lambda: _not_ready(runtime), what="readiness red")
        assert report is not None
        assert any("consumer t-ready" in p for p in report["problems"]), report
        broken["on"] = False
        await wait_for(lambda: _ready(runtime), what="green again by itself", timeout=30)
    finally:
        await runtime.stop()


async def _has_applied(engine: AsyncEngine, n: int) -> bool:
    return (await _applied(engine))[0] >= n


async def _ready(runtime: Runtime) -> bool:
    ok, _ = await runtime.readiness()
    return ok


async def _not_ready(runtime: Runtime) -> dict[str, Any] | None:
    """The readiness report while not ready, else None."""
    ok, report = await runtime.readiness()
    return None if ok else report


def _async(value: bool) -> Any:
    async def probe() -> bool:
        return value

    return probe()
