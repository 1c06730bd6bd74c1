"""Outbound webhooks: routing events POSTed as signed structured CloudEvents.

Deliveries are rows written with the event (same transaction), so none is lost; the
``WebhookWorker`` (:mod:`services.routing.workers`) sends due rows with :func:`send`, retries
failures with :func:`backoff` and dead-letters a delivery after the webhook's ``max_attempts``.
The signature lets receivers check origin and freshness::

    Leadflow-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from datetime import timedelta
from urllib.parse import urlsplit

import httpx

from services.routing.domain.model import Webhook

SIGNATURE_HEADER = "Leadflow-Signature"


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


async def send(
    client: httpx.AsyncClient, hook: Webhook, body: str, delivery_id: str, timeout: float
) -> tuple[int | None, str | None]:
    """POST one delivery to ``hook``, signed; its HTTP status (None if none came back) and the
    error (None on a 2xx), cut off after ``timeout`` seconds whatever happens."""
    headers = {
        "content-type": "application/cloudevents+json",
        SIGNATURE_HEADER: sign(hook.secret, body),
        "Leadflow-Delivery": delivery_id,
    }
    try:
        # httpx's timeout is per operation; the whole send must end inside the lease. The
        # configured URL, not the one stored with the row: a rotated URL applies at once.
        async with asyncio.timeout(timeout):
            resp = await client.post(hook.url, content=body, headers=headers)
    except (httpx.HTTPError, TimeoutError) as exc:
        return None, _redact(f"{type(exc).__name__}: {exc}", hook.url)[:500]
    if not 200 <= resp.status_code < 300:
        return resp.status_code, f"HTTP {resp.status_code}"
    return resp.status_code, None
