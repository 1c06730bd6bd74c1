"""A routing process killed between its DB commit and its offset commit assigns once; erasure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from aiokafka import AIOKafkaProducer

from shared.broker import free_port
from shared.bus import ensure_topics
from shared.events import CloudEvent, LeadType, RoutingType
from shared.topics import Topics
from tests.routing.helpers import AUTH, config, lead, publish, qualified, running
from tests.support import make_settings, process_env, read_topic, wait_for, wait_for_events

ROOT = Path(__file__).resolve().parents[2]


def start(env: dict[str, str], failpoint: str = "") -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "routing"],
        cwd=ROOT,
        env={**env, "LEADFLOW_FAILPOINTS": failpoint},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def send(bootstrap: str, topic: str, ev: CloudEvent) -> None:
    """Put one event on a topic with a plain producer (as scoring's relay would)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        assert ev.key is not None
        await producer.send_and_wait(topic, ev.value(), key=ev.key.encode(), headers=ev.headers())
    finally:
        await producer.stop()


@pytest.mark.slow
async def test_killed_after_db_commit_assigns_exactly_once(
    kafka_bootstrap: str, db_url: str, tmp_path: Path
) -> None:
    settings = make_settings(kafka_bootstrap, db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    await ensure_topics(settings)
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config()))
    port = free_port()
    env = process_env(
        settings,
        LEADFLOW_ROUTING_PORT=str(port),
        LEADFLOW_CONFIG=str(cfg_path),
        LEADFLOW_OUTBOX_POLL_SECONDS="0.2",
    )
    the_lead = lead("DE", "warm")
    await send(kafka_bootstrap, topics.leads, qualified(the_lead))

    doomed = start(env, "routing.after_db_commit")
    assert doomed.wait(timeout=60) == 137  # died right after committing the assignment
    # A marker with the same key (same partition) behind the redelivered event: once the
    # survivor has assigned the marker, it has consumed the redelivered qualified too.
    marker = {**lead("DE", "warm"), "key": the_lead["key"]}
    await send(kafka_bootstrap, topics.leads, qualified(marker))
    survivor = start(env)
    try:
        await wait_for_events(
            kafka_bootstrap,
            topics.routing,
            lambda evs: any(e.subject == marker["id"] for e in evs),
            timeout=60,
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=AUTH) as client:

            async def listed() -> list[dict[str, object]] | None:
                try:
                    r = await client.get("/v1/assignments", params={"lead_id": the_lead["id"]})
                except httpx.HTTPError:
                    return None
                return r.json()["items"] if r.status_code == 200 else None

            items = await wait_for(listed, what="API up")
        assert len(items) == 1
    finally:
        survivor.terminate()
        survivor.wait(timeout=30)
    events = await read_topic(kafka_bootstrap, topics.routing)
    assert sorted((e.subject, e.type) for e in events) == sorted(
        [(the_lead["id"], RoutingType.ASSIGNED), (marker["id"], RoutingType.ASSIGNED)]
    )


async def test_erased_lead_is_scrubbed_and_its_clock_stopped(
    kafka_bootstrap: str, db_url: str
) -> None:
    settings = make_settings(kafka_bootstrap, db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    the_lead = lead("DE", "warm")
    async with running(settings) as (app, client):
        await publish(app, topics.leads, [qualified(the_lead)])
        await wait_for_events(
            kafka_bootstrap,
            topics.routing,
            lambda evs: any(e.type == RoutingType.ASSIGNED for e in evs),
        )
        erased = CloudEvent(
            type=LeadType.ERASED,
            source="/leadflow/scoring",
            data={"lead": {"id": the_lead["id"]}},
            subject=the_lead["id"],
            key=the_lead["key"],
        )
        await publish(app, topics.leads, [erased])

        async def closed() -> list[dict[str, object]] | None:
            r = await client.get("/v1/assignments", params={"lead_id": the_lead["id"]})
            items = r.json()["items"]
            return items if items and items[0]["state"] == "closed" else None

        await wait_for(closed, what="assignment closed")
        async with app.state.runtime.engine.connect() as conn:
            from sqlalchemy import select

            from services.routing.tables import assignments

            snap = (await conn.execute(select(assignments.c.lead))).scalar_one()
        assert snap == {"id": the_lead["id"]}
        r = await client.post(
            "/v1/assignments/" + str((await closed() or [{}])[0]["id"]) + "/first-touch",
            headers=AUTH,
        )
        assert r.status_code == 409
        # A late copy of the erased lead's qualified, then a marker on the same partition:
        # once the marker is assigned, everything before it has been consumed.
        marker = {**lead("DE", "warm"), "key": the_lead["key"]}
        await publish(app, topics.leads, [qualified(the_lead), qualified(marker)])
        events = await wait_for_events(
            kafka_bootstrap, topics.routing, lambda evs: any(e.subject == marker["id"] for e in evs)
        )
        # Closing is not a first touch, and an erased lead is not assigned again: nothing
        # else was emitted about it.
        assert [e.type for e in events if e.subject == the_lead["id"]] == [RoutingType.ASSIGNED]
        r = await client.get("/v1/assignments", params={"lead_id": the_lead["id"]})
        assert [a["state"] for a in r.json()["items"]] == ["closed"]
