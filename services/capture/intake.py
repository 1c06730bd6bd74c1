"""Making captured events durable: publish straight to Kafka, else spool to the database.

A 2xx answer means the event is durable. The fast path waits for the broker's acknowledgement
(a few seconds at most). If the broker is down, not up yet or too slow, the event is written
to the outbox under source ``capture`` (the spool) and the runtime's relay publishes it, in
order, when the broker is back. While spooled events wait, new ones join the spool so that
one lead's events stay in order. Only if neither worked does the caller get a 503.

A send that timed out is *in doubt*: it may still reach Kafka once a frozen broker resumes.
Its spooled copy is held back from the relay (the outbox's ``available_at``) until the send
resolves: delivered, the row is marked sent; failed, the relay gets it. So a broker stall
produces no duplicate on Kafka, and nothing is lost: if the process dies first, the hold runs
out and the relay publishes the row.

Requests with an idempotency key (Idempotency-Key, Google lead id) first *claim* it: one short
transaction inserts the key row and spools the event, held back the same way. Of concurrent
repeats only the claimer publishes; the others answer its event id without publishing. After
the direct send the spooled copy is deleted, just after the answer (several requests' rows in
one transaction; the key row dedupes repeats), or released to the relay; a row left held by a
crash is published when its hold runs out, so nothing is lost.

A Segment ``messageId`` is not claimed, looked up or remembered in the database: the event id
follows from it and Segment's answer carries nothing stored, so a repeat is the very same
event, and every consumer records the ids it applied (for ``LEADFLOW_INBOX_RETENTION_DAYS``,
longer than ``idempotency_days``) and counts it once. Capture only spares Kafka the repeats it
can see without I/O: concurrent repeats in one process wait for the first and share its
outcome, and the ids this process made durable lately (:data:`RECENT_KEYS`) answer as repeats
without publishing. A repeat that reaches another replica, or this one after a restart, is
published again under the same id. No write per event, and none before the answer, on the
path that carries the most events: the lookup and the remembered key cost a quarter of
capture's CPU per tracked event and a third of a core of PostgreSQL's at 23,000 events/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from prometheus_client import Counter

from services.capture import repository
from services.capture.events import SOURCE
from services.capture.repository import IdempotentRecord
from shared.db import plan_each_execution
from shared.events import CloudEvent, utcnow
from shared.outbox import count_pending, enqueue, forget, hold, mark_sent, publish, release
from shared.problems import Problem
from shared.runtime import Runtime
from shared.tracing import TRACEPARENT, with_trace

log = logging.getLogger(__name__)

ACCEPTED = Counter("leadflow_capture_events_total", "Captured events by path", ["path"])
# Bound once: ``labels()`` looks the child up (and takes a lock) on every call.
_ACCEPTED_DIRECT = ACCEPTED.labels("direct")
_ACCEPTED_SPOOL = ACCEPTED.labels("spool")

#: How many ids of unclaimed keys (Segment ``messageId``) made durable by this process are
#: kept to answer a repeat without publishing it again (about 130 bytes each).
RECENT_KEYS = 65_536


@dataclass(frozen=True, slots=True)
class Submission:
    """An event to make durable, with its idempotency scope when the request had a key."""

    event: CloudEvent
    idempotency_scope: str | None = None
    #: Of a client-chosen key (Idempotency-Key): the request's fields, hashed. A repeat with
    #: other fields is a different request reusing the key (answered 422, as the IETF
    #: Idempotency-Key draft says), not a retry.
    fingerprint: str | None = None
    #: Whether the key is claimed in the database before publishing. False where the event id
    #: follows from the key alone and the answer carries nothing stored (a Segment
    #: ``messageId``): a repeat is the very same event, which consumers count once, so the key
    #: stays out of the database (see the module docstring).
    claim: bool = True


@dataclass(frozen=True, slots=True)
class Accepted:
    """What the caller answers: the event id and lead key (the stored ones on a repeat)."""

    event_id: str
    lead_key: str
    repeat: bool = False
    #: A repeat of the key with a different request (see :attr:`Submission.fingerprint`).
    key_reused: bool = False


class Intake:
    """The durable hand-off of captured events to Kafka (see the module docstring)."""

    def __init__(self, runtime: Runtime, topic: str, publish_timeout: float = 2.5) -> None:
        self.runtime = runtime
        self.topic = topic
        self.publish_timeout = publish_timeout
        # Unknown at start (a previous process may have left rows): ask the database once.
        self._spooling = True
        self._in_doubt: set[asyncio.Task[None]] = set()
        # Claimed and delivered directly: spooled copies still to be deleted (see _settle).
        self._unsettled: list[str] = []
        # Ids of unclaimed keys made durable here lately, oldest first (see RECENT_KEYS).
        self._recent: dict[str, None] = {}
        # Unclaimed keys being made durable by a request of this process: its outcome.
        self._flights: dict[str, asyncio.Future[None]] = {}
        self._settler: asyncio.Task[None] | None = None

    async def accept(self, submissions: Sequence[Submission]) -> list[Accepted]:
        """Make every submission durable; answer from the idempotency records on a repeat.

        A keyed submission is claimed first (:meth:`_claim`): of concurrent requests with one
        key, only the winner publishes; the others (and repeats of a key accepted before)
        answer the stored event id and lead key.
        """
        fresh: dict[str, Submission] = {}
        for sub in submissions:
            fresh.setdefault(sub.event.id, sub)
        # The current trace is added once, so the spooled copy and the record carry the same.
        fresh = _traced(fresh)
        values = _encoded(fresh.values())
        # Registered before the first await, so that a concurrent repeat in this process sees it.
        waits, mine = self._in_flight(
            [s for s in fresh.values() if s.idempotency_scope and not s.claim]
        )
        try:
            answers = await self._accept(submissions, fresh, values, waits, mine)
        except BaseException as exc:
            _settle_flights(self._flights, mine, exc)
            raise
        _settle_flights(self._flights, mine, None)
        return answers

    async def _accept(
        self,
        submissions: Sequence[Submission],
        fresh: dict[str, Submission],
        values: Mapping[str, bytes],
        waits: Mapping[str, asyncio.Future[None]],
        mine: Sequence[Submission],
    ) -> list[Accepted]:
        claimed, known = await self._claim(
            [s for s in fresh.values() if s.idempotency_scope and s.claim], values
        )
        for sub in mine:
            if sub.event.id in self._recent:
                known[sub.event.id] = IdempotentRecord(sub.event.key or "")
        for event_id in waits:
            known[event_id] = IdempotentRecord(fresh[event_id].event.key or "")
        answers: list[Accepted] = []
        for sub in submissions:
            ev = sub.event
            if ev.id in known:
                stored = known[ev.id]
                reused = bool(
                    sub.fingerprint and stored.fingerprint and sub.fingerprint != stored.fingerprint
                )
                answers.append(Accepted(ev.id, stored.lead_key, repeat=True, key_reused=reused))
            else:
                answers.append(Accepted(ev.id, ev.key or ""))
        todo = [s for s in fresh.values() if s.event.id not in known]
        if todo:
            await self._make_durable(todo, claimed, values)
        if waits:
            # A repeat is accepted once its first request's event is: that one's failure
            # (a 503) is this one's too.
            await asyncio.shield(asyncio.gather(*waits.values()))
        return answers

    def _in_flight(
        self, subs: Sequence[Submission]
    ) -> tuple[dict[str, asyncio.Future[None]], list[Submission]]:
        """Of unclaimed keyed submissions: (the ids another request here is making durable,
        with its outcome; the submissions this request now makes durable itself)."""
        waits: dict[str, asyncio.Future[None]] = {}
        mine: list[Submission] = []
        loop = asyncio.get_running_loop()
        for sub in subs:
            flight = self._flights.get(sub.event.id)
            if flight is not None:
                waits[sub.event.id] = flight
            else:
                self._flights[sub.event.id] = loop.create_future()
                mine.append(sub)
        return waits, mine

    async def _claim(
        self, subs: Sequence[Submission], values: Mapping[str, bytes]
    ) -> tuple[set[str], dict[str, IdempotentRecord]]:
        """Claim keys in one short transaction: (ids won, records of the ids lost).

        A key lost was accepted before (a repeat) or is being accepted by a concurrent request:
        its record says what to answer.
        """
        if not subs:
            return set(), {}
        claims = [(s.event, s.idempotency_scope or "", s.fingerprint) for s in subs]
        try:
            async with self.runtime.engine.begin() as conn:
                won = await repository.claim_idempotent(
                    conn, self.topic, claims, values=values, traced=True
                )
        except Exception as exc:
            # The database is away: Kafka alone (a repeat may then publish the same id again).
            log.warning("claiming idempotency keys failed (%s); continuing", exc)
            return set(), {}
        lost: dict[str, IdempotentRecord] = {}
        lost_ids = [s.event.id for s in subs if s.event.id not in won]
        if lost_ids:
            try:
                async with self.runtime.engine.connect() as conn:
                    lost = await repository.find_idempotent(conn, lost_ids)
            except Exception as exc:
                log.warning("reading claimed idempotency keys failed: %s", exc)
        for sub in subs:  # record unreadable or pruned in between: answer with the event's key
            if sub.event.id in lost_ids:
                lost.setdefault(sub.event.id, IdempotentRecord(sub.event.key or ""))
        return won, lost

    async def _make_durable(
        self, subs: list[Submission], claimed: set[str], values: Mapping[str, bytes]
    ) -> None:
        if not await self._must_spool():
            outcome = await self._publish_directly(subs, claimed, values)
            if outcome == "delivered":
                self._settle(subs, claimed)
                self._remember_recent(subs)
                _ACCEPTED_DIRECT.inc(len(subs))
                return
            if outcome == "in_doubt":
                self._remember_recent(subs)
                return
        await self._spool(subs, in_doubt=None, claimed=claimed)
        self._remember_recent(subs)

    def _remember_recent(self, subs: Sequence[Submission]) -> None:
        """Durable now: the unclaimed keys' repeats answer without publishing again."""
        recent = self._recent
        for sub in subs:
            if sub.idempotency_scope and not sub.claim:
                recent[sub.event.id] = None
        excess = len(recent) - RECENT_KEYS
        if excess > 0:
            for event_id in list(itertools.islice(recent, excess)):
                del recent[event_id]

    async def _must_spool(self) -> bool:
        if not self.runtime.kafka_ready.is_set() or self._in_doubt:
            return True
        if self._spooling:
            try:
                async with self.runtime.engine.connect() as conn:
                    # held rows are settled by their sender; in-doubt sends are tracked above
                    self._spooling = await count_pending(conn, SOURCE, held=False) > 0
            except Exception:
                return False  # the database is away: Kafka is the only way left
        return self._spooling

    async def _publish_directly(
        self, subs: list[Submission], claimed: set[str], values: Mapping[str, bytes]
    ) -> str:
        items = [(self.topic, s.event) for s in subs]
        task = asyncio.get_running_loop().create_task(
            publish(self.runtime.producer, items, values, traced=True)
        )
        if not await _done_within(task, self.publish_timeout):
            await self._spool(subs, in_doubt=task, claimed=claimed)
            return "in_doubt"
        if task.exception() is not None:
            log.warning("direct publish failed (%s); spooling", task.exception())
            return "failed"
        return "delivered"

    async def _spool(
        self,
        subs: list[Submission],
        in_doubt: asyncio.Future[None] | None,
        claimed: Collection[str] = (),
    ) -> None:
        events = [s.event for s in subs]
        ids = [e.id for e in events]
        try:
            async with self.runtime.engine.begin() as conn:
                await plan_each_execution(conn)
                await enqueue(conn, SOURCE, self.topic, events)
                if in_doubt is not None:
                    # held back from the relay while the direct send is in flight
                    await hold(conn, ids, utcnow() + repository.HOLD)
                else:
                    await release(conn, [i for i in ids if i in claimed])
                # Claimed keys have their row; one whose claim failed (the database was away
                # then) gets it now. Unclaimed keys stay out of the database.
                await repository.remember_idempotent(conn, _records(subs))
        except Exception as exc:
            log.error("spooling %d events failed: %s", len(events), exc)
            if in_doubt is not None:
                in_doubt.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
            # An in-doubt send may still land, so the event may arrive after all: a retry with
            # the same Idempotency-Key (or messageId) gets the same event id and counts once; a
            # retry without one is a new event (the client chose no dedupe).
            raise Problem(
                503,
                "the event could not be stored; retry later with the same Idempotency-Key "
                "(or messageId), which is safe: the event is then never counted twice",
                headers={"Retry-After": "5"},
            ) from None
        self._spooling = True
        _ACCEPTED_SPOOL.inc(len(events))
        if in_doubt is None:
            self.runtime.relay.wake()
            return
        resolver = asyncio.create_task(self._resolve(in_doubt, ids))
        self._in_doubt.add(resolver)
        resolver.add_done_callback(self._in_doubt.discard)

    async def _resolve(self, send: asyncio.Future[None], ids: list[str]) -> None:
        try:
            await send
            delivered = True
        except Exception as exc:
            log.warning("in-doubt publish failed (%s); the relay will send it", exc)
            delivered = False
        delay = 0.2
        while True:
            try:
                async with self.runtime.engine.begin() as conn:
                    await plan_each_execution(conn)
                    await (mark_sent if delivered else release)(conn, ids)
                break
            except Exception as exc:
                log.warning("resolving in-doubt events failed (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        if not delivered:
            self.runtime.relay.wake()

    def _settle(self, subs: list[Submission], claimed: set[str]) -> None:
        """Delivered directly: the claimed keys' spooled copies are to be deleted. That is
        bookkeeping, not durability (the events are on Kafka), so it is done after the answer,
        and the requests of a moment share one transaction."""
        done = [s.event.id for s in subs if s.event.id in claimed]
        if not done:
            return
        self._unsettled.extend(done)
        if self._settler is None or self._settler.done():
            self._settler = asyncio.create_task(self._settle_queued())

    async def _settle_queued(self) -> None:
        # What arrives while a transaction runs is taken by the next one.
        while self._unsettled:
            done, self._unsettled = self._unsettled, []
            try:
                async with self.runtime.engine.begin() as conn:
                    await plan_each_execution(conn)
                    # The claimed rows were only the crash copy; the key rows dedupe repeats.
                    await forget(conn, done)
            except Exception as exc:
                # The events are on Kafka already; a row left held is published again when
                # its hold runs out (the same event id: consumers count it once).
                log.warning("recording %d delivered events failed: %s", len(done), exc)

    async def drain(self, within: float) -> None:
        """At shutdown: let in-doubt sends resolve and delivered ones be recorded; the rest
        are published when their hold ends."""
        pending = set(self._in_doubt)
        if self._settler is not None and not self._settler.done():
            pending.add(self._settler)
        if pending:
            await asyncio.wait(pending, timeout=within)
        if self._settler is not None and not self._settler.done():
            return
        if self._unsettled:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settle_queued(), timeout=within)


