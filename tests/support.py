"""Helpers for tests: waiting for conditions, reading a topic back, building test settings."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.bus import BatchHandler, ConsumerRunner
from shared.events import CloudEvent, derived_event_id, from_kafka
from shared.runtime import Runtime
from shared.settings import Settings
from shared.topics import Topics

T = TypeVar("T")

TEST_TOKEN = "test-token"
"""The admin token of :func:`make_settings` (admin tokens may also read)."""
AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}
"""Headers that authenticate a test client to scoring and routing."""


async def wait_for(
    probe: Callable[[], Awaitable[T]],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "",
) -> T:
    """Call ``probe`` until it returns something truthy; return it, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s: {what or probe} (last: {last!r})")


def make_settings(bootstrap: str, database_url: str, **overrides: Any) -> Settings:
    """Dev-mode settings on a fresh topic prefix, with fast group timeouts for the test broker."""
    values: dict[str, Any] = dict(
        leadflow_dev=True,
        kafka_bootstrap_servers=bootstrap,
        database_url=database_url,
        leadflow_topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        kafka_session_timeout_ms=1000,
        kafka_heartbeat_interval_ms=100,
        kafka_rebalance_timeout_ms=1000,
        leadflow_outbox_poll_seconds=0.2,
        leadflow_api_token=TEST_TOKEN,
    )
    values.update(overrides)
    return Settings(**values)


async def read_topic(bootstrap: str, topic: str, *, timeout: float = 2.0) -> list[CloudEvent]:
    """Every event on ``topic`` right now, read from the beginning without a consumer group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[CloudEvent] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                break
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                out.extend(from_kafka(r.key, r.value, r.headers) for r in records)
        return out
    finally:
        await consumer.stop()


async def wait_for_events(
    bootstrap: str,
    topic: str,
    predicate: Callable[[list[CloudEvent]], bool],
    *,
    timeout: float = 30.0,
) -> list[CloudEvent]:
    """Read ``topic`` until ``predicate(events)`` holds; return the events."""

    async def probe() -> list[CloudEvent] | None:
        events = await read_topic(bootstrap, topic)
        return events if predicate(events) else None

    return await wait_for(probe, timeout=timeout, interval=0.2, what=f"events on {topic}")


def echoes(events: Sequence[CloudEvent], ce_type: str = "io.test.echo") -> list[CloudEvent]:
    """One derived event per input event, as a consumer under test would emit."""
    return [
        CloudEvent(
            type=ce_type,
            source="t",
            data={"of": e.id},
            id=derived_event_id(e.id, ce_type),
            key=e.key,
        )
        for e in events
    ]


@asynccontextmanager
async def running_consumer(
    settings: Settings, engine: AsyncEngine, handler: BatchHandler, group_id: str
) -> AsyncIterator[Runtime]:
    """A started runtime (source "t") with one consumer of the interactions topic."""
    runtime = Runtime("t", settings, engine)
    runtime.add_worker(
        ConsumerRunner(
            settings=settings,
            engine=engine,
            topics=[Topics(settings.leadflow_topic_prefix).interactions],
            group_id=group_id,
            handler=handler,
            source="t",
            after_commit=runtime.relay.wake,
        )
    )
    await runtime.start()
    try:
        await runtime.wait_ready()
        yield runtime
    finally:
        await runtime.stop()


async def waiting_on_a_lock(engine: AsyncEngine) -> bool:
    """Whether some session of this PostgreSQL database waits for a lock (a race under test has
    reached its contended point)."""
    from sqlalchemy import text

    async with engine.connect() as conn:
        waiting = await conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
        )
        return bool(waiting.scalar_one())


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a service started as its own process with ``settings`` (dev mode, the
    test's broker, database, topic prefix, token and fast group timeouts), plus ``extra``."""
    import os

    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url or "",
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
        "LEADFLOW_TOPIC_PREFIX": settings.leadflow_topic_prefix,
        "LEADFLOW_DEV": "1",
        "LEADFLOW_API_TOKEN": settings.api_token,
        "KAFKA_SESSION_TIMEOUT_MS": str(settings.kafka_session_timeout_ms),
        "KAFKA_HEARTBEAT_INTERVAL_MS": str(settings.kafka_heartbeat_interval_ms),
        "KAFKA_REBALANCE_TIMEOUT_MS": str(settings.kafka_rebalance_timeout_ms),
    }
    env.update(extra)
    return env


async def start_service(
    command: str, env: dict[str, str], log_path: Path
) -> asyncio.subprocess.Process:
    """``leadflow COMMAND`` as its own process (``python -m services.cli``), as Compose runs
    it, with ``env`` (see :func:`process_env`); its log goes to ``log_path``, a file, not a
    pipe: a full pipe would block the process."""
    with log_path.open("wb") as log_file:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", command, env=env,
            stdout=subprocess.DEVNULL, stderr=log_file,
        )  # fmt: skip


async def generic_plan_scans(
    engine: AsyncEngine, sql: str, types: Sequence[str], args: Sequence[str]
) -> set[str]:
    """The tables a statement reads whole in the plan PostgreSQL keeps for it.

    The driver prepares a statement once per connection; after five executions PostgreSQL may
    keep a generic plan, costed for the tables as they were then. Prepared on a young table,
    that plan is a sequential scan, kept as the table grows: this prepares ``sql`` (``$n``
    parameters of ``types``) on the empty tables, as a service's first batch does, and returns
    the tables its generic plan scans sequentially. ``args`` are SQL literals for EXECUTE.
    """
    async with engine.connect() as conn:
        await conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
        await conn.exec_driver_sql(f"PREPARE lf_probe ({', '.join(types)}) AS {sql}")
        try:
            plan = (
                await conn.exec_driver_sql(
                    f"EXPLAIN (FORMAT JSON) EXECUTE lf_probe ({', '.join(args)})"
                )
            ).scalar_one()
        finally:
            await conn.exec_driver_sql("DEALLOCATE lf_probe")
            await conn.rollback()
    if isinstance(plan, str):
        plan = json.loads(plan)
    scanned: set[str] = set()

    def walk(node: dict[str, Any]) -> None:
        if node.get("Node Type") == "Seq Scan":
            scanned.add(node["Relation Name"])
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return scanned
