"""The decay sweep: time passes, engagement fades, hot leads cool down (a Runtime worker).

On PostgreSQL several replicas share the work (rows locked with SKIP LOCKED); event ids are
derived from the lead and its last engagement, so a repeated sweep announces nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from services.scoring import queries
from services.scoring.domain import lifecycle
from services.scoring.domain.ruleset import Rules
from services.scoring.events import lead_events
from services.scoring.repository import LeadRepository
from shared.events import LeadType, derived_event_id, rfc3339, utcnow
from shared.topics import Topics

log = logging.getLogger(__name__)

SWEEP_TYPE = "io.leadflow.scoring.sweep"


class DecaySweep:
    """Periodically re-evaluates leads whose engagement can still decay."""

    def __init__(
        self,
        engine: AsyncEngine,
        rules: Rules,
        topics: Topics,
        *,
        interval: float | None = None,
        clock: Callable[[], datetime] = utcnow,
        page_size: int = 200,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.rules = rules
        self.topics = topics
        self.interval = interval if interval is not None else rules.sweep_interval_seconds
        self.clock = clock
        self.page_size = page_size
        self.wake = wake
        self._stop = asyncio.Event()

    async def run(self) -> None:
        """Sweep every interval until stopped."""
        while not self._stop.is_set():
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # database away: try again next interval
                log.exception("decay sweep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.interval)

    async def stop(self) -> None:
        """Stop after the current page."""
        self._stop.set()

    async def sweep_once(self) -> int:
        """One pass over all decaying leads; returns how many lead events were emitted."""
        emitted = 0
        after = ""
        while True:
            now = self.clock()
            async with self.engine.begin() as conn:
                page = await queries.leads_to_sweep(conn, after, self.page_size)
                if not page:
                    break
                repo = LeadRepository(conn, self.topics.leads)
                events = []
                for lead in page:
                    repo.loaded[lead.id] = lead
                    before = (lead.fit, lead.engagement, lead.temperature, lead.stage, lead.status)
                    changes = lifecycle.refresh(lead, self.rules, now)
                    if (
                        lead.fit,
                        lead.engagement,
                        lead.temperature,
                        lead.stage,
                        lead.status,
                    ) != before:
                        repo.touch(lead)
                    # Decay alone is not news; a temperature (or stage) change is.
                    news = [c for c in changes if c.type != LeadType.SCORED]
                    if news:
                        cause = derived_event_id(
                            lead.id,
                            "sweep",
                            rfc3339(lead.last_engaged_at or lead.created_at),
                            lead.temperature,
                        )
                        for change in news:
                            repo.add_timeline(
                                lead.id, now, "change", change.type, cause, change.change or {}
                            )
                        events += lead_events(lead, news, cause, SWEEP_TYPE, now)
                await repo.commit(now, events)
                emitted += len(events)
                after = page[-1].id
            if len(page) < self.page_size:
                break
        if emitted and self.wake:
            self.wake()
        return emitted
