"""Concurrent repeats of one idempotency key publish exactly one event (PostgreSQL and SQLite)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from sqlalchemy import func, select, update

from services.capture import repository
from services.capture.events import SOURCE
from shared.db import create_engine
from shared.events import CloudEvent, utcnow
from shared.messaging_tables import outbox
from shared.outbox import count_pending
from shared.settings import DEV_WRITE_KEY
from tests.capture.conftest import Running
from tests.support import read_topic, wait_for, wait_for_events

AUTH = httpx.BasicAuth(DEV_WRITE_KEY, "")


async def _spool_settled(capture: Running) -> None:
    """Wait until no capture row is unsent (waiting for the relay, claimed or in doubt)."""
    engine = capture.app.state.runtime.engine

    async def settled() -> bool:
        async with engine.connect() as conn:
            return not (
                await conn.execute(
                    select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))
                )
            ).scalar_one()

    await wait_for(settled, what="capture spool settled")


async def test_ten_identical_form_requests_publish_once(capture: Running) -> None:
    async def submit() -> httpx.Response:
        return await capture.client.post(
            "/v1/forms/test-form/submissions",
            json={"email": "race@example.com", "first_name": "Rae"},
            headers={"Idempotency-Key": "race-1"},
        )

    answers = await asyncio.gather(*(submit() for _ in range(10)))
    assert all(r.status_code == 202 for r in answers), [r.text for r in answers]
    ids = {r.json()["event_id"] for r in answers}
    assert len(ids) == 1 and {r.json()["lead_key"] for r in answers} == {"race@example.com"}
    [event_id] = ids
    await wait_for_events(capture.bootstrap, capture.topic, lambda evs: len(evs) >= 1)
    await _spool_settled(capture)
    events = await read_topic(capture.bootstrap, capture.topic)
    assert [e.id for e in events] == [event_id]


async def test_ten_identical_segment_calls_publish_once(capture: Running) -> None:
    call = {"type": "track", "event": "Signed Up", "userId": "u-9", "messageId": "race-m"}
    answers = await asyncio.gather(
        *(capture.client.post("/v1/track", auth=AUTH, json=call) for _ in range(10))
    )
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    await wait_for_events(capture.bootstrap, capture.topic, lambda evs: len(evs) >= 1)
    await _spool_settled(capture)
    events = await read_topic(capture.bootstrap, capture.topic)
    assert len(events) == 1


async def test_claim_left_by_a_crash_goes_to_the_relay(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        ev = CloudEvent(type="t", source="/s", data={}, id="claimed-1", key="k")
        async with engine.begin() as conn:
            assert await repository.claim_idempotent(conn, "topic", [(ev, "form:x", None)]) == {
                "claimed-1"
            }
            assert await repository.claim_idempotent(conn, "topic", [(ev, "form:x", None)]) == set()
            # A claimed row is neither relayed nor a reason to spool, until its hold runs out.
            assert await count_pending(conn, SOURCE, held=False) == 0
            assert await repository.find_idempotent(conn, ["claimed-1"]) == {
                "claimed-1": ("k", None)
            }
            row = (
                await conn.execute(
                    select(outbox.c.sent_at, outbox.c.available_at).where(
                        outbox.c.event_id == "claimed-1"
                    )
                )
            ).one()
            assert row.sent_at is None
            assert utcnow() < row.available_at <= utcnow() + repository.HOLD
            # The claimer died: once the hold is over, the row waits for the relay.
            await conn.execute(
                update(outbox)
                .where(outbox.c.event_id == "claimed-1")
                .values(available_at=utcnow() - timedelta(seconds=1))
            )
            assert await count_pending(conn, SOURCE, held=False) == 1
    finally:
        await engine.dispose()
