"""The relay's statements read no whole outbox once it has grown, whatever plans were kept.

The relay keeps one connection as long as it holds its lock, and the driver prepares each
statement once per connection: after five executions PostgreSQL may keep a generic plan,
costed for the outbox as it was then (young, nearly empty). For ``… WHERE id = ANY($1)``
that plan was a sequential scan, which then read the whole outbox (days of sent rows) to
mark every pass sent.
"""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from sqlalchemy import text

from shared.db import create_engine
from shared.events import CloudEvent
from shared.outbox import OutboxRelay, enqueue
from tests.support import wait_for

_STATS = text(
    "SELECT coalesce(seq_scan, 0) AS seq_scan, coalesce(n_tup_upd, 0) AS updated"
    " FROM pg_stat_user_tables WHERE relname = 'outbox'"
)
_GROWN = text(
    "INSERT INTO outbox (source, topic, event_id, ce_type, ce_source, ce_time, partition_key,"
    " extensions, data, created_at, sent_at)"
    " SELECT 't', 'lf-plans', 'old-' || n, 'io.test.old', 't', now(), 'k', '{}', '{}', now(),"
    " now() FROM generate_series(1, 20000) AS n"
)


async def test_a_pass_marks_its_rows_by_index_after_the_outbox_grew(
    kafka_bootstrap: str, pg_db_url: str
) -> None:
    engine = create_engine(pg_db_url)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    relay = OutboxRelay(engine, producer, "t")

    async def stats() -> tuple[int, int]:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT pg_stat_clear_snapshot()"))
            row = (await conn.execute(_STATS)).one()
            return int(row.seq_scan), int(row.updated)

    try:
        async with engine.begin() as conn:
            # No ANALYZE in the middle of the test: it would have the plans made again.
            await conn.execute(text("ALTER TABLE outbox SET (autovacuum_enabled = false)"))
        for n in range(8):  # passes while the outbox is young
            async with engine.begin() as conn:
                await enqueue(
                    conn, "t", "lf-plans", [CloudEvent(type="io.test", source="t", data={"n": n})]
                )
            assert await relay.relay_once() == 1
        async with engine.begin() as conn:
            await conn.execute(_GROWN)
            await enqueue(
                conn,
                "t",
                "lf-plans",
                [CloudEvent(type="io.test", source="t", data={"n": n}) for n in range(5)],
            )
        scans, updated = await stats()
        assert await relay.relay_once() == 5

        async def pass_counted() -> bool:  # the relay's backend reports its counts when idle
            return (await stats())[1] >= updated + 5

        await wait_for(pass_counted, timeout=20, what="the pass in the table's statistics")
        assert (await stats())[0] == scans
    finally:
        await relay.stop()
        await relay._release()
        await producer.stop()
        await engine.dispose()
