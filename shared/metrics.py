"""Prometheus metrics every service exposes at ``/metrics``, and the helpers that set them.

Labels are bounded: HTTP routes by template (``/leads/{lead_id}``, never the raw path), event
types only from Leadflow's own vocabulary (anything else is ``other``), partitions by number.

Defined elsewhere, next to what they count (same registry, same ``/metrics``):

- ``leadflow_events_consumed_total{consumer,outcome}`` and
  ``leadflow_consumer_commit_failed_total`` in :mod:`shared.bus`;
- ``leadflow_outbox_relayed_total{source}`` and ``leadflow_outbox_parked_total`` in
  :mod:`shared.outbox`;
- ``leadflow_capture_events_total{path}`` (``direct`` or ``spool``) in capture's intake;
- ``leadflow_routing_timers_fired_total{kind}`` (``warn``: SLA warnings, ``breach``: SLA
  breaches) and ``leadflow_routing_webhook_deliveries_total{outcome}`` (``delivered``,
  ``retry``, ``dead``) in routing's workers.

Capture's spool *is* its outbox (source ``capture``): the spool depth is
``leadflow_outbox_pending{source="capture"}``.

A service served by several worker processes (``LEADFLOW_CAPTURE_WORKERS``) counts in
prometheus_client's multiprocess mode: every process writes its values to files in one
directory, and ``/metrics`` in any of them answers the sum (:func:`exposition`). The gauges
are ones every process computes alike (a table's backlog, a partition's lag): the most
recently set value is the answer, so a worker that died leaves no stale one behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess

from shared.events import (
    INTERACTION_TYPES,
    LEAD_TYPES,
    ROUTING_TYPES,
    SALES_TYPES,
    CloudEvent,
)

log = logging.getLogger(__name__)

HTTP_REQUESTS = Counter(
    "leadflow_http_requests_total",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "leadflow_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
EVENTS_CONSUMED = Counter(
    "leadflow_events_consumed_by_type_total",
    "Events a consumer group applied (committed), by event type",
    ["consumer", "type"],
)
EVENTS_PRODUCED = Counter(
    "leadflow_events_produced_total",
    "Events acknowledged by Kafka, by producing source and event type",
    ["source", "type"],
)
CONSUMER_LAG = Gauge(
    "leadflow_consumer_lag",
    "Records on a partition not yet consumed by the group (highwater - position)",
    ["consumer", "topic", "partition"],
    multiprocess_mode="mostrecent",
)
OUTBOX_PENDING = Gauge(
    "leadflow_outbox_pending",
    "Outbox rows not yet published, by source (capture's is its spool depth)",
    ["source"],
    multiprocess_mode="mostrecent",
)
#: Set by routing's SLA timer loop (see the report of issue 14): timers waiting to fire.
ROUTING_TIMERS_PENDING = Gauge(
    "leadflow_routing_timers_pending",
    "SLA timers scheduled and not yet fired, by kind",
    ["kind"],
    multiprocess_mode="mostrecent",
)
#: Set by routing's webhook delivery loop: deliveries waiting for a (re)try.
WEBHOOK_QUEUE = Gauge(
    "leadflow_routing_webhook_queue",
    "Webhook deliveries waiting to be attempted (pending or retrying)",
    multiprocess_mode="mostrecent",
)

#: Set (by the parent, before the workers start) when several processes serve one service.
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def exposition() -> bytes:
    """The text ``/metrics`` answers: this process's, or every worker process's together."""
    if os.environ.get(MULTIPROCESS_DIR):
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()


_KNOWN_TYPES = (
    INTERACTION_TYPES | LEAD_TYPES | ROUTING_TYPES | SALES_TYPES | {"io.leadflow.deadletter"}
)
OTHER = "other"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def type_label(ce_type: str) -> str:
    """The event type as a label: Leadflow's own types, else ``other`` (sales tools may write
    any type to ``leadflow.sales``; the label set must stay bounded)."""
    return ce_type if ce_type in _KNOWN_TYPES else OTHER


def method_label(method: str) -> str:
    """The HTTP method as a label (a made-up method is ``_OTHER``)."""
    return method if method in _METHODS else "_OTHER"


def count_consumed(group_id: str, events: Sequence[CloudEvent]) -> None:
    """Count events a consumer group applied, by type (call after the commit)."""
    for ev in events:
        EVENTS_CONSUMED.labels(group_id, type_label(ev.type)).inc()


def count_produced(source: str, types: Sequence[str]) -> None:
    """Count events the broker acknowledged, by type."""
    for ce_type in types:
        EVENTS_PRODUCED.labels(source, type_label(ce_type)).inc()


_lag_partitions: dict[str, set[tuple[str, str]]] = {}


async def observe_lag(group_id: str, consumer: Any, *, timeout: float = 0.5) -> None:
    """Set ``leadflow_consumer_lag`` for each partition ``consumer`` (an aiokafka consumer)
    holds: its highwater minus its position. Partitions no longer assigned are dropped.
    Never raises; a partition whose highwater is not known yet (nothing fetched) is skipped."""
    seen: set[tuple[str, str]] = set()
    try:
        for tp in sorted(consumer.assignment(), key=lambda p: (p.topic, p.partition)):
            high = consumer.highwater(tp)
            if high is None:
                continue
            try:
                position = await asyncio.wait_for(consumer.position(tp), timeout)
            except Exception:  # revoked meanwhile, or no position yet
                continue
            labels = (tp.topic, str(tp.partition))
            CONSUMER_LAG.labels(group_id, *labels).set(max(0, int(high) - int(position)))
            seen.add(labels)
    except Exception:
        log.debug("%s: reading consumer lag failed", group_id, exc_info=True)
        return
    for gone in _lag_partitions.get(group_id, set()) - seen:
        with contextlib.suppress(KeyError):
            CONSUMER_LAG.remove(group_id, *gone)
    _lag_partitions[group_id] = seen
