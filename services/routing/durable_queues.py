"""Durable work queues in the database: SLA timers and outbound webhook deliveries.

Both are claimed with ``FOR UPDATE SKIP LOCKED`` plus a lease on PostgreSQL, so replicas share
the work and a crashed replica's claims come back when the lease ends; SQLite (one process)
uses plain ordering. Firing flips a timer from pending to fired with a conditional UPDATE, so
exactly one caller wins.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.routing import leased_rows
from services.routing.domain.model import Webhook
from services.routing.repository import Row, rows_of
from services.routing.tables import deliveries, timers
from shared.db import insert_for, is_sqlite
from shared.events import CloudEvent

# ---- timers ----------------------------------------------------------------------------------


async def add_timers(
    conn: AsyncConnection, assignment_id: str, warn_at: datetime, due_at: datetime
) -> None:
    """One pending warn timer and one pending breach timer for an assignment."""
    await conn.execute(
        timers.insert(),
        [
            {"assignment_id": assignment_id, "kind": kind, "due_at": at, "state": "pending"}
            for kind, at in (("warn", warn_at), ("breach", due_at))
        ],
    )


async def add_timers_many(
    conn: AsyncConnection, clocks: Sequence[tuple[str, datetime, datetime]]
) -> None:
    """:func:`add_timers` for many assignments: ``(assignment_id, warn_at, due_at)`` each."""
    rows = [
        {"assignment_id": aid, "kind": kind, "due_at": at, "state": "pending"}
        for aid, warn_at, due_at in clocks
        for kind, at in (("warn", warn_at), ("breach", due_at))
    ]
    if rows:
        await conn.execute(timers.insert(), rows)


async def add_timer(conn: AsyncConnection, assignment_id: str, kind: str, due_at: datetime) -> None:
    """One more pending timer of an assignment (an escalation step); once per kind."""
    await conn.execute(
        insert_for(conn)(timers)
        .on_conflict_do_nothing(index_elements=["assignment_id", "kind"])
        .values(assignment_id=assignment_id, kind=kind, due_at=due_at, state="pending")
    )


async def cancel_timers(conn: AsyncConnection, assignment_id: str) -> None:
    """Cancel an assignment's pending timers (its clock stopped)."""
    await conn.execute(
        update(timers)
        .where(
            timers.c.assignment_id == assignment_id,
            timers.c.state == "pending",
        )
        .values(state="cancelled")
    )


async def cancel_timers_many(conn: AsyncConnection, assignment_ids: Sequence[str]) -> None:
    """:func:`cancel_timers` for many assignments in one statement."""
    if assignment_ids:
        await conn.execute(
            update(timers)
            .where(timers.c.assignment_id.in_(sorted(assignment_ids)), timers.c.state == "pending")
            .values(state="cancelled")
        )


async def claim_due_timers(
    conn: AsyncConnection, owner: str, now: datetime, limit: int, lease_seconds: float
) -> list[Row]:
    """Due timers to fire; on PostgreSQL also leased to ``owner`` so replicas share the work."""
    return await leased_rows.claim_due(conn, timers, owner, now, limit, lease_seconds)


async def release_timers(conn: AsyncConnection, timer_ids: Sequence[int], owner: str) -> None:
    """Give back claimed timers not fired (stopping): claimable again at once, by anyone."""
    await conn.execute(
        update(timers)
        .where(
            timers.c.id.in_(list(timer_ids)),
            timers.c.state == "pending",
            timers.c.lease_owner == owner,
        )
        .values(lease_owner=None, lease_until=None)
    )


async def defer_timer(conn: AsyncConnection, timer_id: int, until: datetime) -> None:
    """Firing failed: retry this timer at ``until`` (not in a hot loop, not a lease later)."""
    await leased_rows.defer(conn, timers, timer_id, until)


async def mark_fired(conn: AsyncConnection, timer_id: int, now: datetime) -> bool:
    """Mark a timer fired if it is still pending; True only for the one caller that does."""
    return await leased_rows.mark_fired(conn, timers, timer_id, now)


