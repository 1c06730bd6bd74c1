"""/metrics: request metrics by route template, events by type, consumer lag, outbox backlog.

That the alert rules and the dashboard name only real metrics is tests/deploy/test_observability.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from aiokafka import TopicPartition
from fastapi import APIRouter
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from shared.db import create_engine
from shared.events import CloudEvent, InteractionType, LeadType
from shared.http import create_app
from shared.metrics import count_consumed, observe_lag
from shared.outbox import OutboxRelay, enqueue
from shared.runtime import Runtime
from tests.support import make_settings


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_requests_are_counted_by_route_template_and_status(sqlite_db_url: str) -> None:
    settings = make_settings("127.0.0.1:1", sqlite_db_url)
    runtime = Runtime("t", settings, create_engine(sqlite_db_url))
    router = APIRouter()

    @router.get("/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    app = create_app(runtime, "t", [router])
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            assert (await client.get("/things/42")).status_code == 200
            assert (await client.get("/no/such/path")).status_code == 404
            assert (await client.delete("/things/43")).status_code == 405
            scrape = await client.get("/metrics")
        assert scrape.status_code == 200
    finally:
        await runtime.engine.dispose()
    samples = _samples(scrape.text)
    requests = {
        (labels["method"], labels["route"], labels["status"])
        for name, labels, _ in samples
        if name == "leadflow_http_requests_total"
    }
    assert {
        ("GET", "/things/{thing_id}", "200"),
        ("GET", "<unmatched>", "404"),
        ("DELETE", "/things/{thing_id}", "405"),
    } <= requests
    assert not any("/things/4" in str(labels) for _, labels, _ in samples)
    assert any(
        name == "leadflow_http_request_duration_seconds_count"
        and labels == {"method": "GET", "route": "/things/{thing_id}"}
        and value >= 1
        for name, labels, value in samples
    )


def test_consumed_event_types_stay_a_bounded_set() -> None:
    before = _value("leadflow_events_consumed_by_type_total", consumer="g-m", type="other")
    known = CloudEvent(type=LeadType.SCORED, source="s", data={})
    foreign = CloudEvent(type="com.example.crm.anything-at-all", source="s", data={})
    count_consumed("g-m", [known, foreign, foreign])
    assert _value("leadflow_events_consumed_by_type_total", consumer="g-m", type=LeadType.SCORED)
    assert (
        _value("leadflow_events_consumed_by_type_total", consumer="g-m", type="other") == before + 2
    )


class _Consumer:
    """The part of an aiokafka consumer lag is read from."""

    def __init__(self, high: dict[TopicPartition, int | None], pos: dict[TopicPartition, int]):
        self.high, self.pos = high, pos

    def assignment(self) -> set[TopicPartition]:
        return set(self.high)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.high[tp]

    async def position(self, tp: TopicPartition) -> int:
        return self.pos[tp]


async def test_consumer_lag_per_partition_and_revoked_partitions_are_dropped() -> None:
    p0, p1, p2 = (TopicPartition("leads", i) for i in range(3))
    await observe_lag("g-lag", _Consumer({p0: 10, p1: 5, p2: None}, {p0: 4, p1: 5}))
    assert _value("leadflow_consumer_lag", consumer="g-lag", topic="leads", partition="0") == 6
    assert _value("leadflow_consumer_lag", consumer="g-lag", topic="leads", partition="1") == 0
    assert (
        REGISTRY.get_sample_value(
            "leadflow_consumer_lag", {"consumer": "g-lag", "topic": "leads", "partition": "2"}
        )
        is None
    )
    await observe_lag("g-lag", _Consumer({p1: 7}, {p1: 5}))  # p0 went to another replica
    assert (
        REGISTRY.get_sample_value(
            "leadflow_consumer_lag", {"consumer": "g-lag", "topic": "leads", "partition": "0"}
        )
        is None
    )
    assert _value("leadflow_consumer_lag", consumer="g-lag", topic="leads", partition="1") == 2


class _AckingProducer:
    """Acknowledges every send at once (the relay's view of a healthy broker)."""

    async def send(self, *_: Any, **__: Any) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def test_outbox_backlog_and_produced_events_by_type(sqlite_db_url: str) -> None:
    engine = create_engine(sqlite_db_url)
    relay = OutboxRelay(engine, _AckingProducer(), "m-src")
    ce_type = InteractionType.FORM_SUBMITTED
    before = _value("leadflow_events_produced_total", source="m-src", type=ce_type)
    try:
        async with engine.begin() as conn:
            events = [CloudEvent(type=ce_type, source="/leadflow/m", data={}) for _ in range(3)]
            await enqueue(conn, "m-src", "topic", events)
        assert await relay.observe_backlog(force=True) == 3
        assert _value("leadflow_outbox_pending", source="m-src") == 3
        assert await relay.observe_backlog() is None  # throttled: one count per interval
        assert await relay.relay_once() == 3
        assert await relay.observe_backlog(force=True) == 0
        assert _value("leadflow_outbox_pending", source="m-src") == 0
        assert _value("leadflow_events_produced_total", source="m-src", type=ce_type) == before + 3
    finally:
        await engine.dispose()