async def _done_within(task: asyncio.Future[None], timeout: float) -> bool:
    """Whether ``task`` is done within ``timeout`` seconds; it runs on either way.

    What ``asyncio.wait({task}, timeout=...)`` does for one task, without its sets and checks:
    this wait is on every form post.
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    timer = loop.call_later(timeout, wake)
    task.add_done_callback(wake)
    try:
        await waiter
    finally:
        timer.cancel()
        task.remove_done_callback(wake)
    return task.done()


def _settle_flights(
    flights: dict[str, asyncio.Future[None]],
    subs: Sequence[Submission],
    error: BaseException | None,
) -> None:
    """This request is done with its unclaimed keys: repeats waiting on them learn how."""
    for sub in subs:
        flight = flights.pop(sub.event.id, None)
        if flight is None or flight.done():
            continue
        if error is None:
            flight.set_result(None)
        elif isinstance(error, Exception):
            flight.set_exception(error)
            flight.exception()  # retrieved: a flight no repeat waited for is not an error
        else:  # cancelled (the client went away): a waiting repeat answers 503; its client retries
            flight.set_exception(
                Problem(503, "the event could not be stored; retry", headers={"Retry-After": "1"})
            )
            flight.exception()


def _traced(subs: dict[str, Submission]) -> dict[str, Submission]:
    """The submissions with their events carrying the current trace (one request's events
    share it: when the first gets none, none does)."""
    out: dict[str, Submission] = {}
    for event_id, sub in subs.items():
        event = with_trace(sub.event)
        if event is sub.event and not out and TRACEPARENT not in event.extensions:
            return subs  # no trace to carry
        out[event_id] = sub if event is sub.event else replace(sub, event=event)
    return out


def _encoded(subs: Iterable[Submission]) -> dict[str, bytes]:
    """Each event's data as JSON, encoded once for both the outbox and the Kafka record."""
    out: dict[str, bytes] = {}
    for sub in subs:
        # not encodable: left to the paths that report it (publish fails, the spool stores it)
        with contextlib.suppress(TypeError):
            out[sub.event.id] = sub.event.value()
    return out


def _records(subs: Sequence[Submission]) -> list[tuple[str, str, str, str | None]]:
    """The key rows of claimed submissions (unclaimed keys stay out of the database)."""
    return [
        (s.event.id, s.idempotency_scope, s.event.key or "", s.fingerprint)
        for s in subs
        if s.idempotency_scope and s.claim
    ]
