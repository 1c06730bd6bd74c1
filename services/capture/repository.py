"""Database access for capture (SQLAlchemy Core on AsyncConnection; PostgreSQL and SQLite)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import orjson
from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.capture.events import SOURCE
from services.capture.tables import ad_fetches, idempotency
from shared.db import insert_for, is_sqlite
from shared.events import CloudEvent, utcnow
from shared.messaging_tables import outbox
from shared.outbox import enqueue, json_text
from shared.tracing import with_traces

#: How long a spooled row is held back from the relay while capture itself is sending it (a
#: claimed idempotency key, or a direct send in doubt). The send settles it long before; if the
#: process dies first, the hold runs out and the relay publishes the row (at least once).
HOLD = timedelta(seconds=120)


class IdempotentRecord(NamedTuple):
    """What was accepted under a key: the lead key to answer, the request's fingerprint."""

    lead_key: str
    fingerprint: str | None = None


async def find_idempotent(
    conn: AsyncConnection, event_ids: Sequence[str]
) -> dict[str, IdempotentRecord]:
    """The records of already-accepted idempotent events, by event id."""
    if not event_ids:
        return {}
    rows = await conn.execute(
        select(idempotency.c.event_id, idempotency.c.lead_key, idempotency.c.fingerprint).where(
            idempotency.c.event_id.in_(list(event_ids))
        )
    )
    return {r.event_id: IdempotentRecord(r.lead_key, r.fingerprint) for r in rows}


_REMEMBER_PG = (
    f"INSERT INTO {idempotency.name} (event_id, scope, lead_key, created_at, fingerprint)"
    " SELECT e, s, k, $1::timestamptz, f"
    " FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS r(e, s, k, f)"
    " ON CONFLICT (event_id) DO NOTHING"
)


async def remember_idempotent(
    conn: AsyncConnection, records: Sequence[tuple[str, str, str, str | None]]
) -> None:
    """Record ``(event_id, scope, lead_key, fingerprint)`` of accepted idempotent events
    (repeats ignored)."""
    if not records:
        return
    now = utcnow()
    if not is_sqlite(conn):
        # one statement for the rows, not one execution each (the driver's executemany), in
        # event id order: one lock order for concurrent writers of the same keys (no deadlock)
        ordered = sorted(records, key=lambda r: r[0])
        ids, scopes, keys, prints = zip(*ordered, strict=True)
        await conn.exec_driver_sql(
            _REMEMBER_PG, (now, list(ids), [s[:300] for s in scopes], list(keys), list(prints))
        )
        return
    ins = insert_for(conn)(idempotency).on_conflict_do_nothing(index_elements=["event_id"])
    await conn.execute(
        ins,
        [
            {"event_id": e, "scope": s[:300], "lead_key": k, "created_at": now, "fingerprint": f}
            for e, s, k, f in records
        ],
    )


#: Keys claimed per statement on SQLite (5 parameters each: well within its limit).
CLAIM_CHUNK = 500

# PostgreSQL: the keys and their spooled events in one statement (one round trip, compiled
# never), the rows in one JSON parameter (one array per column costs the driver several times
# more): the keys are inserted in event id order (one lock order for concurrent claimers: no
# deadlock); the events of the keys won are written to the outbox in the order given (the
# relay's publishing order, should it have to publish them), held until $4. The answer is
# one array: the ids won.
_CLAIM_PG = (
    "WITH e AS MATERIALIZED (SELECT r->>0 AS event_id, r->>1 AS scope, r->>2 AS partition_key,"
    " r->>3 AS fingerprint, r->>4 AS ce_type, r->>5 AS ce_source, r->>6 AS ce_subject,"
    " (r->>7)::timestamptz AS ce_time, r->8 AS extensions, r->9 AS data, n"
    " FROM jsonb_array_elements($5::jsonb) WITH ORDINALITY AS t(r, n)),"
    f" won AS (INSERT INTO {idempotency.name} (event_id, scope, lead_key, created_at, fingerprint)"
    " SELECT event_id, scope, coalesce(partition_key, ''), $3::timestamptz, fingerprint"
    " FROM e ORDER BY event_id ON CONFLICT (event_id) DO NOTHING RETURNING event_id),"
    f" spooled AS (INSERT INTO {outbox.name} (source, topic, event_id, ce_type, ce_source,"
    " ce_subject, ce_time, partition_key, extensions, data, created_at, sent_at, available_at)"
    " SELECT $1::text, $2::text, event_id, ce_type, ce_source, ce_subject, ce_time,"
    " partition_key, extensions, data, $3::timestamptz, NULL, $4::timestamptz"
    " FROM e WHERE event_id IN (SELECT event_id FROM won) ORDER BY n"
    " ON CONFLICT (event_id) DO NOTHING)"
    " SELECT array_agg(event_id) FROM won"
)


