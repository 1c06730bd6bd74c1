"""Capture's background loops: the ad-lead fetcher and the retention sweep (Runtime workers).

Webhooks only store the platform's lead id in ``capture_ad_fetches``. :class:`AdFetcher` claims
due rows, fetches the details (:mod:`services.capture.ad_platforms`) with retries and
exponential backoff, and on success spools the ``ad_lead_received`` event (id derived from
platform and lead id) in the same transaction that marks the row done. After ``max_attempts``
failures the row is dead-lettered. A finished row keeps no fetched answers: only, for LinkedIn,
the normalised email/phone that a later ``DELETED`` notification needs, for
``keep_identifiers_days``. A failure to store the result costs an attempt like a failed call,
so one bad answer is retried with backoff and dead-lettered instead of blocking the rows
behind it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from services.capture import repository
from services.capture.ad_platforms import AdPlatforms
from services.capture.config import AdFetchPolicy
from services.capture.events import (
    AD_EVENT_TYPES,
    SOURCE,
    ad_event_id,
    fetch_deadletter_event,
    interaction_event,
)
from services.capture.intake import Intake
from shared.contract import Contact
from shared.events import InteractionType, utcnow
from shared.loops import DueWorkLoop, Periodic
from shared.outbox import enqueue, rewrite_rows
from shared.runtime import Runtime
from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger(__name__)

#: Platforms that tell capture when a lead is deleted (LinkedIn ``leadAction: DELETED``).
ERASABLE = frozenset({"linkedin"})


class AdFetcher(DueWorkLoop):
    """Fetches pending ad leads until stopped; a webhook wakes it when it stores one."""

    def __init__(
        self,
        runtime: Runtime,
        settings: Settings,
        policy: AdFetchPolicy,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.policy = policy
        self.transport = transport
        self.topics = Topics(settings.leadflow_topic_prefix)
        self._platforms: AdPlatforms | None = None
        #: Completed passes over the due rows (tests wait on it to know the fetcher is idle).
        self.passes = 0
        # Otherwise it sleeps until the next retry is due. The floor keeps a row leased by
        # another replica from spinning us.
        super().__init__(max_sleep=30.0, min_sleep=0.05, error_pause=2.0)

    async def run(self) -> None:
        """Fetch due leads until stopped, with one HTTP client for the whole run."""
        async with httpx.AsyncClient(transport=self.transport, timeout=10.0) as client:
            self._platforms = AdPlatforms(
                self.settings,
                client,
                self.policy.linkedin_api_version,
                self.policy.meta_graph_version,
            )
            await super().run()

    async def step(self) -> datetime | None:
        """Attempt what is due; return when the next fetch is due."""
        assert self._platforms is not None
        attempted = await self.fetch_due(self._platforms)
        self.passes += 1
        if attempted:
            return utcnow()
        async with self.runtime.engine.connect() as conn:
            due: datetime | None = await repository.next_fetch_due(conn)
        return due

    async def fetch_due(self, platforms: AdPlatforms) -> int:
        """Attempt every due fetch once; return how many were attempted."""
        async with self.runtime.engine.begin() as conn:
            rows = await repository.claim_due_fetches(conn, 20, timedelta(seconds=60))
        for row in rows:
            if self._stopping:
                break
            await self._attempt(platforms, row)
        return len(rows)

    async def _attempt(self, platforms: AdPlatforms, row: Any) -> None:
        try:
            interaction = await platforms.fetch(row.platform, row.lead_id, row.notification)
            event = interaction_event(
                InteractionType.AD_LEAD_RECEIVED,
                interaction,
                id=ad_event_id(row.platform, row.lead_id),
            )
        except Exception as exc:  # any failure, even an odd answer shape, costs one attempt
            await self._failed(row, f"{type(exc).__name__}: {exc}")
            return
        contact = interaction.contact or Contact()
        keep = row.platform in ERASABLE  # only these platforms send erasure requests later
        try:
            async with self.runtime.engine.begin() as conn:
                finished = await repository.finish_fetch(
                    conn,
                    row.id,
                    event.id,
                    email=contact.email if keep else None,
                    phone=contact.phone if keep else None,
                    keep_until=utcnow() + timedelta(days=self.policy.keep_identifiers_days),
                )
                if finished:  # else the lead was deleted while we fetched it: publish nothing
                    await enqueue(conn, SOURCE, self.topics.interactions, [event])
        except Exception as exc:
            # The answer could not be stored (a value the database refuses, or the database
            # away): one failed attempt, so the row backs off and is dead-lettered in the end,
            # and the rows claimed behind it are still fetched in this pass.
            await self._failed(row, f"storing the fetched lead failed: {type(exc).__name__}")
            return
        if finished:
            self.runtime.relay.wake()

    async def _failed(self, row: Any, error: str) -> None:
        attempts = row.attempts + 1
        p = self.policy
        retry_at = None
        if attempts < p.max_attempts:
            delay = min(p.max_retry_seconds, p.first_retry_seconds * 2 ** (attempts - 1))
            retry_at = utcnow() + timedelta(seconds=delay)
        log.warning(
            "ad fetch %s %s failed (attempt %d): %s", row.platform, row.lead_id, attempts, error
        )
        async with self.runtime.engine.begin() as conn:
            pending = await repository.fail_fetch(conn, row.id, attempts, error, retry_at)
            if retry_at is None and pending:
                dead = fetch_deadletter_event(
                    row.platform, row.lead_id, attempts, error, row.notification
                )
                await enqueue(conn, SOURCE, self.topics.deadletter, [dead])
        if retry_at is None:
            self.runtime.relay.wake()


class CaptureRetention(Periodic):
    """Forgets what capture keeps only for a while, every ``every`` seconds: idempotency
    records once too old to matter, the email/phone kept for LinkedIn erasure requests once
    their time is up, the data of ad-lead events once they are on Kafka, and finished ad
    fetches after their retention."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        keep_idempotency_days: float = 7.0,
        keep_ad_fetches_days: float = 30.0,
        every: float = 30.0,
    ) -> None:
        super().__init__(every, self.sweep)
        self.engine = engine
        self.keep_idempotency = timedelta(days=keep_idempotency_days)
        self.keep_ad_fetches = timedelta(days=keep_ad_fetches_days)
        #: Completed sweeps (tests wait on it).
        self.sweeps = 0

    async def sweep(self) -> None:
        """One sweep, in one transaction."""
        async with self.engine.begin() as conn:
            await repository.prune_idempotent(conn, self.keep_idempotency)
            await repository.prune_identifiers(conn)
            # A published ad-lead or erasure row is kept only for its event id (a repeat is
            # still ignored); the answers fetched from the platform and the person's key go.
            await rewrite_rows(conn, SOURCE, lambda _: {}, types=AD_EVENT_TYPES, drop_key=True)
            await repository.prune_ad_fetches(conn, self.keep_ad_fetches)
        self.sweeps += 1


class InDoubtDrain:
    """At shutdown, lets the intake's in-doubt sends resolve before the relay stops (the
    runtime stops its other workers first); what is still in doubt then is published when
    its hold runs out. Not a loop: a Runtime worker only for its ``stop``."""

    def __init__(self, intake: Intake, within: float = 5.0) -> None:
        self.intake = intake
        self.within = within
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        self._stopped.set()
        await self.intake.drain(within=self.within)
