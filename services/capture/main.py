"""Wiring of the capture service: settings, config, runtime, intake, workers and routes."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from services.capture import api_forms, api_static, api_tracking, api_webhooks
from services.capture.ad_fetcher import AdFetcher
from services.capture.config import parse_config
from services.capture.context import CaptureContext
from services.capture.http_input import RateLimiter
from services.capture.intake import Intake, SpoolSweeper
from shared.config import load_config
from shared.db import create_engine
from shared.http import create_app
from shared.runtime import Runtime
from shared.settings import Settings
from shared.topics import Topics

SERVICE_NAME = "capture"


def build_app(settings: Settings, config: dict[str, Any] | None = None) -> FastAPI:
    """The capture app; a bad ``forms``/``capture`` config stops here with a clear message."""
    if config is None:
        config = load_config(settings.leadflow_config)
    capture_config = parse_config(config)
    runtime = Runtime(SERVICE_NAME, settings, create_engine(settings.db_url))
    topics = Topics(settings.leadflow_topic_prefix)
    intake = Intake(runtime, topics.interactions, capture_config.publish_timeout_seconds)
    ctx = CaptureContext(
        settings=settings,
        config=capture_config,
        intake=intake,
        limiter=RateLimiter(capture_config.rate_per_second, capture_config.rate_burst),
    )
    runtime.add_worker(SpoolSweeper(intake, keep_idempotency_days=capture_config.idempotency_days))
    ctx.fetcher = AdFetcher(runtime, settings, capture_config.ad_fetch)
    runtime.add_worker(ctx.fetcher)
    routers = [api_forms.router, api_tracking.router, api_webhooks.router, api_static.router]
    app = create_app(runtime, "Leadflow capture", routers)
    app.state.capture = ctx
    return app
