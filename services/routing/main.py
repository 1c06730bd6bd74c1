"""Wiring: settings and config -> engine, runtime, consumer, timer/queue/webhook workers, app."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import FastAPI

from services.routing.api import router
from services.routing.api_admin import router as admin_router
from services.routing.api_nurture import router as nurture_router
from services.routing.api_reports import router as reports_router
from services.routing.config import read_routing_config
from services.routing.deps import RoutingContext
from services.routing.handlers import ConsumerBatches, is_urgent
from services.routing.nurture_worker import NurtureRetention, NurtureWorker, StallScan
from services.routing.workers import QueueRetrier, RoutingRetention, TimerWorker, WebhookWorker
from shared.bus import ConsumerRunner
from shared.db import create_engine
from shared.deadletter_api import router as deadletter_router
from shared.http import create_app
from shared.runtime import Runtime
from shared.settings import Settings
from shared.topics import Topics

SERVICE_NAME = "routing"


def build_app(settings: Settings, config: dict[str, Any] | None = None) -> FastAPI:
    """The routing service app; its lifespan starts and drains the runtime."""
    routing_config = read_routing_config(settings, config)
    topics = Topics(settings.leadflow_topic_prefix)
    engine = create_engine(settings.db_url)
    runtime = Runtime(SERVICE_NAME, settings, engine)
    ctx = RoutingContext(config=routing_config, topics=topics, source=SERVICE_NAME)
    timers = TimerWorker(engine, ctx)
    retrier = QueueRetrier(engine, ctx, interval=routing_config.unassigned_retry_seconds)
    webhooks = WebhookWorker(engine, ctx)
    nurture = NurtureWorker(engine, ctx)
    ctx.wakers = [runtime.relay.wake, timers.wake, retrier.wake, webhooks.wake, nurture.wake]
    ctx.timer_wakers = [runtime.relay.wake, retrier.wake, webhooks.wake]
    batches = ConsumerBatches(ctx)
    consumer = ConsumerRunner(
        settings=settings,
        engine=runtime.consumer_engine,
        topics=[topics.leads, topics.sales],
        group_id="leadflow-routing",
        source=SERVICE_NAME,
        handler=batches.handle,
        after_commit=batches.after_commit,
        urgent=is_urgent,
    )
    retention = RoutingRetention(
        engine,
        deliveries_keep=timedelta(days=settings.leadflow_webhook_delivery_retention_days),
        timers_keep=timedelta(days=settings.leadflow_timer_retention_days),
    )
    nurture_retention = NurtureRetention(
        engine, keep=timedelta(days=settings.leadflow_timeline_retention_days)
    )
    for worker in (consumer, timers, retrier, webhooks, retention, nurture, nurture_retention):
        runtime.add_worker(worker)
    stall_scan = StallScan(engine, ctx, every=routing_config.nurture.scan_every_seconds)
    if routing_config.nurture.has_stalls:
        runtime.add_worker(stall_scan)
    runtime.state.update(
        routing=ctx,
        timers=timers,
        retrier=retrier,
        webhooks=webhooks,
        consumer=consumer,
        nurture=nurture,
        stall_scan=stall_scan,
    )
    app = create_app(
        runtime,
        "Leadflow routing",
        [router, admin_router, reports_router, nurture_router, deadletter_router],
    )
    app.state.routing = ctx
    return app
