"""What scoring's routes and workers share: the per-process dependencies, built once in
``main.build_app``, and ``ContextDep``, the FastAPI dependency that hands them to a route."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scoring.domain.ruleset import Rules
from shared.events import utcnow
from shared.settings import Settings
from shared.topics import Topics


@dataclass(frozen=True)
class ScoringContext:
    """The scoring service's collaborators."""

    settings: Settings
    engine: AsyncEngine
    rules: Rules
    topics: Topics
    #: Wakes the outbox relay after a commit that wrote lead events.
    wake: Callable[[], None]
    clock: Callable[[], datetime] = utcnow


def get_context(request: Request) -> ScoringContext:
    """The scoring context of the app serving this request."""
    ctx: ScoringContext = request.app.state.scoring
    return ctx


ContextDep = Annotated[ScoringContext, Depends(get_context)]
