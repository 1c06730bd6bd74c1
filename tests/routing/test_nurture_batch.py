"""Nurture in the consumer's batches: a batch of lead events that concern no track costs one
read, not one per event, and what a batch decides early (an enrolment) still counts for its
later events, on PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from services.routing import handlers
from services.routing.config import load_routing_config
from services.routing.deps import RoutingContext
from shared.db import create_engine
from shared.events import CloudEvent, LeadType
from tests.routing.helpers import lead, qualified
from tests.routing.test_nurture_store import (
    TOPICS,
    kinds,
    lead_event,
    nurture_config,
    nurture_events,
    warm_lead,
)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_url)
    yield eng
    await eng.dispose()


@pytest.fixture
def ctx() -> RoutingContext:
    return RoutingContext(config=load_routing_config(nurture_config()), topics=TOPICS)


@contextmanager
def counting(engine: AsyncEngine) -> Iterator[list[str]]:
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", note)


async def consume(engine: AsyncEngine, ctx: RoutingContext, events: list[CloudEvent]) -> None:
    """One consumer batch, as the ConsumerRunner hands it over."""
    async with engine.begin() as conn:
        await handlers.batch_handler(ctx)(conn, events)


def cold_lead() -> dict[str, Any]:
    return {**warm_lead(stage="IQL"), "temperature": "cold"}


async def test_cold_lead_events_cost_one_read_per_batch(
    engine: AsyncEngine, ctx: RoutingContext
) -> None:
    # A page-view background re-scores thousands of cold leads a second; each used to cost
    # routing one enrolment read, which made it the slowest hop of speed to lead under load.
    events = []
    for _ in range(200):
        the_lead = cold_lead()
        events += [lead_event(the_lead, LeadType.CREATED), lead_event(the_lead, LeadType.SCORED)]
    with counting(engine) as statements:
        await consume(engine, ctx, events)
    reads = [s for s in statements if "nurture_enrolments" in s]
    assert len(reads) == 1, len(reads)
    assert await nurture_events(engine) == []


async def test_an_enrolment_made_early_in_a_batch_counts_for_its_later_events(
    engine: AsyncEngine, ctx: RoutingContext
) -> None:
    keen = warm_lead()
    hotter = {**keen, "score": {"total": 92, "fit": 40, "engagement": 52, "reasons": []}}
    # hot and scored above the track: no entry rule admits it, so only the batch's memory of
    # the enrolment it just made sends this event to the exit check
    hot = {**hotter, "temperature": "hot"}
    await consume(engine, ctx, [lead_event(keen), lead_event(hot, LeadType.SCORED)])
    rows = await nurture_events(engine, keen["id"])
    assert kinds(rows) == ["enrolled", "exited"]
    assert rows[-1]["data"]["reason"] == "re_engaged"


async def test_an_enrolment_of_an_earlier_batch_is_seen_by_the_batch_read(
    engine: AsyncEngine, ctx: RoutingContext
) -> None:
    keen = warm_lead()
    await consume(engine, ctx, [lead_event(keen)])
    hot = {
        **keen,
        "temperature": "hot",
        "score": {"total": 92, "fit": 40, "engagement": 52, "reasons": []},
    }
    others = [lead_event(cold_lead(), LeadType.SCORED) for _ in range(5)]
    await consume(engine, ctx, [*others, lead_event(hot, LeadType.SCORED), *others[:2]])
    assert kinds(await nurture_events(engine, keen["id"])) == ["enrolled", "exited"]


async def test_workers_are_woken_only_after_a_batch_that_gave_them_work(
    engine: AsyncEngine, ctx: RoutingContext
) -> None:
    woken: list[str] = []
    ctx.wakers = [lambda: woken.append("relay"), lambda: woken.append("timers")]
    batches = handlers.ConsumerBatches(ctx)

    async def consume_and_commit(events: list[CloudEvent]) -> None:
        async with engine.begin() as conn:
            await batches.handle(conn, events)
        batches.after_commit()

    # cold leads re-scored: nothing for the relay or any worker
    await consume_and_commit([lead_event(cold_lead(), LeadType.SCORED) for _ in range(20)])
    assert woken == []
    # a warm lead enrols in a track: its first step and nurture.enrolled wait for them
    await consume_and_commit([lead_event(cold_lead(), LeadType.SCORED), lead_event(warm_lead())])
    assert woken == ["relay", "timers"]
    woken.clear()
    await consume_and_commit([qualified(lead("DE", "hot"))])
    assert woken == ["relay", "timers"]
    woken.clear()
    batches.after_commit()  # nothing consumed since
    assert woken == []
