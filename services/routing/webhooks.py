"""Outbound webhooks: routing events POSTed as signed structured CloudEvents.

Deliveries are rows written with the event (same transaction), so none is lost; this worker
sends due rows, retries failures with exponential backoff and dead-letters a delivery after the
webhook's ``max_attempts``. The signature lets receivers check origin and freshness::

    Leadflow-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpx
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from services.routing import durable_queues as queues
from services.routing.deps import RoutingContext
from services.routing.domain.model import Webhook
from shared.events import utcnow
from shared.loops import DueWorkLoop

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Leadflow-Signature"
DELIVERIES = Counter("leadflow_routing_webhook_deliveries_total", "Webhook attempts", ["outcome"])


def sign(secret: str, body: str, timestamp: int | None = None) -> str:
    """The ``Leadflow-Signature`` header value for ``body``."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, body: str, header: str, tolerance: float = 300.0) -> bool:
    """Check a signature header (what a receiver does); rejects stale timestamps."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - t) > tolerance:
        return False
    expected = sign(secret, body, t).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def backoff(hook: Webhook, attempts: int) -> timedelta:
    """Delay before the next attempt after ``attempts`` failures (doubling, capped at 1 h)."""
    return timedelta(seconds=min(hook.backoff_seconds * 2 ** (attempts - 1), 3600.0))


def url_host(url: str) -> str:
    """Only the host of a webhook URL: for Slack, Zapier and the like the path *is* the secret."""
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def _redact(text: str, url: str) -> str:
    """An error text with the webhook's URL (if it shows up in it) cut down to its host."""
    return text.replace(url, url_host(url)) if url else text


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
        attempts = int(row["attempts"]) + 1  # type: ignore[call-overload]
        status: int | None = None
        error: str | None = None
        body = str(row["body"])
        headers = {
            "content-type": "application/cloudevents+json",
            SIGNATURE_HEADER: sign(hook.secret, body),
            "Leadflow-Delivery": str(row["id"]),
        }
        try:
            # httpx's timeout is per operation; the whole send must end inside the lease. The
            # configured URL, not the one stored with the row: a rotated URL applies at once.
            async with asyncio.timeout(self.timeout * 2):
                resp = await client.post(hook.url, content=body, headers=headers)
            status = resp.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except (httpx.HTTPError, TimeoutError) as exc:
            error = _redact(f"{type(exc).__name__}: {exc}", hook.url)[:500]
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
            kept = await queues.finish_delivery(conn, int(row["id"]), token, values)  # type: ignore[call-overload]
        if kept:
            DELIVERIES.labels(outcome).inc()
        else:
            log.warning(
                "webhook delivery %s: lease lost or cancelled; outcome %s not recorded",
                row["id"],
                outcome,
            )
