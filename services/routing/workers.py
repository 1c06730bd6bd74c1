"""Routing's background loops, all on :class:`shared.loops.DueWorkLoop`: SLA timers, the retry
of unassigned leads, webhook deliveries and retention.

The timer worker sleeps until the earliest pending timer is due, or until woken (a nearer timer
was committed), never polling faster than that. Due timers are claimed with
``FOR UPDATE SKIP LOCKED`` and a lease on PostgreSQL, so replicas share them and a crashed
replica's claims come back. A claimed batch's warnings are fired in one transaction, its
breaches in another (set-based, ``handlers/clock_batch.py``), escalation steps one per
transaction; each timer flips from pending to fired in the transaction that fires it, so it
fires exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from typing import Any

import httpx
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.routing import durable_queues as queues
from services.routing import handlers
from services.routing import repository as repo
from services.routing.deps import RoutingContext
from services.routing.domain.rules import next_available_at
from services.routing.handlers.clock_batch import CLOCK_KINDS, fire_clock_timers
from services.routing.webhooks import backoff, send
from shared.events import utcnow
from shared.loops import DueWorkLoop, PeriodicPurge
from shared.metrics import ROUTING_TIMERS_PENDING, WEBHOOK_QUEUE

log = logging.getLogger(__name__)

TIMERS_FIRED = Counter("leadflow_routing_timers_fired_total", "SLA timers fired", ["kind"])
DELIVERIES = Counter("leadflow_routing_webhook_deliveries_total", "Webhook attempts", ["outcome"])


#: How often the queue gauges are refreshed: a count per step would cost more than the step.
GAUGE_SECONDS = 10.0
_TIMER_KINDS = ("warn", "breach")
#: The timer worker's shortest sleep between passes: the most a due timer waits for the
#: timers due just after it, so that a steady stream is fired in batches.
MIN_TIMER_SLEEP = 0.025


class _Every:
    """True at most once per ``seconds`` (monotonic clock); the first call is due."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._last: float | None = None

    def due(self) -> bool:
        now = time.monotonic()
        if self._last is not None and now - self._last < self.seconds:
            return False
        self._last = now
        return True


