"""OpenTelemetry traces: a request, the events it enqueues and their consumers share one trace.

The chain is the real one up to the broker: a FastAPI request through ``create_app``'s
middleware enqueues an event in the outbox; the stored row is encoded as the Kafka record the
relay sends (``ce_traceparent`` header), decoded as a consumer decodes it, and handled inside
:func:`shared.tracing.consume_span`, which enqueues the next event; and once more for routing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import httpx
import pytest
from fastapi import APIRouter
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import create_engine
from shared.events import CloudEvent, InteractionType, LeadType, RoutingType, from_kafka
from shared.http import create_app
from shared.logs import JsonFormatter
from shared.messaging_tables import outbox
from shared.outbox import _row_event, enqueue, publish
from shared.runtime import Runtime
from shared.tracing import (
    TRACEPARENT,
    build_provider,
    consume_span,
    exporters_wanted,
    span_context_of,
    tracer,
    use_provider,
    with_trace,
)
from tests.support import make_settings

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    use_provider(provider)
    try:
        yield exporter
    finally:
        use_provider(None)
        provider.shutdown()


async def _kafka_record(engine: AsyncEngine, event_id: str) -> CloudEvent:
    """The outbox row of ``event_id`` as the relay sends it and a consumer decodes it."""
    async with engine.connect() as conn:
        row = (await conn.execute(select(outbox).where(outbox.c.event_id == event_id))).one()
    _, ev, value = _row_event(row)
    key = ev.key.encode() if ev.key is not None else None
    headers = ev.headers()
    assert any(name == "ce_traceparent" for name, _ in headers)
    return from_kafka(key, value, headers)


def _trace_of(ev: CloudEvent) -> str:
    ctx = span_context_of(ev)
    assert ctx is not None, ev.extensions
    return trace.format_trace_id(ctx.trace_id)


def _kind(spans: tuple[ReadableSpan, ...], kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans if s.kind is kind]


@pytest.mark.parametrize("caller", [None, CALLER], ids=["new-trace", "caller-traceparent"])
async def test_a_form_fill_is_one_trace_through_capture_scoring_and_routing(
    sqlite_db_url: str, spans: InMemorySpanExporter, caller: str | None
) -> None:
    engine = create_engine(sqlite_db_url)
    runtime = Runtime("capture", make_settings("127.0.0.1:1", sqlite_db_url), engine)
    router = APIRouter()

    @router.post("/forms/{form_id}/submissions")
    async def submit(form_id: str) -> dict[str, str]:
        ev = CloudEvent(
            type=InteractionType.FORM_SUBMITTED, source="/leadflow/capture", data={}, key="k1"
        )
        async with engine.begin() as conn:
            await enqueue(conn, "capture", "interactions", [ev])
        return {"event_id": ev.id}

    app = create_app(runtime, "capture", [router])
    try:
        headers = {"traceparent": caller} if caller else {}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            answer = await client.post("/forms/f1/submissions", headers=headers)
        assert answer.status_code == 200
        [server] = _kind(spans.get_finished_spans(), SpanKind.SERVER)
        assert server.name == "POST /forms/{form_id}/submissions"
        assert server.attributes is not None
        assert server.attributes["http.route"] == "/forms/{form_id}/submissions"
        trace_id = trace.format_trace_id(server.context.trace_id)
        if caller:
            assert trace_id == CALLER_TRACE

        # scoring consumes the interaction and enqueues a lead event
        interaction = await _kafka_record(engine, answer.json()["event_id"])
        assert _trace_of(interaction) == trace_id
        lines: list[str] = []
        scored = CloudEvent(type=LeadType.SCORED, source="/leadflow/scoring", data={}, key="k1")
        with consume_span("scoring", [interaction]):
            lines.append(JsonFormatter().format(logging.makeLogRecord({"msg": "scored"})))
            async with engine.begin() as conn:
                await enqueue(conn, "scoring", "leads", [scored])
        # routing consumes the lead event and enqueues the assignment
        lead_event = await _kafka_record(engine, scored.id)
        assert _trace_of(lead_event) == trace_id
        assigned = CloudEvent(
            type=RoutingType.ASSIGNED, source="/leadflow/routing", data={}, key="k1"
        )
        with consume_span("routing", [lead_event]):
            async with engine.begin() as conn:
                await enqueue(conn, "routing", "routing", [assigned])
        assert _trace_of(await _kafka_record(engine, assigned.id)) == trace_id

        finished = spans.get_finished_spans()
        assert {trace.format_trace_id(s.context.trace_id) for s in finished} == {trace_id}
        scoring, routing = _kind(finished, SpanKind.CONSUMER)
        assert scoring.parent is not None and scoring.parent.span_id == server.context.span_id
        assert routing.parent is not None and routing.parent.span_id == scoring.context.span_id
        assert f'"trace_id":"{trace_id}"' in lines[0]
    finally:
        await engine.dispose()


def _traced(key: str, span_id: str, trace_id: str) -> CloudEvent:
    return CloudEvent(
        type=InteractionType.TRACKED,
        source="/leadflow/capture",
        data={},
        key=key,
        extensions={TRACEPARENT: f"00-{trace_id}-{span_id}-01"},
    )


def test_a_mixed_batch_keeps_each_lead_in_its_own_trace(spans: InMemorySpanExporter) -> None:
    a, b = "a" * 32, "b" * 32
    batch = [_traced("lead-a", "1" * 16, a), _traced("lead-b", "2" * 16, b)]
    with consume_span("scoring", batch):
        out_a = with_trace(CloudEvent(type=LeadType.SCORED, source="s", data={}, key="lead-a"))
        out_b = with_trace(CloudEvent(type=LeadType.SCORED, source="s", data={}, key="lead-b"))
        other = with_trace(CloudEvent(type=LeadType.SCORED, source="s", data={}, key="lead-c"))
    assert (_trace_of(out_a), _trace_of(out_b)) == (a, b)
    # an event for no lead of the batch belongs to the batch span (linked to both)
    batch_span = next(s for s in spans.get_finished_spans() if len(s.links) == 2)
    got = span_context_of(other)
    assert got is not None
    assert (got.trace_id, got.span_id) == (batch_span.context.trace_id, batch_span.context.span_id)


def test_without_a_span_nothing_is_added_and_without_the_sdk_the_context_passes_through() -> None:
    plain = CloudEvent(type=LeadType.SCORED, source="s", data={}, key="k")
    assert TRACEPARENT not in with_trace(plain).extensions
    # No SDK provider (the API's no-op): the incoming traceparent still reaches what is emitted.
    incoming = _traced("k", "3" * 16, "c" * 32)
    with consume_span("scoring", [incoming]):
        out = with_trace(plain)
    assert out.extensions[TRACEPARENT] == incoming.extensions[TRACEPARENT]


def test_the_otel_variables_switch_traces_on() -> None:
    assert exporters_wanted({}) == []
    assert exporters_wanted({"OTEL_TRACES_EXPORTER": "none"}) == []
    assert exporters_wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) == ["otlp"]
    assert exporters_wanted({"OTEL_TRACES_EXPORTER": "console,otlp"}) == ["console", "otlp"]
    assert exporters_wanted({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}) == []
    assert build_provider("capture", {}) is None
    provider = build_provider("capture", {"OTEL_TRACES_EXPORTER": "console"})
    assert provider is not None
    try:
        assert provider.resource.attributes["service.name"] == "leadflow-capture"
    finally:
        provider.shutdown()


def test_an_otlp_endpoint_without_the_otel_extra_leaves_tracing_off() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
    except ImportError:
        assert build_provider("scoring", env) is None  # a warning names `leadflow[otel]`
    else:
        provider = build_provider("scoring", env)
        assert provider is not None
        provider.shutdown()


class _RecordingProducer:
    """Acknowledges every send at once and keeps the headers (capture's direct path)."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []

    async def send(self, *_: object, headers: list[tuple[str, bytes]], **__: object) -> object:
        self.headers.append({k: v.decode() for k, v in headers})
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def test_capture_direct_publish_carries_the_request_trace(
    spans: InMemorySpanExporter,
) -> None:
    producer = _RecordingProducer()
    ev = CloudEvent(type=InteractionType.TRACKED, source="/leadflow/capture", data={}, key="k")
    with tracer().start_as_current_span("POST /v1/t") as span:
        await publish(producer, [("interactions", ev)])
    [headers] = producer.headers
    want = trace.format_trace_id(span.get_span_context().trace_id)
    assert headers["ce_traceparent"].split("-")[1] == want
