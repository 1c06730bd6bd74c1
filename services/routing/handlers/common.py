"""What the use cases share: writing what they emit, the stored lead, saving an assignment."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.routing import durable_queues as queues
from services.routing import repository as repo
from services.routing.deps import RoutingContext
from services.routing.domain.assignment import (
    Assignment,
    State,
)
from services.routing.domain.business_time import (
    Calendar,
    make_calendar,
)
from shared.contract import LeadSnapshot
from shared.events import (
    CloudEvent,
)
from shared.outbox import enqueue

log = logging.getLogger(__name__)

UNASSIGNED_QUEUE = "unassigned"
_ALWAYS = make_calendar("UTC", "24x7", name="always")


class NotFound(LookupError):
    """No such assignment or rep."""


class Conflict(RuntimeError):
    """The assignment is not in a state that allows this."""


async def emit(
    conn: AsyncConnection, ctx: RoutingContext, events: Sequence[CloudEvent], now: datetime
) -> None:
    """Publish routing events in the caller's transaction: the outbox row for Kafka and one
    delivery per subscribed webhook commit together with the state change they report."""
    if not events:
        return
    await enqueue(conn, ctx.source, ctx.topics.routing, events)
    await queues.add_webhook_copies(conn, ctx.config.webhooks, events, now)


def team_calendar(ctx: RoutingContext, team: str) -> Calendar:
    """The team's calendar (a 24x7 one if the team left the config since)."""
    t = ctx.config.teams.get(team)
    return t.calendar if t else _ALWAYS


def stored_lead(lead: LeadSnapshot) -> dict[str, Any]:
    """The lead as routing keeps it (with an assignment or in a queue): as it was published."""
    return dict(lead.data) if lead.data is not None else lead.to_data()


def lead_of(stored: Mapping[str, Any]) -> LeadSnapshot:
    """A kept lead, to route again (it was checked when its ``lead.qualified`` came in)."""
    return LeadSnapshot.from_data(stored)


async def save_assignment(
    conn: AsyncConnection,
    before: Assignment,
    after: Assignment,
    *,
    from_: Collection[State] | None = None,
) -> bool:
    """Write a transition's changes, only while the assignment is still in ``from_`` (default:
    the state it was read in); True if this caller made it."""
    return await repo.transition(
        conn, before.id, from_=from_ or {before.state}, **after.changes_since(before)
    )
