"""OpenTelemetry traces: one form fill is one trace through capture, scoring and routing.

Tracing is off unless the standard ``OTEL_*`` variables ask for it (:func:`setup_tracing`):
``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``, ``none``) or an OTLP endpoint
(``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); the SDK itself reads
the rest (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``,
``OTEL_BSP_*``, ``OTEL_EXPORTER_OTLP_HEADERS``...). The SDK and exporters are the optional
``otel`` extra; without them (or with tracing off) every call here is the OpenTelemetry API's
no-op, which still passes an incoming W3C ``traceparent`` through unchanged.

The context crosses Kafka as the CloudEvents distributed-tracing extension: an event enqueued
or published while a span is current carries ``traceparent`` (and ``tracestate``) attributes,
which binary mode sends as the ``ce_traceparent`` / ``ce_tracestate`` headers. A consumer
wraps each batch in :func:`consume_span`, which continues the events' trace, so whatever the
handler enqueues carries it on.
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.environment_variables import OTEL_PYTHON_TRACER_PROVIDER
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.events import CloudEvent

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
INSTRUMENTATION = "leadflow"

#: Kafka carries the W3C trace context whatever ``OTEL_PROPAGATORS`` says: the CloudEvents
#: extension is defined as W3C ``traceparent``.
_W3C = TraceContextTextMapPropagator()

_override: trace.TracerProvider | None = None
#: Whether ``OTEL_PYTHON_TRACER_PROVIDER`` names a global provider (read once, see active()).
_env_names_provider: bool | None = None
_installed: SdkTracerProvider | None = None

#: Inside a mixed batch (events of several traces): the span context of each lead key's trace,
#: so an event emitted for that lead continues its own trace.
_BY_KEY: contextvars.ContextVar[Mapping[str, SpanContext] | None] = contextvars.ContextVar(
    "leadflow_trace_by_key", default=None
)


def tracer() -> trace.Tracer:
    """Leadflow's tracer (from :func:`use_provider`'s provider, else the global one)."""
    provider = _override or trace.get_tracer_provider()
    return provider.get_tracer(INSTRUMENTATION)


def active() -> bool:
    """Whether spans are recorded in this process (a provider was installed or given), as
    opposed to the API's no-op, which only passes an incoming context through."""
    global _env_names_provider
    if _override is not None or _installed is not None:
        return True
    # Asked on every request: while no global provider is set, get_tracer_provider() looks the
    # environment up each time (an exception raised and caught), so that is looked up once.
    if getattr(trace, "_TRACER_PROVIDER", None) is None:
        if _env_names_provider is None:
            _env_names_provider = OTEL_PYTHON_TRACER_PROVIDER in os.environ
        if not _env_names_provider:
            return False
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def use_provider(provider: trace.TracerProvider | None) -> None:
    """Trace with ``provider`` instead of the global one (tests: an in-memory exporter)."""
    global _override
    _override = provider


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def exporters_wanted(env: Mapping[str, str]) -> list[str]:
    """The span exporters the ``OTEL_*`` variables ask for (empty: tracing off)."""
    if _truthy(env.get("OTEL_SDK_DISABLED")):
        return []
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",")]
    names = [n for n in names if n]
    if not names:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        names = ["otlp"] if endpoint else []
    return [n for n in names if n != "none"]


def _exporter(name: str, env: Mapping[str, str]) -> SpanExporter | None:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        log.warning("OTEL_TRACES_EXPORTER=%s is not supported (otlp, console, none)", name)
        return None
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )

            grpc: SpanExporter = GrpcExporter()
            return grpc
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )

        http: SpanExporter = HttpExporter()
        return http
    except ImportError:
        log.warning(
            "traces asked for by OTEL_* but the OTLP exporter (%s) is not installed: "
            "pip install 'leadflow[otel]'",
            protocol,
        )
        return None


def build_provider(service: str, env: Mapping[str, str] | None = None) -> SdkTracerProvider | None:
    """The SDK tracer provider the ``OTEL_*`` variables describe, or None (tracing off, or the
    SDK or exporter not installed: then the API's no-op stays)."""
    env = os.environ if env is None else env
    names = exporters_wanted(env)
    if not names:
        return None
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "traces asked for by OTEL_* but opentelemetry-sdk is not installed: "
            "pip install 'leadflow[otel]'"
        )
        return None
    exporters = [e for e in (_exporter(n, env) for n in names) if e is not None]
    if not exporters:
        return None
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: f"leadflow-{service}"}))
    provider = TracerProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def setup_tracing(service: str) -> bool:
    """Install the tracer provider ``OTEL_*`` asks for, once per process; True when tracing."""
    global _installed
    if _installed is not None:
        return True
    provider = build_provider(service)
    if provider is None:
        return False
    trace.set_tracer_provider(provider)
    _installed = provider
    log.info("tracing on: %s", ", ".join(exporters_wanted(os.environ)))
    return True