async def claim_idempotent(
    conn: AsyncConnection,
    topic: str,
    claims: Sequence[tuple[CloudEvent, str, str | None]],
    *,
    values: Mapping[str, bytes] | None = None,
    traced: bool = False,
) -> set[str]:
    """Claim the idempotency keys of ``(event, scope, fingerprint)``; return the ids won.

    A won key's event is spooled in the same transaction, held back (:data:`HOLD`), so it is
    durable before anything is published. A concurrent claimer of the same key waits on the
    unique key (PostgreSQL) or the write lock (SQLite) and loses: it must not publish.
    ``values`` may hold each event's data already encoded as JSON (its Kafka record value),
    so that it is not encoded a second time for the outbox; ``traced``: the events carry
    the current trace already (:func:`shared.tracing.with_trace`).
    """
    if not claims:
        return set()
    now = utcnow()
    if not is_sqlite(conn):
        events = [event for event, _, _ in claims]
        if not traced:
            events = with_traces(events)
        known = values or {}
        rows = orjson.dumps(
            [
                (
                    e.id,
                    scope[:300],
                    e.key,
                    fingerprint,
                    e.type,
                    e.source,
                    e.subject,
                    e.time,
                    e.extensions,
                    orjson.Fragment(known.get(e.id) or _data_json(e)),
                )
                for e, (_, scope, fingerprint) in zip(events, claims, strict=True)
            ],
            default=dict,  # extensions given as another Mapping than a dict
        )
        result = await conn.exec_driver_sql(
            _CLAIM_PG, (SOURCE, topic, now, now + HOLD, rows.decode())
        )
        return set(result.scalar_one() or ())
    ordered = sorted(claims, key=lambda c: c[0].id)  # one lock order: no deadlock
    won_ids: set[str] = set()
    # One multi-row statement per chunk, not one per key.
    for start in range(0, len(ordered), CLAIM_CHUNK):
        chunk = ordered[start : start + CLAIM_CHUNK]
        stmt = (
            insert_for(conn)(idempotency)
            .values(
                [
                    {
                        "event_id": event.id,
                        "scope": scope[:300],
                        "lead_key": event.key or "",
                        "created_at": now,
                        "fingerprint": fingerprint,
                    }
                    for event, scope, fingerprint in chunk
                ]
            )
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(idempotency.c.event_id)
        )
        won_ids.update((await conn.execute(stmt)).scalars())
    won = [event for event, _, _ in claims if event.id in won_ids]
    if won:
        await enqueue(conn, SOURCE, topic, won, available_at=now + HOLD)
    return {e.id for e in won}


def _data_json(event: CloudEvent) -> bytes:
    try:
        return event.value()
    except TypeError:  # what orjson refuses (non-string keys) is stored as the stdlib writes it
        return json_text(event.data).encode()


async def prune_idempotent(conn: AsyncConnection, older_than: timedelta) -> int:
    """Forget idempotency records older than ``older_than`` (repeats come within hours)."""
    result = await conn.execute(
        delete(idempotency).where(idempotency.c.created_at < utcnow() - older_than)
    )
    return int(result.rowcount or 0)


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


