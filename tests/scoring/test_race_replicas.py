"""Two scoring replicas on the real broker and one PostgreSQL database, in the same group.

One person's burst arrives under two Kafka keys: page views under the cookie id, and a form
fill, an ``identify`` (email + cookie) and more forms under the email. The keys are chosen so
that each replica owns one of them: both apply the same person's events at the same time.
Whatever the interleaving, there must be exactly one lead and every event counted once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scoring.main import GROUP_ID, build_app
from services.scoring.tables import identities, leads, timeline
from shared.bus import ConsumerRunner
from shared.db import create_engine
from shared.events import CloudEvent, InteractionType
from shared.messaging_tables import processed_events
from shared.settings import Settings
from shared.topics import Topics
from tests.scoring.helpers import VP_SALES, interaction
from tests.support import make_settings, read_topic, wait_for

PAGE_VIEWS = 12
FORMS = 6


@asynccontextmanager
async def replica(settings: Settings) -> AsyncIterator[ConsumerRunner]:
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        runtime = app.state.runtime
        await runtime.wait_ready()
        (runner,) = [w for w in runtime.workers if isinstance(w, ConsumerRunner)]
        yield runner


def _owned(runner: ConsumerRunner, topic: str) -> set[int]:
    consumer = runner._consumer
    assert consumer is not None
    return {tp.partition for tp in consumer.assignment() if tp.topic == topic}


def _partition(key: str, partitions: int) -> int:
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def _key_in(partitions: set[int], template: str, total: int) -> str:
    return next(
        template.format(i)
        for i in range(10_000)
        if _partition(template.format(i), total) in partitions
    )


async def _burst(bootstrap: str, topic: str, events: list[CloudEvent]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        sent = [
            await producer.send(topic, e.value(), key=(e.key or "").encode(), headers=e.headers())
            for e in events
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _processed(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        query = select(func.count()).where(processed_events.c.consumer == GROUP_ID)
        return int((await conn.execute(query.select_from(processed_events))).scalar_one())


async def test_two_replicas_one_person_two_keys(kafka_bootstrap: str, pg_db_url: str) -> None:
    # small batches for many interleavings; a session long enough that a slow heartbeat on a
    # busy machine does not move partitions between the replicas during the burst
    settings = make_settings(
        kafka_bootstrap,
        pg_db_url,
        leadflow_consumer_batch=2,
        kafka_session_timeout_ms=3_000,
    )
    topic = Topics(settings.leadflow_topic_prefix).interactions
    total = settings.kafka_topic_partitions
    engine = create_engine(pg_db_url)
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(replica(settings))
        second = await stack.enter_async_context(replica(settings))

        async def split() -> tuple[set[int], set[int]] | None:
            mine, theirs = _owned(first, topic), _owned(second, topic)
            if mine and theirs and not mine & theirs and len(mine | theirs) == total:
                return mine, theirs
            return None

        mine, theirs = await wait_for(split, what="both replicas own interaction partitions")
        anon = _key_in(mine, "cookie-{}", total)
        email = _key_in(theirs, "racer{}@acme.com", total)

        views = [
            interaction(
                InteractionType.TRACKED,
                email=None,
                anonymous_id=anon,
                track={"event": "page", "name": "Pricing" if i % 3 == 0 else f"Docs {i}"},
            )
            for i in range(PAGE_VIEWS)
        ]
        ident = interaction(InteractionType.IDENTIFIED, email=email, anonymous_id=anon)
        forms = [
            interaction(intent="generic", email=email, contact=VP_SALES, form_id=f"f{i}")
            for i in range(FORMS)
        ]
        by_email = [forms[0], ident, *forms[1:]]
        padded = by_email + [None] * (PAGE_VIEWS - len(by_email))
        burst = [e for pair in zip(views, padded, strict=True) for e in pair if e]
        assert {e.key for e in views} == {anon} and {e.key for e in by_email} == {email}
        await _burst(kafka_bootstrap, topic, burst)

        n = len(burst)
        await wait_for(
            lambda: _count_is(engine, n), timeout=60, what=f"{n} events processed by the group"
        )
        both = (first.processed, second.processed)
        assert sum(both) == n and all(both), both  # each replica did its share, none twice

        async with engine.connect() as conn:
            states = (await conn.execute(select(leads.c.id, leads.c.state))).all()
            owners = dict(
                ((r.kind, r.value), r.lead_id) for r in await conn.execute(select(identities))
            )
            rows = (
                await conn.execute(
                    select(timeline.c.lead_id, timeline.c.event_id).where(
                        timeline.c.kind == "interaction"
                    )
                )
            ).all()
        assert len(states) == 1, [s.state["key"] for s in states]
        ((lead_id, state),) = [(s.id, s.state) for s in states]
        merged = {k: v for k, v in owners.items() if k[0] == "merged"}
        assert {k: v for k, v in owners.items() if k[0] != "merged"} == {
            ("email", email): lead_id,
            ("anon", anon): lead_id,
        }
        assert set(merged.values()) <= {lead_id}  # the cookie's lead, if it was merged in
        assert state["emails"] == [email] and state["anonymous_ids"] == [anon]
        counted = Counter(r.event_id for r in rows)
        assert set(counted) == {e.id for e in burst} and set(counted.values()) == {1}
        assert {r.lead_id for r in rows} == {lead_id}
        hits = Counter((h[0], h[4]) for h in state["hits"])  # [rule, group, points, at, event_id]
        assert set(hits.values()) == {1}
        assert {ev for _, ev in hits} >= {v.id for v in views[::3]} | {f.id for f in forms[:3]}
        assert (
            await read_topic(kafka_bootstrap, Topics(settings.leadflow_topic_prefix).deadletter)
            == []
        )
    await engine.dispose()


async def _count_is(engine: AsyncEngine, n: int) -> bool:
    return await _processed(engine) == n
