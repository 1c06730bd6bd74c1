"""Retention of the messaging tables: published outbox rows and old processed-event ids.

Both tables would otherwise grow forever, and a published outbox row still holds the event's
personal data. Processed ids are kept well past any redelivery window (uncommitted offsets are
redelivered within minutes; the default keeps two weeks).

The two windows are dedupe windows too, and the defaults are chosen for that:

* ``LEADFLOW_OUTBOX_RETENTION_HOURS`` (default 24): an event id re-emitted within this window
  is skipped by the outbox (same id, one row); later it would be published again.
* ``LEADFLOW_INBOX_RETENTION_DAYS`` (default 14): a redelivered event id within this window is
  skipped by the consumer. It must outlast the broker's topic retention and committed-offset
  expiry (Kafka's defaults: 7 days each), since with ``auto_offset_reset=earliest`` a group
  whose offsets expired re-reads the whole topic.

The inbox must keep ids at least as long as the outbox (:func:`check_windows`): a re-emitted
event the outbox no longer deduplicates is then still caught by the consumers' inbox.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.events import utcnow
from shared.loops import PeriodicPurge
from shared.messaging_tables import outbox, processed_events


def check_windows(*, outbox_keep: timedelta, inbox_keep: timedelta) -> None:
    """Refuse (at start-up) an inbox window shorter than the outbox window."""
    if inbox_keep < outbox_keep:
        from shared.settings import SettingsError

        raise SettingsError(
            "invalid setting LEADFLOW_INBOX_RETENTION_DAYS: processed event ids must be kept at"
            f" least as long as outbox rows (LEADFLOW_OUTBOX_RETENTION_HOURS); got inbox"
            f" {inbox_keep} < outbox {outbox_keep}"
        )


class Retention(PeriodicPurge):
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
        super().__init__(every=every)
        self.engine = engine
        self.source = source
        self.consumers = consumers
        self.outbox_keep = outbox_keep
        self.inbox_keep = inbox_keep

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
