"""docs/operations.md "Readiness tells the truth": ``/readyz`` is red while a consumer has not
polled Kafka for ``LEADFLOW_CONSUMER_STALL_SECONDS`` or the outbox relay has been failing that long,
and turns green again by itself once the cause is gone (shared/runtime.py ``Runtime.readiness``)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka.errors import KafkaConnectionError
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db import create_engine
from shared.events import CloudEvent
from shared.outbox import enqueue, pending_count, publish
from shared.runtime import Runtime
from shared.topics import Topics
from tests.support import make_settings, running_consumer, wait_for


async def _problems(runtime: Runtime) -> list[str] | None:
    """The readiness problems while not ready, else None."""
    ok, report = await runtime.readiness()
    return None if ok else list(report["problems"])


async def _ready(runtime: Runtime) -> bool:
    ok, _ = await runtime.readiness()
    return ok


def _event(n: int) -> CloudEvent:
    return CloudEvent(type="io.test.ping", source="t", data={"n": n}, key=f"k{n}")


async def test_a_stalled_consumer_turns_readiness_red_then_green(
    kafka_bootstrap: str, pg_db_url: str
) -> None:
    # PostgreSQL only: on SQLite the stuck handler's open transaction holds the write lock, and
    # the readiness database check (its connection begins IMMEDIATE) then waits out SQLite's
    # 30 s busy timeout, so readiness takes that long to answer at all.
    settings = make_settings(kafka_bootstrap, pg_db_url, leadflow_consumer_stall_seconds=1.0)
    engine = create_engine(pg_db_url)
    gate = asyncio.Event()

    async def hang(conn: AsyncConnection, events: Sequence[CloudEvent]) -> None:
        await gate.wait()  # a handler stuck on something: the consumer stops polling

    try:
        async with running_consumer(settings, engine, hang, "t-stall") as runtime:
            await wait_for(lambda: _ready(runtime), what="ready")
            topic = Topics(settings.leadflow_topic_prefix).interactions
            await publish(runtime.producer, [(topic, _event(1))])

            async def stalled() -> list[str] | None:
                problems = await _problems(runtime)
                return (
                    problems
                    if problems and any("no successful poll" in p for p in problems)
                    else None
                )

            problems = await wait_for(stalled, timeout=20, what="readiness red while stalled")
            assert any("t-stall" in p for p in problems), problems
            gate.set()
            await wait_for(lambda: _ready(runtime), timeout=20, what="green again by itself")
    finally:
        gate.set()
        await engine.dispose()


async def test_a_failing_relay_turns_readiness_red_then_green(
    kafka_bootstrap: str, db_url: str
) -> None:
    settings = make_settings(kafka_bootstrap, db_url, leadflow_consumer_stall_seconds=1.0)
    engine = create_engine(db_url)

    async def nothing(conn: AsyncConnection, events: Sequence[CloudEvent]) -> None:
        return None

    try:
        async with running_consumer(settings, engine, nothing, "t-relay") as runtime:
            await wait_for(lambda: _ready(runtime), what="ready")
            producer = runtime.producer
            real_send = producer.send

            async def refuse(*args: Any, **kwargs: Any) -> Any:
                raise KafkaConnectionError("injected: broker unreachable for the relay")

            producer.send = refuse  # type: ignore[method-assign]
            try:
                topic = Topics(settings.leadflow_topic_prefix).leads
                async with engine.begin() as conn:
                    await enqueue(conn, "t", topic, [_event(2)])
                runtime.relay.wake()

                async def relay_red() -> list[str] | None:
                    problems = await _problems(runtime)
                    return (
                        problems
                        if problems and any("outbox relay failing" in p for p in problems)
                        else None
                    )

                await wait_for(relay_red, timeout=20, what="readiness red while the relay fails")
                assert await pending_count(engine, "t") == 1
            finally:
                producer.send = real_send  # type: ignore[method-assign]
            runtime.relay.wake()
            await wait_for(lambda: _ready(runtime), timeout=20, what="green again by itself")

            async def sent() -> bool:
                return await pending_count(engine, "t") == 0

            await wait_for(sent, what="the held row sent once the broker is back")
    finally:
        await engine.dispose()


async def test_the_database_probe_does_not_wait_behind_a_sqlite_writer(sqlite_db_url: str) -> None:
    """On SQLite every transaction begins IMMEDIATE (a write lock); the readiness probe must not,
    or it waits out the 30 s busy timeout behind a long batch and reports the database down."""
    settings = make_settings("127.0.0.1:1", sqlite_db_url)
    runtime = Runtime("t", settings, create_engine(sqlite_db_url))
    writer = create_engine(sqlite_db_url)
    try:
        async with writer.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS probe_lock (x INTEGER)")
            await conn.exec_driver_sql("INSERT INTO probe_lock VALUES (1)")
            # The write lock is held until this block ends; the probe runs meanwhile.
            assert await asyncio.wait_for(runtime.check_database(), 5.0)
    finally:
        await writer.dispose()
        await runtime.engine.dispose()


async def test_a_short_database_retry_is_not_an_outage(sqlite_db_url: str) -> None:
    """A deadlock or dropped connection retried within ``WAIT_GRACE_SECONDS`` leaves readiness
    green; waiting longer is reported."""
    from shared.bus import WAIT_GRACE_SECONDS, ConsumerRunner

    async def handler(*_: object) -> None:
        return None

    engine = create_engine(sqlite_db_url)
    runner = ConsumerRunner(
        settings=make_settings("127.0.0.1:1", sqlite_db_url),
        engine=engine,
        topics=["t"],
        group_id="g",
        handler=handler,
        source="t",
    )
    try:
        now = 1000.0
        runner.started_at = runner.last_poll = now - 0.1
        runner.waiting_for, runner.waiting_since = "DeadlockDetectedError", now - 0.2
        assert runner.health(30.0, now).ok
        runner.waiting_since = now - WAIT_GRACE_SECONDS - 0.1
        health = runner.health(30.0, now)
        assert not health.ok and "waiting for the database" in (health.problem or "")
    finally:
        await engine.dispose()
