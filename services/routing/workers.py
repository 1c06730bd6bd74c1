"""Durable SLA timers and the retry of unassigned leads, as Runtime workers.

The timer worker sleeps until the earliest pending timer is due, or until woken (a nearer timer
was committed), never polling faster than that. Due timers are claimed with
``FOR UPDATE SKIP LOCKED`` and a lease on PostgreSQL, so replicas share them and a crashed
replica's claims come back; each timer is fired in its own transaction that flips it from
pending to fired, so it fires exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime, timedelta

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from services.routing import durable_queues as queues
from services.routing import handlers
from services.routing import repository as repo
from services.routing.deps import RoutingContext
from services.routing.domain.rules import next_available_at
from shared.events import utcnow
from shared.loops import DueWorkLoop, PeriodicPurge

log = logging.getLogger(__name__)

TIMERS_FIRED = Counter("leadflow_routing_timers_fired_total", "SLA timers fired", ["kind"])


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
    ) -> None:
        super().__init__(max_sleep)
        self.engine = engine
        self.ctx = ctx
        self.batch = batch
        self.lease_seconds = lease_seconds
        self.owner = f"routing-{uuid.uuid4().hex[:8]}"
        self.fired = 0

    async def step(self) -> datetime | None:
        while True:
            now = utcnow()
            async with self.engine.begin() as conn:
                due = await queues.claim_due_timers(
                    conn, self.owner, now, self.batch, self.lease_seconds
                )
            if due:
                try:
                    await self._fire(due)
                except Exception:
                    # One bad timer must not hold up the others: retry them one by one.
                    log.exception("timer batch failed; firing one by one")
                    for timer in due:
                        try:
                            await self._fire([timer])
                        except Exception:
                            log.exception("timer %s failed; retrying it shortly", timer["id"])
                            async with self.engine.begin() as conn:
                                await queues.defer_timer(
                                    conn, int(timer["id"]), utcnow() + timedelta(seconds=5)
                                )
                self.ctx.after_commit()
            # Once stopping, the backlog is left to the next start (or another replica):
            # claiming batch after batch would hold SIGTERM up for as long as it lasts.
            if len(due) < self.batch or self._stopping:
                break
        async with self.engine.connect() as conn:
            return await queues.next_timer_due(conn, utcnow())

    async def _fire(self, due: list[dict[str, object]]) -> None:
        """Fire timers in one transaction (each flips pending -> fired at most once)."""
        kinds: list[str] = []
        async with self.engine.begin() as conn:
            for timer in due:
                if await handlers.fire_timer(conn, self.ctx, timer, utcnow()):
                    kinds.append(str(timer["kind"]))
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
