"""Admin HTTP API over a service's dead letters: list, show and replay them.

Every service includes this router; each sees the ``deadletters`` table of its own database.
Replay is idempotent (see :mod:`shared.deadletters`): the first call puts the event back on its
topic through the outbox, later calls answer the same replay id and publish nothing.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from shared.auth import AdminAuth
from shared.deadletters import ReplayError, get_deadletter, list_deadletters, replay
from shared.http import RuntimeDep
from shared.problems import Problem


class DeadLetterOut(BaseModel):
    """A dead letter's summary: where it came from and why it was parked."""

    id: int
    kind: str
    source: str
    consumer: str | None
    topic: str | None
    kafka_partition: int | None
    kafka_offset: int | None
    event_id: str | None
    ce_type: str | None
    reason: str
    created_at: str
    replayed_at: str | None
    replay_event_id: str | None


class HeaderOut(BaseModel):
    name: str
    value: str | None
    encoding: str | None = None


class DeadLetterDetailOut(DeadLetterOut):
    """A dead letter with the record as it arrived (text, or base64 per ``*_encoding``)."""

    dedupe_key: str
    key: str | None
    key_encoding: str | None
    headers: list[HeaderOut]
    value: str | None
    value_encoding: str | None


class DeadLetterPageOut(BaseModel):
    items: list[DeadLetterOut]
    next_after: int | None


class ReplayOut(BaseModel):
    id: int
    replay_event_id: str


router = APIRouter(prefix="/v1/deadletters", tags=["operations"], dependencies=[AdminAuth])

# Ids are database keys: bounded so that a huge number is a 422, not a driver overflow (500).
DeadLetterId = Annotated[int, Path(ge=1, le=2**62)]


@router.get("", response_model=DeadLetterPageOut)
async def list_dead_letters(
    runtime: RuntimeDep,
    include_replayed: bool = False,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Dead letters in id order, open ones only unless ``include_replayed``; page with ``after``."""
    items = await list_deadletters(
        runtime.engine, include_replayed=include_replayed, limit=limit, after=after
    )
    return {"items": items, "next_after": items[-1]["id"] if len(items) == limit else None}


@router.get("/{dead_id}", response_model=DeadLetterDetailOut)
async def show_dead_letter(runtime: RuntimeDep, dead_id: DeadLetterId) -> dict[str, Any]:
    """One dead letter with its key, headers and value (text, or base64 per ``*_encoding``)."""
    item = await get_deadletter(runtime.engine, dead_id)
    if item is None:
        raise Problem(404, f"no dead letter {dead_id}")
    return item


@router.post("/{dead_id}/replay", response_model=ReplayOut)
async def replay_dead_letter(runtime: RuntimeDep, dead_id: DeadLetterId) -> dict[str, Any]:
    """Send the dead letter back to its topic (once, however often this is called)."""
    try:
        replay_id = await replay(runtime.engine, dead_id)
    except LookupError:
        raise Problem(404, f"no dead letter {dead_id}") from None
    except ReplayError as exc:
        raise Problem(409, str(exc)) from None
    runtime.relay.wake()
    return {"id": dead_id, "replay_event_id": replay_id}
