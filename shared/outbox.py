"""The transactional outbox: events are written in the effect's transaction, then relayed to Kafka.

A relay per process publishes its own rows in id order and marks them sent. It is woken right
after a commit that wrote rows, and polls as a fallback (rows left by a crashed process, or
written by another replica).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime

from aiokafka import AIOKafkaProducer
from prometheus_client import Counter
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db import insert_for, is_sqlite
from shared.events import CloudEvent, utcnow
from shared.messaging_tables import outbox

log = logging.getLogger(__name__)

RELAYED = Counter("leadflow_outbox_relayed_total", "Outbox rows published to Kafka", ["source"])


async def enqueue(
    conn: AsyncConnection,
    source: str,
    topic: str,
    events: Sequence[CloudEvent],
    *,
    available_at: datetime | None = None,
) -> int:
    """Write events to the outbox inside the caller's transaction.

    With ``available_at`` the relay leaves the rows alone until then (see :func:`release`).

    An event id already in the outbox is skipped, so re-emitting a derived event is harmless.
    Returns the number of events given.
    """
    if not events:
        return 0
    now = utcnow()
    rows = [
        {
            "source": source,
            "topic": topic,
            "event_id": ev.id,
            "ce_type": ev.type,
            "ce_source": ev.source,
            "ce_subject": ev.subject,
            "ce_time": ev.time,
            "partition_key": ev.key,
            "extensions": dict(ev.extensions),
            "data": dict(ev.data),
            "created_at": now,
            "sent_at": None,
            "available_at": available_at,
        }
        for ev in events
    ]
    ins = insert_for(conn)(outbox).on_conflict_do_nothing(index_elements=["event_id"])
    await conn.execute(ins, rows)
    return len(rows)


async def release(conn: AsyncConnection, event_ids: Sequence[str]) -> None:
    """Let the relay publish held rows now."""
    if event_ids:
        await conn.execute(
            update(outbox)
            .where(outbox.c.event_id.in_(list(event_ids)), outbox.c.sent_at.is_(None))
            .values(available_at=None)
        )


async def mark_sent(conn: AsyncConnection, event_ids: Sequence[str]) -> None:
    """Record rows as published (by someone other than the relay)."""
    if event_ids:
        await conn.execute(
            update(outbox)
            .where(outbox.c.event_id.in_(list(event_ids)), outbox.c.sent_at.is_(None))
            .values(sent_at=utcnow(), available_at=None)
        )


def _row_event(row: object) -> tuple[str, CloudEvent]:
    r = row._mapping  # type: ignore[attr-defined]
    return r["topic"], CloudEvent(
        type=r["ce_type"],
        source=r["ce_source"],
        data=r["data"],
        id=r["event_id"],
        time=r["ce_time"],
        subject=r["ce_subject"],
        key=r["partition_key"],
        extensions=r["extensions"] or {},
    )


async def publish(producer: AIOKafkaProducer, items: Sequence[tuple[str, CloudEvent]]) -> None:
    """Send events and wait until the broker acknowledged every one of them."""
    futures = [
        await producer.send(
            topic,
            value=ev.value(),
            key=ev.key.encode() if ev.key is not None else None,
            headers=ev.headers(),
        )
        for topic, ev in items
    ]
    await asyncio.gather(*futures)


class OutboxRelay:
    """Publishes one source's outbox rows to Kafka, at least once, in order."""

    def __init__(
        self,
        engine: AsyncEngine,
        producer: AIOKafkaProducer | None,
        source: str,
        *,
        poll_seconds: float = 1.0,
        batch_size: int = 500,
    ) -> None:
        self.engine = engine
        self.producer = producer
        self.source = source
        self.poll_seconds = poll_seconds
        self.batch_size = batch_size
        self._wake = asyncio.Event()
        self._stopping = False
        self.healthy = True

    def wake(self) -> None:
        """Ask the relay to look for rows now (called after a commit that wrote some)."""
        self._wake.set()

    async def run(self) -> None:
        """Relay until stopped; broker errors back off and retry, nothing is dropped."""
        backoff = 0.1
        while True:
            # A stop request still gets this one last drain.
            stopping = self._stopping
            try:
                while await self.relay_once():
                    pass
                self.healthy = True
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker or database down: keep rows, retry
                self.healthy = False
                if stopping:
                    break
                log.warning("outbox relay %s: %s; retrying in %.1fs", self.source, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if stopping:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
            self._wake.clear()

    async def stop(self) -> None:
        """Drain what is pending (one last pass), then stop; unsent rows wait for the next start."""
        self._stopping = True
        self._wake.set()

    async def relay_once(self) -> int:
        """Publish one batch of pending rows; return how many were sent."""
        query = (
            select(outbox)
            .where(
                outbox.c.source == self.source,
                outbox.c.sent_at.is_(None),
                or_(outbox.c.available_at.is_(None), outbox.c.available_at <= utcnow()),
            )
            .order_by(outbox.c.id)
            .limit(self.batch_size)
        )
        if is_sqlite(self.engine):
            # One relay per source on SQLite (dev); keep the write lock out of the publish.
            async with self.engine.connect() as conn:
                rows = (await conn.execute(query)).all()
            if not rows:
                return 0
            await publish(self._live_producer(), [_row_event(r) for r in rows])
            async with self.engine.begin() as conn:
                await self._mark_sent(conn, [r.id for r in rows])
        else:
            async with self.engine.begin() as conn:
                rows = (await conn.execute(query.with_for_update(skip_locked=True))).all()
                if not rows:
                    return 0
                await publish(self._live_producer(), [_row_event(r) for r in rows])
                await self._mark_sent(conn, [r.id for r in rows])
        RELAYED.labels(self.source).inc(len(rows))
        return len(rows)

    def _live_producer(self) -> AIOKafkaProducer:
        if self.producer is None:
            raise RuntimeError("the relay has no producer yet")
        return self.producer

    async def _mark_sent(self, conn: AsyncConnection, ids: list[int]) -> None:
        await conn.execute(update(outbox).where(outbox.c.id.in_(ids)).values(sent_at=utcnow()))


async def pending_count(engine: AsyncEngine, source: str | None = None) -> int:
    """How many outbox rows wait to be published (for readiness and tests)."""
    from sqlalchemy import func

    q = select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))
    if source is not None:
        q = q.where(outbox.c.source == source)
    async with engine.connect() as conn:
        return int((await conn.execute(q)).scalar_one())
