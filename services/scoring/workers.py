"""Scoring's background work, each on ``shared.loops``: the decay sweep and the retention.

**Decay sweep.** Time passes, engagement fades, hot leads cool down: every
``scoring.sweep_interval_seconds`` (:func:`decay_worker`) the leads whose engagement can still
decay are re-scored. On PostgreSQL several replicas share the work (rows locked with SKIP
LOCKED); event ids are derived from the lead and its last engagement, so a repeated sweep
announces nothing twice.

**Retention.** Every new anonymous id (one page view of a new visitor) creates a lead, an
identity row and a timeline row, and the timeline keeps every interaction, tracking included;
without :class:`ScoringRetention` both grow forever (review M7).

- An anonymous lead (no email, no phone, never erased) with no activity for
  ``LEADFLOW_ANONYMOUS_RETENTION_DAYS`` is deleted with its identities and timeline. It was
  never anyone we could contact, and a returning visitor simply starts a new lead.
- Timeline entries older than ``LEADFLOW_TIMELINE_RETENTION_DAYS`` are deleted, except the
  ``erased`` entries, which hold nothing personal and record that an erasure was done. A
  rescore replays only what is left; interactions that old have long decayed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.scoring import queries
from services.scoring.domain import lifecycle
from services.scoring.domain.ruleset import Rules
from services.scoring.events import lead_events
from services.scoring.repository import LeadRepository
from services.scoring.tables import identities, leads, timeline
from shared.db import is_sqlite
from shared.events import LeadType, derived_event_id, rfc3339, utcnow
from shared.loops import Periodic, PeriodicPurge
from shared.topics import Topics

log = logging.getLogger(__name__)

SWEEP_TYPE = "io.leadflow.scoring.sweep"


def decay_worker(sweep: DecaySweep) -> Periodic:
    """The runtime worker that runs the sweep every ``sweep_interval_seconds``."""
    return Periodic(sweep.rules.sweep_interval_seconds, sweep.sweep_once)


class DecaySweep:
    """Re-evaluates the leads whose engagement can still decay (:meth:`sweep_once`, run by
    :func:`decay_worker`)."""

    def __init__(
        self,
        engine: AsyncEngine,
        rules: Rules,
        topics: Topics,
        *,
        clock: Callable[[], datetime] = utcnow,
        page_size: int = 200,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.rules = rules
        self.topics = topics
        self.clock = clock
        self.page_size = page_size
        self.wake = wake

    async def sweep_once(self) -> int:
        """One pass over all decaying leads; returns how many lead events were emitted."""
        emitted = 0
        after = ""
        while True:
            now = self.clock()
            # leads active within the last interval were just scored: they wait for the next
            # pass rather than hold up the consumer (see queries.leads_to_sweep)
            recent = now - timedelta(seconds=self.rules.sweep_interval_seconds)
            async with self.engine.begin() as conn:
                page = await queries.leads_to_sweep(conn, after, self.page_size, recent)
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


# -- retention -----------------------------------------------------------------------------


class ScoringRetention(PeriodicPurge):
    """Deletes what is past scoring's retention, hourly, a page per transaction."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        anonymous_keep: timedelta,
        timeline_keep: timedelta,
        every: float = 3600.0,
        page_size: int = 500,
    ) -> None:
        super().__init__(every=every)
        self.engine = engine
        self.anonymous_keep = anonymous_keep
        self.timeline_keep = timeline_keep
        self.page_size = page_size

    async def purge(self, now: datetime | None = None) -> tuple[int, int]:
        """Delete what is past retention; return (anonymous leads, timeline rows) deleted."""
        now = now or utcnow()
        gone_leads = gone_rows = 0
        while True:  # short transactions: a page at a time, so consumers are not held up
            async with self.engine.begin() as conn:
                n, gone = await _purge_anonymous(conn, now - self.anonymous_keep, self.page_size)
            gone_leads += gone
            if n < self.page_size:
                break
        while True:
            async with self.engine.begin() as conn:
                n = await _prune_timeline(conn, now - self.timeline_keep, self.page_size * 10)
            gone_rows += n
            if n < self.page_size * 10:
                break
        return gone_leads, gone_rows


def _forgotten_anonymous(cutoff: datetime) -> ColumnElement[bool]:
    """Anonymous, never erased (an erased lead's key is its id), inactive since ``cutoff``."""
    return and_(
        leads.c.email.is_(None),
        leads.c.phone.is_(None),
        leads.c.key != leads.c.id,
        func.coalesce(leads.c.last_activity_at, leads.c.created_at) < cutoff,
    )


async def _purge_anonymous(conn: AsyncConnection, cutoff: datetime, limit: int) -> tuple[int, int]:
    """One page of forgotten anonymous leads, deleted with their identities and timeline;
    returns (how many were selected, how many deleted)."""
    query = select(leads.c.id).where(_forgotten_anonymous(cutoff)).order_by(leads.c.id).limit(limit)
    if not is_sqlite(conn):
        # a lead a consumer batch holds is busy, hence not forgotten: skip it
        query = query.with_for_update(skip_locked=True)
    ids = list((await conn.execute(query)).scalars())
    if not ids:
        return 0, 0
    # The delete repeats the condition: on PostgreSQL a row that changed since the select
    # (a visitor came back) is re-checked and kept. Only what was deleted loses its rows.
    deleted = list(
        (
            await conn.execute(
                delete(leads)
                .where(leads.c.id.in_(ids), _forgotten_anonymous(cutoff))
                .returning(leads.c.id)
            )
        ).scalars()
    )
    if deleted:
        await conn.execute(delete(identities).where(identities.c.lead_id.in_(deleted)))
        await conn.execute(delete(timeline).where(timeline.c.lead_id.in_(deleted)))
    return len(ids), len(deleted)


async def _prune_timeline(conn: AsyncConnection, cutoff: datetime, limit: int) -> int:
    """One page of timeline entries older than ``cutoff`` (erasure records stay)."""
    old = (
        select(timeline.c.id)
        .where(timeline.c.at < cutoff, timeline.c.kind != "erased")
        .order_by(timeline.c.id)
        .limit(limit)
    )
    ids = list((await conn.execute(old)).scalars())
    if ids:
        await conn.execute(delete(timeline).where(timeline.c.id.in_(ids)))
    return len(ids)
