"""The Kafka side: producer settings, topic creation, and the batch consumer runner.

Delivery is at least once. The runner makes effects exactly once: each batch from ``getmany``
is handled in one database transaction that also records the event ids (the inbox) and writes
any emitted events to the outbox; offsets are committed only after that transaction.

Errors are classified (:func:`classify`). Anything about availability (the database down,
restarting, read-only, the pool exhausted, a deadlock) is waited out with capped backoff and
never dead-lettered; only what is deterministic for the event (not a CloudEvent, a handler
failure that persists, a constraint violation that persists) is parked in the ``deadletters``
table and on the dead-letter topic (:mod:`shared.deadletters`), so a consumer never stops on
one record and never loses an event to an outage.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
    for_code,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import DefaultPartitioner, murmur2
from prometheus_client import Counter
from sqlalchemy import exc as sa_exc
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db import insert_for, is_sqlite
from shared.deadletters import (
    REPLAY_CONSUMER,
    DeadLetter,
    bounded_id,
    clean_json,
    clean_text,
    insert,
    restore_replay,
    scrub_error,
)
from shared.events import (
    CloudEvent,
    InvalidEvent,
    derived_event_id,
    from_kafka,
    inbox_key,
    utcnow,
)
from shared.failpoints import failpoint
from shared.messaging_tables import processed_events
from shared.metrics import count_consumed, observe_lag
from shared.outbox import enqueue
from shared.settings import Settings
from shared.topics import Topics
from shared.tracing import consume_span

log = logging.getLogger(__name__)

CONSUMED = Counter("leadflow_events_consumed_total", "Events handled", ["consumer", "outcome"])
DEADLETTER_LOST = Counter(
    "leadflow_deadletter_write_failed_total",
    "Records skipped because even the minimal dead letter could not be written",
    ["consumer"],
)
COMMIT_FAILED = Counter(
    "leadflow_consumer_commit_failed_total",
    "Offset commits that failed (batch redelivered)",
    ["consumer"],
)

__all__ = ["ConsumerRunner", "TopicSetupError", "classify", "is_transient", "scrub_error"]

#: How long a consumer may wait out a database error before readiness reports it: a deadlock
#: or a lost connection retried within this is ordinary, not an outage.
WAIT_GRACE_SECONDS = 2.0

BatchHandler = Callable[[AsyncConnection, Sequence[CloudEvent]], Awaitable[None]]
#: Whether an event should not wait behind the rest of its batch (see :func:`urgent_first`).
Urgency = Callable[[CloudEvent], bool]


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """Connection options every Kafka client of a service shares: the bootstrap servers and,
    for a managed Kafka, TLS and SASL (the ``KAFKA_SECURITY_*`` / ``KAFKA_SASL_*`` /
    ``KAFKA_SSL_*`` settings)."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
            certfile=str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
            keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        )
    if settings.kafka_security_protocol.startswith("SASL_"):
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password,
        )
    return options