def _warnings_in_order(
    due: list[dict[str, object]],
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """The batch's warnings: those to fire first, and those due after another timer of their
    own assignment in the batch (fired after it)."""
    first_other: dict[object, Any] = {}
    for t in due:
        if t["kind"] != "warn":
            aid = t["assignment_id"]
            if aid not in first_other or t["due_at"] < first_other[aid]:
                first_other[aid] = t["due_at"]
    early: list[dict[str, object]] = []
    late: list[dict[str, object]] = []
    for t in due:
        if t["kind"] == "warn":
            other = first_other.get(t["assignment_id"])
            (late if other is not None and other <= t["due_at"] else early).append(t)
    return early, late


def _set_pending_timers(counts: dict[str, int]) -> None:
    # Kinds with nothing pending are set to 0, or the gauge would keep its last value.
    for kind in {*_TIMER_KINDS, *counts}:
        ROUTING_TIMERS_PENDING.labels(kind).set(counts.get(kind, 0))


class TimerWorker(DueWorkLoop):
    """Fires due SLA warning and breach timers."""

    def __init__(
        self,
        engine: AsyncEngine,
        ctx: RoutingContext,
        *,
        batch: int = 50,
        lease_seconds: float = 30.0,
        max_sleep: float = 30.0,
        min_sleep: float = MIN_TIMER_SLEEP,
        concurrency: int = 4,
    ) -> None:
        super().__init__(max_sleep, min_sleep=min_sleep)
        self.concurrency = concurrency
        self.engine = engine
        self.ctx = ctx
        self.batch = batch
        self.lease_seconds = lease_seconds
        self.owner = f"routing-{uuid.uuid4().hex[:8]}"
        self.fired = 0
        self._gauges = _Every(GAUGE_SECONDS)

    async def step(self) -> datetime | None:
        # One connection for the whole pass: each checkout would first ping the server.
        async with self.engine.connect() as conn:
            while True:
                now = utcnow()
                async with conn.begin():
                    due = await queues.claim_due_timers(
                        conn, self.owner, now, self.batch, self.lease_seconds
                    )
                if due:
                    try:
                        await self._fire(due, conn)
                    except Exception:
                        # One bad timer must not hold up the others: retry them one by one.
                        log.exception("timer batch failed; firing one by one")
                        for timer in due:
                            try:
                                await self._fire([timer], conn)
                            except Exception:
                                log.exception("timer %s failed; retrying it shortly", timer["id"])
                                async with conn.begin():
                                    await queues.defer_timer(
                                        conn, int(timer["id"]), utcnow() + timedelta(seconds=5)
                                    )
                    self.ctx.after_timer_commit()
                    # Not this loop (if the context has no timer wakers, undo its wake-up): the
                    # next pass waits for the next due timer, and at least ``min_sleep``, so
                    # timers falling due meanwhile are fired together, not one pass (some twenty
                    # round trips) each. A wake after this point (a commit elsewhere) still
                    # counts; one before is seen by next_due.
                    self._wake.clear()
                # Once stopping, the backlog is left to the next start (or another replica):
                # claiming batch after batch would hold SIGTERM up for as long as it lasts.
                if len(due) < self.batch or self._stopping:
                    break
            if self._gauges.due():
                _set_pending_timers(await queues.pending_timer_counts(conn))
            return await queues.next_timer_due(conn, utcnow())

    async def _fire(
        self, due: list[dict[str, object]], conn: AsyncConnection | None = None
    ) -> None:
        """Fire timers (each flips pending -> fired at most once): the warnings together in one
        transaction, then the breaches together in another, then every escalation step in its
        own, up to ``concurrency`` at a time.

        Warnings are cheap and commit first, so they never wait behind a batch of breaches. The
        breaches' batch reads and writes set-based and locks the rep rows only for its routing
        pass at the end (see ``handlers/clock_batch.py``). Warnings go first (a breach fires its
        assignment's pending warning itself), except a warning due after another timer of its
        own assignment in this batch (an escalation step that moves the lead on): that one goes
        last, so a late worker does not warn about an assignment it is about to end. Once
        stopping, timers not started yet are released for the next start (or another replica)
        instead of waiting out their lease. Warnings and breaches use ``conn`` (the pass's
        connection, if given); escalation steps each take one of their own.
        """
        warns, late_warns = _warnings_in_order(due)
        breaches = [t for t in due if t["kind"] == "breach"]
        steps = [t for t in due if t["kind"] not in CLOCK_KINDS]
        if warns:
            await self._fire_clocks(warns, conn)
        if breaches:
            await self._fire_clocks(breaches, conn)
        if steps:
            await self._fire_apart(steps)
        if late_warns:
            await self._fire_clocks(late_warns, conn)

    async def _fire_clocks(
        self, due: list[dict[str, object]], conn: AsyncConnection | None
    ) -> None:
        async with AsyncExitStack() as stack:
            if conn is None:
                conn = await stack.enter_async_context(self.engine.connect())
            async with conn.begin():
                if self._stopping:
                    ids = [int(str(t["id"])) for t in due]
                    await queues.release_timers(conn, ids, self.owner)
                    return
                kinds = await fire_clock_timers(conn, self.ctx, due, utcnow())
        self._count(kinds)

    async def _fire_apart(self, others: list[dict[str, object]]) -> None:
        width = 1 if self.engine.dialect.name == "sqlite" else self.concurrency
        gate = asyncio.Semaphore(width)
        released: list[int] = []

        async def one(timer: dict[str, object]) -> None:
            async with gate:
                if self._stopping:
                    released.append(int(str(timer["id"])))
                    return
                await self._fire_together([timer])

        results = await asyncio.gather(*(one(t) for t in others), return_exceptions=True)
        if released:
            async with self.engine.begin() as conn:
                await queues.release_timers(conn, released, self.owner)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def _fire_together(self, due: list[dict[str, object]]) -> None:
        kinds: list[str] = []
        async with self.engine.begin() as conn:
            for timer in due:
                if await handlers.fire_timer(conn, self.ctx, timer, utcnow()):
                    kinds.append(str(timer["kind"]))
        self._count(kinds)

    def _count(self, kinds: list[str]) -> None:
        self.fired += len(kinds)
        for kind in kinds:
            TIMERS_FIRED.labels(kind).inc()


class QueueRetrier(DueWorkLoop):
    """Retries leads that nobody could take, when woken (capacity freed) or periodically."""

    def __init__(self, engine: AsyncEngine, ctx: RoutingContext, *, interval: float) -> None:
        super().__init__(interval)
        self.engine = engine
        self.ctx = ctx
        self._last = float("-inf")

    #: Wake-ups come after every commit; a pass at most this often keeps a long queue cheap.
    min_spacing = 1.0

    async def step(self) -> datetime | None:
        since = asyncio.get_running_loop().time() - self._last
        if since < self.min_spacing:
            await asyncio.sleep(self.min_spacing - since)
        self._last = asyncio.get_running_loop().time()
        async with self.engine.connect() as conn:
            rows = await repo.queued(conn, handlers.UNASSIGNED_QUEUE)
        assigned = 0
        for row in rows:
            if self._stopping:
                return None  # the rest waits for the next start
            try:
                async with self.engine.begin() as conn:
                    if await handlers.retry_queued(conn, self.ctx, row, utcnow()):
                        assigned += 1
            except Exception:
                log.exception("retry of queued lead %s failed", row["lead_id"])
        if assigned:
            self.ctx.after_commit()
        if len(rows) <= assigned:
            return None
        # Leads still wait: look again as soon as an absent rep comes back by the clock (an
        # out-of-office range ends, working hours begin), not only at the periodic retry.
        now = utcnow()
        async with self.engine.connect() as conn:
            states = await repo.load_rep_states(conn, self.ctx.config, now, lock=False)
        return next_available_at(self.ctx.config, states, now)


class RoutingRetention(PeriodicPurge):
    """Deletes delivered and dead webhook deliveries and fired or cancelled timers once past
    their retention, hourly: both tables would otherwise grow with every assignment."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        deliveries_keep: timedelta,
        timers_keep: timedelta,
        every: float = 3600.0,
    ) -> None:
        super().__init__(every=every)
        self.engine = engine
        self.deliveries_keep = deliveries_keep
        self.timers_keep = timers_keep

    async def purge(self, now: datetime | None = None) -> tuple[int, int]:
        """Delete what is past retention; return (deliveries, timers) deleted."""
        now = now or utcnow()
        async with self.engine.begin() as conn:
            return await queues.purge_finished(
                conn,
                deliveries_before=now - self.deliveries_keep,
                timers_before=now - self.timers_keep,
            )


class WebhookWorker(DueWorkLoop):
    """Sends due webhook deliveries, a few at a time per webhook.

    Each webhook gets at most ``concurrency`` sends in flight, claimed (leased) just before they
    start, so a slow receiver only ever holds up its own deliveries. A send is cut off well
    within its lease, and its outcome is written only under the lease token it was claimed
    with: a delivery whose lease ran out (and was taken by another replica) is not overwritten.
    Once stopping, nothing new is claimed; sends in flight get a short grace period.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        ctx: RoutingContext,
        *,
        batch: int = 20,
        timeout: float = 10.0,
        max_sleep: float = 30.0,
        concurrency: int = 4,
        stop_grace: float = 5.0,
    ) -> None:
        super().__init__(max_sleep)
        self.engine = engine
        self.ctx = ctx
        self.batch = batch
        self.timeout = timeout
        self.concurrency = concurrency
        self.stop_grace = stop_grace
        self.hooks = {h.name: h for h in ctx.config.webhooks}
        self._inflight: dict[str, set[asyncio.Task[None]]] = {n: set() for n in self.hooks}
        self._client: httpx.AsyncClient | None = None
        self._gauges = _Every(GAUGE_SECONDS)

    @property
    def lease_seconds(self) -> float:
        """How long a claim holds: a send is cut off after twice the timeout, well before."""
        return self.timeout * 3

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            await self._drain()

    async def _drain(self) -> None:
        tasks = [t for ts in self._inflight.values() for t in ts]
        if tasks:
            # Unfinished sends keep their lease and are retried when it ends (at least once).
            _, pending = await asyncio.wait(tasks, timeout=self.stop_grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def step(self) -> datetime | None:
        if not self.hooks:
            return None
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        free = [n for n, ts in self._inflight.items() if len(ts) < self.concurrency]
        for name in free:
            if self._stopping:
                break
            room = min(self.concurrency - len(self._inflight[name]), self.batch)
            token = uuid.uuid4().hex  # this claim's own: results are written only under it
            async with self.engine.begin() as conn:
                rows = await queues.claim_deliveries(
                    conn, utcnow(), room, self.lease_seconds, token, webhooks=[name]
                )
            for row in rows:
                task = asyncio.create_task(self._send(self._client, row, token))
                self._inflight[name].add(task)
                task.add_done_callback(self._done(name))
        # Busy webhooks are woken by their sends finishing; only the others' due rows count.
        idle = [n for n, ts in self._inflight.items() if len(ts) < self.concurrency]
        if not idle:
            return None
        async with self.engine.connect() as conn:
            if self._gauges.due():
                WEBHOOK_QUEUE.set(await queues.queued_delivery_count(conn))
            return await queues.next_delivery_due(conn, idle)

    def _done(self, name: str) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            self._inflight[name].discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("webhook send failed", exc_info=task.exception())
            self.wake()  # room for the next delivery of this webhook

        return done

    async def _send(self, client: httpx.AsyncClient, row: dict[str, object], token: str) -> None:
        hook = self.hooks[str(row["webhook"])]
        attempts = int(str(row["attempts"])) + 1
        # Cut off well within the lease (three timeouts long).
        status, error = await send(client, hook, str(row["body"]), str(row["id"]), self.timeout * 2)
        now = utcnow()
        values: dict[str, object] = {
            "attempts": attempts,
            "last_status": status,
            "last_error": error,
        }
        if error is None:
            values.update(state="delivered", delivered_at=now)
            outcome = "delivered"
        elif attempts >= hook.max_attempts:
            values.update(state="dead")
            outcome = "dead"
            log.warning(
                "webhook delivery %s dead after %s attempts: %s", row["id"], attempts, error
            )
        else:
            values.update(next_attempt_at=now + backoff(hook, attempts))
            outcome = "retry"
        async with self.engine.begin() as conn:
            kept = await queues.finish_delivery(conn, int(str(row["id"])), token, values)
        if kept:
            DELIVERIES.labels(outcome).inc()
        else:
            log.warning(
                "webhook delivery %s: lease lost or cancelled; outcome %s not recorded",
                row["id"],
                outcome,
            )
