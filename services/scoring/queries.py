"""Lead queries, the read side: one lead, lists with cursors, timelines, sweep and rescore pages."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scoring.domain.model import Lead
from services.scoring.tables import identities, leads, timeline
from shared.db import is_sqlite
from shared.events import parse_time, rfc3339


class BadCursor(ValueError):
    """A pagination cursor that this service did not hand out."""


async def get_lead(conn: AsyncConnection, lead_id: str) -> Lead | None:
    """One lead by id, following a merge to the surviving lead."""
    state = (await conn.execute(select(leads.c.state).where(leads.c.id == lead_id))).scalar()
    if state is None:
        survivor = (
            await conn.execute(
                select(identities.c.lead_id).where(
                    identities.c.kind == "merged", identities.c.value == lead_id
                )
            )
        ).scalar()
        if survivor is None:
            return None
        state = (await conn.execute(select(leads.c.state).where(leads.c.id == survivor))).scalar()
    return Lead.from_state(state) if state is not None else None


def encode_cursor(*parts: str) -> str:
    """An opaque pagination cursor."""
    return base64.urlsafe_b64encode(orjson.dumps(list(parts))).decode().rstrip("=")


def decode_cursor(cursor: str, n: int) -> list[str]:
    """The parts of a cursor; :class:`BadCursor` when it is not one of ours."""
    try:
        parts = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError as exc:
        raise BadCursor("cursor is not valid") from exc
    if (
        not isinstance(parts, list)
        or len(parts) != n
        or not all(isinstance(p, str) and "\x00" not in p for p in parts)
    ):
        raise BadCursor("cursor is not valid")
    return parts


async def list_leads(
    conn: AsyncConnection,
    *,
    email: str | None = None,
    stage: str | None = None,
    temperature: str | None = None,
    status: str | None = None,
    owner: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Lead], str | None]:
    """Leads newest first, filtered; returns the page and the next cursor."""
    query = select(leads.c.state, leads.c.created_at, leads.c.id)
    if email:
        query = query.where(
            leads.c.id.in_(
                select(identities.c.lead_id).where(
                    identities.c.kind == "email", identities.c.value == email
                )
            )
        )
    for column, value in (
        (leads.c.stage, stage),
        (leads.c.temperature, temperature),
        (leads.c.status, status),
        (leads.c.owner_id, owner),
    ):
        if value is not None:
            query = query.where(column == value)
    if cursor:
        at_text, last_id = decode_cursor(cursor, 2)
        try:
            at = parse_time(at_text)
        except ValueError as exc:
            raise BadCursor("cursor is not valid") from exc
        query = query.where(
            or_(leads.c.created_at < at, and_(leads.c.created_at == at, leads.c.id < last_id))
        )
    query = query.order_by(leads.c.created_at.desc(), leads.c.id.desc()).limit(limit + 1)
    rows = (await conn.execute(query)).all()
    page = [Lead.from_state(r.state) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(rfc3339(last.created_at), last.id)
    return page, next_cursor


async def lead_timeline(
    conn: AsyncConnection, lead_id: str, *, limit: int = 100, cursor: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """The lead's timeline, oldest first."""
    query = select(timeline).where(timeline.c.lead_id == lead_id)
    if cursor:
        (after,) = decode_cursor(cursor, 1)
        if not after.isdigit():
            raise BadCursor("cursor is not valid")
        query = query.where(timeline.c.id > int(after))
    rows = (await conn.execute(query.order_by(timeline.c.id).limit(limit + 1))).all()
    items = [
        {
            "at": rfc3339(r.at),
            "kind": r.kind,
            "type": r.type,
            "event_id": r.event_id,
            "data": r.data,
        }
        for r in rows[:limit]
    ]
    next_cursor = encode_cursor(str(rows[limit - 1].id)) if len(rows) > limit else None
    return items, next_cursor


async def leads_to_sweep(
    conn: AsyncConnection, after_id: str, limit: int, active_before: datetime | None = None
) -> list[Lead]:
    """Leads whose engagement can still decay, in id order (skipping ones another replica holds).

    A cold anonymous lead (no email, no phone) is left out: its decay is news to no one (only
    a temperature change is announced, and it has none left to lose), and most leads are such
    visitors (review M7). Its score is brought up to date by its next interaction. So is a
    lead active since ``active_before``: scored that recently, it has nothing to lose yet, and
    locking it would make the consumer wait for the sweep (a demo request's lead, for one).
    """
    known = or_(leads.c.email.is_not(None), leads.c.phone.is_not(None))
    recent = []
    if active_before is not None:
        last = leads.c.last_activity_at
        recent.append(or_(last.is_(None), last < active_before))
    query = (
        select(leads.c.state)
        .where(
            leads.c.id > after_id,
            or_(leads.c.temperature != "cold", and_(leads.c.engagement > 0, known)),
            *recent,
        )
        .order_by(leads.c.id)
        .limit(limit)
    )
    if not is_sqlite(conn):
        query = query.with_for_update(skip_locked=True)
    return [Lead.from_state(s) for (s,) in await conn.execute(query)]


async def all_lead_ids(conn: AsyncConnection, after_id: str, limit: int) -> list[str]:
    """Lead ids in order, a page at a time (for rescoring)."""
    rows = await conn.execute(
        select(leads.c.id).where(leads.c.id > after_id).order_by(leads.c.id).limit(limit)
    )
    return list(rows.scalars())


async def interactions_of(conn: AsyncConnection, lead_ids: Sequence[str]) -> dict[str, list[Any]]:
    """Stored interactions per lead, oldest first (what a rescore replays)."""
    out: dict[str, list[Any]] = {i: [] for i in lead_ids}
    if not lead_ids:
        return out
    rows = await conn.execute(
        select(timeline)
        .where(timeline.c.lead_id.in_(list(lead_ids)), timeline.c.kind == "interaction")
        .order_by(timeline.c.id)
    )
    for r in rows:
        out[r.lead_id].append(r)
    return out
