"""The scoring consumer's lead cache (PostgreSQL) serves a lead only as the row still holds it.

A cached lead is the one this consumer wrote; the next batch takes it instead of reading and
decoding the row's state, but only when the locked row is still the version that write made.
The tests below check that the cached lead is the stored one, then have another writer, a
rollback or an erasure in the same transaction change the row and check that the next batch
works on the row, not on the remembered lead; the last checks the cache's memory budget.
"""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scoring import commands
from services.scoring.domain.model import Hit, Lead
from services.scoring.handlers import ScoringHandler
from services.scoring.lead_cache import LeadCache, footprint
from services.scoring.tables import leads
from shared.events import CloudEvent, InteractionType, RoutingType
from shared.topics import Topics
from tests.scoring.helpers import T0, VP_SALES, assigned_data, default_rules, interaction
from tests.scoring.test_erasure_requested import erasure_request

TOPICS = Topics("c.")
_HIT = Hit("page-view", "web", 1, T0, "ev-1")
EMAIL = "jane@acme.com"


def page_view(i: int, email: str = EMAIL) -> CloudEvent:
    return interaction(
        InteractionType.TRACKED,
        email=email,
        at=T0 + timedelta(minutes=i),
        channel="tracking",
        track={"event": "page", "name": "Pricing", "properties": {}},
    )


async def stored(engine: AsyncEngine, email: str = EMAIL) -> Lead:
    async with engine.connect() as conn:
        state = (await conn.execute(select(leads.c.state).where(leads.c.email == email))).scalar()
    assert state is not None
    return Lead.from_state(state)


def _served() -> float:
    return REGISTRY.get_sample_value("leadflow_scoring_lead_cache_total", {"result": "hit"}) or 0.0


async def apply(engine: AsyncEngine, handler: ScoringHandler, *events: CloudEvent) -> None:
    async with engine.begin() as conn:
        await handler(conn, list(events))


async def test_the_cached_lead_is_the_stored_one_and_saves_the_reads(engine: AsyncEngine) -> None:
    cache = LeadCache()
    handler = ScoringHandler(default_rules(), TOPICS, cache=cache)
    await apply(engine, handler, interaction(at=T0, contact=VP_SALES))
    before = _served()
    for i in range(1, 6):
        await apply(engine, handler, page_view(i))
    assert (cache.hits, cache.misses) == (5, 0)
    assert _served() - before == 5  # leadflow_scoring_lead_cache_total{result="hit"}
    lead = await stored(engine)
    assert cache.take([lead.id])[lead.id][1] == lead
    assert len(lead.hits) > 5


async def test_a_lead_changed_by_another_writer_is_read_again(engine: AsyncEngine) -> None:
    cache = LeadCache()
    handler = ScoringHandler(default_rules(), TOPICS, cache=cache)
    await apply(engine, handler, interaction(at=T0, contact=VP_SALES))
    lead_id = (await stored(engine)).id
    async with engine.begin() as conn:  # as PATCH /v1/leads/{id} does
        await commands.override_lead(
            conn, TOPICS, lead_id, stage="SQL", status="prospect", reason="call", now=T0
        )
    await apply(engine, handler, page_view(1))
    assert cache.misses == 1
    lead = await stored(engine)
    # a remembered lead written back would have undone the override
    assert (lead.stage, lead.status) == ("SQL", "prospect")


async def test_a_rolled_back_batch_leaves_nothing_behind_in_memory(engine: AsyncEngine) -> None:
    cache = LeadCache()
    handler = ScoringHandler(default_rules(), TOPICS, cache=cache)
    await apply(engine, handler, interaction(at=T0, contact=VP_SALES))
    demo = interaction(at=T0 + timedelta(minutes=1), intent="demo_request", contact=VP_SALES)
    with pytest.raises(RuntimeError):
        async with engine.begin() as conn:
            await handler(conn, [demo])
            raise RuntimeError("the consumer failed after applying the batch")
    await apply(engine, handler, page_view(2))
    lead = await stored(engine)
    assert lead.stage != "SQL" and not lead.sales_intent
    assert demo.id not in {h.event_id for h in lead.hits}


async def test_an_erasure_earlier_in_the_same_transaction_is_not_undone(
    engine: AsyncEngine,
) -> None:
    """Both writes are the same transaction's (the same ``xmin``): the row version's place
    (``ctid``) is what tells them apart."""
    cache = LeadCache()
    handler = ScoringHandler(default_rules(), TOPICS, cache=cache)
    async with engine.begin() as conn:
        await handler(conn, [interaction(at=T0, contact=VP_SALES)])
        lead_id = (await conn.execute(select(leads.c.id))).scalar_one()
        owner = {"id": "rep-1", "name": "Ann", "email": "ann@x.io", "team": "emea"}
        assigned = CloudEvent(
            type=RoutingType.ASSIGNED,
            source="/leadflow/routing",
            data=assigned_data(lead_id, owner),
            key=lead_id,
        )
        await handler(conn, [erasure_request(email=EMAIL), assigned])
    async with engine.connect() as conn:
        state = (await conn.execute(select(leads.c.state).where(leads.c.id == lead_id))).scalar()
    lead = Lead.from_state(state)
    assert lead.erased_at is not None and lead.owner is not None
    assert EMAIL not in orjson.dumps(state).decode()


def test_the_cache_stays_within_its_memory_budget() -> None:
    def lead(n: int, hits: int) -> Lead:
        return Lead(id=f"l{n}", key=f"l{n}", created_at=T0, hits=[_HIT] * hits)

    cache = LeadCache(megabytes=3 * footprint(lead(0, 10)) / 1024 / 1024)
    for n in range(5):
        cache.put(f"v{n}", lead(n, 10))
    assert len(cache) == 3 and cache.held <= cache.budget
    assert cache.take(["l0", "l1"]) == {}  # the least recently written went first
    assert set(cache.take(["l3"])) == {"l3"} and len(cache) == 2
    cache.put("big", lead(9, 10_000))  # more than the whole budget: not kept
    assert len(cache) == 2 and "l9" not in cache.take(["l9"])
    assert cache.held == 2 * footprint(lead(0, 10))
