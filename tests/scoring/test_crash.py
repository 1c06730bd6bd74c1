"""The crash test: scoring dies between its DB commit and its offset commit, then restarts.

The event comes back from Kafka, the inbox recognises it, and the lead's score counts it once
and exactly one ``lead.qualified`` is published.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from services.scoring import queries
from shared.broker import free_port
from shared.bus import ensure_topics
from shared.db import create_engine
from shared.events import InteractionType, LeadType
from shared.outbox import pending_count
from shared.settings import Settings
from shared.topics import Topics
from tests.scoring.helpers import VP_SALES, interaction
from tests.scoring.test_service import produce
from tests.support import AUTH, make_settings, process_env, read_topic, wait_for

ROOT = Path(__file__).resolve().parents[2]


def _start(settings: Settings, port: int, failpoints: str | None) -> subprocess.Popen[bytes]:
    env = process_env(settings, LEADFLOW_OUTBOX_POLL_SECONDS="0.2", LEADFLOW_SCORING_PORT=str(port))
    env.pop("LEADFLOW_FAILPOINTS", None)
    if failpoints:
        env["LEADFLOW_FAILPOINTS"] = failpoints
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "scoring"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
async def test_crash_after_db_commit_counts_the_event_once(
    kafka_bootstrap: str, db_url: str
) -> None:
    settings = make_settings(kafka_bootstrap, db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    await ensure_topics(settings)
    demo = interaction(intent="demo_request", email="crash@acme.com", contact=VP_SALES)
    await produce(kafka_bootstrap, topics.interactions, [demo])
    port = free_port()

    first = _start(settings, port, "scoring.after_db_commit")
    try:
        code = await asyncio.to_thread(first.wait, 60)
    finally:
        if first.poll() is None:
            first.kill()
    assert code == 137, first.stderr.read().decode() if first.stderr else code
    # The effect was committed before the crash, so the redelivery below is a true duplicate.
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            committed = await queries.list_leads(conn, email="crash@acme.com")
    finally:
        await engine.dispose()
    assert [lead.engagement for lead in committed[0]] == [60]

    second = _start(settings, port, None)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=AUTH) as client:

            async def ready() -> bool:
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_for(ready, timeout=60, what="scoring ready after restart")
            # A marker behind the crashed event on the same key: once it is in the timeline,
            # the redelivered event has been seen (and skipped) too.
            marker = interaction(InteractionType.IDENTIFIED, email="crash@acme.com")
            await produce(kafka_bootstrap, topics.interactions, [marker])

            async def lead_with_marker() -> dict[str, object] | None:
                found = (await client.get("/v1/leads", params={"email": "crash@acme.com"})).json()
                if not found["items"]:
                    return None
                lead = found["items"][0]
                tl = (await client.get(f"/v1/leads/{lead['id']}/timeline")).json()["items"]
                ids = [i["event_id"] for i in tl if i["kind"] == "interaction"]
                return dict(lead) if marker.id in ids else None

            lead = await wait_for(lead_with_marker, timeout=60, what="marker processed")
            tl = (await client.get(f"/v1/leads/{lead['id']}/timeline")).json()["items"]
            assert [i["event_id"] for i in tl if i["kind"] == "interaction"] == [
                demo.id,
                marker.id,
            ]
            assert lead["score"]["engagement"] == 60  # type: ignore[index]
            assert lead["stage"] == "SQL"

            engine = create_engine(db_url)
            try:
                await wait_for(lambda: _drained(engine), what="outbox drained")
            finally:
                await engine.dispose()
            events = await read_topic(kafka_bootstrap, topics.leads)
            qualified = [e for e in events if e.type == LeadType.QUALIFIED]
            assert [e.subject for e in qualified] == [lead["id"]]
    finally:
        second.terminate()
        await asyncio.to_thread(second.wait, 30)
        if second.stderr:
            print(second.stderr.read().decode()[-5000:])


async def _drained(engine: object) -> bool:
    return await pending_count(engine, "scoring") == 0  # type: ignore[arg-type]
