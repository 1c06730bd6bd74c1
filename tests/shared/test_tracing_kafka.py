"""Over the real broker: a traced publish, a ConsumerRunner, and what its handler enqueues share
one trace; the consumer also reports lag and events consumed by type.

Skipped until shared/bus.py calls :func:`shared.tracing.consume_span`,
:func:`shared.metrics.count_consumed` and :func:`shared.metrics.observe_lag` (issue 14 report).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

import shared.bus
from shared.bus import ensure_topics, make_producer
from shared.db import create_engine
from shared.events import CloudEvent, InteractionType, LeadType
from shared.messaging_tables import outbox
from shared.outbox import enqueue, publish
from shared.topics import Topics
from shared.tracing import tracer
from tests.shared.test_tracing import spans  # noqa: F401  (the in-memory exporter fixture)
from tests.support import make_settings, running_consumer, wait_for

pytestmark = pytest.mark.skipif(
    not hasattr(shared.bus, "consume_span"), reason="shared/bus.py does not trace consumers yet"
)


async def test_a_consumer_continues_the_trace_of_what_it_consumes(
    kafka_bootstrap: str,
    sqlite_db_url: str,
    spans: InMemorySpanExporter,  # noqa: F811
) -> None:
    settings = make_settings(kafka_bootstrap, sqlite_db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    await ensure_topics(settings)
    engine = create_engine(sqlite_db_url)

    async def handler(conn: AsyncConnection, events: Sequence[CloudEvent]) -> None:
        scored = [
            CloudEvent(type=LeadType.SCORED, source="/leadflow/t", data={}, key=e.key)
            for e in events
        ]
        await enqueue(conn, "t", topics.leads, scored)

    async def emitted() -> list[Any]:
        async with engine.connect() as conn:
            q = select(outbox.c.extensions).where(outbox.c.ce_type == LeadType.SCORED)
            return list((await conn.execute(q)).scalars())

    async def lag() -> bool:
        labels = {"consumer": "g-trace", "topic": topics.interactions, "partition": "0"}
        return REGISTRY.get_sample_value("leadflow_consumer_lag", labels) is not None

    producer = make_producer(settings)
    await producer.start()
    try:
        async with running_consumer(settings, engine, handler, "g-trace"):
            with tracer().start_as_current_span("POST /v1/forms/{form_id}/submissions") as request:
                ev = CloudEvent(
                    type=InteractionType.FORM_SUBMITTED, source="/leadflow/t", data={}, key="k9"
                )
                await publish(producer, [(topics.interactions, ev)])
            want = trace.format_trace_id(request.get_span_context().trace_id)
            [extensions] = await wait_for(emitted, what="the handler's event in the outbox")
            assert extensions["traceparent"].split("-")[1] == want
            [consumer] = [
                s for s in spans.get_finished_spans() if s.kind is trace.SpanKind.CONSUMER
            ]
            assert consumer.parent is not None
            assert consumer.parent.span_id == request.get_span_context().span_id
            consumed = {"consumer": "g-trace", "type": InteractionType.FORM_SUBMITTED}
            assert REGISTRY.get_sample_value("leadflow_events_consumed_by_type_total", consumed)
            await wait_for(lag, what="the lag gauge")
    finally:
        await producer.stop()
        await engine.dispose()