def shutdown_tracing() -> None:
    """Flush and stop the installed provider's exporters (at process exit)."""
    global _installed
    provider, _installed = _installed, None
    if provider is not None:
        try:
            provider.shutdown()
        except Exception:
            log.debug("tracer provider shutdown failed", exc_info=True)


# ------------------------------------------------------------------------------------------
# The W3C context on CloudEvents


def span_context_of(ev: CloudEvent) -> SpanContext | None:
    """The remote span context an event's ``traceparent`` extension names, if valid."""
    parent = ev.extensions.get(TRACEPARENT)
    if not parent:
        return None
    carrier = {TRACEPARENT: parent}
    state = ev.extensions.get(TRACESTATE)
    if state:
        carrier[TRACESTATE] = state
    ctx = trace.get_current_span(_W3C.extract(carrier, context=Context())).get_span_context()
    return ctx if ctx.is_valid else None


def _extensions_of(span_context: SpanContext) -> dict[str, str]:
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=trace.set_span_in_context(NonRecordingSpan(span_context)))
    return {k: v for k, v in carrier.items() if k in (TRACEPARENT, TRACESTATE) and v}


def with_trace(ev: CloudEvent) -> CloudEvent:
    """``ev`` carrying the current trace as its ``traceparent`` extension.

    An event that already has one keeps it; inside a mixed batch (:func:`consume_span`) an
    event for a lead of the batch continues that lead's trace; without a valid current span
    the event is returned as it is.
    """
    if TRACEPARENT in ev.extensions:
        return ev
    ctx: SpanContext | None = None
    by_key = _BY_KEY.get()
    if by_key and ev.key is not None:
        ctx = by_key.get(ev.key)
    if ctx is None:
        ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return ev
    return replace(ev, extensions={**ev.extensions, **_extensions_of(ctx)})


def with_traces(events: Sequence[CloudEvent]) -> list[CloudEvent]:
    """:func:`with_trace` of each event."""
    return [with_trace(ev) for ev in events]


def trace_ids(span: Span | None = None) -> tuple[str, str] | None:
    """(trace id, span id) in hex of ``span`` (default: the current one), if valid."""
    ctx = (span or trace.get_current_span()).get_span_context()
    if not ctx.is_valid:
        return None
    return trace.format_trace_id(ctx.trace_id), trace.format_span_id(ctx.span_id)


# ------------------------------------------------------------------------------------------
# Consumer spans


@contextmanager
def consume_span(group_id: str, events: Sequence[CloudEvent]) -> Iterator[Span]:
    """A consumer span around handling ``events`` in one batch, continuing their trace.

    Events of one trace (the usual case: one form fill): the span is a child of their
    ``traceparent``, so what the handler enqueues belongs to the same trace. Events of several
    traces: a batch span linked to each, plus one child span per trace, and an event enqueued
    for a lead key of the batch carries that lead's trace (see :func:`with_trace`).
    """
    parents: dict[tuple[int, int], SpanContext] = {}
    key_parent: dict[str, tuple[int, int]] = {}
    for ev in events:
        sc = span_context_of(ev)
        if sc is None:
            continue
        ident = (sc.trace_id, sc.span_id)
        parents.setdefault(ident, sc)
        if ev.key is not None:
            key_parent.setdefault(ev.key, ident)
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.consumer.group.name": group_id,
        "messaging.batch.message_count": len(events),
    }
    if len(events) == 1:
        attributes["messaging.message.id"] = events[0].id
        attributes["cloudevents.event_type"] = events[0].type
    name = f"process {group_id}"
    t = tracer()
    single = len(parents) == 1
    if single:
        [only] = parents.values()
        parent: Context = trace.set_span_in_context(NonRecordingSpan(only), Context())
        links: list[Link] = []
    else:
        parent = Context()  # a root of its own, whatever was current
        links = [Link(sc) for sc in parents.values()]
    with t.start_as_current_span(
        name, context=parent, kind=SpanKind.CONSUMER, links=links, attributes=attributes
    ) as span:
        if single or not parents:
            yield span
            return
        batch = span.get_span_context()
        children: dict[tuple[int, int], Span] = {
            ident: t.start_span(
                name,
                context=trace.set_span_in_context(NonRecordingSpan(sc), Context()),
                kind=SpanKind.CONSUMER,
                links=[Link(batch)] if batch.is_valid else [],
                attributes={**attributes, "messaging.batch.message_count": 1},
            )
            for ident, sc in parents.items()
        }
        by_key = {k: children[i].get_span_context() for k, i in key_parent.items()}
        token = _BY_KEY.set(by_key)
        try:
            yield span
        finally:
            _BY_KEY.reset(token)
            for child in children.values():
                child.end()
