"""Lead storage, the write side, on an AsyncConnection (SQLAlchemy Core; PostgreSQL and SQLite).

Reads and writes are set-based: a consumer batch loads all its leads with one SELECT and
writes them back with one bulk statement per table, and its lead events go to the outbox in
the same transaction (:meth:`LeadRepository.commit`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scoring.domain.model import Lead
from services.scoring.events import SOURCE
from services.scoring.tables import erased_emails, identities, leads, timeline
from shared.db import insert_for, is_sqlite
from shared.events import CloudEvent
from shared.outbox import enqueue


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
    """The leads of one transaction: load many at once, remember what to write back.

    ``topic`` is where :meth:`commit` publishes the lead events (``leadflow.leads``).
    """

    def __init__(self, conn: AsyncConnection, topic: str | None = None) -> None:
        self.conn = conn
        self.topic = topic
        self.loaded: dict[str, Lead] = {}
        self._new: set[str] = set()
        self._dirty: set[str] = set()
        self._deleted: set[str] = set()
        self._identities: list[dict[str, Any]] = []
        self._dropped: list[dict[str, Any]] = []
        self._pending: dict[tuple[str, str], dict[str, Any]] = {}
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
        row = {"kind": kind, "value": value, "lead_id": lead_id}
        self._identities.append(row)
        self._pending[(kind, value)] = row

    def drop_identity(self, kind: str, value: str, lead_id: str) -> None:
        """An identifier the lead no longer keeps (its lists are bounded): forget its row."""
        pending = self._pending.pop((kind, value), None)
        if pending is not None:  # added in this batch, not stored yet: just don't insert it
            pending["dropped"] = True
        else:
            self._dropped.append({"kind": kind, "value": value, "lead_id": lead_id})

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

    async def commit(
        self,
        now: datetime,
        events: Sequence[CloudEvent],
        *,
        merges: Sequence[tuple[str, str]] = (),
    ) -> None:
        """End the unit of work: write the leads back (:meth:`flush`) and put their events in
        the outbox, in the caller's transaction."""
        await self.flush(now, merges=merges)
        if events:
            if self.topic is None:
                raise RuntimeError("this LeadRepository was made without a topic to publish on")
            await enqueue(self.conn, SOURCE, self.topic, events)

    async def flush(self, now: datetime, *, merges: Sequence[tuple[str, str]] = ()) -> None:
        """Write everything back with bulk statements; ``merges`` are (from, into) lead ids."""
        conn = self.conn
        into = dict(merges)
        for rows in (self._identities, self._dropped, self._timeline):
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
        for chunk in _chunks(self._dropped, 500):  # before inserts: one may come back
            keys = [(r["kind"], r["value"], r["lead_id"]) for r in chunk]
            await conn.execute(
                delete(identities).where(
                    tuple_(identities.c.kind, identities.c.value, identities.c.lead_id).in_(keys)
                )
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
        fresh = [r for r in self._identities if not r.get("dropped")]
        if fresh:
            await conn.execute(insert_for(conn)(identities), fresh)
        if self._timeline:
            await conn.execute(insert_for(conn)(timeline), self._timeline)
        self._new.clear()
        self._dirty.clear()
        self._deleted.clear()
        self._identities.clear()
        self._dropped.clear()
        self._pending.clear()
        self._timeline.clear()


async def erased_among(conn: AsyncConnection, hashes: Iterable[str]) -> set[str]:
    """Which of these identifier hashes belong to erased people."""
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
    await remember_erased(conn, hashes, now)


async def remember_erased(conn: AsyncConnection, hashes: Iterable[str], now: datetime) -> None:
    """Keep these identifier hashes: such a person is not re-created without a new consent."""
    wanted = sorted(set(hashes))
    if wanted:
        await conn.execute(
            insert_for(conn)(erased_emails).on_conflict_do_nothing(index_elements=["email_hash"]),
            [{"email_hash": h, "erased_at": now} for h in wanted],
        )


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
