"""Scoring's own retention: forgotten anonymous visitors and old timeline entries (a worker).

Every new anonymous id (one page view of a new visitor) creates a lead, an identity row and a
timeline row, and the timeline keeps every interaction, tracking included; without this both
grow forever (review M7).

- An anonymous lead (no email, no phone, never erased) with no activity for
  ``LEADFLOW_ANONYMOUS_RETENTION_DAYS`` is deleted with its identities and timeline. It was
  never anyone we could contact, and a returning visitor simply starts a new lead.
- Timeline entries older than ``LEADFLOW_TIMELINE_RETENTION_DAYS`` are deleted, except the
  ``erased`` entries, which hold nothing personal and record that an erasure was done. A
  rescore replays only what is left; interactions that old have long decayed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.scoring.tables import identities, leads, timeline
from shared.db import is_sqlite
from shared.events import utcnow
from shared.loops import PeriodicPurge


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
