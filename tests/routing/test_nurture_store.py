"""Nurture on PostgreSQL and SQLite, in process (no broker): lead events enrol and exit, steps
fire once on a controllable clock, two workers race, consent withdrawal and erasure stop a
pending step, SQL exits the track, the stall scan finds idle MQLs, the read API shows it all;
a consumer batch reads its leads' enrolments once, and wakes the workers only when it gave
them work."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.routing import handlers
from services.routing import nurture_store as store
from services.routing.config import load_routing_config
from services.routing.deps import RoutingContext
from services.routing.main import build_app
from services.routing.nurture_tables import leads as nurture_leads
from services.routing.nurture_worker import NurtureRetention, NurtureWorker, StallScan
from services.routing.tables import assignments, deliveries
from shared.db import create_engine
from shared.event_schemas import schema_errors
from shared.events import CloudEvent, LeadType, NurtureType, utcnow
from shared.messaging_tables import outbox
from shared.settings import Settings
from shared.topics import Topics
from tests.routing.helpers import AUTH, config, erased, lead, qualified

TOPICS = Topics("t.")

NURTURE: dict[str, Any] = {
    "calendar": "always",
    "tracks": {
        "warm": {
            "entry": {"temperature": "warm", "stage": ["IQL", "MQL"]},
            "steps": [
                {"id": "guide", "action": "send_content", "content": "buyer-guide", "after": 0},
                {"id": "webinar", "action": "invite_webinar", "webinar": "demo-day", "after": "1h"},
                {"id": "call", "action": "call_task", "team": "emea", "after": "2h"},
            ],
            "exit": {"score_above": 90},
        },
        "stalled": {
            "entry": {"stall": {"stage": "MQL", "no_activity_days": 14}},
            "steps": [{"id": "nudge", "action": "send_content", "content": "digest"}],
        },
    },
}


def nurture_config() -> dict[str, Any]:
    cfg = config(
        nurture=copy.deepcopy(NURTURE),
        webhooks=[{"name": "mkt", "url": "https://mkt.example/hook", "secret": "s3cret-s3cret"}],
    )
    return cfg


@dataclass
class Clock:
    """Now, moved by hand."""

    offset: timedelta = field(default_factory=timedelta)

    def __call__(self) -> datetime:
        return utcnow() + self.offset


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_url)
    yield eng
    await eng.dispose()


@pytest.fixture
def ctx() -> RoutingContext:
    return RoutingContext(config=load_routing_config(nurture_config()), topics=TOPICS)


def warm_lead(**extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "stage": "MQL",
        "status": "lead",
        "consent": {"marketing": True},
        "score": {"total": 45, "fit": 20, "engagement": 25, "reasons": []},
        "last_activity_at": "2026-11-29T09:00:00Z",
    }
    fields.update(extra)
    return lead("DE", "warm", **fields)


def lead_event(the_lead: dict[str, Any], type_: str = LeadType.TEMPERATURE_CHANGED) -> CloudEvent:
    return CloudEvent(
        type=type_,
        source="/leadflow/scoring",
        data={"lead": the_lead, "cause": {"event_id": "x", "type": "t"}, "change": {}},
        subject=the_lead["id"],
        key=the_lead["key"],
    )


async def handle(engine: AsyncEngine, ctx: RoutingContext, *events: CloudEvent) -> None:
    async with engine.begin() as conn:
        for ev in events:
            await handlers.handle_event(conn, ctx, ev)


async def nurture_events(engine: AsyncEngine, lead_id: str | None = None) -> list[dict[str, Any]]:
    q = select(outbox).where(outbox.c.topic == TOPICS.nurture).order_by(outbox.c.id)
    if lead_id is not None:
        q = q.where(outbox.c.ce_subject == lead_id)
    async with engine.connect() as conn:
        return [dict(r._mapping) for r in (await conn.execute(q)).all()]


def kinds(rows: list[dict[str, Any]]) -> list[str]:
    return [str(r["ce_type"]).rsplit(".", 1)[1] for r in rows]


async def test_enrol_steps_once_consent_withdrawal_and_sql(
    engine: AsyncEngine, ctx: RoutingContext
) -> None:
    clock = Clock()
    worker = NurtureWorker(engine, ctx, clock=clock)
    cooled = warm_lead()
    lid = cooled["id"]
    ev = lead_event(cooled)
    await handle(engine, ctx, ev)
    await handle(engine, ctx, ev)  # a replay (same id, same enrolment): nothing new
    rows = await nurture_events(engine, lid)
    assert kinds(rows) == ["enrolled"]
    enrolled = rows[0]["data"]
    assert enrolled["track"] == "warm"
    assert enrolled["reason"] == {"stage": "MQL", "temperature": "warm"}
    assert enrolled["lead"]["email"] == cooled["email"]

    await worker.step()  # step 0 is due at once
    await worker.step()  # nothing more is due
    rows = await nurture_events(engine, lid)
    assert kinds(rows) == ["enrolled", "step_due"]
    due = rows[1]["data"]
    assert due["step"]["id"] == "guide" and due["step"]["content"] == "buyer-guide"
    assert due["reason"]["consent"] == "given"
    assert due["reason"]["enrolled_because"] == {"stage": "MQL", "temperature": "warm"}

    clock.offset = timedelta(hours=1, minutes=1)
    await worker.step()
    assert kinds(await nurture_events(engine, lid))[-1] == "step_due"

    # Consent withdrawn (scoring re-publishes the lead): the pending call step never fires.
    await handle(
        engine, ctx, lead_event({**cooled, "consent": {"marketing": False}}, LeadType.SCORED)
    )
    clock.offset = timedelta(days=10)
    await worker.step()
    rows = await nurture_events(engine, lid)
    assert kinds(rows) == ["enrolled", "step_due", "step_due", "exited"]
    assert rows[-1]["data"]["reason"] == "consent_withdrawn"
    async with engine.connect() as conn:
        (enr,) = await store.enrolments_of(conn, lid)
        steps = await store.steps_of(conn, [enr["id"]])
    assert [(s["step_id"], s["state"], s["outcome"]) for s in steps] == [
        ("guide", "fired", "sent"),
        ("webinar", "fired", "sent"),
        ("call", "cancelled", "exited:consent_withdrawn"),
    ]
    # every event fits its published JSON Schema
    for r in await nurture_events(engine):
        ev = CloudEvent(type=r["ce_type"], source="x", data=r["data"])
        assert schema_errors(ev) == [], r["ce_type"]
    # every event also went to the signed webhook
    async with engine.connect() as conn:
        hooked = (await conn.execute(select(deliveries.c.event_type))).scalars().all()
    assert sorted(hooked) == sorted(r["ce_type"] for r in await nurture_events(engine))

    # A lead that re-engages above the track's score leaves it (re_engaged).
    keen = warm_lead()
    await handle(engine, ctx, lead_event(keen))
    hotter = {**keen, "score": {"total": 92, "fit": 40, "engagement": 52, "reasons": []}}
    await handle(engine, ctx, lead_event(hotter, LeadType.SCORED))
    rows = await nurture_events(engine, keen["id"])
    assert kinds(rows) == ["enrolled", "exited"]
    assert rows[-1]["data"]["reason"] == "re_engaged"

    # Another lead becomes SQL while in the track: it leaves (sql) and routing assigns it.
    other = warm_lead()
    await handle(engine, ctx, lead_event(other))
    sql = {**other, "stage": "SQL", "temperature": "hot"}
    await handle(engine, ctx, qualified(sql))
    rows = await nurture_events(engine, other["id"])
    assert kinds(rows) == ["enrolled", "exited"]
    assert rows[-1]["data"]["reason"] == "sql"
    assert [(h["step_id"], h["state"]) for h in rows[-1]["data"]["history"]] == [
        ("guide", "cancelled")
    ]
    async with engine.connect() as conn:
        owners = (
            await conn.execute(
                select(assignments.c.owner_id).where(assignments.c.lead_id == other["id"])
            )
        ).all()
    assert len(owners) == 1


async def test_two_workers_fire_each_step_exactly_once(
    engine: AsyncEngine, ctx: RoutingContext, db_url: str
) -> None:
    leads = [warm_lead() for _ in range(40)]
    await handle(engine, ctx, *(lead_event(x) for x in leads))
    other = create_engine(db_url)
    try:
        ctx2 = RoutingContext(config=ctx.config, topics=TOPICS)
        a = NurtureWorker(engine, ctx, batch=7)
        b = NurtureWorker(other, ctx2, batch=7)
        await asyncio.gather(a.step(), b.step())
    finally:
        await other.dispose()
    rows = [r for r in await nurture_events(engine) if r["ce_type"] == NurtureType.STEP_DUE]
    assert sorted(r["ce_subject"] for r in rows) == sorted(x["id"] for x in leads)
    assert a.fired + b.fired == 40
    print(f"two workers: {a.fired} + {b.fired} steps")


async def test_erasure_stops_the_track_and_forgets_the_person(
    engine: AsyncEngine, ctx: RoutingContext
) -> None:
    clock = Clock()
    x = warm_lead()
    await handle(engine, ctx, lead_event(x))
    await NurtureWorker(engine, ctx, clock=clock).step()
    await handle(engine, ctx, erased(x["id"]))
    clock.offset = timedelta(days=3)
    await NurtureWorker(engine, ctx, clock=clock).step()
    rows = await nurture_events(engine, x["id"])
    assert kinds(rows) == ["enrolled", "step_due", "exited"]
    assert rows[-1]["data"]["reason"] == "erased"
    # nothing of the person is left in what routing keeps or still owes
    assert all(r["data"]["lead"].get("email") is None for r in rows)
    async with engine.connect() as conn:
        (enr,) = await store.enrolments_of(conn, x["id"])
    assert enr["lead"] == {"id": x["id"]} and enr["lead_key"] is None


async def test_stall_scan_enrols_idle_mqls_once(engine: AsyncEngine, ctx: RoutingContext) -> None:
    idle = lead(
        "DE",
        "cold",
        stage="MQL",
        status="lead",
        consent={"marketing": True},
        last_activity_at="2026-11-01T09:00:00Z",
    )
    busy = lead(
        "DE",
        "cold",
        stage="MQL",
        status="lead",
        last_activity_at=(utcnow() - timedelta(days=2)).isoformat(),
    )
    await handle(engine, ctx, lead_event(idle, LeadType.SCORED), lead_event(busy, LeadType.SCORED))
    async with engine.connect() as conn:
        kept = (await conn.execute(select(nurture_leads.c.lead_id))).scalars().all()
    assert sorted(kept) == sorted([idle["id"], busy["id"]])
    # the event itself found the idle one stalled; the busy one is not, yet
    rows = await nurture_events(engine, idle["id"])
    assert kinds(rows) == ["enrolled"]
    assert rows[0]["data"]["track"] == "stalled"
    assert rows[0]["data"]["reason"]["stall"]["no_activity_days"] == 14
    scan = StallScan(engine, ctx, every=3600, page=1)
    assert await scan.scan() == 0
    # 12 days on, nothing happened to the busy one: the scan finds it stalled, once
    scan.clock = Clock(timedelta(days=12))
    assert await scan.scan() == 1
    assert await scan.scan() == 0
    rows = await nurture_events(engine, busy["id"])
    assert kinds(rows) == ["enrolled"]
    assert rows[0]["data"]["track"] == "stalled"
    # both complete the one-step track; the scan does not even read them again (no re-entry)
    await NurtureWorker(engine, ctx, clock=Clock(timedelta(days=13))).step()
    assert kinds(await nurture_events(engine, idle["id"])) == ["enrolled", "step_due", "exited"]
    # no recorded consent: its contact step was skipped, not announced
    assert kinds(await nurture_events(engine, busy["id"])) == ["enrolled", "exited"]
    later = utcnow() + timedelta(days=100)
    async with engine.connect() as conn:
        assert len(await store.stalled_leads(conn, "MQL", later, 10)) == 2
        assert await store.stalled_leads(conn, "MQL", later, 10, track="stalled") == []
        again = await store.stalled_leads(
            conn, "MQL", later, 10, track="stalled", again_after=later
        )
    assert len(again) == 2  # a re-entry cool-down over: read again


async def test_read_api(engine: AsyncEngine, ctx: RoutingContext, db_url: str) -> None:
    x = warm_lead()
    await handle(engine, ctx, lead_event(x))
    await NurtureWorker(engine, ctx).step()
    # an IQL that reaches MQL in the track; another that becomes SQL (and leaves)
    iql = warm_lead(stage="IQL")
    to_sql = warm_lead(stage="IQL")
    await handle(engine, ctx, lead_event(iql), lead_event(to_sql))
    await handle(engine, ctx, lead_event({**iql, "stage": "MQL"}, LeadType.STAGE_CHANGED))
    await handle(engine, ctx, qualified({**to_sql, "stage": "SQL"}))
    settings = Settings(
        leadflow_dev=True,
        kafka_bootstrap_servers="127.0.0.1:1",
        database_url=db_url,
        leadflow_api_token="test-token",
    )
    app = build_app(settings, nurture_config())
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/v1/nurture/tracks")).status_code == 401
            r = await client.get("/v1/nurture/tracks", headers=AUTH)
            assert r.status_code == 200, r.text
            tracks = {t["name"]: t for t in r.json()["items"]}
            kpis = tracks["warm"]["kpis"]
            assert (kpis["enrolled"], kpis["active"], kpis["exited"]) == (3, 2, {"sql": 1})
            assert (kpis["converted_mql"], kpis["converted_sql"]) == (2, 1)
            assert kpis["conversion_rate"] == 1.0 and kpis["median_seconds_to_sql"] >= 0
            assert [s["action"] for s in tracks["warm"]["steps"]] == [
                "send_content",
                "invite_webinar",
                "call_task",
            ]
            assert tracks["stalled"]["entry"] == {"stall": {"stage": "MQL", "no_activity_days": 14}}
            r = await client.get(f"/v1/nurture/leads/{x['id']}", headers=AUTH)
            (enr,) = r.json()["items"]
            assert enr["track"] == "warm" and enr["state"] == "active" and enr["next_step"] == 1
            assert [(s["step_id"], s["state"], s["outcome"]) for s in enr["steps"]] == [
                ("guide", "fired", "sent"),
                ("webinar", "pending", None),
            ]
            r = await client.get("/v1/nurture/enrolments", params={"track": "warm"}, headers=AUTH)
            assert sorted(e["lead_id"] for e in r.json()["items"]) == sorted(
                [x["id"], iql["id"], to_sql["id"]]
            )
            r = await client.get("/v1/nurture/enrolments", params={"state": "bogus"}, headers=AUTH)
            assert r.status_code == 422
            for bad in ("/v1/nurture/leads/a%00b", "/v1/nurture/enrolments?track=a%00b"):
                r = await client.get(bad, headers=AUTH)
                assert r.status_code == 422, r.text
                assert r.headers["content-type"].startswith("application/problem+json")
    finally:
        await app.state.runtime.engine.dispose()


async def test_a_crashed_workers_claimed_steps_fire_once_after_its_lease(
    engine: AsyncEngine, ctx: RoutingContext
) -> None:
    leads = [warm_lead() for _ in range(3)]
    await handle(engine, ctx, *(lead_event(x) for x in leads))
    now = utcnow()
    async with engine.begin() as conn:  # a replica claims the due steps, then dies
        claimed = await store.claim_due_steps(conn, "dead-replica", now, 10, 30.0)
    assert len(claimed) == 3
    restarted = NurtureWorker(engine, ctx, clock=Clock(timedelta(seconds=31)))
    if engine.dialect.name != "sqlite":  # SQLite (one process) does not lease
        early = NurtureWorker(engine, ctx)
        await early.step()
        assert early.fired == 0  # still leased to the dead replica
    await restarted.step()
    await restarted.step()
    assert restarted.fired == 3
    rows = [r for r in await nurture_events(engine) if r["ce_type"] == NurtureType.STEP_DUE]
    assert sorted(r["ce_subject"] for r in rows) == sorted(x["id"] for x in leads)


async def test_retention_deletes_long_ended_enrolments_and_their_steps(
    engine: AsyncEngine, ctx: RoutingContext
) -> None:
    x, y = warm_lead(), warm_lead()
    await handle(engine, ctx, lead_event(x), lead_event(y))
    await NurtureWorker(engine, ctx).step()
    await handle(engine, ctx, qualified({**x, "stage": "SQL"}))  # x's enrolment ends
    purge = NurtureRetention(engine, keep=timedelta(days=365))
    assert await purge.purge() == (0, 0)
    assert await purge.purge(utcnow() + timedelta(days=366)) == (1, 2)  # y is still active
    async with engine.connect() as conn:
        assert await store.enrolments_of(conn, x["id"]) == []
        assert len(await store.enrolments_of(conn, y["id"])) == 1


# -- the consumer's batches: one enrolment read per batch, not per lead event ----------


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
        await handlers.ConsumerBatches(ctx).handle(conn, events)


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


async def test_the_events_of_one_change_are_considered_once(
    engine: AsyncEngine, ctx: RoutingContext
) -> None:
    # One interaction gives scoring's lead events (temperature, stage, qualified…) the same
    # snapshot of the lead; each consideration of it costs a lock and four reads.
    keen = warm_lead()
    types = [LeadType.TEMPERATURE_CHANGED, LeadType.STAGE_CHANGED, LeadType.SCORED]
    with counting(engine) as statements:
        await consume(engine, ctx, [lead_event(keen, t) for t in types])
    locks = [s for s in statements if "pg_advisory_xact_lock" in s or "nurture_leads" in s]
    if engine.dialect.name == "postgresql":
        assert len([s for s in locks if "pg_advisory_xact_lock" in s]) == 1, locks
    assert kinds(await nurture_events(engine, keen["id"])) == ["enrolled"]
    # a changed snapshot in the same batch is considered again
    hot = {**keen, "temperature": "hot"}
    hot["score"] = {"total": 92, "fit": 40, "engagement": 52, "reasons": []}
    await consume(engine, ctx, [lead_event(keen), lead_event(hot, LeadType.SCORED)])
    assert kinds(await nurture_events(engine, keen["id"])) == ["enrolled", "exited"]


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
