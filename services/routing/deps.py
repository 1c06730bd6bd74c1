"""What routing's handlers and routes depend on: the per-process :class:`RoutingContext` and
``ContextDep``, its FastAPI dependency."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from services.routing.domain.model import RoutingConfig
from shared.topics import Topics


@dataclass
class RoutingContext:
    """What handlers need besides the connection: config, topics, and post-commit wake-ups."""

    config: RoutingConfig
    topics: Topics
    #: Routing's source in the outbox.
    source: str = "routing"
    wakers: list[Callable[[], None]] = field(default_factory=list)

    def after_commit(self) -> None:
        """Wake the relay and the workers (call after a commit that wrote something)."""
        for wake in self.wakers:
            wake()


def get_context(request: Request) -> RoutingContext:
    """The routing context of the app serving this request."""
    ctx: RoutingContext = request.app.state.routing
    return ctx


ContextDep = Annotated[RoutingContext, Depends(get_context)]
