"""The transactional outbox: events are written in the effect's transaction, then relayed to Kafka.

One relay per source publishes its rows in id order and marks them sent (on PostgreSQL the
replicas of a service elect it with an advisory lock). It is woken right after a commit that
wrote rows, and polls as a fallback (rows left by a crashed process, or written by another
replica). Rows the broker refuses on their own are parked as dead letters.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    UnsupportedForMessageFormatError,
)
from prometheus_client import Counter
from sqlalchemy import Text, bindparam, cast, delete, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db import READ_ONLY, insert_for, is_sqlite, plan_each_execution
from shared.deadletters import DeadLetter, insert, scrub_error
from shared.events import CloudEvent, derived_event_id, utcnow
from shared.messaging_tables import outbox
from shared.metrics import EVENTS_PRODUCED, OUTBOX_PENDING, count_produced, type_label
from shared.tracing import with_trace, with_traces

log = logging.getLogger(__name__)

RELAYED = Counter("leadflow_outbox_relayed_total", "Outbox rows published to Kafka", ["source"])
PARKED = Counter(
    "leadflow_outbox_parked_total",
    "Outbox rows the broker refused, parked as dead letters",
    ["source"],
)


def json_text(value: Mapping[str, Any]) -> str:
    """JSON text of a JSON column's value, as the column's own serializer would store it
    (orjson; the stdlib for what orjson refuses, such as non-string keys)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(dict(value))


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
    Returns the number of events given. Events enqueued while a trace is current carry it as
    their ``traceparent`` extension (:func:`shared.tracing.with_trace`).
    """
    if not events:
        return 0
    events = with_traces(events)
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


async def hold(conn: AsyncConnection, event_ids: Sequence[str], until: datetime) -> None:
    """Keep unsent rows from the relay until ``until`` (their sender is still trying)."""
    if event_ids:
        await conn.execute(
            update(outbox)
            .where(outbox.c.event_id.in_(list(event_ids)), outbox.c.sent_at.is_(None))
            .values(available_at=until)
        )


async def count_pending(
    conn: AsyncConnection, source: str | None = None, *, held: bool = True
) -> int:
    """How many rows wait to be published; ``held=False`` leaves out rows held for later."""
    q = select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))
    if source is not None:
        q = q.where(outbox.c.source == source)
    if not held:
        q = q.where(or_(outbox.c.available_at.is_(None), outbox.c.available_at <= utcnow()))
    return int((await conn.execute(q)).scalar_one())


async def rewrite_rows(
    conn: AsyncConnection,
    source: str,
    rewrite: Callable[[dict[str, Any]], dict[str, Any]],
    *,
    subject: str | None = None,
    types: Collection[str] = (),
    unsent: bool = False,
    drop_key: bool = False,
    sent_key: str | None = None,
) -> int:
    """Replace the data of a source's rows with ``rewrite(old data)``; returns the rows changed.

    Erasure and retention use it to forget what rows carried of a person. Published rows are
    kept only for their event ids (a repeated id is skipped), so their data can go; ``unsent``
    rewrites rows the relay still owes too (their consumers must not need what is removed).
    ``subject`` and ``types`` narrow the rows. The partition key (a person's email or phone) of
    a published row is replaced by ``sent_key``, or forgotten with ``drop_key`` (which also
    skips rows already without one); an unsent row keeps its key so it lands in order.
    """
    q = select(outbox.c.id, outbox.c.data, outbox.c.sent_at, outbox.c.partition_key).where(
        outbox.c.source == source
    )
    if not unsent:
        q = q.where(outbox.c.sent_at.is_not(None))
    if subject is not None:
        q = q.where(outbox.c.ce_subject == subject)
    if types:
        q = q.where(outbox.c.ce_type.in_(list(types)))
    if drop_key:
        q = q.where(outbox.c.partition_key.is_not(None))
    rows = (await conn.execute(q)).all()
    replace_key = drop_key or sent_key is not None

    def key_of(row: Any) -> str | None:
        kept: str | None = row.partition_key
        if row.sent_at is None or not replace_key:
            return kept
        return None if drop_key else sent_key

    if rows:
        await conn.execute(
            update(outbox)
            .where(outbox.c.id == bindparam("row_id"))
            .values(data=bindparam("new_data"), partition_key=bindparam("new_key")),
            [
                {"row_id": r.id, "new_data": rewrite(dict(r.data or {})), "new_key": key_of(r)}
                for r in rows
            ],
        )
    return len(rows)


_MARK_SENT_PG = (
    f"UPDATE {outbox.name} SET sent_at = $1::timestamptz, available_at = NULL"
    " WHERE event_id = ANY($2::text[]) AND sent_at IS NULL"
)


async def mark_sent(conn: AsyncConnection, event_ids: Sequence[str]) -> None:
    """Record rows as published (by someone other than the relay)."""
    if event_ids and not is_sqlite(conn):
        # pre-built: one array parameter, no statement compiled per length of the list
        await conn.exec_driver_sql(_MARK_SENT_PG, (utcnow(), list(event_ids)))
    elif event_ids:
        await conn.execute(
            update(outbox)
            .where(outbox.c.event_id.in_(list(event_ids)), outbox.c.sent_at.is_(None))
            .values(sent_at=utcnow(), available_at=None)
        )


_FORGET_PG = f"DELETE FROM {outbox.name} WHERE event_id = ANY($1::text[])"


async def forget(conn: AsyncConnection, event_ids: Sequence[str]) -> None:
    """Delete the rows of events their producer published itself and dedupes by its own
    records (capture's idempotency keys): cheaper than :func:`mark_sent`, which gives every
    index of the table a new entry, and nothing is kept of what was only a crash copy."""
    if event_ids and not is_sqlite(conn):
        await conn.exec_driver_sql(_FORGET_PG, (list(event_ids),))
    elif event_ids:
        await conn.execute(delete(outbox).where(outbox.c.event_id.in_(list(event_ids))))


#: What the relay reads of a row on PostgreSQL: everything but ``data``, which it reads as the
#: JSON text it publishes (decoding it only to encode it again cost about a tenth of a row's
#: CPU).
_RELAY_COLUMNS = [
    *(c for c in outbox.c if c.name != "data"),
    cast(outbox.c.data, Text).label("data_text"),
]
_NO_DATA: Mapping[str, Any] = {}
_MARK_RELAYED_PG = (
    f"UPDATE {outbox.name} SET sent_at = $1::timestamptz WHERE id = ANY($2::bigint[])"
)


def _row_event(row: object) -> tuple[str, CloudEvent, bytes]:
    """A relayed row's topic, its event (attributes only: its data is the record value) and
    the record value."""
    r = row._mapping  # type: ignore[attr-defined]
    ev = CloudEvent(
        type=r["ce_type"],
        source=r["ce_source"],
        data=_NO_DATA,
        id=r["event_id"],
        time=r["ce_time"],
        subject=r["ce_subject"],
        key=r["partition_key"],
        extensions=r["extensions"] or {},
    )
    text_ = r.get("data_text")
    # SQLite (dev) stores what PostgreSQL's JSON refuses (a lone surrogate): encoding it finds
    # that, and the row is parked instead of reaching consumers as invalid JSON.
    value = text_.encode() if text_ is not None else orjson.dumps(r["data"])
    return r["topic"], ev, value


async def publish(
    producer: AIOKafkaProducer,
    items: Sequence[tuple[str, CloudEvent]],
    values: Mapping[str, bytes] | None = None,
    *,
    traced: bool = False,
) -> None:
    """Send events and wait until the broker acknowledged every one of them.

    Events carry the current trace as their ``traceparent`` extension (the ``ce_traceparent``
    header), as :func:`enqueue` does. ``values`` may hold record values already encoded
    (:meth:`CloudEvent.value`) by event id; ``traced``: the events carry the current trace
    already (the caller called :func:`~shared.tracing.with_trace`).
    """
    known = values or {}
    sending = items if traced else [(topic, with_trace(ev)) for topic, ev in items]
    futures = []
    for topic, ev in sending:
        value = known.get(ev.id)
        futures.append(
            await producer.send(
                topic,
                value=value if value is not None else ev.value(),
                key=ev.key.encode() if ev.key is not None else None,
                headers=ev.headers(),
            )
        )
    await asyncio.gather(*futures)
    counted = collections.Counter(
        # "/leadflow/capture" -> "capture", the label the relay of that source uses
        (ev.source.rstrip("/").rsplit("/", 1)[-1][:40], ev.type)
        for _, ev in sending
    )
    for (source, ce_type), n in counted.items():
        EVENTS_PRODUCED.labels(source, type_label(ce_type)).inc(n)  # one lookup per type


#: Errors about one record on its own (too large, not serialisable, a topic name the broker
#: refuses): retrying cannot help, so the row is parked instead of blocking those after it.
REFUSED: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    InvalidTopicError,
    CorruptRecordException,
    UnsupportedForMessageFormatError,
    TypeError,  # orjson.JSONEncodeError (lone surrogates, unsupported types)
    ValueError,  # UnicodeEncodeError of a header or key
)


def _lock_key(source: str) -> int:
    """The PostgreSQL advisory lock (a signed 64-bit key) of one source's relay."""
    digest = hashlib.sha256(f"leadflow-outbox-relay:{source}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@dataclass
class _Pass:
    """What one publishing pass did: acknowledged row ids, refused rows, a broker failure."""

    acked: list[int] = field(default_factory=list)
    acked_types: list[str] = field(default_factory=list)
    refused: list[tuple[Any, BaseException]] = field(default_factory=list)
    failure: BaseException | None = None


class OutboxRelay:
    """Publishes one source's outbox rows to Kafka, at least once, in order.

    On PostgreSQL only one replica's relay is active per source: it holds a session advisory
    lock on a dedicated connection and runs its passes on that connection, so losing the
    connection loses the lock with it; the other replicas stand by and try the lock each poll,
    taking over when the holder dies. A row the broker refuses on its own is parked in the
    ``deadletters`` table (and marked done) rather than blocking every row after it; rows
    acknowledged in a pass are marked sent even when a later row fails, so they are not
    published again.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        producer: AIOKafkaProducer | None,
        source: str,
        *,
        poll_seconds: float = 1.0,
        batch_size: int = 500,
        deadletter_topic: str | None = None,
        send_timeout: float = 30.0,
        backlog_seconds: float = 10.0,
    ) -> None:
        self.engine = engine
        #: How often the ``leadflow_outbox_pending`` gauge is refreshed (one indexed count).
        self.backlog_seconds = backlog_seconds
        self._backlog_at: float | None = None
        self.send_timeout = send_timeout
        self.producer = producer
        self.source = source
        self.poll_seconds = poll_seconds
        self.batch_size = batch_size
        self.deadletter_topic = deadletter_topic
        self._wake = asyncio.Event()
        self._stopping = False
        self.healthy = True
        #: Since when (time.monotonic()) passes have been failing, and why.
        self.failing_since: float | None = None
        self.last_error: str | None = None
        #: Whether this relay holds the source's lock (always True on SQLite).
        self.active = False
        self.parked = 0
        self._conn: AsyncConnection | None = None
        self._lock_key = _lock_key(source)

    def wake(self) -> None:
        """Ask the relay to look for rows now (called after a commit that wrote some)."""
        self._wake.set()

    async def run(self) -> None:
        """Relay until stopped; broker errors back off and retry, nothing is dropped."""
        backoff = 0.1
        try:
            while True:
                # A stop request still gets this one last drain.
                stopping = self._stopping
                try:
                    while await self.relay_once():
                        pass
                    self.healthy = True
                    self.failing_since = None
                    self.last_error = None
                    backoff = 0.1
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # broker or database down: keep rows, retry
                    self.healthy = False
                    self.last_error = scrub_error(exc)
                    if self.failing_since is None:
                        self.failing_since = time.monotonic()
                    if stopping:
                        break
                    log.warning(
                        "outbox relay %s: %s; retrying in %.1fs",
                        self.source,
                        self.last_error,
                        backoff,
                    )
                    await self.observe_backlog()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if stopping:
                    break
                await self.observe_backlog()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
                self._wake.clear()
        finally:
            await self._release()

    async def observe_backlog(self, *, force: bool = False) -> int | None:
        """Refresh ``leadflow_outbox_pending`` for this source (at most every
        ``backlog_seconds`` unless ``force``); returns the count, None when not counted."""
        now = time.monotonic()
        last = self._backlog_at
        if not force and last is not None and now - last < self.backlog_seconds:
            return None
        self._backlog_at = now
        try:
            async with self.engine.connect() as conn:
                # a plain read: on SQLite it must not take the write lock (BEGIN IMMEDIATE)
                await conn.execution_options(**{READ_ONLY: True})
                pending = await count_pending(conn, self.source)
        except Exception:  # the database is away: readiness says so, the gauge keeps its value
            log.debug("outbox relay %s: counting the backlog failed", self.source, exc_info=True)
            return None
        OUTBOX_PENDING.labels(self.source).set(pending)
        return pending

    async def stop(self) -> None:
        """Drain what is pending (one last pass), then stop; unsent rows wait for the next start."""
        self._stopping = True
        self._wake.set()

    def _query(self) -> Any:
        columns = [outbox] if is_sqlite(self.engine) else _RELAY_COLUMNS
        return (
            select(*columns)
            .where(
                outbox.c.source == self.source,
                outbox.c.sent_at.is_(None),
                or_(outbox.c.available_at.is_(None), outbox.c.available_at <= utcnow()),
            )
            .order_by(outbox.c.id)
            .limit(self.batch_size)
        )

    async def relay_once(self) -> int:
        """Publish one batch of pending rows; return how many were handled (sent or parked).

        A broker failure is raised after the rows acknowledged before it are marked sent.
        """
        if is_sqlite(self.engine):
            self.active = True
            # One relay per source on SQLite (dev); keep the write lock out of the publish.
            async with self.engine.connect() as conn:
                rows = (await conn.execute(self._query())).all()
            if not rows:
                return 0
            done = await self._publish_rows(rows)
            async with self.engine.begin() as conn:
                await self._record(conn, done)
        else:
            leader = await self._leader()
            if leader is None:
                return 0
            try:
                async with leader.begin():
                    rows = (
                        await leader.execute(self._query().with_for_update(skip_locked=True))
                    ).all()
                    if not rows:
                        return 0
                    done = await self._publish_rows(rows)
                    # this connection lives as long as the lock: its plans would outlive the
                    # outbox's size when they were made
                    await plan_each_execution(leader)
                    await self._record(leader, done)
            except BaseException:
                # The connection may be gone, and the lock with it: start over next pass.
                await self._release()
                raise
        if done.failure is not None:
            raise done.failure
        return len(done.acked) + len(done.refused)

    async def _leader(self) -> AsyncConnection | None:
        """The lock-holding connection, or None while another replica's relay holds it."""
        if self._conn is None:
            self._conn = await self.engine.connect()
        try:
            if not self.active:
                got = (
                    await self._conn.execute(
                        text("SELECT pg_try_advisory_lock(:key)"), {"key": self._lock_key}
                    )
                ).scalar()
                await self._conn.commit()
                if not got:
                    return None
                self.active = True
                log.info("outbox relay %s: active on this replica", self.source)
        except BaseException:
            await self._release()
            raise
        return self._conn

    async def _release(self) -> None:
        """Close the dedicated connection (which releases the lock)."""
        conn, self._conn = self._conn, None
        was_active, self.active = self.active, False
        if conn is None:
            return
        try:
            if was_active and not conn.invalidated:
                await conn.rollback()
                await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self._lock_key})
                await conn.commit()
        except Exception:
            log.debug("outbox relay %s: unlocking failed", self.source, exc_info=True)
        try:
            await conn.close()
        except Exception:
            log.debug("outbox relay %s: closing the lock connection failed", self.source)

    async def _publish_rows(self, rows: Sequence[Any]) -> _Pass:
        producer = self._live_producer()
        done = _Pass()
        sent: list[tuple[Any, asyncio.Future[Any]]] = []
        try:
            # send() waits for metadata and buffer space; one deadline for the pass makes a
            # broker that never answers fail it (rows kept) instead of hanging the relay. One
            # deadline, not one wait_for per row: wait_for wraps each send in a task, and that
            # yield let the producer send nearly every record in a request of its own.
            async with asyncio.timeout(self.send_timeout):
                for row in rows:
                    try:
                        topic, ev, value = _row_event(row)
                        key = ev.key.encode() if ev.key is not None else None
                        fut = await producer.send(topic, value=value, key=key, headers=ev.headers())
                    except REFUSED as exc:
                        done.refused.append((row, exc))
                        continue
                    sent.append((row, fut))
        except Exception as exc:  # broker gone, producer stopped, no answer: retry from here
            done.failure = exc
        for row, fut in sent:
            try:
                await fut
            except REFUSED as exc:
                done.refused.append((row, exc))
            except Exception as exc:
                done.failure = done.failure or exc
            else:
                done.acked.append(row.id)
                done.acked_types.append(row.ce_type)
        return done

    async def _record(self, conn: AsyncConnection, done: _Pass) -> None:
        if done.acked:
            await self._mark_sent(conn, done.acked)
            RELAYED.labels(self.source).inc(len(done.acked))
            count_produced(self.source, done.acked_types)
        for row, exc in done.refused:
            await self._park(conn, row, exc)

    async def _park(self, conn: AsyncConnection, row: Any, exc: BaseException) -> None:
        r = row._mapping
        reason = scrub_error(exc)
        log.error(
            "outbox relay %s: the broker refused event %s (%s); parked as a dead letter: %s",
            self.source,
            r["event_id"],
            r["ce_type"],
            reason,
        )
        data = json.loads(r["data_text"]) if "data_text" in r else r["data"]
        value = json.dumps(data, ensure_ascii=True, default=str).encode("ascii")
        dead = DeadLetter(
            kind="outbox",
            source=self.source,
            consumer=f"relay:{self.source}"[:100],
            dedupe_key=f"outbox:{r['event_id']}",
            reason=reason,
            topic=r["topic"],
            event_id=r["event_id"],
            ce_type=r["ce_type"],
            key=r["partition_key"].encode("utf-8", "replace") if r["partition_key"] else None,
            value=value,
        )
        dead_id = await insert(conn, dead, again=True)
        # Done as far as the relay is concerned; ``leadflow deadletter replay`` hands it back.
        await conn.execute(update(outbox).where(outbox.c.id == r["id"]).values(sent_at=utcnow()))
        self.parked += 1
        PARKED.labels(self.source).inc()
        if self.deadletter_topic and r["topic"] != self.deadletter_topic:
            notice = CloudEvent(
                type="io.leadflow.deadletter",
                source=self.source,
                id=derived_event_id("deadletter", "relay", self.source, r["event_id"]),
                data={
                    "topic": r["topic"],
                    "event_id": r["event_id"],
                    "ce_type": r["ce_type"],
                    "deadletter_id": dead_id,
                },
                key=r["partition_key"],
                extensions={
                    "deadletterreason": reason,
                    "deadletterconsumer": f"relay:{self.source}",
                },
            )
            await enqueue(conn, self.source, self.deadletter_topic, [notice])

    def _live_producer(self) -> AIOKafkaProducer:
        if self.producer is None:
            raise RuntimeError("the relay has no producer yet")
        return self.producer

    async def _mark_sent(self, conn: AsyncConnection, ids: list[int]) -> None:
        if is_sqlite(conn):
            await conn.execute(update(outbox).where(outbox.c.id.in_(ids)).values(sent_at=utcnow()))
        else:  # pre-built: one array parameter, no statement compiled per length of the list
            await conn.exec_driver_sql(_MARK_RELAYED_PG, (utcnow(), ids))


async def pending_count(engine: AsyncEngine, source: str | None = None) -> int:
    """How many outbox rows wait to be published, held ones included (for tests and tools)."""
    async with engine.connect() as conn:
        return await count_pending(conn, source)