class RememberingPartitioner:
    """aiokafka's default partitioner, remembering recent keys' hashes.

    The hash is Java's murmur2, so a key lands on the partition any Kafka client would choose;
    aiokafka computes it in pure Python (about 10 us a record), and a lead's events, published
    together, share their key.
    """

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._hashes: dict[bytes, int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return int(DefaultPartitioner()(key, all_partitions, available))
        known = self._hashes.get(key)
        if known is None:
            if len(self._hashes) >= self._size:
                self._hashes.clear()
            known = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[known % len(all_partitions)]


def make_producer(settings: Settings) -> AIOKafkaProducer:
    """A producer that waits for full acknowledgement (idempotence only on real Kafka)."""
    return AIOKafkaProducer(
        **kafka_client_options(settings),
        partitioner=RememberingPartitioner(),
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=settings.kafka_linger_ms,
        request_timeout_ms=10_000,
        client_id="leadflow",
    )


class TopicSetupError(RuntimeError):
    """The broker refuses to create the topics for a reason retrying will not fix (a missing
    permission, a replication factor larger than the cluster): an operator has to act."""


#: Broker error codes on topic creation that mean "the topics already exist": fine.
_TOPIC_EXISTS = 36
_PERMISSION_HINT = {
    29: "TopicAuthorizationFailed: the Kafka principal lacks the CREATE permission on these "
    "topics (an ACL such as 'Create' on the topic prefix)",
    31: "ClusterAuthorizationFailed: the Kafka principal lacks the CREATE permission on the "
    "cluster resource",
}


def _setup_failure(failures: dict[str, tuple[int, str | None]], settings: Settings) -> str:
    """One message for the topics the broker refused, naming the permission when it is one."""
    by_code: dict[int, list[str]] = {}
    for topic, (code, _msg) in failures.items():
        by_code.setdefault(code, []).append(topic)
    parts = []
    for code, topics in sorted(by_code.items()):
        error = for_code(code)
        detail = next((m for t, (c, m) in failures.items() if c == code and m), None)
        hint = _PERMISSION_HINT.get(code) or f"{error.message}" + (f" ({detail})" if detail else "")
        parts.append(f"{hint}: {', '.join(sorted(topics))}")
    return (
        "; ".join(parts)
        + f". Grant it, or create the topics beforehand ({settings.kafka_topic_partitions} "
        f"partitions, replication factor {settings.kafka_replication_factor}) and restart."
    )


async def ensure_topics(
    settings: Settings, *, admin_factory: Callable[..., Any] = AIOKafkaAdminClient
) -> list[str]:
    """Create the Leadflow topics that do not exist yet; return the names created.

    Raises :class:`TopicSetupError` when the broker refuses for good (authorization, an
    invalid replication factor): retrying as if Kafka were unreachable would hide it forever.
    """
    admin = admin_factory(**kafka_client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in Topics(settings.leadflow_topic_prefix).all() if t not in existing]
        if not missing:
            return []
        response = await admin.create_topics(
            [
                NewTopic(t, settings.kafka_topic_partitions, settings.kafka_replication_factor)
                for t in missing
            ]
        )
    except (TopicAuthorizationFailedError, ClusterAuthorizationFailedError) as exc:
        topics = Topics(settings.leadflow_topic_prefix).all()
        raise TopicSetupError(
            _setup_failure({t: (exc.errno, None) for t in topics}, settings)
        ) from None
    finally:
        await admin.close()
    failures: dict[str, tuple[int, str | None]] = {}
    for item in response.topic_errors:
        topic, code = item[0], item[1]
        if code not in (0, _TOPIC_EXISTS):
            failures[topic] = (code, item[2] if len(item) > 2 else None)
    if failures:
        raise TopicSetupError(_setup_failure(failures, settings))
    return missing


#: The claim on PostgreSQL, one statement: the ids the inbox did not hold are inserted and
#: returned. The unique index decides, so the cost is one index probe per id however large
#: the table and whatever its statistics say. (A SELECT of the held ids first, ``IN (<500
#: parameters>)`` or a join with ``unnest``, was planned as a scan of all the consumer's rows
#: while the young table had no statistics: about 0.3 ms per event at 15,000 rows, growing.)
#: A concurrent claim of the same id waits for the other transaction: if it commits, the id
#: is not fresh here; if it rolls back, it is.
_CLAIM = (
    f"INSERT INTO {processed_events.name} (consumer, event_id, processed_at)"
    " SELECT $1::text, w.id, $3::timestamptz FROM unnest($2::text[]) WITH ORDINALITY AS w(id, n)"
    " ORDER BY w.n ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id"
)


async def claim(conn: AsyncConnection, consumer: str, event_ids: Sequence[str]) -> set[str]:
    """Record event ids as processed by ``consumer``; return those not processed before.

    Runs in the caller's transaction, so the record commits or rolls back with the effects.
    On SQLite a concurrent claim of the same id makes the transaction fail with
    IntegrityError; on PostgreSQL it waits for the other claim's transaction (:data:`_CLAIM`).
    """
    if not event_ids:
        return set()
    wanted = list(dict.fromkeys(event_ids))
    if not is_sqlite(conn):
        rows = await conn.exec_driver_sql(_CLAIM, (consumer, wanted, utcnow()))
        return {r[0] for r in rows}
    seen = set(
        (
            await conn.execute(
                select(processed_events.c.event_id).where(
                    processed_events.c.consumer == consumer,
                    processed_events.c.event_id.in_(wanted),
                )
            )
        ).scalars()
    )
    fresh = [e for e in wanted if e not in seen]
    if fresh:
        now = utcnow()
        await conn.execute(
            insert_for(conn)(processed_events),
            [{"consumer": consumer, "event_id": e, "processed_at": now} for e in fresh],
        )
    return set(fresh)


# ---------------------------------------------------------------------------------------------
# Error classification (pure)

ErrorKind = Literal["transient", "conflict", "poison"]

#: SQLSTATE classes and codes that say "not now" rather than "not this event": connection
#: exceptions (08), insufficient resources (53: too many connections, disk full), operator
#: intervention (57P: admin/crash shutdown, cannot connect now), transaction rollback (40:
#: serialization failure, deadlock), read-only transaction (25006: a failover in progress),
#: lock not available (55P03), query canceled (57014: statement or lock timeout); and the
#: deployment not being what the code expects (28: credentials refused, 3D000: no such
#: database, 42P01: no such table, 42501: permission denied), which no event causes and
#: dead-lettering every event would not fix.
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "53", "57P", "40", "28")
_TRANSIENT_SQLSTATES = frozenset({"25006", "55P03", "57014", "3D000", "42P01", "42501"})
#: SQLite reports contention and I/O trouble only in the message text.
_TRANSIENT_SQLITE_TEXT = (
    "database is locked",
    "database table is locked",
    "database is busy",
    "disk i/o error",
    "unable to open database file",
)
_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    OSError,  # ConnectionError, ConnectionRefusedError, socket errors, TimeoutError
    asyncio.TimeoutError,
    sa_exc.TimeoutError,  # the connection pool is exhausted
    sa_exc.DisconnectionError,
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    asyncpg.exceptions.InterfaceError,  # "connection is closed"
    asyncpg.exceptions.PostgresConnectionError,
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, the driver error it wraps, and its causes and contexts."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack and len(seen) < 25:
        cur = stack.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        orig = getattr(cur, "orig", None)
        stack.extend(
            [cur.__context__, cur.__cause__, orig if isinstance(orig, BaseException) else None]
        )


