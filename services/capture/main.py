"""Wiring of the capture service: settings, config, runtime, intake, workers and routes."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from services.capture import api_forms, api_static, api_tracking, api_webhooks
from services.capture.ad_fetcher import AdFetcher
from services.capture.config import parse_config
from services.capture.deps import CaptureContext
from services.capture.http_input import RateLimiter
from services.capture.intake import Intake, SpoolSweeper
from shared.config import load_config
from shared.db import create_engine
from shared.deadletter_api import router as deadletter_router
from shared.http import create_app
from shared.runtime import Runtime
from shared.settings import Settings, SettingsError, split_list
from shared.topics import Topics

SERVICE_NAME = "capture"


def tracking_origins(settings: Settings, public_origins: frozenset[str]) -> frozenset[str]:
    """Who may call the tracking API from a browser: ``LEADFLOW_TRACKING_ORIGINS``, else the
    forms' allowed origins, else (dev mode only) any origin."""
    if settings.leadflow_tracking_origins is not None:
        given = split_list(settings.leadflow_tracking_origins)
        return frozenset(o.rstrip("/").lower() for o in given)
    if public_origins:
        return frozenset(o.lower() for o in public_origins)
    return frozenset({"*"}) if settings.leadflow_dev else frozenset()


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
        limiter=_limiter(settings, capture_config.rate_per_second, capture_config.rate_burst),
        tracking_origins=tracking_origins(settings, capture_config.public_origins),
    )
    runtime.add_worker(
        SpoolSweeper(
            intake,
            keep_idempotency_days=capture_config.idempotency_days,
            keep_ad_fetches_days=capture_config.ad_fetch.keep_finished_days,
        )
    )
    ctx.fetcher = AdFetcher(runtime, settings, capture_config.ad_fetch)
    runtime.add_worker(ctx.fetcher)
    routers = [api_forms.router, api_tracking.router, api_webhooks.router, api_static.router]
    routers.append(deadletter_router)  # parked outbox rows (see shared.deadletters)
    # Capture's routes keep their own tighter limits (read_body); the global one must let the
    # largest of them (signed ad-platform webhooks) through.
    max_body = max(settings.leadflow_max_body_bytes, api_webhooks.WEBHOOK_LIMIT)
    app = create_app(runtime, "Leadflow capture", routers, max_body_bytes=max_body)
    app.state.capture = ctx
    return app


def _limiter(settings: Settings, rate: float, burst: int) -> RateLimiter:
    try:
        return RateLimiter(rate, burst, settings.leadflow_trusted_proxies)
    except ValueError as exc:
        raise SettingsError(f"invalid setting LEADFLOW_TRUSTED_PROXIES: {exc}") from None
