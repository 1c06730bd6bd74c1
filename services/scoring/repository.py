"""Lead storage on an AsyncConnection (SQLAlchemy Core; PostgreSQL and SQLite alike).

Reads and writes are set-based: a consumer batch loads all its leads with one SELECT and
writes them back with one bulk statement per table.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import and_, bindparam, delete, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scoring.domain.model import Lead
from services.scoring.tables import erased_emails, identities, leads, timeline
from shared.db import insert_for, is_sqlite
from shared.events import parse_time, rfc3339


class BadCursor(ValueError):
    """A pagination cursor that this service did not hand out."""


def _row(lead: Lead, now: datetime) -> dict[str, Any]:
    return {
        "id": lead.id,
        "key": lead.key,
        "email": lead.email,
        "phone": lead.phone,
        "status": lead.status,
        "stage": lead.stage,
        "temperature": lead.temperature,
        "score_total": lead.total,
        "fit": lead.fit,
        "engagement": lead.engagement,
        "owner_id": (lead.owner or {}).get("id"),
        "created_at": lead.created_at,
        "last_activity_at": lead.last_activity_at,
        "updated_at": now,
        "state": lead.to_state(),
        "first_source": (lead.first_touch or {}).get("source"),
        "first_campaign": (lead.first_touch or {}).get("campaign"),
        "first_form_id": lead.first_form_id,
        "mql_at": lead.mql_at,
        "qualified_at": lead.qualified_at,
    }


class LeadRepository:
    """The leads of one transaction: load many at once, remember what to write back."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.loaded: dict[str, Lead] = {}
        self._new: set[str] = set()
        self._dirty: set[str] = set()
        self._deleted: set[str] = set()
        self._identities: list[dict[str, Any]] = []
        self._timeline: list[dict[str, Any]] = []

    async def find_identities(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Lead ids of the given (kind, value) identifiers, in one SELECT."""
        wanted = list(dict.fromkeys(pairs))
        if not wanted:
            return {}
        out: dict[tuple[str, str], str] = {}
        for chunk in _chunks(wanted, 500):
            rows = await self.conn.execute(
                select(identities.c.kind, identities.c.value, identities.c.lead_id).where(
                    tuple_(identities.c.kind, identities.c.value).in_(chunk)
                )
            )
            out.update({(r.kind, r.value): r.lead_id for r in rows})
        return out

    async def load(self, ids: Iterable[str], *, lock: bool = True) -> dict[str, Lead]:
        """Load leads by id (locked for update on PostgreSQL, in id order against deadlocks)."""
        missing = sorted({i for i in ids if i not in self.loaded})
        for chunk in _chunks(missing, 500):
            query = select(leads.c.state).where(leads.c.id.in_(chunk)).order_by(leads.c.id)
            if lock and not is_sqlite(self.conn):
                query = query.with_for_update()
            for (state,) in await self.conn.execute(query):
                lead = Lead.from_state(state)
                self.loaded[lead.id] = lead
        return {i: self.loaded[i] for i in ids if i in self.loaded}

    def add(self, lead: Lead) -> None:
        """A lead created in this transaction."""
        self.loaded[lead.id] = lead
        self._new.add(lead.id)

    def touch(self, lead: Lead) -> None:
        """A loaded lead that changed."""
        if lead.id not in self._new:
            self._dirty.add(lead.id)

    def remove(self, lead_id: str) -> None:
        """A lead merged away."""
        self._deleted.add(lead_id)
        self._new.discard(lead_id)
        self._dirty.discard(lead_id)

    def add_identity(self, kind: str, value: str, lead_id: str) -> None:
        """A new identifier for a lead (a concurrent insert of the same one fails the batch)."""
        self._identities.append({"kind": kind, "value": value, "lead_id": lead_id})

    def add_timeline(
        self,
        lead_id: str,
        at: datetime,
        kind: str,
        type_: str,
        event_id: str | None,
        data: dict[str, Any],
    ) -> None:
        """An entry of the lead's timeline."""
        self._timeline.append(
            {
                "lead_id": lead_id,
                "at": at,
                "kind": kind,
                "type": type_,
                "event_id": event_id,
                "data": data,
            }
        )

    async def flush(self, now: datetime, *, merges: Sequence[tuple[str, str]] = ()) -> None:
        """Write everything back with bulk statements; ``merges`` are (from, into) lead ids."""
        conn = self.conn
        into = dict(merges)
        for rows in (self._identities, self._timeline):
            for row in rows:  # rows queued for a lead merged away later in the same batch
                while row["lead_id"] in into:
                    row["lead_id"] = into[row["lead_id"]]
        if self._deleted:
            await conn.execute(delete(leads).where(leads.c.id.in_(sorted(self._deleted))))
        for old, new in merges:
            await conn.execute(
                update(identities).where(identities.c.lead_id == old).values(lead_id=new)
            )
            await conn.execute(
                update(timeline).where(timeline.c.lead_id == old).values(lead_id=new)
            )
        if self._new:
            await conn.execute(
                insert_for(conn)(leads), [_row(self.loaded[i], now) for i in sorted(self._new)]
            )
        if self._dirty:
            rows = [{**_row(self.loaded[i], now), "b_id": i} for i in sorted(self._dirty)]
            stmt = (
                update(leads)
                .where(leads.c.id == bindparam("b_id"))
                .values({c.name: bindparam(c.name) for c in leads.columns if c.name != "id"})
            )
            await conn.execute(stmt, rows)
        if self._identities:
            await conn.execute(insert_for(conn)(identities), self._identities)
        if self._timeline:
            await conn.execute(insert_for(conn)(timeline), self._timeline)
        self._new.clear()
        self._dirty.clear()
        self._deleted.clear()
        self._identities.clear()
        self._timeline.clear()


async def erased_among(conn: AsyncConnection, hashes: Iterable[str]) -> set[str]:
    """Which of these email hashes belong to erased people."""
    wanted = sorted(set(hashes))
    if not wanted:
        return set()
    rows = await conn.execute(
        select(erased_emails.c.email_hash).where(erased_emails.c.email_hash.in_(wanted))
    )
    return set(rows.scalars())


async def forget_erased(conn: AsyncConnection, hashes: Iterable[str]) -> None:
    """A new consent lifts the block on re-creating an erased email."""
    wanted = sorted(set(hashes))
    if wanted:
        await conn.execute(delete(erased_emails).where(erased_emails.c.email_hash.in_(wanted)))


async def erase(
    conn: AsyncConnection, lead_id: str, hashes: Iterable[str], now: datetime, scrub: Any
) -> None:
    """Drop the lead's identifiers, scrub its stored interactions, remember the email hashes."""
    await conn.execute(delete(identities).where(identities.c.lead_id == lead_id))
    rows = (
        await conn.execute(
            select(timeline.c.id, timeline.c.data).where(timeline.c.lead_id == lead_id)
        )
    ).all()
    if rows:
        await conn.execute(
            update(timeline)
            .where(timeline.c.id == bindparam("b_id"))
            .values(data=bindparam("data")),
            [{"b_id": r.id, "data": scrub(r.data)} for r in rows],
        )
    wanted = sorted(set(hashes))
    if wanted:
        await conn.execute(
            insert_for(conn)(erased_emails).on_conflict_do_nothing(index_elements=["email_hash"]),
            [{"email_hash": h, "erased_at": now} for h in wanted],
        )


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
    if not isinstance(parts, list) or len(parts) != n or not all(isinstance(p, str) for p in parts):
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


async def leads_to_sweep(conn: AsyncConnection, after_id: str, limit: int) -> list[Lead]:
    """Leads whose engagement can still decay, in id order (skipping ones another replica holds)."""
    query = (
        select(leads.c.state)
        .where(leads.c.id > after_id, or_(leads.c.engagement > 0, leads.c.temperature != "cold"))
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


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
