"""Merged and erased leads, applied with routing's handlers on one database (both databases).

A merge leaves one person with at most one live assignment; an erasure seen before the lead's
``qualified`` (they are keyed differently, so may be consumed in either order) keeps the
person from being assigned at all; an erasure scrubs webhook bodies and outbox rows too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.routing import durable_queues as queues
from services.routing.config import load_routing_config
from services.routing.deps import RoutingContext
from services.routing.handlers import handle_event
from services.routing.tables import assignments, deliveries, timers, unassigned
from services.routing.workers import RoutingRetention
from shared.db import create_engine
from shared.events import CloudEvent, RoutingType, utcnow
from shared.messaging_tables import outbox
from shared.topics import Topics
from tests.routing.helpers import (
    AUTH,
    config,
    erased,
    lead,
    merged,
    publish,
    qualified,
    running,
)
from tests.support import make_settings, wait_for, wait_for_events, waiting_on_a_lock

HOOK = {
    "name": "crm",
    "url": "https://hooks.example.com/services/T0/B0/SECRETpath",
    "secret": "whsec-test-secret",
}


@asynccontextmanager
async def routing_db(
    db_url: str,
    cfg: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[AsyncEngine, RoutingContext]]:
    engine = create_engine(db_url)
    ctx = RoutingContext(config=load_routing_config(cfg or config()), topics=Topics("t."))
    try:
        yield engine, ctx
    finally:
        await engine.dispose()


async def apply(engine: AsyncEngine, ctx: RoutingContext, *events: CloudEvent) -> None:
    """Each event in its own transaction, as the consumer would in separate batches."""
    for ev in events:
        async with engine.begin() as conn:
            await handle_event(conn, ctx, ev)


async def rows_of(engine: AsyncEngine, lead_id: str | None = None) -> list[dict[str, Any]]:
    q = select(assignments).order_by(assignments.c.assigned_at, assignments.c.id)
    if lead_id is not None:
        q = q.where(assignments.c.lead_id == lead_id)
    async with engine.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(q)]


async def live(engine: AsyncEngine) -> list[tuple[str, str]]:
    """(lead id, owner) of every open or breached assignment."""
    return [
        (r["lead_id"], r["owner_id"])
        for r in await rows_of(engine)
        if r["state"] in ("open", "breached")
    ]


async def timer_states(engine: AsyncEngine, assignment_id: str) -> set[str]:
    async with engine.connect() as conn:
        return {t["state"] for t in await queues.timers_of(conn, assignment_id)}


async def count(engine: AsyncEngine, table: Any, *where: Any) -> int:
    async with engine.connect() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(table).where(*where))).scalar_one()
        )


async def test_merge_of_two_assigned_leads_leaves_one_live_assignment(db_url: str) -> None:
    by_email, by_phone = lead("DE", "warm"), lead("DE", "warm")
    async with routing_db(db_url) as (engine, ctx):
        await apply(engine, ctx, qualified(by_email), qualified(by_phone))
        assert len(await live(engine)) == 2
        gone = (await rows_of(engine, by_phone["id"]))[0]

        await apply(engine, ctx, merged(by_email, by_phone["id"]))
        survivor = (await rows_of(engine, by_email["id"]))[0]
        assert await live(engine) == [(by_email["id"], survivor["owner_id"])]
        assert (await rows_of(engine, by_phone["id"]))[0]["state"] == "closed"
        assert await timer_states(engine, gone["id"]) == {"cancelled"}
        assert await timer_states(engine, survivor["id"]) == {"pending"}

        # The merged-away lead's qualified redelivered, or arriving late: nothing new.
        await apply(engine, ctx, qualified(by_phone), qualified(by_email))
        assert len(await rows_of(engine)) == 2 and len(await live(engine)) == 1


async def test_merged_away_assignment_moves_to_an_unassigned_survivor(db_url: str) -> None:
    routed, newcomer = lead("DE", "warm"), lead("DE", "warm")
    async with routing_db(db_url) as (engine, ctx):
        await apply(engine, ctx, qualified(routed))
        before = (await rows_of(engine))[0]

        await apply(engine, ctx, merged(newcomer, routed["id"]))
        [row] = await rows_of(engine)
        assert (row["id"], row["lead_id"], row["state"]) == (before["id"], newcomer["id"], "open")
        assert row["owner_id"] == before["owner_id"] and row["due_at"] == before["due_at"]
        assert await timer_states(engine, row["id"]) == {"pending"}  # the clock runs on

        # The survivor qualifying afterwards (or the old lead's copy) assigns nobody else.
        await apply(engine, ctx, qualified(newcomer), qualified(routed))
        assert await live(engine) == [(newcomer["id"], before["owner_id"])]


async def test_qualified_of_a_merged_away_lead_consumed_after_the_merge(db_url: str) -> None:
    # merged is keyed by the survivor, the other lead's qualified by its own key: the merge
    # may be consumed first. The qualified then routes the survivor, once.
    survivor, other = lead("DE", "warm"), lead("DE", "warm")
    async with routing_db(db_url) as (engine, ctx):
        await apply(
            engine, ctx, merged(survivor, other["id"]), qualified(other), qualified(survivor)
        )
        assert [lid for lid, _ in await live(engine)] == [survivor["id"]]
        assert len(await rows_of(engine)) == 1


async def test_merge_moves_a_queued_lead_to_the_survivor(db_url: str) -> None:
    nobody = config(
        fallback_team=None,
        reps=[
            {
                "id": "anna",
                "name": "Anna",
                "email": "anna@example.com",
                "team": "emea",
                "hours": "24x7",
                "capacity": {"max_open": 0},
            }
        ],
    )
    queued, survivor = lead("DE", "warm"), lead("DE", "warm")
    async with routing_db(db_url, nobody) as (engine, ctx):
        await apply(engine, ctx, qualified(queued))
        assert await count(engine, unassigned, unassigned.c.lead_id == queued["id"]) == 1
        await apply(engine, ctx, merged(survivor, queued["id"]))
        async with engine.connect() as conn:
            ids = [r[0] for r in await conn.execute(select(unassigned.c.lead_id))]
        assert ids == [survivor["id"]]


async def test_sales_touch_on_the_merged_away_id_stops_the_survivors_clock(db_url: str) -> None:
    routed, newcomer = lead("DE", "warm"), lead("DE", "warm")
    async with routing_db(db_url) as (engine, ctx):
        await apply(engine, ctx, qualified(routed), merged(newcomer, routed["id"]))
        won = CloudEvent(
            type="io.leadflow.sales.won",
            source="crm",
            data={"lead_id": routed["id"]},
            subject=routed["id"],
        )
        await apply(engine, ctx, won)
        [row] = await rows_of(engine)
        assert row["lead_id"] == newcomer["id"] and row["state"] == "met"
        assert await timer_states(engine, row["id"]) == {"cancelled"}


async def test_erased_before_qualified_is_never_assigned(db_url: str) -> None:
    person = lead("DE", "warm")
    async with routing_db(db_url, config(webhooks=[HOOK])) as (engine, ctx):
        await apply(engine, ctx, erased(person["id"]), qualified(person))
        # Nobody paused or absent: without the tombstone this would be assigned.
        assert await rows_of(engine) == []
        assert await count(engine, unassigned) == 0
        assert await count(engine, deliveries) == 0
        assert await count(engine, outbox, outbox.c.source == "routing") == 0
        # A person qualifying under a new lead id (new consent, new lead) is routed as usual.
        await apply(engine, ctx, qualified(lead("DE", "warm")))
        assert len(await live(engine)) == 1


async def test_erasure_scrubs_deliveries_and_outbox_and_merged_away_rows(db_url: str) -> None:
    person, earlier = lead("DE", "warm"), lead("DE", "warm")
    async with routing_db(db_url, config(webhooks=[HOOK])) as (engine, ctx):
        await apply(
            engine, ctx, qualified(earlier), qualified(person), merged(person, earlier["id"])
        )
        async with engine.begin() as conn:
            # The first delivery was sent already; the other stays pending.
            first = min(r[0] for r in await conn.execute(select(deliveries.c.id)))
            await queues.update_delivery(
                conn, first, {"state": "delivered", "delivered_at": utcnow()}
            )
            bodies = [r[0] for r in await conn.execute(select(deliveries.c.body))]
        assert len(bodies) == 2 and all("@acme.example" in b for b in bodies)

        await apply(engine, ctx, erased(person["id"]))
        async with engine.connect() as conn:
            rows = [
                dict(r._mapping)
                for r in await conn.execute(select(deliveries).order_by(deliveries.c.id))
            ]
            boxed = [
                dict(r._mapping)
                for r in await conn.execute(select(outbox).where(outbox.c.source == "routing"))
            ]
        for email in (person["email"], earlier["email"], "Jane", "Acme"):
            assert all(email not in r["body"] for r in rows), email
            assert all(email not in str(r["data"]) for r in boxed), email
        assert [r["state"] for r in rows] == ["delivered", "dead"]
        assert rows[1]["last_error"] == "lead erased before delivery"
        assert all(r["lead_id"] in (person["id"], earlier["id"]) for r in rows)
        snaps = [r["lead"] for r in await rows_of(engine)]
        assert sorted(s["id"] for s in snaps) == sorted([person["id"], earlier["id"]])
        assert all(set(s) == {"id"} for s in snaps)
        assert await live(engine) == []
        # Still erased for a late, differently keyed copy of either lead's qualified.
        await apply(engine, ctx, qualified(person), qualified(earlier))
        assert len(await rows_of(engine)) == 2 and await live(engine) == []


async def test_retention_deletes_finished_deliveries_and_timers(db_url: str) -> None:
    async with routing_db(db_url, config(webhooks=[HOOK])) as (engine, ctx):
        await apply(engine, ctx, qualified(lead("DE", "warm")), qualified(lead("DE", "warm")))
        async with engine.begin() as conn:
            ids = sorted(r[0] for r in await conn.execute(select(deliveries.c.id)))
            await queues.update_delivery(
                conn, ids[0], {"state": "delivered", "delivered_at": utcnow()}
            )
            [aid] = [r[0] for r in await conn.execute(select(assignments.c.id).limit(1))]
            await queues.cancel_timers(conn, aid)
        retention = RoutingRetention(
            engine, deliveries_keep=timedelta(days=30), timers_keep=timedelta(days=7)
        )
        assert await retention.purge() == (0, 0)  # nothing old enough yet
        later = utcnow() + timedelta(days=400)  # past every due time and creation time
        assert await retention.purge(later) == (1, 2)
        async with engine.connect() as conn:
            left = [r[0] for r in await conn.execute(select(deliveries.c.state))]
            timer_left = [r[0] for r in await conn.execute(select(timers.c.state))]
        assert left == ["pending"] and timer_left == ["pending", "pending"]


async def test_merge_through_the_broker(kafka_bootstrap: str, db_url: str) -> None:
    settings = make_settings(kafka_bootstrap, db_url)
    topics = Topics(settings.leadflow_topic_prefix)
    by_email, by_phone = lead("DE", "warm"), lead("DE", "warm")
    async with running(settings) as (app, client):
        await publish(app, topics.leads, [qualified(by_email), qualified(by_phone)])
        await wait_for_events(
            kafka_bootstrap,
            topics.routing,
            lambda evs: len([e for e in evs if e.type == RoutingType.ASSIGNED]) == 2,
        )
        await publish(app, topics.leads, [merged(by_email, by_phone["id"])])

        async def state_of(lead_id: str) -> str:
            r = await client.get("/v1/assignments", params={"lead_id": lead_id}, headers=AUTH)
            return str(r.json()["items"][0]["state"])

        await wait_for(lambda: _is(state_of(by_phone["id"]), "closed"), what="merged-away closed")
        r = await client.get("/v1/assignments", params={"state": "open"}, headers=AUTH)
        assert [a["lead_id"] for a in r.json()["items"]] == [by_email["id"]]


async def _is(value: Awaitable[str], expected: str) -> bool:
    return await value == expected


async def _race(
    engine: AsyncEngine, ctx: RoutingContext, first: CloudEvent, second: CloudEvent
) -> None:
    """Apply ``first`` in a transaction held open while ``second`` runs in another (as two
    replicas would, the events being on different partitions), then commit ``first``."""
    import asyncio

    async def settled() -> bool:
        # Either the second has finished on what it could see, or it waits for the first.
        return other.done() or await waiting_on_a_lock(engine)

    async with engine.begin() as conn:
        await handle_event(conn, ctx, first)
        other = asyncio.create_task(apply(engine, ctx, second))
        await wait_for(settled, what="the second transaction finished or waiting")
    await other


async def test_merge_racing_the_merged_away_leads_qualified_leaves_one_assignment(
    pg_db_url: str,
) -> None:
    """Found by the race drill: replica 1 handles ``merged(B into A)`` while replica 2 handles
    B's ``qualified``; neither saw the other's uncommitted work, and the person ended up with
    two live assignments."""
    async with routing_db(pg_db_url) as (engine, ctx):
        a, b = lead(), lead()
        await apply(engine, ctx, qualified(a))
        await _race(engine, ctx, merged(a, b["id"]), qualified(b))
        assert [lid for lid, _ in await live(engine)] == [a["id"]]


async def test_erasure_racing_the_leads_qualified_assigns_nobody(pg_db_url: str) -> None:
    """An erasure and the lead's ``qualified`` on two replicas at once: the person is never
    left assigned (with their data) after the erasure."""
    async with routing_db(pg_db_url) as (engine, ctx):
        a = lead()
        await _race(engine, ctx, erased(a["id"]), qualified(a))
        assert await live(engine) == []
        assert await rows_of(engine, a["id"]) == []
