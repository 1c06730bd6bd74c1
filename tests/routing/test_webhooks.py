"""Outbound webhooks: signed structured CloudEvents, retried with backoff, dead-lettered."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.routing import durable_queues as queues
from services.routing.config import load_routing_config
from services.routing.deps import RoutingContext
from services.routing.tables import deliveries
from services.routing.webhooks import SIGNATURE_HEADER, sign, url_host, verify
from services.routing.workers import WebhookWorker
from shared.broker import free_port
from shared.db import create_engine
from shared.events import utcnow
from shared.topics import Topics
from tests.routing.helpers import config, lead, publish, qualified, running
from tests.support import make_settings, wait_for

SECRET = "whsec-test-secret"


def signature_ok(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does, from docs/routing.md's description, independent of the production
    code: ``t=<unix>,v1=hex(HMAC-SHA256(secret, "<t>.<body>"))``, fresh within 5 minutes."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    mac = hmac.new(secret.encode(), str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac, parts.get("v1", "")) and abs(time.time() - t) <= 300


class Receiver:
    """A stand-in for a CRM's webhook endpoint: checks signatures, fails the first call;
    ``/slow`` answers after ``slow_seconds``."""

    def __init__(self, slow_seconds: float = 0.9) -> None:
        self.calls: list[dict[str, Any]] = []
        self.slow_seconds = slow_seconds

    async def hook(self, request: Request) -> Response:
        raw = await request.body()
        ok = signature_ok(SECRET, raw, request.headers.get(SIGNATURE_HEADER, ""))
        self.calls.append(
            {
                "ok": ok,
                "body": json.loads(raw),
                "path": request.url.path,
                "type": request.headers.get("content-type"),
                "delivery": request.headers.get("leadflow-delivery"),
            }
        )
        if not ok:
            return Response(status_code=401)
        if request.url.path == "/slow":
            await asyncio.sleep(self.slow_seconds)
            return Response(status_code=204)
        if request.url.path == "/fast":
            return Response(status_code=204)
        if request.url.path == "/always-500" or len(self.calls) == 1:
            return Response(status_code=500)
        return Response(status_code=204)


@asynccontextmanager
async def serve(receiver: Receiver) -> AsyncIterator[str]:
    port = free_port()
    app = Starlette(
        routes=[
            Route(path, receiver.hook, methods=["POST"])
            for path in ("/hook", "/always-500", "/slow", "/fast")
        ]
    )
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    task = asyncio.create_task(server.serve())
    await wait_for(lambda: _started(server), what="receiver up")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def _started(server: uvicorn.Server) -> bool:
    return bool(server.started)


def test_signature_is_the_documented_hmac() -> None:
    body = '{"a":1}'
    expected = hmac.new(SECRET.encode(), b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert sign(SECRET, body, timestamp=1700000000) == f"t=1700000000,v1={expected}"
    assert signature_ok(SECRET, body.encode(), sign(SECRET, body))
    assert not signature_ok(SECRET, b'{"a":2}', sign(SECRET, body))


def test_signature_round_trip() -> None:
    header = sign(SECRET, '{"a":1}')
    assert verify(SECRET, '{"a":1}', header)
    assert not verify(SECRET, '{"a":2}', header)
    assert not verify("other-secret", '{"a":1}', header)
    assert not verify(SECRET, '{"a":1}', sign(SECRET, '{"a":1}', timestamp=1))  # stale
    assert not verify(SECRET, "x", "garbage")


async def test_webhooks_are_signed_retried_and_dead_lettered(
    kafka_bootstrap: str, db_url: str
) -> None:
    settings = make_settings(kafka_bootstrap, db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    receiver = Receiver()
    async with serve(receiver) as base:
        cfg = config(
            webhooks=[
                {
                    "name": "crm",
                    "url": f"{base}/hook",
                    "secret": SECRET,
                    "events": ["io.leadflow.routing.assigned"],
                    "max_attempts": 3,
                    "backoff_seconds": 0.2,
                },
                {
                    "name": "broken",
                    "url": f"{base}/always-500",
                    "secret": SECRET,
                    "events": ["io.leadflow.routing.assigned"],
                    "max_attempts": 2,
                    "backoff_seconds": 0.2,
                },
            ]
        )
        the_lead = lead("DE", "warm")
        async with running(settings, cfg) as (app, client):
            await publish(app, topics.leads, [qualified(the_lead)])

            async def settled() -> list[dict[str, Any]] | None:
                items = (await client.get("/v1/webhooks/deliveries")).json()["items"]
                states = {i["webhook"]: i["state"] for i in items}
                return items if states == {"crm": "delivered", "broken": "dead"} else None

            items = await wait_for(settled, what="deliveries settled", timeout=20)
            text = (await client.get("/v1/webhooks/deliveries")).text
        # The URL may be the credential (Slack, Zapier): the log shows only its host.
        assert all(i["host"] == "127.0.0.1" and "url" not in i for i in items)
        assert base not in text and "/always-500" not in text
        by_hook = {i["webhook"]: i for i in items}
        assert by_hook["crm"]["attempts"] == 2  # 500 first, then delivered
        assert by_hook["broken"]["attempts"] == 2 and by_hook["broken"]["last_status"] == 500
        assert all(c["ok"] for c in receiver.calls)
        crm_calls = [c for c in receiver.calls if c["path"] == "/hook"]
        assert len(crm_calls) == 2 and crm_calls[0]["body"] == crm_calls[1]["body"]
        body = crm_calls[-1]["body"]
        assert body["specversion"] == "1.0" and body["type"] == "io.leadflow.routing.assigned"
        assert body["subject"] == the_lead["id"]
        assert body["data"]["lead_id"] == the_lead["id"]
        assert crm_calls[-1]["type"] == "application/cloudevents+json"


def test_url_host() -> None:
    assert url_host("https://hooks.slack.com/services/T0/B0/SECRET") == "hooks.slack.com"
    assert url_host("http://user:pw@127.0.0.1:8080/x?token=1") == "127.0.0.1"
    assert url_host("http://[::1") == ""


async def _pending(engine: Any, hook: str, n: int, url: str = "http://unused") -> list[int]:
    now = utcnow()
    rows = [
        {
            "webhook": hook,
            "url": url,
            "event_id": f"{hook}-{i}",
            "event_type": "io.leadflow.routing.assigned",
            "lead_id": f"lead-{i}",
            "body": json.dumps({"id": f"{hook}-{i}", "data": {"n": i}}),
            "state": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for i in range(n)
    ]
    async with engine.begin() as conn:
        await queues.add_deliveries(conn, rows)
        return [
            r[0]
            for r in await conn.execute(select(deliveries.c.id).where(deliveries.c.webhook == hook))
        ]


async def test_two_workers_and_a_slow_receiver_send_each_delivery_once(db_url: str) -> None:
    # A 3 s lease (timeout 1 s) and a receiver taking 0.9 s per call: 8 deliveries sent one
    # after another outlast the lease, and a second worker would send them again.
    receiver = Receiver(slow_seconds=0.9)
    async with serve(receiver) as base:
        cfg = config(
            webhooks=[
                {"name": "slow", "url": f"{base}/slow", "secret": SECRET},
                {"name": "fast", "url": f"{base}/fast", "secret": SECRET},
            ]
        )
        ctx = RoutingContext(config=load_routing_config(cfg), topics=Topics("t."))
        engine = create_engine(db_url)
        try:
            slow_ids = await _pending(engine, "slow", 8, f"{base}/slow")
            [fast_id] = await _pending(engine, "fast", 1, f"{base}/fast")
            a = WebhookWorker(engine, ctx, timeout=1.0)
            b = WebhookWorker(engine, ctx, timeout=1.0)
            task_a = asyncio.create_task(a.run())
            await wait_for(lambda: _calls(receiver, 1), what="worker A sending")
            task_b = asyncio.create_task(b.run())

            async def all_settled() -> list[dict[str, Any]] | None:
                async with engine.connect() as conn:
                    rows = [dict(r._mapping) for r in await conn.execute(select(deliveries))]
                return rows if all(r["state"] != "pending" for r in rows) else None

            rows = await wait_for(all_settled, timeout=30, what="every delivery settled")
            # Leases that would run out (and a duplicate) show up within one more lease.
            await wait_for(lambda: _calls(receiver, 9), what="nine calls")
            for worker in (a, b):
                await worker.stop()
            await asyncio.gather(task_a, task_b)
        finally:
            await engine.dispose()
    assert all(c["ok"] for c in receiver.calls)
    sent = Counter(int(c["delivery"]) for c in receiver.calls)
    assert sent == Counter({i: 1 for i in [*slow_ids, fast_id]})
    by_id = {r["id"]: r for r in rows}
    assert all(r["state"] == "delivered" and r["attempts"] == 1 for r in rows)
    assert all(r["lease_token"] is None for r in rows)
    # The fast receiver's delivery did not wait behind the slow receiver's.
    assert by_id[fast_id]["delivered_at"] < min(by_id[i]["delivered_at"] for i in slow_ids)


async def _calls(receiver: Receiver, n: int) -> bool:
    return len(receiver.calls) >= n


async def test_an_outcome_is_recorded_only_under_its_lease(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        [did] = await _pending(engine, "crm", 1)
        async with engine.begin() as conn:
            [row] = await queues.claim_deliveries(conn, utcnow(), 5, 0.0, "old-claim")
        # The lease ran out and another worker claimed the delivery meanwhile.
        async with engine.begin() as conn:
            [again] = await queues.claim_deliveries(conn, utcnow(), 5, 30.0, "new-claim")
        assert row["id"] == again["id"] == did
        async with engine.begin() as conn:
            assert not await queues.finish_delivery(conn, did, "old-claim", {"state": "dead"})
            assert await queues.finish_delivery(
                conn, did, "new-claim", {"state": "delivered", "attempts": 1}
            )
        async with engine.connect() as conn:
            state = (await conn.execute(select(deliveries.c.state))).scalar_one()
        assert state == "delivered"
    finally:
        await engine.dispose()
