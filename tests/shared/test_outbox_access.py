"""The outbox functions services use instead of touching the table: hold, count, rewrite."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select

from shared.db import create_engine
from shared.events import CloudEvent, utcnow
from shared.loops import Periodic
from shared.messaging_tables import outbox
from shared.outbox import count_pending, enqueue, hold, mark_sent, rewrite_rows


async def test_held_rows_are_counted_only_when_asked(db_url: str) -> None:
    engine = create_engine(db_url)
    a, b = (CloudEvent(type="t", source="s", data={}, key="k") for _ in range(2))
    try:
        async with engine.begin() as conn:
            await enqueue(conn, "svc", "topic", [a, b])
            await hold(conn, [a.id], utcnow() + timedelta(minutes=5))
            assert await count_pending(conn, "svc") == 2
            assert await count_pending(conn, "svc", held=False) == 1
            assert await count_pending(conn, "other") == 0
            await mark_sent(conn, [b.id])
            assert await count_pending(conn, "svc", held=False) == 0
    finally:
        await engine.dispose()


async def test_rewrite_touches_only_published_rows_it_names(db_url: str) -> None:
    engine = create_engine(db_url)
    sent = CloudEvent(type="x", source="s", subject="L1", data={"email": "a@b.c"}, key="a@b.c")
    other_type = CloudEvent(type="y", source="s", subject="L1", data={"email": "a@b.c"}, key="k")
    unsent = CloudEvent(type="x", source="s", subject="L1", data={"email": "a@b.c"}, key="k")
    other_lead = CloudEvent(type="x", source="s", subject="L2", data={"email": "d@e.f"}, key="k")
    try:
        async with engine.begin() as conn:
            await enqueue(conn, "svc", "topic", [sent, other_type, unsent, other_lead])
            await mark_sent(conn, [sent.id, other_type.id, other_lead.id])
            changed = await rewrite_rows(
                conn, "svc", lambda d: {"gone": True}, subject="L1", types=["x"], drop_key=True
            )
            assert changed == 1
            # a second pass finds nothing left to forget
            assert await rewrite_rows(conn, "svc", dict, types=["x"], drop_key=True) == 1
            rows = {
                r.event_id: r
                for r in await conn.execute(
                    select(outbox.c.event_id, outbox.c.data, outbox.c.partition_key)
                )
            }
        assert rows[sent.id].data == {"gone": True} and rows[sent.id].partition_key is None
        assert rows[other_type.id].data == {"email": "a@b.c"}
        assert rows[unsent.id].data == {"email": "a@b.c"}
        assert rows[other_lead.id].partition_key is None  # the second, unnarrowed pass
    finally:
        await engine.dispose()


async def test_erasure_can_rewrite_unsent_rows_and_rekey_published_ones(db_url: str) -> None:
    engine = create_engine(db_url)
    sent = CloudEvent(type="x", source="s", subject="L1", data={"email": "a@b.c"}, key="a@b.c")
    unsent = CloudEvent(type="x", source="s", subject="L1", data={"email": "a@b.c"}, key="a@b.c")
    try:
        async with engine.begin() as conn:
            await enqueue(conn, "svc", "topic", [sent, unsent])
            await mark_sent(conn, [sent.id])
            scrub = lambda d: {**d, "email": None}  # noqa: E731
            changed = await rewrite_rows(
                conn, "svc", scrub, subject="L1", unsent=True, sent_key="L1"
            )
            assert changed == 2
            rows = {
                r.event_id: r
                for r in await conn.execute(
                    select(outbox.c.event_id, outbox.c.data, outbox.c.partition_key)
                )
            }
        assert rows[sent.id].data == {"email": None} and rows[sent.id].partition_key == "L1"
        # the relay still owes it: its key keeps it on the lead's partition, in order
        assert rows[unsent.id].data == {"email": None} and rows[unsent.id].partition_key == "a@b.c"
    finally:
        await engine.dispose()


async def test_periodic_runs_its_work_again_and_stops() -> None:
    runs = 0
    done = asyncio.Event()

    async def work() -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            done.set()

    loop = Periodic(0.01, work)
    task = asyncio.create_task(loop.run())
    await asyncio.wait_for(done.wait(), timeout=5)
    await loop.stop()
    await asyncio.wait_for(task, timeout=5)
    assert runs >= 3
