"""Due rows claimed with a lease: the one mechanism behind SLA timers and nurture steps.

A table served here has ``id``, ``state`` (``pending`` until fired), ``due_at``, ``fired_at``,
``lease_owner`` and ``lease_until``. On PostgreSQL due rows are claimed ``FOR UPDATE SKIP
LOCKED`` and leased to the claimer, so replicas share them and a crashed replica's claims come
back when the lease ends; SQLite (one process) uses plain ordering. Firing flips pending to
fired with a conditional UPDATE, so exactly one caller wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Table, func, or_, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.routing.repository import Row, rows_of
from shared.db import is_sqlite


async def claim_due(
    conn: AsyncConnection,
    table: Table,
    owner: str,
    now: datetime,
    limit: int,
    lease_seconds: float,
) -> list[Row]:
    """Due rows to fire; on PostgreSQL also leased to ``owner`` so replicas share the work."""
    c = table.c
    q = (
        select(table)
        .where(
            c.state == "pending",
            c.due_at <= now,
            or_(c.lease_until.is_(None), c.lease_until < now),
        )
        .order_by(c.due_at, c.id)
        .limit(limit)
    )
    if is_sqlite(conn):
        return rows_of(await conn.execute(q))
    # Picked and leased in one statement (one round trip, not two).
    picked = q.with_only_columns(c.id).with_for_update(skip_locked=True)
    rows = rows_of(
        await conn.execute(
            update(table)
            .where(c.id.in_(picked))
            .values(lease_owner=owner, lease_until=now + timedelta(seconds=lease_seconds))
            .returning(*table.c)
        )
    )
    return sorted(rows, key=lambda r: (r["due_at"], r["id"]))


async def mark_fired(conn: AsyncConnection, table: Table, row_id: int, now: datetime) -> bool:
    """Mark a row fired if it is still pending; True only for the one caller that does."""
    res = await conn.execute(
        update(table)
        .where(table.c.id == row_id, table.c.state == "pending")
        .values(state="fired", fired_at=now)
    )
    return bool(res.rowcount)


async def mark_fired_many(
    conn: AsyncConnection, table: Table, row_ids: Sequence[int], now: datetime
) -> set[int]:
    """:func:`mark_fired` for a batch of rows in one statement: the ids this caller flipped."""
    if not row_ids:
        return set()
    res = await conn.execute(
        update(table)
        .where(table.c.id.in_(sorted(row_ids)), table.c.state == "pending")
        .values(state="fired", fired_at=now)
        .returning(table.c.id)
    )
    return {int(r[0]) for r in res}


async def defer(conn: AsyncConnection, table: Table, row_id: int, until: datetime) -> None:
    """Firing failed: retry this row at ``until`` (not in a hot loop, not a lease later)."""
    await conn.execute(
        update(table).where(table.c.id == row_id).values(lease_owner=None, lease_until=until)
    )


async def next_due(conn: AsyncConnection, table: Table, now: datetime) -> datetime | None:
    """When a pending row next becomes claimable (its due time, or its lease's end)."""
    c = table.c
    free = select(func.min(c.due_at)).where(
        c.state == "pending", or_(c.lease_until.is_(None), c.lease_until < now)
    )
    leased = select(func.min(c.lease_until)).where(c.state == "pending", c.lease_until >= now)
    found = (await conn.execute(union_all(free, leased))).scalars().all()
    return min((t for t in found if t is not None), default=None)
