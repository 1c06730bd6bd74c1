"""Load for the drills, and the ledger of what capture accepted (the ground truth).

Three kinds of people, as on a real site: newsletter readers (one form), browsers who view pages
under a cookie id and then identify with their email (Segment ``/v1/batch`` with the write key),
and demo requests from a VP at a mid-size software company (direct sales intent with enough fit:
these become SQLs and must be assigned). Every accepted event id is recorded with the email of
the person it belongs to, so the reconciliation knows exactly what each lead must contain.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from shared.events import derived_event_id
from tests.chaos.cluster import WRITE_KEY

VP = {
    "first_name": "Dana",
    "last_name": "Vance",
    "company": "Acme Software",
    "job_title": "VP of Sales",
    "company_size": "500",
    "industry": "software",
    "country": "DE",
}


@dataclass
class Ledger:
    """What capture answered 2xx for, per person; and every answer it gave."""

    events: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    sql: set[str] = field(default_factory=set)
    statuses: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    slowest: float = 0.0

    def accept(self, email: str, *event_ids: str) -> None:
        self.events[email].update(event_ids)

    @property
    def accepted(self) -> int:
        return sum(len(ids) for ids in self.events.values())

    @property
    def refused(self) -> int:
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)


def segment_id(message_id: str) -> str:
    """The event id capture derives from a Segment ``messageId`` (so a batch's ids are known)."""
    return derived_event_id("capture", "segment", message_id)


def page(anon: str, message_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "page",
        "anonymousId": anon,
        "messageId": message_id,
        "name": "pricing",
        "properties": {"url": "https://example.com/pricing"},
        **extra,
    }


def identify(anon: str, email: str, message_id: str) -> dict[str, Any]:
    return {
        "type": "identify",
        "anonymousId": anon,
        "messageId": message_id,
        "traits": {"email": email},
    }


class Traffic:
    """Sends people at capture, ``concurrency`` requests at a time, and fills the ledger."""

    def __init__(self, capture_url: str, *, run: str | None = None, seed: int = 7) -> None:
        self.capture_url = capture_url
        self.run = run or uuid.uuid4().hex[:8]
        self.ledger = Ledger()
        self.random = random.Random(seed)
        self._n = itertools.count()

    def _email(self, kind: str) -> str:
        return f"{kind}.{self.run}.{next(self._n)}@acme-software.example"

    async def _post(
        self, client: httpx.AsyncClient, path: str, **kwargs: Any
    ) -> httpx.Response | None:
        started = time.monotonic()
        try:
            resp = await client.post(path, **kwargs)
        except httpx.HTTPError:
            self.ledger.statuses[0] += 1
            return None
        finally:
            self.ledger.slowest = max(self.ledger.slowest, time.monotonic() - started)
        self.ledger.statuses[resp.status_code] += 1
        return resp if 200 <= resp.status_code < 300 else None

    async def newsletter(self, client: httpx.AsyncClient) -> int:
        email = self._email("reader")
        resp = await self._post(client, "/v1/forms/newsletter/submissions", json={"email": email})
        if resp is not None:
            self.ledger.accept(email, resp.json()["event_id"])
        return 1

    async def demo(
        self, client: httpx.AsyncClient, person: str | None = None, **fields: Any
    ) -> int:
        """A demo request (an SQL); ``person`` is the ledger's email for it (default: new)."""
        person = person or self._email("vp")
        body = {**VP, "email": person, "consent_marketing": True, **fields}
        body = {k: v for k, v in body.items() if v is not None}  # email=None: phone only
        resp = await self._post(client, "/v1/forms/demo-request/submissions", json=body)
        if resp is not None:
            self.ledger.accept(person, resp.json()["event_id"])
            self.ledger.sql.add(person)
        return 1

    async def browser(
        self, client: httpx.AsyncClient, person: str | None = None, pages: int = 3
    ) -> int:
        """Page views under a cookie id, then an identify: one batch, so one answer for all."""
        email, anon = person or self._email("browser"), f"anon-{uuid.uuid4().hex}"
        calls = [page(anon, f"m-{uuid.uuid4().hex}") for _ in range(pages)]
        calls.append(identify(anon, email, f"m-{uuid.uuid4().hex}"))
        await self.batch(client, email, calls)
        return len(calls)

    async def batch(self, client: httpx.AsyncClient, person: str, calls: list[Any]) -> None:
        """A Segment batch with the write key; its event ids follow from the messageIds."""
        resp = await self._post(client, "/v1/batch", json={"batch": calls}, auth=(WRITE_KEY, ""))
        if resp is not None:
            self.ledger.accept(person, *(segment_id(c["messageId"]) for c in calls))

    def mix(self) -> Iterator[str]:
        """An endless mix: mostly browsers, some newsletter readers, a few demo requests."""
        while True:
            yield self.random.choices(["browser", "newsletter", "demo"], [5, 3, 2])[0]

    async def send(
        self,
        interactions: int | None = None,
        *,
        until: asyncio.Event | None = None,
        concurrency: int = 16,
        per_second: float | None = None,
    ) -> None:
        """Send the mix until about ``interactions`` events were posted, or ``until`` is set;
        at most ``per_second`` events a second if given (so a short drill lasts long enough)."""
        kinds = self.mix()
        budget = interactions if interactions is not None else float("inf")
        issued = 0
        started = time.monotonic()
        lock = asyncio.Lock()

        async def worker(client: httpx.AsyncClient) -> None:
            nonlocal budget, issued
            while not (until is not None and until.is_set()):
                async with lock:
                    if budget <= 0:
                        return
                    kind = next(kinds)
                    size = 4 if kind == "browser" else 1
                    budget -= size
                    slot = started + issued / per_second if per_second else 0.0
                    issued += size
                await asyncio.sleep(max(0.0, slot - time.monotonic()))
                await getattr(self, kind)(client)

        async with self.client() as client:
            await asyncio.gather(*(worker(client) for _ in range(concurrency)))

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.capture_url,
            timeout=30.0,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )
