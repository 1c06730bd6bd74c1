"""Use cases: event or request -> domain decision -> repository and outbox, in one transaction.

:data:`EVENT_HANDLERS` says what each consumed event type does (:class:`ConsumerBatches` is
the consumer's handler for ``leadflow.leads`` and ``leadflow.sales``); the timer worker calls
:func:`fire_timer`, the queue retrier :func:`retry_queued`, the API :func:`first_touch` and
:func:`log_sales_activity`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from services.routing.deps import RoutingContext
from services.routing.handlers.assigning import change_rep, on_qualified, retry_queued
from services.routing.handlers.common import UNASSIGNED_QUEUE, Conflict, NotFound, emit
from services.routing.handlers.escalation import fire_timer
from services.routing.handlers.lead_changes import on_lead_gone, on_merged
from services.routing.handlers.nurture import LEAD_EVENTS as NURTURE_EVENTS
from services.routing.handlers.nurture import BatchView, batch_view
from services.routing.handlers.nurture import on_lead_event as on_nurture
from services.routing.handlers.sales import (
    CLOSE_TYPES,
    TOUCH_TYPES,
    LogSalesActivity,
    first_touch,
    log_sales_activity,
    on_sales,
)
from shared.events import CloudEvent, LeadType

__all__ = [
    "EVENT_HANDLERS",
    "UNASSIGNED_QUEUE",
    "Conflict",
    "ConsumerBatches",
    "LogSalesActivity",
    "NotFound",
    "change_rep",
    "emit",
    "fire_timer",
    "first_touch",
    "handle_event",
    "is_urgent",
    "log_sales_activity",
    "retry_queued",
]

#: A consumed event's use case.
Handler = Callable[[AsyncConnection, RoutingContext, CloudEvent], Awaitable[None]]

#: What routing does with each event type it consumes (``leadflow.leads``, ``leadflow.sales``).
EVENT_HANDLERS: dict[str, Handler] = {
    LeadType.QUALIFIED: on_qualified,
    LeadType.ERASED: on_lead_gone,
    LeadType.STATUS_CHANGED: on_lead_gone,
    LeadType.MERGED: on_merged,
    **dict.fromkeys(TOUCH_TYPES | CLOSE_TYPES, on_sales),
}


def is_urgent(ev: CloudEvent) -> bool:
    """A newly qualified lead: the consumer assigns it before the rest of its batch (the
    lead events of page views), so its SLA clock and its rep's alert start without waiting."""
    return ev.type == LeadType.QUALIFIED


async def handle_event(
    conn: AsyncConnection, ctx: RoutingContext, ev: CloudEvent, view: BatchView | None = None
) -> None:
    """Dispatch one consumed event (a type routing has no use for is skipped); ``view`` is
    the consumer batch's nurture view (see :class:`ConsumerBatches`)."""
    handler = EVENT_HANDLERS.get(ev.type)
    if handler is not None:
        await handler(conn, ctx, ev)
    if ev.type in NURTURE_EVENTS:  # nurture tracks follow every lead change (docs/nurture.md)
        await on_nurture(conn, ctx, ev, view)


class ConsumerBatches:
    """The consumer's handler and after-commit hook: every event of a batch in the batch's
    transaction; the relay and the workers are woken only after a batch that may have given
    them work (an assignment, a sales touch, an enrolment), not after the many batches of cold
    leads re-scored by page views, each of which would cost five idle passes."""

    def __init__(self, ctx: RoutingContext) -> None:
        self.ctx = ctx
        self._gave_work = False

    async def handle(self, conn: AsyncConnection, events: Sequence[CloudEvent]) -> None:
        # Most lead events (every page view re-scores a cold lead) concern no nurture track:
        # one read of the batch's enrolled leads replaces one read per event.
        view = await batch_view(conn, self.ctx, events)
        for ev in events:
            await handle_event(conn, self.ctx, ev, view)
        if view.considered or any(ev.type in EVENT_HANDLERS for ev in events):
            self._gave_work = True

    def after_commit(self) -> None:
        if self._gave_work:
            self._gave_work = False
            self.ctx.after_commit()
