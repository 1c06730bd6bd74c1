"""The urgent lane: a batch's urgent leads are applied and committed before the rest of it.

Under steady tracking traffic a demo request shares its consumer batch with hundreds of page
views; applied in one transaction with them, it waits for all of them before scoring's (and
then routing's) outbox relays it. These tests pin the split: which events go first, in what
order, and that the first part is committed (the relay woken) before the rest is applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from shared.bus import ConsumerRunner, urgent_first
from shared.db import create_engine
from shared.events import CloudEvent
from tests.support import make_settings


def _ev(key: str | None, kind: str = "view") -> CloudEvent:
    return CloudEvent(type=f"io.test.{kind}", source="t", data={}, key=key)


def _urgent(ev: CloudEvent) -> bool:
    return ev.type == "io.test.demo"


def _pairs(events: Sequence[CloudEvent]) -> list[tuple[Any, CloudEvent]]:
    return [(None, e) for e in events]


def test_urgent_keys_go_first_with_all_their_events_in_order() -> None:
    a1, b1, a2, c1, a3, b2 = _ev("a"), _ev("b"), _ev("a", "demo"), _ev("c"), _ev("a"), _ev("b")
    first, rest = urgent_first(_pairs([a1, b1, a2, c1, a3, b2]), _urgent)
    # the urgent lead's page view before its demo request stays before it, and the one after
    # it stays after it: one key's order is all Kafka orders
    assert [e for _, e in first] == [a1, a2, a3]
    assert [e for _, e in rest] == [b1, c1, b2]


def test_a_batch_without_urgent_events_is_one_part() -> None:
    events = [_ev("a"), _ev("b")]
    first, rest = urgent_first(_pairs(events), _urgent)
    assert first == [] and [e for _, e in rest] == events


def _record(ev: CloudEvent, offset: int) -> SimpleNamespace:
    key = ev.key.encode() if ev.key else None
    return SimpleNamespace(
        key=key,
        value=ev.value(),
        headers=ev.headers(),
        timestamp=None,
        topic="t",
        partition=0,
        offset=offset,
    )


async def test_the_urgent_part_is_committed_before_the_rest_is_applied(db_url: str) -> None:
    settings = make_settings("127.0.0.1:9", db_url)
    engine = create_engine(db_url)
    log: list[Any] = []

    async def handler(conn: AsyncConnection, events: Sequence[CloudEvent]) -> None:
        log.append([e.id for e in events])

    runner = ConsumerRunner(
        settings=settings,
        engine=engine,
        topics=["t"],
        group_id="t-urgent",
        handler=handler,
        source="t",
        after_commit=lambda: log.append("committed"),
        urgent=_urgent,
    )
    views = [_ev(f"visitor-{i}") for i in range(20)]
    demo = _ev("dana@example.com", "demo")
    batch = [*views[:10], demo, *views[10:]]
    try:
        await runner._process([_record(e, i) for i, e in enumerate(batch)])
        assert log == [[demo.id], "committed", [e.id for e in views]]

        # without an urgent event (or without the option) the batch stays one transaction
        log.clear()
        again = [_ev(f"visitor-{i}") for i in range(5)]
        await runner._process([_record(e, i) for i, e in enumerate(again)])
        assert log == [[e.id for e in again]]
    finally:
        await engine.dispose()


def test_what_each_service_treats_as_urgent() -> None:
    from services.routing.handlers import is_urgent as routing_urgent
    from services.scoring.handlers import is_urgent as scoring_urgent
    from shared.events import InteractionType, LeadType

    def typed(t: str) -> CloudEvent:
        return CloudEvent(type=t, source="t", data={}, key="k")

    # scoring: what a person does on purpose, not page views, identify calls or erasures
    assert scoring_urgent(typed(InteractionType.FORM_SUBMITTED))
    assert scoring_urgent(typed(InteractionType.AD_LEAD_RECEIVED))
    assert not scoring_urgent(typed(InteractionType.TRACKED))
    assert not scoring_urgent(typed(InteractionType.IDENTIFIED))
    assert not scoring_urgent(typed(InteractionType.ERASURE_REQUESTED))
    # routing: a lead to assign, not the re-scores of page views
    assert routing_urgent(typed(LeadType.QUALIFIED))
    assert not routing_urgent(typed(LeadType.SCORED))