def classify(exc: BaseException) -> ErrorKind:
    """``transient`` (wait and retry), ``conflict`` (integrity: retry a few times) or ``poison``.

    Transient: the database or network is unavailable, restarting, read-only, overloaded or
    resolved a deadlock; retrying later succeeds without any change to the event. Conflict: a
    unique or foreign-key violation, usually a concurrent claim of the same event id (the
    retry skips it); one that persists is treated as poison. Poison: everything else (bad data,
    a handler bug), which no retry fixes.
    """
    for cur in _chain(exc):
        if isinstance(cur, sa_exc.DBAPIError) and cur.connection_invalidated:
            return "transient"
        if isinstance(cur, _TRANSIENT_TYPES):
            return "transient"
        sqlstate = getattr(cur, "sqlstate", None) or getattr(cur, "pgcode", None)
        if isinstance(sqlstate, str) and (
            sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith(_TRANSIENT_SQLSTATE_PREFIXES)
        ):
            return "transient"
        if isinstance(cur, sqlite3.Error) and any(
            t in str(cur).lower() for t in _TRANSIENT_SQLITE_TEXT
        ):
            return "transient"
    for cur in _chain(exc):
        sqlstate = getattr(cur, "sqlstate", None)
        if isinstance(cur, sa_exc.IntegrityError | sqlite3.IntegrityError) or (
            isinstance(sqlstate, str) and sqlstate.startswith("23")
        ):
            return "conflict"
    return "poison"


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is about availability (wait and retry) rather than about the data."""
    return classify(exc) == "transient"


#: How often a consumer reports its lag (``leadflow_consumer_lag``).
LAG_EVERY_SECONDS = 2.0


@dataclass
class ConsumerHealth:
    """A consumer's liveness as :meth:`ConsumerRunner.health` sees it."""

    ok: bool
    problem: str | None
    partitions: int
    seconds_since_poll: float | None
    waiting_for: str | None


