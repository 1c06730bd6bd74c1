"""Segment keys: no claim, lookup or record in the database; recent repeats are not resent."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from services.capture import intake as intake_module
from services.capture.events import tracking_event_id
from services.capture.intake import Intake, Submission
from services.capture.tables import idempotency
from shared.db import create_engine
from shared.events import CloudEvent
from shared.messaging_tables import outbox
from shared.problems import Problem
from shared.settings import DEV_WRITE_KEY
from tests.capture.conftest import Running
from tests.support import read_topic, wait_for

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


async def test_segment_keys_stay_out_of_the_database_and_recent_repeats_are_not_resent(
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
    intake: Intake = capture.app.state.capture.intake
    await intake.drain(5)  # whatever bookkeeping follows the answer is done
    assert await _count(capture, outbox, ids) == 0
    assert await _count(capture, idempotency, ids) == 0
    again = await capture.client.post("/v1/batch", auth=AUTH, json={"batch": calls[:2]})
    assert again.status_code == 200
    # A repeat of a call this process accepted lately is not published again.
    assert sorted(e.id for e in await read_topic(capture.bootstrap, capture.topic)) == sorted(ids)
    # Another process (here: this one, having forgotten) publishes it again, under the same
    # event id, which consumers count once.
    intake._recent.clear()
    third = await capture.client.post("/v1/batch", auth=AUTH, json={"batch": calls[:1]})
    assert third.status_code == 200
    published = [e.id for e in await read_topic(capture.bootstrap, capture.topic)]
    assert sorted(published) == sorted([*ids, ids[0]])


def test_the_recent_keys_are_bounded_oldest_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intake_module, "RECENT_KEYS", 2)
    intake = Intake(_Runtime(None), "topic")  # type: ignore[arg-type]
    subs = [
        Submission(
            CloudEvent(type="t", source="/s", data={}, id=f"m{i}", key="k"), "segment", claim=False
        )
        for i in range(3)
    ]
    keyed = Submission(CloudEvent(type="t", source="/s", data={}, id="f1", key="k"), "form:x")
    intake._remember_recent([*subs, keyed])  # a claimed key has its row: not kept here
    assert list(intake._recent) == ["m1", "m2"]


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
