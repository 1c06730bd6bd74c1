"""Segment keys: no claim before publishing, remembered after; their lookup probes the index."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from services.capture import repository
from services.capture.events import tracking_event_id
from services.capture.intake import Intake, Submission
from services.capture.tables import idempotency
from shared.db import create_engine
from shared.events import CloudEvent
from shared.messaging_tables import outbox
from shared.problems import Problem
from shared.settings import DEV_WRITE_KEY
from tests.capture.conftest import Running
from tests.support import generic_plan_scans, read_topic, wait_for

AUTH = httpx.BasicAuth(DEV_WRITE_KEY, "")


async def _count(capture: Running, table: Any, ids: list[str]) -> int:
    async with capture.app.state.runtime.engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    select(func.count()).select_from(table).where(table.c.event_id.in_(ids))
                )
            ).scalar_one()
        )


async def test_segment_calls_are_published_without_a_claim_and_remembered_after(
    capture: Running,
) -> None:
    calls = [
        {"type": "track", "event": f"E{i}", "userId": "u-k", "messageId": f"k-{i}"}
        for i in range(3)
    ]
    ids = [tracking_event_id(f"k-{i}") for i in range(3)]
    answer = await capture.client.post("/v1/batch", auth=AUTH, json={"batch": calls})
    assert answer.status_code == 200, answer.text
    # On Kafka once the answer is in: no spooled copy was written, then or since.
    assert sorted(e.id for e in await read_topic(capture.bootstrap, capture.topic)) == sorted(ids)
    assert await _count(capture, outbox, ids) == 0

    async def remembered() -> bool:
        return await _count(capture, idempotency, ids) == 3

    await wait_for(remembered, what="keys remembered after delivery")
    again = await capture.client.post("/v1/batch", auth=AUTH, json={"batch": calls[:2]})
    assert again.status_code == 200
    # A repeat of a remembered key is not published again.
    assert sorted(e.id for e in await read_topic(capture.bootstrap, capture.topic)) == sorted(ids)


async def test_delivered_form_keys_leave_no_spooled_copy(capture: Running) -> None:
    answer = await capture.client.post(
        "/v1/forms/test-form/submissions",
        json={"email": "copy@example.com"},
        headers={"Idempotency-Key": "copy-1"},
    )
    assert answer.status_code == 202, answer.text
    event_id = answer.json()["event_id"]

    async def forgotten() -> bool:
        return await _count(capture, outbox, [event_id]) == 0

    # The claim wrote a held copy; once the event is on Kafka the copy is deleted, not kept
    # as a sent row (a second write to every index of the outbox).
    await wait_for(forgotten, what="the claimed copy deleted after delivery")
    assert [e.id for e in await read_topic(capture.bootstrap, capture.topic)] == [event_id]


class _Runtime:
    """Just enough of a runtime for :class:`Intake` to read keys (it finds none)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine


async def test_a_concurrent_repeat_waits_for_the_first_and_shares_its_failure(
    sqlite_db_url: str,
) -> None:
    engine = create_engine(sqlite_db_url)
    try:
        intake = Intake(_Runtime(engine), "topic")  # type: ignore[arg-type]
        started = asyncio.Event()
        release = asyncio.Event()
        calls: list[list[str]] = []

        async def failing(subs: list[Submission], *_: object) -> None:
            calls.append([s.event.id for s in subs])
            started.set()
            await release.wait()
            raise Problem(503, "the event could not be stored")

        intake._make_durable = failing  # type: ignore[method-assign]
        event = CloudEvent(type="t", source="/s", data={}, id=tracking_event_id("m"), key="k")
        sub = Submission(event, "segment", claim=False)
        first = asyncio.create_task(intake.accept([sub]))
        await started.wait()
        repeat = asyncio.create_task(intake.accept([sub]))
        await asyncio.sleep(0)  # the repeat reaches its wait (no condition to wait for instead)
        assert not repeat.done()
        release.set()
        for task in (first, repeat):
            with pytest.raises(Problem) as caught:
                await task
            assert caught.value.status == 503
        assert calls == [[event.id]]  # the repeat published nothing itself
        assert intake._flights == {}
        # Once the outcome is known, the next repeat tries again on its own.
        with pytest.raises(Problem):
            await intake.accept([sub])
        assert len(calls) == 2
    finally:
        await engine.dispose()


async def test_the_key_lookup_probes_the_index_in_a_plan_made_on_an_empty_table(
    pg_db_url: str,
) -> None:
    engine = create_engine(pg_db_url)
    try:
        scans = await generic_plan_scans(engine, repository._KNOWN_PG, ["text[]"], ["'{a,b}'"])
    finally:
        await engine.dispose()
    assert idempotency.name not in scans