async def mark_fired_many(
    conn: AsyncConnection, timer_ids: Sequence[int], now: datetime
) -> set[int]:
    """:func:`mark_fired` for a batch: the ids this caller flipped from pending to fired."""
    return await leased_rows.mark_fired_many(conn, timers, timer_ids, now)


async def fire_pending_many(
    conn: AsyncConnection, assignment_ids: Sequence[str], kind: str, now: datetime
) -> dict[str, datetime]:
    """:func:`fire_pending` for many assignments: the due time of each one's timer of ``kind``
    that this caller flipped from pending to fired."""
    if not assignment_ids:
        return {}
    res = await conn.execute(
        update(timers)
        .where(
            timers.c.assignment_id.in_(sorted(assignment_ids)),
            timers.c.kind == kind,
            timers.c.state == "pending",
        )
        .values(state="fired", fired_at=now)
        .returning(timers.c.assignment_id, timers.c.due_at)
    )
    return {str(aid): due for aid, due in res}


async def fire_pending(
    conn: AsyncConnection, assignment_id: str, kind: str, now: datetime
) -> datetime | None:
    """Mark an assignment's pending timer of ``kind`` fired, leased or not; its due time, or
    None if there was none pending (the one caller that flips it gets the due time)."""
    res = await conn.execute(
        update(timers)
        .where(
            timers.c.assignment_id == assignment_id,
            timers.c.kind == kind,
            timers.c.state == "pending",
        )
        .values(state="fired", fired_at=now)
        .returning(timers.c.due_at)
    )
    due: datetime | None = res.scalar_one_or_none()
    return due


async def next_timer_due(conn: AsyncConnection, now: datetime) -> datetime | None:
    """When a pending timer next becomes claimable (its due time, or its lease's end)."""
    return await leased_rows.next_due(conn, timers, now)


async def pending_timer_counts(conn: AsyncConnection) -> dict[str, int]:
    """Pending timers by kind (``warn``, ``breach``, escalation steps), for the gauge."""
    rows = await conn.execute(
        select(timers.c.kind, func.count())
        .where(timers.c.state == "pending")
        .group_by(timers.c.kind)
    )
    return {str(kind): int(n) for kind, n in rows}


async def timers_of(conn: AsyncConnection, assignment_id: str) -> list[Row]:
    """An assignment's timers (for tests and diagnostics)."""
    return rows_of(
        await conn.execute(select(timers).where(timers.c.assignment_id == assignment_id))
    )


# ---- webhook deliveries -----------------------------------------------------------------------


async def add_webhook_copies(
    conn: AsyncConnection, webhooks: Sequence[Webhook], events: Sequence[CloudEvent], now: datetime
) -> None:
    """Queue one delivery of each event to every webhook subscribed to its type (a webhook
    without an event list takes them all)."""
    await add_deliveries(
        conn,
        [
            {
                "webhook": hook.name,
                "url": hook.url,
                "event_id": ev.id,
                "event_type": ev.type,
                "lead_id": ev.subject,
                "body": orjson.dumps(ev.to_structured()).decode(),
                "state": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for hook in webhooks
            for ev in events
            if not hook.events or ev.type in hook.events
        ],
    )


async def add_deliveries(conn: AsyncConnection, rows: Sequence[Row]) -> None:
    """Queue webhook deliveries (a repeated event for the same webhook is ignored)."""
    if rows:
        await conn.execute(
            insert_for(conn)(deliveries).on_conflict_do_nothing(
                index_elements=["webhook", "event_id"]
            ),
            list(rows),
        )


async def claim_deliveries(
    conn: AsyncConnection,
    now: datetime,
    limit: int,
    lease_seconds: float,
    token: str,
    *,
    webhooks: Sequence[str] | None = None,
) -> list[Row]:
    """Due deliveries (of ``webhooks``, if given), leased to ``token`` for ``lease_seconds``.

    The lease pushes ``next_attempt_at`` ahead, so nobody else claims the rows meanwhile; the
    caller sends them at once and records each outcome with :func:`finish_delivery` under the
    same token.
    """
    q = (
        select(deliveries)
        .where(deliveries.c.state == "pending", deliveries.c.next_attempt_at <= now)
        .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
        .limit(limit)
    )
    if webhooks is not None:
        q = q.where(deliveries.c.webhook.in_(list(webhooks)))
    if not is_sqlite(conn):
        q = q.with_for_update(skip_locked=True)
    rows = rows_of(await conn.execute(q))
    if rows:
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.id.in_([r["id"] for r in rows]))
            .values(next_attempt_at=now + timedelta(seconds=lease_seconds), lease_token=token)
        )
    return rows


