"""Repository contract on PostgreSQL and SQLite: idempotency, in-doubt spool rows, ad fetches."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from services.capture import repository
from services.capture.events import SOURCE
from services.capture.tables import ad_fetches, idempotency
from services.capture.workers import CaptureRetention
from shared.db import create_engine
from shared.events import CloudEvent, InteractionType, utcnow
from shared.messaging_tables import outbox
from shared.outbox import count_pending, enqueue, hold, mark_sent, release


async def test_idempotency_records_and_pruning(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            await repository.remember_idempotent(conn, [("e1", "form:x", "a@b.co", "f1")])
            await repository.remember_idempotent(conn, [("e1", "form:x", "other", "f2")])  # repeat
            await repository.remember_idempotent(conn, [("e2", "segment", "anon", None)])
            await conn.execute(
                update(idempotency)
                .where(idempotency.c.event_id == "e2")
                .values(created_at=utcnow() - timedelta(days=30))
            )
        async with engine.begin() as conn:
            assert await repository.find_idempotent(conn, ["e1", "e2", "e3"]) == {
                "e1": ("a@b.co", "f1"),  # the first request's fingerprint is kept
                "e2": ("anon", None),
            }
            assert await repository.prune_idempotent(conn, timedelta(days=7)) == 1
            assert await repository.find_idempotent(conn, ["e1", "e2"]) == {"e1": ("a@b.co", "f1")}
    finally:
        await engine.dispose()


async def test_in_doubt_rows_are_hidden_then_resolved_or_released(db_url: str) -> None:
    engine = create_engine(db_url)
    events = [CloudEvent(type="t", source="s", data={"n": i}, key="k") for i in range(3)]
    ids = [e.id for e in events]
    try:
        async with engine.begin() as conn:
            await enqueue(conn, "capture", "topic", events)
            await hold(conn, ids, utcnow() + repository.HOLD)  # as the intake does
        async with engine.begin() as conn:
            # held: not for the relay (the intake tracks its own in-doubt sends)
            assert await count_pending(conn, SOURCE, held=False) == 0
            await mark_sent(conn, ids[:1])
            await release(conn, ids[1:2])
            # the third is stale: a crashed process left it in doubt, and its hold ran out
            await conn.execute(
                update(outbox)
                .where(outbox.c.event_id == ids[2])
                .values(available_at=utcnow() - timedelta(seconds=1))
            )
            assert await count_pending(conn, SOURCE, held=False) == 2
        async with engine.connect() as conn:
            rows = {
                r.event_id: r
                for r in await conn.execute(
                    select(outbox.c.event_id, outbox.c.sent_at, outbox.c.available_at)
                )
            }
        assert rows[ids[0]].sent_at is not None and rows[ids[0]].sent_at > utcnow() - timedelta(
            minutes=1
        )
        assert rows[ids[1]].sent_at is None and rows[ids[1]].available_at is None
        assert rows[ids[2]].sent_at is None
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


async def test_finished_fetch_keeps_only_dedupe_data_and_identifiers_for_a_while(
    db_url: str,
) -> None:
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            for lead in ("kept", "expired", "gone"):
                await repository.add_ad_fetch(conn, "linkedin", lead, {"leadType": "SPONSORED"})
            rows = {r.lead_id: r for r in await conn.execute(select(ad_fetches))}
            soon, past = utcnow() + timedelta(days=30), utcnow() - timedelta(seconds=1)
            assert await repository.finish_fetch(
                conn, rows["kept"].id, "e-1", email="a@b.co", keep_until=soon
            )
            assert await repository.finish_fetch(
                conn, rows["expired"].id, "e-2", phone="+14155550123", keep_until=past
            )
            before = await repository.mark_deleted(conn, "linkedin", "gone")
            assert before.status == "pending"
            # deleted while being fetched: the fetch finishes nothing
            assert not await repository.finish_fetch(conn, rows["gone"].id, "e-3")
            assert not await repository.fail_fetch(conn, rows["gone"].id, 1, "x", None)
            assert await repository.mark_deleted(conn, "linkedin", "unknown") is None
            assert await repository.prune_identifiers(conn) == 1
        async with engine.connect() as conn:
            rows = {r.lead_id: r for r in await conn.execute(select(ad_fetches))}
        assert (rows["kept"].email, rows["kept"].phone) == ("a@b.co", None)
        assert rows["kept"].notification == {} and rows["kept"].event_id == "e-1"
        assert rows["expired"].phone is None and rows["expired"].identifiers_until is None
        assert rows["gone"].status == rows["unknown"].status == "deleted"
        assert rows["gone"].notification == {} and rows["gone"].event_id is None
    finally:
        await engine.dispose()


async def test_sent_ad_events_are_scrubbed_in_the_spool(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        ad = CloudEvent(
            type=InteractionType.AD_LEAD_RECEIVED, source="/s", data={"x": "a@b.co"}, key="a@b.co"
        )
        waiting = CloudEvent(
            type=InteractionType.AD_LEAD_RECEIVED, source="/s", data={"x": "c@d.co"}, key="c@d.co"
        )
        form = CloudEvent(type=InteractionType.FORM_SUBMITTED, source="/s", data={"y": 1}, key="k")
        async with engine.begin() as conn:
            await enqueue(conn, SOURCE, "topic", [ad, waiting, form])
            await conn.execute(
                update(outbox)
                .where(outbox.c.event_id.in_([ad.id, form.id]))
                .values(sent_at=utcnow())
            )
        retention = CaptureRetention(engine)
        await retention.sweep()
        await retention.sweep()  # nothing left to scrub: no change
        assert retention.sweeps == 2
        async with engine.connect() as conn:
            rows = {
                r.event_id: r
                for r in await conn.execute(
                    select(outbox.c.event_id, outbox.c.data, outbox.c.partition_key)
                )
            }
        assert rows[ad.id].data == {} and rows[ad.id].partition_key is None
        assert rows[waiting.id].data == {"x": "c@d.co"} and rows[form.id].data == {"y": 1}
    finally:
        await engine.dispose()
