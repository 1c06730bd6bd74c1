"""Retention of the messaging tables: published outbox rows and old processed-event ids.

Both tables would otherwise grow forever, and a published outbox row still holds the event's
personal data. Processed ids are kept well past any redelivery window (uncommitted offsets are
redelivered within minutes; the default keeps two weeks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.events import utcnow
from shared.loops import DueWorkLoop
from shared.messaging_tables import outbox, processed_events


class Retention(DueWorkLoop):
    """Deletes this service's published outbox rows and its consumers' old inbox ids, hourly."""

    def __init__(
        self,
        engine: AsyncEngine,
        source: str,
        consumers: Callable[[], Sequence[str]],
        *,
        outbox_keep: timedelta,
        inbox_keep: timedelta,
        every: float = 3600.0,
    ) -> None:
        super().__init__(max_sleep=every, error_pause=60.0)
        self.engine = engine
        self.source = source
        self.consumers = consumers
        self.outbox_keep = outbox_keep
        self.inbox_keep = inbox_keep
        self.every = every

    async def step(self) -> datetime | None:
        await self.purge()
        return utcnow() + timedelta(seconds=self.every)

    async def purge(self, now: datetime | None = None) -> tuple[int, int]:
        """Delete what is past retention; return (outbox rows, inbox ids) deleted."""
        now = now or utcnow()
        async with self.engine.begin() as conn:
            sent = await conn.execute(
                delete(outbox).where(
                    outbox.c.source == self.source,
                    outbox.c.sent_at.is_not(None),
                    outbox.c.sent_at < now - self.outbox_keep,
                )
            )
            groups = list(self.consumers())
            seen = 0
            if groups:
                result = await conn.execute(
                    delete(processed_events).where(
                        processed_events.c.consumer.in_(groups),
                        processed_events.c.processed_at < now - self.inbox_keep,
                    )
                )
                seen = int(result.rowcount or 0)
        return int(sent.rowcount or 0), seen