class ConsumerRunner:
    """Consumes topics in a group and applies a batch handler exactly once per event id.

    ``run`` builds a fresh aiokafka consumer each time it is called, so a supervisor can
    restart it after any failure; a failed offset commit is logged and consumption goes on.
    Its liveness (:meth:`health`) feeds ``/readyz``.
    """

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
        urgent: Urgency | None = None,
        max_backoff: float = 5.0,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.topics = list(topics)
        self.group_id = group_id
        self.handler = handler
        self.source = source
        self.after_commit = after_commit
        #: Events applied (and committed, ``after_commit`` called) before the rest of their batch.
        self.urgent = urgent
        self._committing: asyncio.Future[None] | None = None
        self.max_backoff = max_backoff
        names = Topics(settings.leadflow_topic_prefix)
        self.deadletter_topic = names.deadletter
        #: The Kafka consumer group: ``group_id`` under this deployment's topic prefix.
        #: ``group_id`` itself names the consumer everywhere else (inbox, metrics, dead letters).
        self.kafka_group = names.group(group_id)
        self._stopping = False
        self._consumer: AIOKafkaConsumer | None = None
        self.processed = 0
        self.deadlettered = 0
        self.joined = asyncio.Event()
        # Liveness, in time.monotonic() seconds.
        self.started_at: float | None = None
        self.last_poll: float | None = None
        self._lag_observed = float("-inf")
        self.partitions = 0
        self.waiting_since: float | None = None
        self.waiting_for: str | None = None

    def _make_consumer(self) -> AIOKafkaConsumer:
        s = self.settings
        return AIOKafkaConsumer(
            *self.topics,
            **kafka_client_options(s),
            group_id=self.kafka_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=s.kafka_session_timeout_ms,
            heartbeat_interval_ms=s.kafka_heartbeat_interval_ms,
            rebalance_timeout_ms=s.kafka_rebalance_timeout_ms,
            max_poll_records=s.leadflow_consumer_batch,
            fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
            client_id=f"leadflow-{self.source}",
        )

    async def start(self) -> None:
        """Join the group (``run`` does it when needed)."""
        if self._consumer is not None:
            return
        consumer = self._make_consumer()
        try:
            await consumer.start()
        except BaseException:
            try:
                await consumer.stop()
            except Exception:
                log.debug("stopping a consumer that never started", exc_info=True)
            raise
        self._consumer = consumer

    async def run(self) -> None:
        """Consume until :meth:`stop`; the batch in hand is finished and committed first."""
        self.started_at = time.monotonic()
        await self.start()
        consumer = self._consumer
        assert consumer is not None
        try:
            while not self._stopping:
                batches = await consumer.getmany(
                    timeout_ms=500, max_records=self.settings.leadflow_consumer_batch
                )
                self.last_poll = time.monotonic()
                assignment = consumer.assignment()
                self.partitions = len(assignment)
                if self.last_poll - self._lag_observed >= LAG_EVERY_SECONDS:
                    # position() per partition: cheap, but not worth doing on every poll.
                    self._lag_observed = self.last_poll
                    await observe_lag(self.group_id, consumer)
                if not self.joined.is_set() and assignment:
                    self.joined.set()
                records = [r for tp in sorted(batches, key=str) for r in batches[tp]]
                if not records:
                    continue
                await self._process(records)
                failpoint(f"{self.source}.after_db_commit")
                if self.after_commit:
                    self.after_commit()
                # The offsets of exactly this batch, committed while the next one is fetched
                # and applied: a few ms per batch off every hop. Commits stay in order (each
                # waits for the one before), and a crash before one lands only redelivers
                # events the inbox already holds.
                await self._settled()
                offsets = {tp: recs[-1].offset + 1 for tp, recs in batches.items() if recs}
                self._committing = asyncio.ensure_future(self._commit(consumer, offsets))
        finally:
            # A stopped aiokafka consumer cannot poll again: the next run() builds a new one.
            try:
                await self._settled()
            except BaseException:  # cancelled while the last commit was in flight: stop anyway
                log.debug("%s: waiting for the last commit was cut short", self.group_id)
            self._consumer = None
            self.partitions = 0
            try:
                await consumer.stop()
            except Exception:
                log.debug("%s: consumer stop failed", self.group_id, exc_info=True)

    async def stop(self) -> None:
        """Ask the loop to finish its batch, commit and leave the group."""
        self._stopping = True

    async def _settled(self) -> None:
        """Wait for the offset commit in flight, if any (it logs its own failure)."""
        pending, self._committing = self._committing, None
        if pending is not None:
            await asyncio.shield(pending)

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[Any, int]) -> None:
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            # A rebalance between poll and commit (CommitFailedError), or a poll interval
            # overrun during a long outage: whoever gets the partitions is sent the batch
            # again, and the inbox turns that redelivery into a no-op.
            COMMIT_FAILED.labels(self.group_id).inc()
            log.warning(
                "%s: offset commit failed (%s); the batch may be redelivered and skipped",
                self.group_id,
                scrub_error(exc),
            )

    def health(self, stall_seconds: float, now: float | None = None) -> ConsumerHealth:
        """Whether this consumer is consuming, and if not, why."""
        now = time.monotonic() if now is None else now
        since = None if self.last_poll is None else now - self.last_poll
        problem = None
        waited = None if self.waiting_since is None else now - self.waiting_since
        if self.waiting_for is not None and (waited is None or waited >= WAIT_GRACE_SECONDS):
            problem = f"waiting for the database ({self.waiting_for})"
        else:
            # Since the last poll, or since this run began (a restart gets a fresh start).
            ref = max((t for t in (self.last_poll, self.started_at) if t is not None), default=None)
            if ref is not None and now - ref > stall_seconds:
                problem = f"no successful poll for {now - ref:.0f}s"
        return ConsumerHealth(
            ok=problem is None,
            problem=problem,
            partitions=self.partitions,
            seconds_since_poll=since,
            waiting_for=self.waiting_for,
        )

    # -----------------------------------------------------------------------------------------

    async def _process(self, records: Sequence[Any]) -> None:
        events: list[tuple[Any, CloudEvent]] = []
        for rec in records:
            try:
                ev = from_kafka(rec.key, rec.value, rec.headers, getattr(rec, "timestamp", None))
            except InvalidEvent as exc:
                await self._park_record(rec, f"InvalidEvent: {exc}")
                continue
            target = ev.extensions.get(REPLAY_CONSUMER)
            if target is not None and target != self.group_id:
                # A dead letter of another consumer group sent back for that group only.
                CONSUMED.labels(self.group_id, "replay_for_other").inc()
                continue
            events.append((rec, restore_replay(ev)))
        if not events:
            return
        first, rest = urgent_first(events, self.urgent) if self.urgent else ([], events)
        if first and rest:
            # A hot lead's demo request should not wait behind hundreds of page views: its
            # part of the batch commits (and its outbox rows are relayed) first.
            await self._process_events(first)
            if self.after_commit:
                self.after_commit()
        await self._process_events(rest or first)

    async def _process_events(self, events: Sequence[tuple[Any, CloudEvent]]) -> None:
        """Apply events in one transaction; when that fails, one by one, parking the failures."""
        err = await self._attempt(self._apply, [ev for _, ev in events])
        if err is None:
            return
        if len(events) == 1:
            # Nothing to isolate: trying it alone again would only repeat the same attempts.
            rec, ev = events[0]
            await self._park_event(rec, ev, err)
            return
        log.warning(
            "%s: a batch of %d failed (%s); applying its events one by one",
            self.group_id,
            len(events),
            scrub_error(err),
        )
        for rec, ev in events:
            err = await self._attempt(self._apply, [ev])
            if err is not None:
                await self._park_event(rec, ev, err)

    async def _attempt(
        self, op: Callable[[Sequence[CloudEvent]], Awaitable[None]], events: Sequence[CloudEvent]
    ) -> BaseException | None:
        """Run ``op``; wait out availability errors; return an error deterministic for the data.

        An IntegrityError is usually a concurrent claim of the same event id by another
        consumer (the retry skips it); one that persists is returned.
        """
        delay = 0.2
        conflicts = 0
        while True:
            try:
                await op(events)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                kind = classify(exc)
                if kind == "transient":
                    if self._stopping:
                        raise  # leave the offsets uncommitted: the batch is redone after restart
                    self._note_waiting(exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.max_backoff)
                    continue
                if kind == "conflict":
                    conflicts += 1
                    if conflicts < 3:
                        log.info("%s: concurrent claim, retrying", self.group_id)
                        continue
                self._done_waiting()
                return exc
            self._done_waiting()
            return None

    def _note_waiting(self, exc: BaseException) -> None:
        reason = scrub_error(exc, limit=200)
        if self.waiting_since is None:
            self.waiting_since = time.monotonic()
            log.warning("%s: database unavailable (%s); waiting", self.group_id, reason)
        else:
            log.debug("%s: still waiting for the database (%s)", self.group_id, reason)
        self.waiting_for = reason

    def _done_waiting(self) -> None:
        if self.waiting_since is not None:
            log.info(
                "%s: database back after %.1fs",
                self.group_id,
                time.monotonic() - self.waiting_since,
            )
        self.waiting_since = None
        self.waiting_for = None

    async def _apply(self, events: Sequence[CloudEvent]) -> None:
        # The span continues the events' trace (their traceparent extension), so what the
        # handler enqueues joins the same trace.
        with consume_span(self.group_id, events):
            async with self.engine.begin() as conn:
                fresh = await claim(conn, self.group_id, [inbox_key(e) for e in events])
                todo = [e for e in _first_of_each(events) if inbox_key(e) in fresh]
                if todo:
                    await self.handler(conn, todo)
        count_consumed(self.group_id, todo)
        self.processed += len(todo)
        CONSUMED.labels(self.group_id, "ok").inc(len(todo))
        CONSUMED.labels(self.group_id, "duplicate").inc(len(events) - len(todo))

    @staticmethod
    def _where(rec: Any) -> str:
        return "/".join(str(getattr(rec, a, "")) for a in ("topic", "partition", "offset"))

    def _dedupe_key(self, rec: Any) -> str:
        """The same record redelivered (after a crash) is the same dead letter; another record
        at the same offset (a topic recreated, offsets reset) is not."""
        digest = hashlib.sha256()
        for part in (getattr(rec, "key", None), getattr(rec, "value", None)):
            digest.update(part or b"")
            digest.update(b"\x1f")
        for name, raw in getattr(rec, "headers", None) or ():
            digest.update(str(name).encode("utf-8", "replace") + b"=" + (raw or b"") + b"\x1f")
        return f"{self.group_id}/{self._where(rec)}/{digest.hexdigest()[:16]}"

    def _dead_letter(self, rec: Any, kind: str, reason: str, ev: CloudEvent | None) -> DeadLetter:
        return DeadLetter(
            kind=kind,
            source=self.source,
            consumer=self.group_id,
            # The same record redelivered after a crash is the same dead letter.
            dedupe_key=self._dedupe_key(rec),
            reason=reason,
            topic=getattr(rec, "topic", None),
            partition=getattr(rec, "partition", None),
            offset=getattr(rec, "offset", None),
            event_id=ev.id if ev else None,
            ce_type=ev.type if ev else None,
            key=getattr(rec, "key", None),
            value=getattr(rec, "value", None),
            headers=list(getattr(rec, "headers", None) or ()),
        )

    async def _park_record(self, rec: Any, reason: str) -> None:
        """Park a record that is not a Leadflow CloudEvent."""
        reason = clean_text(reason)[:500]
        log.error("%s: record %s dead-lettered: %s", self.group_id, self._where(rec), reason)
        dead = self._dead_letter(rec, "record", reason, None)
        row = dead.row()

        def copy(dead_id: int | None, minimal: bool) -> CloudEvent:
            data: dict[str, Any] = {
                "topic": dead.topic,
                "partition": dead.partition,
                "offset": dead.offset,
                "deadletter_id": dead_id,
            }
            if not minimal:
                data.update(
                    value=row["value"],
                    value_encoding=row["value_encoding"],
                    key=row["record_key"],
                    key_encoding=row["key_encoding"],
                )
            key = row["record_key"] if row["key_encoding"] == "utf-8" and not minimal else None
            return CloudEvent(
                type="io.leadflow.deadletter",
                source=self.source,
                id=derived_event_id("deadletter", dead.dedupe_key),
                data=data,
                key=key,
                extensions={
                    "deadletterreason": row["reason"] if not minimal else "InvalidEvent",
                    "deadletterconsumer": self.group_id,
                },
            )

        await self._park(dead, copy)

    async def _park_event(self, rec: Any, ev: CloudEvent, exc: BaseException) -> None:
        """Park an event its handler keeps failing on (not marked processed: see replay)."""
        reason = scrub_error(exc)
        log.error("%s: event %s (%s) dead-lettered: %s", self.group_id, ev.id, ev.type, reason)
        dead = self._dead_letter(rec, "event", reason, ev)

        def copy(dead_id: int | None, minimal: bool) -> CloudEvent:
            extensions = {} if minimal else dict(clean_json(dict(ev.extensions)))
            extensions.update(
                deadletterreason=reason if not minimal else type(exc).__name__,
                deadletterconsumer=self.group_id,
                deadletterid=str(dead_id),
            )
            return CloudEvent(
                type=ev.type,
                source=ev.source,
                data={} if minimal else clean_json(dict(ev.data)),
                id=bounded_id(f"deadletter:{self.group_id}:{ev.id}"),
                time=ev.time,
                subject=ev.subject,
                key=clean_text(ev.key) if ev.key is not None else None,
                extensions=extensions,
            )

        await self._park(dead, copy)

    async def _park(self, dead: DeadLetter, copy: Callable[[int | None, bool], CloudEvent]) -> None:
        """Write the dead letter and its topic copy in one transaction; never fail on data.

        Availability errors are waited out as usual. If the full copy is refused (it should
        not be: it is sanitised), a minimal one is tried; if even that is refused, the record
        is logged and skipped with a metric rather than stopping the group.
        """

        for minimal in (False, True):

            async def write(_: Sequence[CloudEvent], minimal: bool = minimal) -> None:
                async with self.engine.begin() as conn:
                    dead_id = await insert(conn, dead.minimal() if minimal else dead)
                    await enqueue(
                        conn, self.source, self.deadletter_topic, [copy(dead_id, minimal)]
                    )

            err = await self._attempt(write, [])
            if err is None:
                self.deadlettered += 1
                CONSUMED.labels(self.group_id, "deadletter").inc()
                return
            log.error(
                "%s: could not write the %s dead letter for %s: %s",
                self.group_id,
                "minimal" if minimal else "full",
                dead.dedupe_key,
                scrub_error(err),
            )
        DEADLETTER_LOST.labels(self.group_id).inc()
        log.error("%s: record %s skipped without a dead letter", self.group_id, dead.dedupe_key)


def urgent_first(
    events: Sequence[tuple[Any, CloudEvent]], urgent: Urgency
) -> tuple[list[tuple[Any, CloudEvent]], list[tuple[Any, CloudEvent]]]:
    """A batch split in two, each part in the batch's order: every event of a key that has an
    urgent event, then the others.

    One key's events stay together and in order, which is all Kafka orders (events of
    different keys may sit on different partitions, so no consumer may rely on their order).
    """
    keys = {ev.key for _, ev in events if urgent(ev)}
    if not keys:
        return [], list(events)
    first = [pair for pair in events if pair[1].key in keys]
    rest = [pair for pair in events if pair[1].key not in keys]
    return first, rest


def _first_of_each(events: Sequence[CloudEvent]) -> list[CloudEvent]:
    seen: set[str] = set()
    out = []
    for e in events:
        if (k := inbox_key(e)) not in seen:
            seen.add(k)
            out.append(e)
    return out
