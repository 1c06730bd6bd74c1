"""Outbound webhooks: signed structured CloudEvents, retried with backoff, dead-lettered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.routing.webhooks import SIGNATURE_HEADER, sign, verify
from shared.broker import free_port
from shared.topics import Topics
from tests.routing.helpers import config, lead, publish, qualified, running
from tests.support import make_settings, wait_for

SECRET = "whsec-test-secret"


class Receiver:
    """A stand-in for a CRM's webhook endpoint: checks signatures, fails the first call."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def hook(self, request: Request) -> Response:
        body = (await request.body()).decode()
        ok = verify(SECRET, body, request.headers.get(SIGNATURE_HEADER, ""))
        self.calls.append({"ok": ok, "body": json.loads(body), "path": request.url.path,
                           "type": request.headers.get("content-type")})
        if not ok:
            return Response(status_code=401)
        if request.url.path == "/always-500" or len(self.calls) == 1:
            return Response(status_code=500)
        return Response(status_code=204)


@asynccontextmanager
async def serve(receiver: Receiver) -> AsyncIterator[str]:
    port = free_port()
    app = Starlette(routes=[Route("/hook", receiver.hook, methods=["POST"]),
                            Route("/always-500", receiver.hook, methods=["POST"])])
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


def test_signature_round_trip() -> None:
    header = sign(SECRET, '{"a":1}')
    assert verify(SECRET, '{"a":1}', header)
    assert not verify(SECRET, '{"a":2}', header)
    assert not verify("other-secret", '{"a":1}', header)
    assert not verify(SECRET, '{"a":1}', sign(SECRET, '{"a":1}', timestamp=1))  # stale
    assert not verify(SECRET, "x", "garbage")


async def test_webhooks_are_signed_retried_and_dead_lettered(kafka_bootstrap: str,
                                                             db_url: str) -> None:
    settings = make_settings(kafka_bootstrap, db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    receiver = Receiver()
    async with serve(receiver) as base:
        cfg = config(webhooks=[
            {"name": "crm", "url": f"{base}/hook", "secret": SECRET,
             "events": ["io.leadflow.routing.assigned"], "max_attempts": 3,
             "backoff_seconds": 0.2},
            {"name": "broken", "url": f"{base}/always-500", "secret": SECRET,
             "events": ["io.leadflow.routing.assigned"], "max_attempts": 2,
             "backoff_seconds": 0.2},
        ])
        the_lead = lead("DE", "warm")
        async with running(settings, cfg) as (app, client):
            await publish(app, topics.leads, [qualified(the_lead)])

            async def settled() -> list[dict[str, Any]] | None:
                items = (await client.get("/v1/webhooks/deliveries")).json()["items"]
                states = {i["webhook"]: i["state"] for i in items}
                return items if states == {"crm": "delivered", "broken": "dead"} else None

            items = await wait_for(settled, what="deliveries settled", timeout=20)
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
