"""Wiring of the capture service: config, runtime, intake, workers and routes."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from services.capture import api_forms, api_static, api_tracking, api_webhooks
from services.capture.config import load_capture_config, tracking_origins, trusted_proxies
from services.capture.deps import CaptureContext
from services.capture.http_input import RateLimiter
from services.capture.intake import Intake
from services.capture.workers import AdFetcher, CaptureRetention, InDoubtDrain
from shared.db import create_engine
from shared.deadletter_api import router as deadletter_router
from shared.http import create_app
from shared.logs import configure_logging
from shared.runtime import Runtime
from shared.settings import Settings, get_settings
from shared.topics import Topics

SERVICE_NAME = "capture"


def build_app(settings: Settings, config: dict[str, Any] | None = None) -> FastAPI:
    """The capture app; a bad ``forms``/``capture`` config stops here with a clear message."""
    capture_config = load_capture_config(settings, config)
    runtime = Runtime(SERVICE_NAME, settings, create_engine(settings.db_url))
    # While Kafka is away capture spools to its database: it stays in the load balancer.
    runtime.broker_required = False
    topics = Topics(settings.leadflow_topic_prefix)
    intake = Intake(runtime, topics.interactions, capture_config.publish_timeout_seconds)
    fetcher = AdFetcher(runtime, settings, capture_config.ad_fetch)
    ctx = CaptureContext(
        settings=settings,
        config=capture_config,
        intake=intake,
        limiter=RateLimiter(
            capture_config.rate_per_second, capture_config.rate_burst, trusted_proxies(settings)
        ),
        fetcher=fetcher,
        tracking_origins=tracking_origins(settings, capture_config.public_origins),
    )
    runtime.add_worker(
        CaptureRetention(
            runtime.engine,
            keep_idempotency_days=capture_config.idempotency_days,
            keep_ad_fetches_days=capture_config.ad_fetch.keep_finished_days,
        )
    )
    runtime.add_worker(InDoubtDrain(intake))
    runtime.add_worker(fetcher)
    routers = [api_forms.router, api_tracking.router, api_webhooks.router, api_static.router]
    routers.append(deadletter_router)  # parked outbox rows (see shared.deadletters)
    # Capture's routes keep their own tighter limits (read_body); the global one must let the
    # largest of them (signed ad-platform webhooks) through.
    max_body = max(settings.leadflow_max_body_bytes, api_webhooks.WEBHOOK_LIMIT)
    app = create_app(
        runtime, "Leadflow capture", routers, max_body_bytes=max_body, routers_first=True
    )
    app.state.capture = ctx
    return app


def app_from_environment() -> FastAPI:
    """The app as each worker process builds it (``LEADFLOW_CAPTURE_WORKERS`` above 1)."""
    settings = get_settings()
    configure_logging(settings.leadflow_log_level)
    return build_app(settings)
