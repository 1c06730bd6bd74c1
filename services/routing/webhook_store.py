"""Operator actions on the webhook delivery log: redelivering dead deliveries.

A redelivered delivery goes back to ``pending`` with its attempt count reset, due now, so the
``WebhookWorker`` sends it again (under the webhook's current URL and secret) with the usual
retries. Only ``dead`` deliveries qualify; one given up because its lead was erased never does
(its body has been scrubbed, and a receiver must not learn about an erased person).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.routing.repository import Row, rows_of
from services.routing.tables import deliveries

#: ``last_error`` of a delivery given up by erasure (``durable_queues.scrub_deliveries``).
ERASED_ERROR = "lead erased before delivery"


def _redeliverable() -> Any:
    return and_(
        deliveries.c.state == "dead",
        or_(deliveries.c.last_error.is_(None), deliveries.c.last_error != ERASED_ERROR),
    )


async def get_delivery(conn: AsyncConnection, delivery_id: int) -> Row | None:
    """One delivery by id, or None."""
    rows = rows_of(await conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)))
    return rows[0] if rows else None


def _pending_again(now: datetime) -> dict[str, Any]:
    return {"state": "pending", "attempts": 0, "next_attempt_at": now, "lease_token": None}


async def redeliver(conn: AsyncConnection, delivery_id: int, now: datetime) -> bool:
    """Put one dead delivery back in the queue; False if it is not (or no longer) dead, or was
    given up by erasure. Atomic: two operators redelivering it at once queue it once."""
    res = await conn.execute(
        update(deliveries)
        .where(deliveries.c.id == delivery_id, _redeliverable())
        .values(**_pending_again(now))
    )
    return bool(res.rowcount)


async def redeliver_dead(
    conn: AsyncConnection,
    now: datetime,
    *,
    webhooks: Sequence[str],
    since: datetime | None = None,
) -> int:
    """Put every dead delivery of ``webhooks`` (created at or after ``since``, if given) back in
    the queue, except those given up by erasure; how many."""
    cond = and_(_redeliverable(), deliveries.c.webhook.in_(list(webhooks)))
    if since is not None:
        cond = and_(cond, deliveries.c.created_at >= since)
    res = await conn.execute(update(deliveries).where(cond).values(**_pending_again(now)))
    return int(res.rowcount or 0)
