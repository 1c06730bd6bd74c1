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

    #: What a fired SLA timer's commit wakes (None: every waker): the relay, the webhook
    #: worker and the queue retrier. Nothing a timer writes concerns the nurture worker, and
    #: the timer worker itself sleeps until its next timer is due.
    timer_wakers: list[Callable[[], None]] | None = None

    def after_commit(self) -> None:
        """Wake the relay and the workers (call after a commit that wrote something)."""
        for wake in self.wakers:
            wake()

    def after_timer_commit(self) -> None:
        """Wake what a commit of fired SLA timers concerns (see :attr:`timer_wakers`)."""
        for wake in self.wakers if self.timer_wakers is None else self.timer_wakers:
            wake()


def get_context(request: Request) -> RoutingContext:
    """The routing context of the app serving this request."""
    ctx: RoutingContext = request.app.state.routing
    return ctx


ContextDep = Annotated[RoutingContext, Depends(get_context)]
