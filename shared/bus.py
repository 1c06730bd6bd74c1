"""The Kafka side: producer settings, topic creation, and the batch consumer runner.

Delivery is at least once. The runner makes effects exactly once: each batch from ``getmany``
is handled in one database transaction that also records the event ids (the inbox) and writes
any emitted events to the outbox; offsets are committed only after that transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db import insert_for
from shared.events import CloudEvent, InvalidEvent, derived_event_id, from_kafka, utcnow
from shared.failpoints import failpoint
from shared.messaging_tables import processed_events
from shared.outbox import enqueue
from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger(__name__)

CONSUMED = Counter("leadflow_events_consumed_total", "Events handled", ["consumer", "outcome"])

BatchHandler = Callable[[AsyncConnection, Sequence[CloudEvent]], Awaitable[None]]


def make_producer(settings: Settings) -> AIOKafkaProducer:
    """A producer that waits for full acknowledgement (idempotence only on real Kafka)."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=2,
        request_timeout_ms=10_000,
        client_id="leadflow",
    )


async def ensure_topics(settings: Settings) -> None:
    """Create the Leadflow topics if they do not exist yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in Topics(settings.leadflow_topic_prefix).all() if t not in existing]
        if missing:
            await admin.create_topics(
                [
                    NewTopic(t, settings.kafka_topic_partitions, settings.kafka_replication_factor)
                    for t in missing
                ]
            )
    finally:
        await admin.close()


async def claim(conn: AsyncConnection, consumer: str, event_ids: Sequence[str]) -> set[str]:
    """Record event ids as processed by ``consumer``; return those not processed before.

    Runs in the caller's transaction, so the record commits or rolls back with the effects.
    A concurrent claim of the same id makes the transaction fail with IntegrityError.
    """
    if not event_ids:
        return set()
    seen = set(
        (
            await conn.execute(
                select(processed_events.c.event_id).where(
                    processed_events.c.consumer == consumer,
                    processed_events.c.event_id.in_(list(event_ids)),
                )
            )
        ).scalars()
    )
    fresh = [e for e in dict.fromkeys(event_ids) if e not in seen]
    if fresh:
        now = utcnow()
        await conn.execute(
            insert_for(conn)(processed_events),
            [{"consumer": consumer, "event_id": e, "processed_at": now} for e in fresh],
        )
    return set(fresh)


class ConsumerRunner:
    """Consumes topics in a group and applies a batch handler exactly once per event id."""

    def __init__(
        self,
        *,
        settings: Settings,
        engine: AsyncEngine,
        topics: Sequence[str],
        group_id: str,
        handler: BatchHandler,
        source: str,
        after_commit: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.topics = list(topics)
        self.group_id = group_id
        self.handler = handler
        self.source = source
        self.after_commit = after_commit
        self.deadletter_topic = Topics(settings.leadflow_topic_prefix).deadletter
        self._stopping = False
        self._consumer: AIOKafkaConsumer | None = None
        self.processed = 0
        self.joined = asyncio.Event()

    async def start(self) -> None:
        """Join the group (call before ``run``)."""
        s = self.settings
        self._consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=s.bootstrap_servers,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=s.kafka_session_timeout_ms,
            heartbeat_interval_ms=s.kafka_heartbeat_interval_ms,
            rebalance_timeout_ms=s.kafka_rebalance_timeout_ms,
            max_poll_records=s.leadflow_consumer_batch,
            client_id=f"leadflow-{self.source}",
        )
        await self._consumer.start()

    async def run(self) -> None:
        """Consume until :meth:`stop`; the batch in hand is finished and committed first."""
        if self._consumer is None:
            await self.start()
        assert self._consumer is not None
        try:
            while not self._stopping:
                batches = await self._consumer.getmany(
                    timeout_ms=500, max_records=self.settings.leadflow_consumer_batch
                )
                if not self.joined.is_set() and self._consumer.assignment():
                    self.joined.set()
                records = [r for tp in sorted(batches, key=str) for r in batches[tp]]
                if not records:
                    continue
                await self._process(records)
                failpoint(f"{self.source}.after_db_commit")
                if self.after_commit:
                    self.after_commit()
                await self._consumer.commit()
        finally:
            await self._consumer.stop()

    async def stop(self) -> None:
        """Ask the loop to finish its batch, commit and leave the group."""
        self._stopping = True

    async def _process(self, records: Sequence[object]) -> None:
        events: list[CloudEvent] = []
        bad: list[CloudEvent] = []
        for rec in records:
            try:
                events.append(from_kafka(rec.key, rec.value, rec.headers))  # type: ignore[attr-defined]
            except InvalidEvent as exc:
                bad.append(self._deadletter_event(rec, str(exc)))
        await self._with_retries(self._apply, events, bad, on_failure=self._apply_one_by_one)

    async def _with_retries(
        self,
        apply: Callable[[Sequence[CloudEvent], Sequence[CloudEvent]], Awaitable[None]],
        events: Sequence[CloudEvent],
        bad: Sequence[CloudEvent],
        *,
        on_failure: Callable[
            [Sequence[CloudEvent], Sequence[CloudEvent], BaseException], Awaitable[None]
        ],
    ) -> None:
        """Apply; wait out a database outage; after repeated or hard failures, ``on_failure``.

        An IntegrityError is usually a concurrent claim of the same event id by another
        consumer (the retry then skips it); one that persists is a real failure.
        """
        delay = 0.2
        conflicts = 0
        while True:
            try:
                await apply(events, bad)
                return
            except IntegrityError as exc:
                conflicts += 1
                if conflicts >= 3:
                    await on_failure(events, bad, exc)
                    return
                log.info("%s: concurrent claim, retrying", self.group_id)
            except DBAPIError as exc:
                if not (exc.connection_invalidated or _is_transient(exc)):
                    await on_failure(events, bad, exc)
                    return
                if self._stopping:
                    raise  # leave the offsets uncommitted: the batch is redone after restart
                log.warning("%s: database unavailable (%s); retrying", self.group_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception as exc:
                log.exception("%s: processing failed", self.group_id)
                await on_failure(events, bad, exc)
                return

    async def _apply(self, events: Sequence[CloudEvent], bad: Sequence[CloudEvent]) -> None:
        async with self.engine.begin() as conn:
            fresh = await claim(conn, self.group_id, [e.id for e in events])
            todo = [e for e in _first_of_each(events) if e.id in fresh]
            if todo:
                await self.handler(conn, todo)
            if bad:
                await enqueue(conn, self.source, self.deadletter_topic, bad)
        self.processed += len(todo)
        CONSUMED.labels(self.group_id, "ok").inc(len(todo))
        CONSUMED.labels(self.group_id, "duplicate").inc(len(events) - len(todo))

    async def _apply_one_by_one(
        self, events: Sequence[CloudEvent], bad: Sequence[CloudEvent], _: BaseException
    ) -> None:
        """Isolate the failing event of a batch: each alone, a failing one dead-lettered."""
        if bad:
            async with self.engine.begin() as conn:
                await enqueue(conn, self.source, self.deadletter_topic, bad)
        for ev in events:
            await self._with_retries(self._apply, [ev], [], on_failure=self._deadletter)

    async def _deadletter(
        self, events: Sequence[CloudEvent], _: Sequence[CloudEvent], exc: BaseException
    ) -> None:
        """Record events as processed and send them to the dead-letter topic, in one transaction."""
        reason = f"{type(exc).__name__}: {exc}"
        for ev in events:
            log.error("%s: event %s (%s) dead-lettered: %s", self.group_id, ev.id, ev.type, reason)
            CONSUMED.labels(self.group_id, "deadletter").inc()
            async with self.engine.begin() as conn:
                if await claim(conn, self.group_id, [ev.id]):
                    await enqueue(
                        conn,
                        self.source,
                        self.deadletter_topic,
                        [_as_deadletter(ev, self.group_id, reason)],
                    )

    def _deadletter_event(self, rec: object, reason: str) -> CloudEvent:
        raw = getattr(rec, "value", b"") or b""
        where = "/".join(str(getattr(rec, a, "")) for a in ("topic", "partition", "offset"))
        return CloudEvent(
            type="io.leadflow.deadletter",
            source=self.source,
            # The same record redelivered after a crash gives the same id: one dead letter.
            id=derived_event_id("deadletter", self.group_id, where),
            data={
                "topic": getattr(rec, "topic", None),
                "partition": getattr(rec, "partition", None),
                "offset": getattr(rec, "offset", None),
                "value": raw.decode(errors="replace"),
            },
            key=(getattr(rec, "key", None) or b"").decode(errors="replace") or None,
            extensions={"deadletterreason": reason[:500], "deadletterconsumer": self.group_id},
        )


def _as_deadletter(ev: CloudEvent, consumer: str, reason: str) -> CloudEvent:
    return CloudEvent(
        type=ev.type,
        source=ev.source,
        data=ev.data,
        id=f"deadletter:{consumer}:{ev.id}",
        time=ev.time,
        subject=ev.subject,
        key=ev.key,
        extensions={
            **ev.extensions,
            "deadletterreason": reason[:500],
            "deadletterconsumer": consumer,
        },
    )


def _first_of_each(events: Sequence[CloudEvent]) -> list[CloudEvent]:
    seen: set[str] = set()
    out = []
    for e in events:
        if e.id not in seen:
            seen.add(e.id)
            out.append(e)
    return out


def _is_transient(exc: DBAPIError) -> bool:
    text = str(exc.orig).lower() if exc.orig else str(exc).lower()
    return any(s in text for s in ("connection", "database is locked", "timeout", "terminating"))
