"""Making captured events durable: publish straight to Kafka, else spool to the database.

A 2xx answer means the event is durable. The fast path waits for the broker's acknowledgement
(a few seconds at most). If the broker is down, not up yet or too slow, the event is written
to the outbox under source ``capture`` (the spool) and the runtime's relay publishes it, in
order, when the broker is back. While spooled events wait, new ones join the spool so that
one lead's events stay in order. Only if neither worked does the caller get a 503.

A send that timed out is *in doubt*: it may still reach Kafka once a frozen broker resumes.
Its spooled copy is held back from the relay (``sent_at = IN_DOUBT``) until the send
resolves: delivered, the row is marked sent; failed, the relay gets it. So a broker stall
produces no duplicate on Kafka, and nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from prometheus_client import Counter

from services.capture import repository
from shared.events import CloudEvent
from shared.outbox import enqueue, publish
from shared.problems import Problem
from shared.runtime import Runtime

log = logging.getLogger(__name__)

ACCEPTED = Counter("leadflow_capture_events_total", "Captured events by path", ["path"])


@dataclass(frozen=True, slots=True)
class Submission:
    """An event to make durable, with its idempotency scope when the request had a key."""

    event: CloudEvent
    idempotency_scope: str | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    """What the caller answers: the event id and lead key (the stored ones on a repeat)."""

    event_id: str
    lead_key: str
    repeat: bool = False


class Intake:
    """The durable hand-off of captured events to Kafka (see the module docstring)."""

    def __init__(self, runtime: Runtime, topic: str, publish_timeout: float = 2.5) -> None:
        self.runtime = runtime
        self.topic = topic
        self.publish_timeout = publish_timeout
        # Unknown at start (a previous process may have left rows): ask the database once.
        self._spooling = True
        self._in_doubt: set[asyncio.Task[None]] = set()

    async def accept(self, submissions: Sequence[Submission]) -> list[Accepted]:
        """Make every submission durable; answer from the idempotency records on a repeat."""
        known = await self._known([s for s in submissions if s.idempotency_scope])
        answers: list[Accepted] = []
        fresh: dict[str, Submission] = {}
        for sub in submissions:
            ev = sub.event
            if ev.id in known:
                answers.append(Accepted(ev.id, known[ev.id], repeat=True))
                continue
            fresh.setdefault(ev.id, sub)
            answers.append(Accepted(ev.id, ev.key or ""))
        if fresh:
            await self._make_durable(list(fresh.values()))
        return answers

    async def _known(self, subs: Sequence[Submission]) -> dict[str, str]:
        if not subs:
            return {}
        try:
            async with self.runtime.engine.connect() as conn:
                return await repository.find_idempotent(conn, [s.event.id for s in subs])
        except Exception as exc:
            # Event ids are derived from the key, so publishing again is still harmless.
            log.warning("idempotency lookup failed (%s); continuing", exc)
            return {}

    async def _make_durable(self, subs: list[Submission]) -> None:
        if not await self._must_spool():
            outcome = await self._publish_directly(subs)
            if outcome == "delivered":
                await self._remember(subs)
                ACCEPTED.labels("direct").inc(len(subs))
                return
            if outcome == "in_doubt":
                return
        await self._spool(subs, in_doubt=None)

    async def _must_spool(self) -> bool:
        if not self.runtime.kafka_ready.is_set() or self._in_doubt:
            return True
        if self._spooling:
            try:
                async with self.runtime.engine.connect() as conn:
                    self._spooling = await repository.spool_pending(conn) > 0
            except Exception:
                return False  # the database is away: Kafka is the only way left
        return self._spooling

    async def _publish_directly(self, subs: list[Submission]) -> str:
        items = [(self.topic, s.event) for s in subs]
        task = asyncio.ensure_future(publish(self.runtime.producer, items))
        done, _ = await asyncio.wait({task}, timeout=self.publish_timeout)
        if not done:
            await self._spool(subs, in_doubt=task)
            return "in_doubt"
        if task.exception() is not None:
            log.warning("direct publish failed (%s); spooling", task.exception())
            return "failed"
        return "delivered"

    async def _spool(self, subs: list[Submission], in_doubt: asyncio.Future[None] | None) -> None:
        events = [s.event for s in subs]
        ids = [e.id for e in events]
        try:
            async with self.runtime.engine.begin() as conn:
                await enqueue(conn, repository.SOURCE, self.topic, events)
                if in_doubt is not None:
                    await repository.mark_in_doubt(conn, ids)
                await repository.remember_idempotent(conn, _records(subs))
        except Exception as exc:
            log.error("spooling %d events failed: %s", len(events), exc)
            if in_doubt is not None:
                in_doubt.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
            raise Problem(
                503, "the event could not be stored; retry later", headers={"Retry-After": "5"}
            ) from None
        self._spooling = True
        ACCEPTED.labels("spool").inc(len(events))
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
                    await repository.resolve_in_doubt(conn, ids, delivered=delivered)
                break
            except Exception as exc:
                log.warning("resolving in-doubt events failed (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        if not delivered:
            self.runtime.relay.wake()

    async def _remember(self, subs: list[Submission]) -> None:
        records = _records(subs)
        if not records:
            return
        try:
            async with self.runtime.engine.begin() as conn:
                await repository.remember_idempotent(conn, records)
        except Exception as exc:
            # The event is on Kafka already; a repeat would re-send the same id, harmless.
            log.warning("recording idempotency keys failed: %s", exc)

    async def drain(self, within: float) -> None:
        """At shutdown: let in-doubt sends resolve; leave the rest to the stale-row sweep."""
        if self._in_doubt:
            await asyncio.wait(set(self._in_doubt), timeout=within)


def _records(subs: Sequence[Submission]) -> list[tuple[str, str, str]]:
    return [
        (s.event.id, s.idempotency_scope, s.event.key or "") for s in subs if s.idempotency_scope
    ]


class SpoolSweeper:
    """A worker that hands rows left in doubt by a crashed process back to the relay, and
    forgets idempotency records once they are too old to matter."""

    def __init__(
        self,
        intake: Intake,
        *,
        keep_idempotency_days: float = 7.0,
        every: float = 30.0,
        older_than: float = 120.0,
    ) -> None:
        self.intake = intake
        self.every = every
        self.older_than = timedelta(seconds=older_than)
        self.keep_idempotency = timedelta(days=keep_idempotency_days)
        self._stop = asyncio.Event()

    async def run(self) -> None:
        """Sweep now and then until stopped."""
        while not self._stop.is_set():
            try:
                async with self.intake.runtime.engine.begin() as conn:
                    released = await repository.release_stale_in_doubt(conn, self.older_than)
                    await repository.prune_idempotent(conn, self.keep_idempotency)
                if released:
                    log.warning("released %d stale in-doubt events to the relay", released)
                    self.intake.runtime.relay.wake()
            except Exception as exc:
                log.warning("spool sweep failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.every)

    async def stop(self) -> None:
        """Let in-doubt sends finish, then stop sweeping."""
        self._stop.set()
        await self.intake.drain(within=5.0)
