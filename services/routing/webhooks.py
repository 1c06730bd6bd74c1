"""Outbound webhooks: routing events POSTed as signed structured CloudEvents.

Deliveries are rows written with the event (same transaction), so none is lost; this worker
sends due rows, retries failures with exponential backoff and dead-letters a delivery after the
webhook's ``max_attempts``. The signature lets receivers check origin and freshness::

    Leadflow-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from datetime import datetime, timedelta

import httpx
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from services.routing import durable_queues as queues
from services.routing.domain.model import Webhook
from services.routing.messages import RoutingContext
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


class WebhookWorker(DueWorkLoop):
    """Sends due webhook deliveries."""

    def __init__(self, engine: AsyncEngine, ctx: RoutingContext, *, batch: int = 20,
                 timeout: float = 10.0, max_sleep: float = 30.0) -> None:
        super().__init__(max_sleep)
        self.engine = engine
        self.ctx = ctx
        self.batch = batch
        self.timeout = timeout
        self.hooks = {h.name: h for h in ctx.config.webhooks}

    async def step(self) -> datetime | None:
        if not self.hooks:
            return None
        async with self.engine.begin() as conn:
            rows = await queues.claim_deliveries(conn, utcnow(), self.batch, self.timeout * 3)
        if rows:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                for row in rows:
                    await self._send(client, row)
        async with self.engine.connect() as conn:
            return await queues.next_delivery_due(conn)

    async def _send(self, client: httpx.AsyncClient, row: dict[str, object]) -> None:
        hook = self.hooks.get(str(row["webhook"]))
        attempts = int(row["attempts"]) + 1  # type: ignore[call-overload]
        status: int | None = None
        error: str | None = None
        if hook is None:
            error = "webhook no longer configured"
        else:
            body = str(row["body"])
            headers = {"content-type": "application/cloudevents+json",
                       SIGNATURE_HEADER: sign(hook.secret, body),
                       "Leadflow-Delivery": str(row["id"])}
            try:
                resp = await client.post(str(row["url"]), content=body, headers=headers)
                status = resp.status_code
                if not 200 <= status < 300:
                    error = f"HTTP {status}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:500]
        now = utcnow()
        values: dict[str, object] = {"attempts": attempts, "last_status": status,
                                     "last_error": error}
        if error is None:
            values.update(state="delivered", delivered_at=now)
            DELIVERIES.labels("delivered").inc()
        elif hook is None or attempts >= hook.max_attempts:
            values.update(state="dead")
            DELIVERIES.labels("dead").inc()
            log.warning("webhook delivery %s dead after %s attempts: %s",
                        row["id"], attempts, error)
        else:
            values.update(next_attempt_at=now + backoff(hook, attempts))
            DELIVERIES.labels("retry").inc()
        async with self.engine.begin() as conn:
            await queues.update_delivery(conn, int(row["id"]), values)  # type: ignore[call-overload]
