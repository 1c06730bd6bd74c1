"""Nurture's background loops: the step timers and the periodic stall scan.

:class:`NurtureWorker` sleeps until the earliest pending step is due (or a commit wakes it),
claims due steps (``FOR UPDATE SKIP LOCKED`` and a lease on PostgreSQL, so replicas share them
and a crashed replica's claims come back) and fires them, each flipping from pending to fired: a
step is announced exactly once, across restarts and replicas. A claimed batch fires in one
transaction (8 ms a step instead of 24 on the 2-core test machine); if that fails (a deadlock
with a consumer batch locking the same people in another order), its steps fire one by one.

:class:`StallScan` looks, every ``routing.nurture.scan_every_seconds``, for leads idle at a
track's stall stage for its days (no event says "nothing happened"), and enrols them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from services.routing import nurture_store as store
from services.routing.deps import RoutingContext
from services.routing.handlers.nurture import enrol_stalled, fire_step
from shared.events import utcnow
from shared.loops import DueWorkLoop, Periodic, PeriodicPurge

log = logging.getLogger(__name__)

STEPS_FIRED = Counter("leadflow_routing_nurture_steps_fired_total", "Nurture steps fired")
STALLED = Counter("leadflow_routing_nurture_stalled_enrolled_total", "Stalled leads enrolled")

Clock = Callable[[], datetime]


class NurtureWorker(DueWorkLoop):
    """Fires due nurture steps, each once."""

    def __init__(
        self,
        engine: AsyncEngine,
        ctx: RoutingContext,
        *,
        batch: int = 50,
        lease_seconds: float = 30.0,
        max_sleep: float = 30.0,
        clock: Clock = utcnow,
    ) -> None:
        super().__init__(max_sleep)
        self.engine = engine
        self.ctx = ctx
        self.batch = batch
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.owner = f"nurture-{uuid.uuid4().hex[:8]}"
        self.fired = 0

    async def step(self) -> datetime | None:
        while True:
            now = self.clock()
            async with self.engine.begin() as conn:
                due = await store.claim_due_steps(
                    conn, self.owner, now, self.batch, self.lease_seconds
                )
            if due:
                try:
                    await self._fire(due)
                except Exception:
                    # One bad step must not hold up the others: retry them one by one.
                    log.exception("nurture step batch failed; firing one by one")
                    for row in due:
                        try:
                            await self._fire([row])
                        except Exception:
                            log.exception("nurture step %s failed; retrying shortly", row["id"])
                            async with self.engine.begin() as conn:
                                await store.defer_step(
                                    conn, int(row["id"]), self.clock() + timedelta(seconds=5)
                                )
                self.ctx.after_commit()
            if len(due) < self.batch or self._stopping:
                break
        async with self.engine.connect() as conn:
            nxt = await store.next_step_due(conn, self.clock())
        if nxt is None:
            return None
        # The loop sleeps on the real clock: translate a shifted clock's due time back.
        return nxt - (self.clock() - utcnow())

    async def _fire(self, due: list[dict[str, object]]) -> None:
        """Fire steps together, in one transaction (each flips pending -> fired at most once);
        only people's own locks are taken, so a batch holds up no one else's work."""
        fired = 0
        async with self.engine.begin() as conn:
            for row in due:
                if await fire_step(conn, self.ctx, row, self.clock()):
                    fired += 1
        self.fired += fired
        STEPS_FIRED.inc(fired)


class StallScan(Periodic):
    """Enrols leads stalled at a stage (no activity for N days) in the track that wants them."""

    def __init__(
        self,
        engine: AsyncEngine,
        ctx: RoutingContext,
        *,
        every: float,
        page: int = 200,
        clock: Clock = utcnow,
    ) -> None:
        super().__init__(every, self.scan)
        self.engine = engine
        self.ctx = ctx
        self.page = page
        self.clock = clock

    async def scan(self) -> int:
        """One pass over every stall rule; how many leads were enrolled."""
        enrolled = 0
        for track in self.ctx.config.nurture.tracks:
            stall = track.entry.stall
            if stall is None:
                continue
            now = self.clock()
            since = now - timedelta(days=stall.days)
            # who did this track already is not read again, until its re-entry cool-down ends
            again = now - timedelta(days=track.reentry_cooldown_days) if track.reentry else None
            after = ""
            while not self._stopping:
                async with self.engine.connect() as conn:
                    rows = await store.stalled_leads(
                        conn,
                        stall.stage,
                        since,
                        self.page,
                        after,
                        track=track.name,
                        again_after=again,
                    )
                for row in rows:
                    try:
                        async with self.engine.begin() as conn:
                            if await enrol_stalled(conn, self.ctx, row, now):
                                enrolled += 1
                                STALLED.inc()
                    except Exception:
                        log.exception("stall scan: lead %s failed", row["lead_id"])
                if len(rows) < self.page:
                    break
                after = str(rows[-1]["lead_id"])
        if enrolled:
            self.ctx.after_commit()
        return enrolled


class NurtureRetention(PeriodicPurge):
    """Deletes enrolments that ended more than ``keep`` ago, with their step history, daily:
    both tables would otherwise grow with every lead that ever went through a track."""

    def __init__(self, engine: AsyncEngine, *, keep: timedelta, every: float = 86400.0) -> None:
        super().__init__(every=every)
        self.engine = engine
        self.keep = keep

    async def purge(self, now: datetime | None = None) -> tuple[int, int]:
        """Delete what is past retention; return (enrolments, steps) deleted."""
        now = now or utcnow()
        async with self.engine.begin() as conn:
            return await store.purge_exited(conn, now - self.keep)
