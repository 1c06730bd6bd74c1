"""A consumer applies structured-mode records, tells sources apart, and dates events honestly.

Before: a structured-mode record was dead-lettered ("missing ce_id header"), a second sales
tool's event 42 was dropped as a duplicate of the first tool's event 42, and an event without
``ce_time`` was dated when it happened to be read.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent as SdkEvent
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db import create_engine
from shared.events import CloudEvent
from shared.topics import Topics
from tests.support import make_settings, running_consumer, wait_for


async def test_structured_records_sources_and_record_time(
    kafka_bootstrap: str, pg_db_url: str
) -> None:
    settings = make_settings(kafka_bootstrap, pg_db_url)
    topic = Topics(settings.leadflow_topic_prefix).interactions
    engine = create_engine(pg_db_url)
    seen: list[CloudEvent] = []

    async def handler(conn: AsyncConnection, events: Sequence[CloudEvent]) -> None:
        seen.extend(events)

    def sdk(source: str) -> SdkEvent:
        return SdkEvent(
            attributes={"type": "io.test.in", "source": source, "id": "42", "partitionkey": "k"},
            data={"from": source},
        )

    structured = ce_kafka.to_structured(sdk("/crm/a"), JSONFormat())
    binary = ce_kafka.to_binary(sdk("/crm/b"), JSONFormat())
    undated = [(k, v) for k, v in binary.headers.items() if k != "ce_time"]
    undated = [(k, b"43" if k == "ce_id" else v) for k, v in undated]
    stamp = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    try:
        async with running_consumer(settings, engine, handler, "t-ce"):
            producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
            await producer.start()
            try:
                for headers, value in [
                    (list(structured.headers.items()), structured.value),
                    (list(binary.headers.items()), binary.value),
                    (list(binary.headers.items()), binary.value),  # a redelivery: applied once
                ]:
                    await producer.send_and_wait(topic, value, key=b"k", headers=headers)
                await producer.send_and_wait(
                    topic,
                    binary.value,
                    key=b"k",
                    headers=undated,
                    timestamp_ms=int(stamp.timestamp() * 1000),
                )
            finally:
                await producer.stop()

            async def last_applied() -> bool:
                # Same key, same partition: once 43 is applied, everything before it was too.
                return any(e.id == "43" for e in seen)

            await wait_for(last_applied, what="the last record applied")
    finally:
        await engine.dispose()

    assert sorted((e.source, e.id) for e in seen) == [
        ("/crm/a", "42"),
        ("/crm/b", "42"),
        ("/crm/b", "43"),
    ]
    assert next(e for e in seen if e.id == "43").time == stamp
    assert next(e for e in seen if e.source == "/crm/a").data == {"from": "/crm/a"}
