"""Database access for capture (SQLAlchemy Core on AsyncConnection; PostgreSQL and SQLite)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.capture.tables import ad_fetches, idempotency
from shared.db import insert_for
from shared.events import utcnow
from shared.messaging_tables import outbox

#: ``sent_at`` of spooled rows whose direct publish is still in doubt: the relay (which sends
#: rows whose ``sent_at`` is NULL) leaves them alone until the original send resolves.
IN_DOUBT = datetime(1970, 1, 1, tzinfo=UTC)
SOURCE = "capture"


async def find_idempotent(conn: AsyncConnection, event_ids: Sequence[str]) -> dict[str, str]:
    """The lead keys of already-accepted idempotent events, by event id."""
    if not event_ids:
        return {}
    rows = await conn.execute(
        select(idempotency.c.event_id, idempotency.c.lead_key).where(
            idempotency.c.event_id.in_(list(event_ids))
        )
    )
    return {r.event_id: r.lead_key for r in rows}


async def remember_idempotent(
    conn: AsyncConnection, records: Sequence[tuple[str, str, str]]
) -> None:
    """Record ``(event_id, scope, lead_key)`` of accepted idempotent events (repeats ignored)."""
    if not records:
        return
    now = utcnow()
    ins = insert_for(conn)(idempotency).on_conflict_do_nothing(index_elements=["event_id"])
    await conn.execute(
        ins,
        [
            {"event_id": e, "scope": s[:300], "lead_key": k, "created_at": now}
            for e, s, k in records
        ],
    )


async def prune_idempotent(conn: AsyncConnection, older_than: timedelta) -> int:
    """Forget idempotency records older than ``older_than`` (repeats come within hours)."""
    result = await conn.execute(
        delete(idempotency).where(idempotency.c.created_at < utcnow() - older_than)
    )
    return int(result.rowcount or 0)


async def mark_in_doubt(conn: AsyncConnection, event_ids: Sequence[str]) -> None:
    """Hold freshly spooled rows back from the relay while their direct send is in flight."""
    await conn.execute(
        update(outbox)
        .where(outbox.c.event_id.in_(list(event_ids)), outbox.c.sent_at.is_(None))
        .values(sent_at=IN_DOUBT)
    )


async def resolve_in_doubt(
    conn: AsyncConnection, event_ids: Sequence[str], *, delivered: bool
) -> None:
    """The direct send finished: delivered rows are done, the others go back to the relay."""
    await conn.execute(
        update(outbox)
        .where(outbox.c.event_id.in_(list(event_ids)), outbox.c.sent_at == IN_DOUBT)
        .values(sent_at=utcnow() if delivered else None)
    )


async def release_stale_in_doubt(conn: AsyncConnection, older_than: timedelta) -> int:
    """Give rows left in doubt by a crashed process back to the relay (at least once)."""
    result = await conn.execute(
        update(outbox)
        .where(
            outbox.c.source == SOURCE,
            outbox.c.sent_at == IN_DOUBT,
            outbox.c.created_at < utcnow() - older_than,
        )
        .values(sent_at=None)
    )
    return int(result.rowcount or 0)


async def spool_pending(conn: AsyncConnection) -> int:
    """How many capture events wait in the spool (unsent or in doubt)."""
    q = (
        select(func.count())
        .select_from(outbox)
        .where(
            outbox.c.source == SOURCE,
            (outbox.c.sent_at.is_(None)) | (outbox.c.sent_at == IN_DOUBT),
        )
    )
    return int((await conn.execute(q)).scalar_one())


async def add_ad_fetch(
    conn: AsyncConnection, platform: str, lead_id: str, notification: dict[str, Any]
) -> bool:
    """Store a platform lead id to fetch; False if it was already known (a redelivery)."""
    now = utcnow()
    ins = insert_for(conn)(ad_fetches).on_conflict_do_nothing(
        index_elements=["platform", "lead_id"]
    )
    result = await conn.execute(
        ins,
        {
            "platform": platform,
            "lead_id": lead_id,
            "notification": notification,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "last_error": None,
            "event_id": None,
            "created_at": now,
            "updated_at": now,
        },
    )
    return bool(result.rowcount)


async def claim_due_fetches(conn: AsyncConnection, limit: int, lease: timedelta) -> list[Any]:
    """Pending fetches that are due, each leased to this caller by moving its next attempt."""
    now = utcnow()
    rows = (
        await conn.execute(
            select(ad_fetches)
            .where(ad_fetches.c.status == "pending", ad_fetches.c.next_attempt_at <= now)
            .order_by(ad_fetches.c.next_attempt_at, ad_fetches.c.id)
            .limit(limit)
        )
    ).all()
    claimed = []
    for row in rows:
        # Optimistic claim: another replica that read the same row loses the update.
        result = await conn.execute(
            update(ad_fetches)
            .where(
                and_(
                    ad_fetches.c.id == row.id,
                    ad_fetches.c.next_attempt_at == row.next_attempt_at,
                    ad_fetches.c.status == "pending",
                )
            )
            .values(next_attempt_at=now + lease, updated_at=now)
        )
        if result.rowcount:
            claimed.append(row)
    return claimed


async def next_fetch_due(conn: AsyncConnection) -> datetime | None:
    """When the earliest pending fetch is due."""
    q = select(func.min(ad_fetches.c.next_attempt_at)).where(ad_fetches.c.status == "pending")
    value: datetime | None = (await conn.execute(q)).scalar_one()
    return value


async def finish_fetch(conn: AsyncConnection, fetch_id: int, event_id: str) -> None:
    """The lead details were fetched and the event spooled."""
    await conn.execute(
        update(ad_fetches)
        .where(ad_fetches.c.id == fetch_id)
        .values(status="done", event_id=event_id, last_error=None, updated_at=utcnow())
    )


async def fail_fetch(
    conn: AsyncConnection, fetch_id: int, attempts: int, error: str, retry_at: datetime | None
) -> None:
    """A failed attempt: retry at ``retry_at``, or dead-letter when it is None."""
    await conn.execute(
        update(ad_fetches)
        .where(ad_fetches.c.id == fetch_id)
        .values(
            attempts=attempts,
            last_error=error[:2000],
            updated_at=utcnow(),
            status="pending" if retry_at else "dead",
            next_attempt_at=retry_at or utcnow(),
        )
    )


async def fetch_status(conn: AsyncConnection, platform: str, lead_id: str) -> Any:
    """The fetch row of one platform lead (for operations and tests)."""
    return (
        await conn.execute(
            select(ad_fetches).where(
                ad_fetches.c.platform == platform, ad_fetches.c.lead_id == lead_id
            )
        )
    ).first()
