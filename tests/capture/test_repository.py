"""Repository contract on PostgreSQL and SQLite: idempotency, in-doubt spool rows, ad fetches."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from services.capture import repository
from services.capture.tables import ad_fetches, idempotency
from shared.db import create_engine
from shared.events import CloudEvent, utcnow
from shared.messaging_tables import outbox
from shared.outbox import enqueue


async def test_idempotency_records_and_pruning(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            await repository.remember_idempotent(conn, [("e1", "form:x", "a@b.co")])
            await repository.remember_idempotent(conn, [("e1", "form:x", "other")])  # repeat
            await repository.remember_idempotent(conn, [("e2", "segment", "anon")])
            await conn.execute(
                update(idempotency)
                .where(idempotency.c.event_id == "e2")
                .values(created_at=utcnow() - timedelta(days=30))
            )
        async with engine.begin() as conn:
            assert await repository.find_idempotent(conn, ["e1", "e2", "e3"]) == {
                "e1": "a@b.co",
                "e2": "anon",
            }
            assert await repository.prune_idempotent(conn, timedelta(days=7)) == 1
            assert await repository.find_idempotent(conn, ["e1", "e2"]) == {"e1": "a@b.co"}
    finally:
        await engine.dispose()


async def test_in_doubt_rows_are_hidden_then_resolved_or_released(db_url: str) -> None:
    engine = create_engine(db_url)
    events = [CloudEvent(type="t", source="s", data={"n": i}, key="k") for i in range(3)]
    ids = [e.id for e in events]
    try:
        async with engine.begin() as conn:
            await enqueue(conn, "capture", "topic", events)
            await repository.mark_in_doubt(conn, ids)
        async with engine.begin() as conn:
            assert await repository.spool_pending(conn) == 3
            await repository.resolve_in_doubt(conn, ids[:1], delivered=True)
            await repository.resolve_in_doubt(conn, ids[1:2], delivered=False)
            # the third is stale: a crashed process left it in doubt long ago
            await conn.execute(
                update(outbox)
                .where(outbox.c.event_id == ids[2])
                .values(created_at=utcnow() - timedelta(hours=1))
            )
            assert await repository.release_stale_in_doubt(conn, timedelta(minutes=2)) == 1
        async with engine.connect() as conn:
            rows = {
                r.event_id: r.sent_at
                for r in await conn.execute(select(outbox.c.event_id, outbox.c.sent_at))
            }
        assert rows[ids[0]] is not None and rows[ids[0]] > repository.IN_DOUBT
        assert rows[ids[1]] is None and rows[ids[2]] is None
    finally:
        await engine.dispose()


async def test_ad_fetch_claims_dedupe_and_backoff(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            assert await repository.add_ad_fetch(conn, "meta", "1", {"leadgen_id": "1"})
            assert not await repository.add_ad_fetch(conn, "meta", "1", {"leadgen_id": "1"})
            assert await repository.add_ad_fetch(conn, "linkedin", "1", {})
        async with engine.begin() as conn:
            claimed = await repository.claim_due_fetches(conn, 10, timedelta(seconds=60))
        assert sorted(r.platform for r in claimed) == ["linkedin", "meta"]
        async with engine.begin() as conn:
            # leased: nothing is due again until the lease expires
            assert await repository.claim_due_fetches(conn, 10, timedelta(seconds=60)) == []
            meta = next(r for r in claimed if r.platform == "meta")
            await repository.fail_fetch(conn, meta.id, 1, "boom", utcnow() - timedelta(seconds=1))
            [again] = await repository.claim_due_fetches(conn, 10, timedelta(seconds=60))
            assert again.id == meta.id and again.attempts == 1
            await repository.finish_fetch(conn, meta.id, "event-1")
            due = await repository.next_fetch_due(conn)
            assert due is not None and due > utcnow()
        async with engine.connect() as conn:
            statuses = {r.platform: r.status for r in await conn.execute(select(ad_fetches))}
        assert statuses == {"meta": "done", "linkedin": "pending"}
    finally:
        await engine.dispose()
