"""Wiring of the scoring service: config, runtime, consumer, workers and HTTP app."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import FastAPI

from services.scoring.api import router
from services.scoring.api_reports import router as reports_router
from services.scoring.config import rules_for
from services.scoring.deps import ScoringContext
from services.scoring.events import SOURCE
from services.scoring.handlers import ScoringHandler, is_urgent
from services.scoring.lead_cache import LeadCache
from services.scoring.workers import DecaySweep, ScoringRetention, decay_worker
from shared.bus import ConsumerRunner
from shared.db import create_engine
from shared.deadletter_api import router as deadletter_router
from shared.http import create_app
from shared.runtime import Runtime
from shared.settings import Settings
from shared.topics import Topics

GROUP_ID = "leadflow-scoring"


def build_app(settings: Settings, config: dict[str, Any] | None = None) -> FastAPI:
    """The scoring app; its lifespan starts and drains the runtime."""
    runtime = Runtime(SOURCE, settings, create_engine(settings.db_url))
    ctx = ScoringContext(
        settings=settings,
        engine=runtime.engine,
        rules=rules_for(settings, config),
        topics=Topics(settings.leadflow_topic_prefix),
        wake=runtime.relay.wake,
    )
    runtime.add_worker(
        ConsumerRunner(
            settings=settings,
            engine=runtime.consumer_engine,
            topics=[ctx.topics.interactions, ctx.topics.routing, ctx.topics.sales],
            group_id=GROUP_ID,
            handler=ScoringHandler(
                ctx.rules,
                ctx.topics,
                ctx.clock,
                cache=LeadCache(settings.leadflow_scoring_lead_cache_mb),
            ),
            source=SOURCE,
            after_commit=ctx.wake,
            urgent=is_urgent,
        )
    )
    sweep = DecaySweep(ctx.engine, ctx.rules, ctx.topics, clock=ctx.clock, wake=ctx.wake)
    runtime.add_worker(decay_worker(sweep))
    runtime.add_worker(
        ScoringRetention(
            ctx.engine,
            anonymous_keep=timedelta(days=settings.leadflow_anonymous_retention_days),
            timeline_keep=timedelta(days=settings.leadflow_timeline_retention_days),
        )
    )
    app = create_app(runtime, "Leadflow scoring", [router, reports_router, deadletter_router])
    app.state.scoring = ctx
    return app
