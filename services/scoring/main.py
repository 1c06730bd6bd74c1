"""Wiring of the scoring service: config, runtime, consumer, sweep and HTTP app."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import FastAPI

from services.scoring.api import router
from services.scoring.api_reports import router as reports_router
from services.scoring.config import rules_for
from services.scoring.deps import ScoringContext
from services.scoring.handlers import ScoringHandler
from services.scoring.retention import ScoringRetention
from services.scoring.sweep import DecaySweep
from shared.bus import ConsumerRunner
from shared.db import create_engine
from shared.deadletter_api import router as deadletter_router
from shared.http import create_app
from shared.runtime import Runtime
from shared.settings import Settings
from shared.topics import Topics

SERVICE_NAME = "scoring"
GROUP_ID = "leadflow-scoring"


def build_app(settings: Settings, config: dict[str, Any] | None = None) -> FastAPI:
    """The scoring app; its lifespan starts and drains the runtime."""
    rules = rules_for(settings, config)
    topics = Topics(settings.leadflow_topic_prefix)
    runtime = Runtime(SERVICE_NAME, settings, create_engine(settings.db_url))
    runtime.add_worker(
        ConsumerRunner(
            settings=settings,
            engine=runtime.consumer_engine,
            topics=[topics.interactions, topics.routing, topics.sales],
            group_id=GROUP_ID,
            handler=ScoringHandler(rules, topics),
            source=SERVICE_NAME,
            after_commit=runtime.relay.wake,
        )
    )
    runtime.add_worker(DecaySweep(runtime.engine, rules, topics, wake=runtime.relay.wake))
    runtime.add_worker(
        ScoringRetention(
            runtime.engine,
            anonymous_keep=timedelta(days=settings.leadflow_anonymous_retention_days),
            timeline_keep=timedelta(days=settings.leadflow_timeline_retention_days),
        )
    )
    app = create_app(runtime, "Leadflow scoring", [router, reports_router, deadletter_router])
    app.state.scoring = ScoringContext(settings, runtime.engine, rules, topics, runtime.relay.wake)
    return app