async def finish_fetch(
    conn: AsyncConnection,
    fetch_id: int,
    event_id: str,
    *,
    email: str | None = None,
    phone: str | None = None,
    keep_until: datetime | None = None,
) -> bool:
    """The lead details were fetched: keep only what dedupe needs (platform, lead id, event
    id), plus the normalised email/phone given, until ``keep_until`` (for a later erasure
    request). False when the row is no longer pending (deleted meanwhile): spool nothing."""
    keep = bool(email or phone) and keep_until is not None
    result = await conn.execute(
        update(ad_fetches)
        .where(ad_fetches.c.id == fetch_id, ad_fetches.c.status == "pending")
        .values(
            status="done",
            event_id=event_id,
            last_error=None,
            notification={},
            email=email if keep else None,
            phone=phone if keep else None,
            identifiers_until=keep_until if keep else None,
            updated_at=utcnow(),
        )
    )
    return bool(result.rowcount)


async def mark_deleted(conn: AsyncConnection, platform: str, lead_id: str) -> Any:
    """The platform deleted the lead: nothing more is fetched or kept for it, a late
    notification of it is ignored. Returns the row as it was before (None if unknown)."""
    before = await fetch_status(conn, platform, lead_id)
    now = utcnow()
    gone: dict[str, Any] = {
        "status": "deleted",
        "notification": {},
        "last_error": None,
        "email": None,
        "phone": None,
        "identifiers_until": None,
        "updated_at": now,
    }
    if before is None:
        ins = insert_for(conn)(ad_fetches).on_conflict_do_nothing(
            index_elements=["platform", "lead_id"]
        )
        await conn.execute(
            ins,
            {
                **gone,
                "platform": platform,
                "lead_id": lead_id,
                "attempts": 0,
                "next_attempt_at": now,
                "event_id": None,
                "created_at": now,
            },
        )
    else:
        await conn.execute(update(ad_fetches).where(ad_fetches.c.id == before.id).values(**gone))
    return before


async def prune_identifiers(conn: AsyncConnection) -> int:
    """Forget the email/phone kept for erasure requests once their time is up."""
    result = await conn.execute(
        update(ad_fetches)
        .where(ad_fetches.c.identifiers_until < utcnow())
        .values(email=None, phone=None, identifiers_until=None)
    )
    return int(result.rowcount or 0)


#: Fetch rows in these states are never touched by the fetcher again.
FINISHED_FETCHES = ("done", "dead", "deleted")


async def prune_ad_fetches(conn: AsyncConnection, older_than: timedelta) -> int:
    """Delete finished fetch rows last updated more than ``older_than`` ago. Until then a
    ``done`` or ``deleted`` row makes a platform's redelivery of the lead a no-op; platforms
    redeliver for hours (Meta: 36), so the default retention of 30 days is ample."""
    result = await conn.execute(
        delete(ad_fetches).where(
            ad_fetches.c.status.in_(FINISHED_FETCHES),
            ad_fetches.c.updated_at < utcnow() - older_than,
        )
    )
    return int(result.rowcount or 0)


async def fail_fetch(
    conn: AsyncConnection, fetch_id: int, attempts: int, error: str, retry_at: datetime | None
) -> bool:
    """A failed attempt: retry at ``retry_at``, or dead-letter when it is None. False when
    the row is no longer pending (deleted meanwhile)."""
    result = await conn.execute(
        update(ad_fetches)
        .where(ad_fetches.c.id == fetch_id, ad_fetches.c.status == "pending")
        .values(
            attempts=attempts,
            last_error=error[:2000],
            updated_at=utcnow(),
            status="pending" if retry_at else "dead",
            next_attempt_at=retry_at or utcnow(),
        )
    )
    return bool(result.rowcount)


async def fetch_status(conn: AsyncConnection, platform: str, lead_id: str) -> Any:
    """The fetch row of one platform lead (for operations and tests)."""
    return (
        await conn.execute(
            select(ad_fetches).where(
                ad_fetches.c.platform == platform, ad_fetches.c.lead_id == lead_id
            )
        )
    ).first()