async def finish_delivery(
    conn: AsyncConnection, delivery_id: int, token: str, values: Mapping[str, Any]
) -> bool:
    """Record a delivery attempt's outcome, only while ``token`` still holds its lease (and it
    is still pending); False when the lease was lost or the delivery was cancelled meanwhile."""
    res = await conn.execute(
        update(deliveries)
        .where(
            deliveries.c.id == delivery_id,
            deliveries.c.lease_token == token,
            deliveries.c.state == "pending",
        )
        .values(**values, lease_token=None)
    )
    return bool(res.rowcount)


async def update_delivery(
    conn: AsyncConnection, delivery_id: int, values: Mapping[str, Any]
) -> None:
    """Change a delivery unconditionally (operator actions, tests)."""
    await conn.execute(update(deliveries).where(deliveries.c.id == delivery_id).values(**values))


async def next_delivery_due(
    conn: AsyncConnection, webhooks: Sequence[str] | None = None
) -> datetime | None:
    """When the next pending delivery (of ``webhooks``, if given) is due."""
    q = select(func.min(deliveries.c.next_attempt_at)).where(deliveries.c.state == "pending")
    if webhooks is not None:
        q = q.where(deliveries.c.webhook.in_(list(webhooks)))
    due: datetime | None = (await conn.execute(q)).scalar_one_or_none()
    return due


async def queued_delivery_count(conn: AsyncConnection) -> int:
    """Deliveries waiting to be attempted (pending or retrying), for the gauge."""
    n = await conn.scalar(
        select(func.count()).select_from(deliveries).where(deliveries.c.state == "pending")
    )
    return int(n or 0)


async def scrub_deliveries(
    conn: AsyncConnection, lead_ids: Sequence[str], scrub: Callable[[str], str], now: datetime
) -> int:
    """Erasure: remove the leads' personal data from their delivery bodies; deliveries not
    sent yet are given up (a receiver must not learn about an erased person)."""
    rows = rows_of(
        await conn.execute(
            select(deliveries.c.id, deliveries.c.body, deliveries.c.state).where(
                deliveries.c.lead_id.in_(list(lead_ids))
            )
        )
    )
    for row in rows:
        values: dict[str, Any] = {"body": scrub(str(row["body"]))}
        if row["state"] == "pending":
            values.update(state="dead", last_error="lead erased before delivery", lease_token=None)
        await conn.execute(update(deliveries).where(deliveries.c.id == row["id"]).values(**values))
    return len(rows)


async def purge_finished(
    conn: AsyncConnection, *, deliveries_before: datetime, timers_before: datetime
) -> tuple[int, int]:
    """Retention: delete delivered and dead deliveries created before ``deliveries_before`` and
    fired or cancelled timers due before ``timers_before``; return (deliveries, timers)."""
    d = await conn.execute(
        delete(deliveries).where(
            deliveries.c.state.in_(["delivered", "dead"]),
            deliveries.c.created_at < deliveries_before,
        )
    )
    t = await conn.execute(
        delete(timers).where(
            timers.c.state.in_(["fired", "cancelled"]), timers.c.due_at < timers_before
        )
    )
    return int(d.rowcount or 0), int(t.rowcount or 0)


async def list_deliveries(
    conn: AsyncConnection, *, state: str | None, limit: int, before_id: int | None
) -> list[Row]:
    """The delivery log, newest first."""
    q = select(deliveries).order_by(deliveries.c.id.desc()).limit(limit)
    if state:
        q = q.where(deliveries.c.state == state)
    if before_id is not None:
        q = q.where(deliveries.c.id < before_id)
    return rows_of(await conn.execute(q))
