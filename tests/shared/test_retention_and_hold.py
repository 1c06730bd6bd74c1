"""Held outbox rows wait for their time; retention removes only what is old and done."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from shared.db import create_engine
from shared.events import CloudEvent, utcnow
from shared.messaging_tables import outbox, processed_events
from shared.outbox import enqueue, pending_count, release
from shared.retention import Retention
from shared.runtime import Runtime
from shared.topics import Topics
from tests.support import make_settings, wait_for, wait_for_events


async def test_held_rows_wait_until_released_or_their_time(
    kafka_bootstrap: str, db_url: str
) -> None:
    settings = make_settings(kafka_bootstrap, db_url)
    topic = Topics(settings.leadflow_topic_prefix).interactions
    engine = create_engine(db_url)
    runtime = Runtime("t", settings, engine)
    held = CloudEvent(type="io.test.held", source="t", data={}, key="k")
    released = CloudEvent(type="io.test.released", source="t", data={}, key="k")
    expired = CloudEvent(type="io.test.expired", source="t", data={}, key="k")
    marker = CloudEvent(type="io.test.marker", source="t", data={}, key="k")
    await runtime.start()
    try:
        await runtime.wait_ready()
        later = utcnow() + timedelta(hours=1)
        async with engine.begin() as conn:
            await enqueue(conn, "t", topic, [held, released, expired], available_at=later)
            await release(conn, [released.id])
            await conn.execute(
                update(outbox)
                .where(outbox.c.event_id == expired.id)
                .values(available_at=utcnow() - timedelta(seconds=1))
            )
            await enqueue(conn, "t", topic, [marker])
        runtime.relay.wake()
        events = await wait_for_events(
            kafka_bootstrap, topic, lambda evs: any(e.id == marker.id for e in evs)
        )
        assert {e.id for e in events} == {released.id, expired.id, marker.id}

        async def only_the_held_one_pending() -> bool:
            # the relay marks rows sent after the broker acknowledged them: a reader of the
            # topic can see them a moment before that commit
            return await pending_count(engine, "t") == 1

        await wait_for(only_the_held_one_pending, what="released rows marked sent")
        async with engine.connect() as conn:
            unsent = select(outbox.c.event_id).where(outbox.c.sent_at.is_(None))
            assert [r[0] for r in await conn.execute(unsent)] == [held.id]  # still durable
    finally:
        await runtime.stop()


async def test_retention_deletes_only_old_published_rows_and_old_inbox_ids(db_url: str) -> None:
    engine = create_engine(db_url)
    now = utcnow()
    try:
        async with engine.begin() as conn:
            rows = [CloudEvent(type="t", source="s", data={"n": i}) for i in range(4)]
            await enqueue(conn, "svc", "topic", rows)
            others = CloudEvent(type="t", source="s", data={})
            await enqueue(conn, "other", "topic", [others])
            sent = {
                rows[0].id: now - timedelta(days=2),  # old and published: goes
                rows[1].id: now - timedelta(minutes=5),  # recently published: stays
            }
            for event_id, at in sent.items():
                await conn.execute(
                    update(outbox).where(outbox.c.event_id == event_id).values(sent_at=at)
                )
            await conn.execute(
                update(outbox)
                .where(outbox.c.source == "other")
                .values(sent_at=now - timedelta(days=2))
            )
            await conn.execute(
                processed_events.insert(),
                [
                    {"consumer": "g", "event_id": "old", "processed_at": now - timedelta(days=30)},
                    {"consumer": "g", "event_id": "new", "processed_at": now},
                    {"consumer": "x", "event_id": "old", "processed_at": now - timedelta(days=30)},
                ],
            )
        retention = Retention(
            engine,
            "svc",
            lambda: ["g"],
            outbox_keep=timedelta(hours=24),
            inbox_keep=timedelta(days=14),
        )
        assert await retention.purge(now) == (1, 1)
        async with engine.connect() as conn:
            left = set((await conn.execute(select(outbox.c.event_id))).scalars())
            inbox = set(
                (
                    await conn.execute(
                        select(processed_events.c.consumer, processed_events.c.event_id)
                    )
                ).all()
            )
        # unsent rows stay whatever their age; other services' rows are theirs to purge
        assert left == {rows[1].id, rows[2].id, rows[3].id, others.id}
        assert inbox == {("g", "new"), ("x", "old")}
    finally:
        await engine.dispose()


async def test_runtime_purges_at_start(kafka_bootstrap: str, db_url: str) -> None:
    settings = make_settings(kafka_bootstrap, db_url)
    engine = create_engine(db_url)
    async with engine.begin() as conn:
        ev = CloudEvent(type="t", source="s", data={})
        await enqueue(conn, "t", "topic", [ev])
        await conn.execute(update(outbox).values(sent_at=utcnow() - timedelta(days=3)))
    runtime = Runtime("t", settings, engine)
    await runtime.start()
    try:

        async def gone() -> bool:
            async with engine.connect() as conn:
                return (await conn.execute(select(outbox.c.id))).first() is None

        await wait_for(gone, what="retention ran at start")
    finally:
        await runtime.stop()


def test_inbox_must_outlast_the_outbox_window() -> None:
    """L4: an inbox window shorter than the outbox window is refused at start-up."""
    import pytest

    from shared.settings import SettingsError

    url = "sqlite+aiosqlite:///:memory:"
    engine = create_engine(url)
    short = make_settings(
        "127.0.0.1:1",
        url,
        leadflow_outbox_retention_hours=48.0,
        leadflow_inbox_retention_days=1.0,
    )
    with pytest.raises(SettingsError, match="LEADFLOW_INBOX_RETENTION_DAYS"):
        Runtime("t", short, engine)
    equal = make_settings(
        "127.0.0.1:1", url, leadflow_outbox_retention_hours=24.0, leadflow_inbox_retention_days=1.0
    )
    assert Runtime("t", equal, engine).retention.inbox_keep == timedelta(days=1)
