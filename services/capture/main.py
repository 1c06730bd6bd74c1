"""Wiring of the capture service: settings, config, runtime, intake, workers and routes."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer
from fastapi import FastAPI

from services.capture import api_forms, api_static, api_tracking, api_webhooks
from services.capture.ad_fetcher import AdFetcher
from services.capture.config import parse_config
from services.capture.context import CaptureContext
from services.capture.http_input import RateLimiter
from services.capture.intake import Intake, SpoolSweeper
from shared.bus import make_producer
from shared.config import load_config
from shared.db import create_engine
from shared.http import create_app
from shared.runtime import Runtime
from shared.settings import Settings
from shared.topics import Topics

SERVICE_NAME = "capture"


class _DeferredProducer:
    """Stands in for the producer when the app is built outside an event loop.

    ``leadflow capture`` builds the app before uvicorn starts its loop, and AIOKafkaProducer
    can only be created inside a running loop. The runtime's boot loop treats this stand-in's
    failed start like an unreachable broker and creates the real producer, in the loop.
    """

    async def start(self) -> None:
        raise RuntimeError("producer created before the event loop started")

    async def stop(self) -> None:
        return None


def _producer_factory(settings: Settings) -> AIOKafkaProducer:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _DeferredProducer()  # type: ignore[return-value]
    return make_producer(settings)


def build_app(settings: Settings, config: dict[str, Any] | None = None) -> FastAPI:
    """The capture app; a bad ``forms``/``capture`` config stops here with a clear message."""
    if config is None:
        config = load_config(settings.leadflow_config)
    capture_config = parse_config(config)
    runtime = Runtime(
        SERVICE_NAME, settings, create_engine(settings.db_url), producer_factory=_producer_factory
    )
    topics = Topics(settings.leadflow_topic_prefix)
    intake = Intake(runtime, topics.interactions, capture_config.publish_timeout_seconds)
    ctx = CaptureContext(
        settings=settings,
        config=capture_config,
        intake=intake,
        limiter=RateLimiter(capture_config.rate_per_second, capture_config.rate_burst),
    )
    runtime.add_worker(SpoolSweeper(intake))
    ctx.fetcher = AdFetcher(runtime, settings, capture_config.ad_fetch)
    runtime.add_worker(ctx.fetcher)
    routers = [api_forms.router, api_tracking.router, api_webhooks.router, api_static.router]
    app = create_app(runtime, "Leadflow capture", routers)
    app.state.capture = ctx
    return app
