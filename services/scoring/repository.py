"""Lead storage, the write side, on an AsyncConnection (SQLAlchemy Core; PostgreSQL and SQLite).

Reads and writes are set-based: a consumer batch loads all its leads with one SELECT and
writes them back with one bulk statement per table, and its lead events go to the outbox in
the same transaction (:meth:`LeadRepository.commit`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import bindparam, delete, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scoring.domain.model import Lead
from services.scoring.events import SOURCE
from services.scoring.tables import erased_emails, identities, leads, timeline
from shared.db import insert_for, is_sqlite
from shared.events import CloudEvent, utcnow
from shared.messaging_tables import outbox
from shared.outbox import enqueue


def _row(lead: Lead, now: datetime, *, state: bool = True) -> dict[str, Any]:
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
        "state": lead.to_state() if state else None,
        "first_source": (lead.first_touch or {}).get("source"),
        "first_campaign": (lead.first_touch or {}).get("campaign"),
        "first_form_id": lead.first_form_id,
        "mql_at": lead.mql_at,
        "qualified_at": lead.qualified_at,
    }


def dumps(value: Any) -> str:
    """JSON text for a JSON column (orjson; the stdlib for what orjson refuses, such as
    non-string keys, so nothing that was stored before is refused now)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


#: The columns of a lead row, in the order of the ``unnest`` statements below.
_LEAD_COLUMNS = (
    ("id", "text"),
    ("key", "text"),
    ("email", "text"),
    ("phone", "text"),
    ("status", "text"),
    ("stage", "text"),
    ("temperature", "text"),
    ("score_total", "integer"),
    ("fit", "integer"),
    ("engagement", "integer"),
    ("owner_id", "text"),
    ("created_at", "timestamptz"),
    ("last_activity_at", "timestamptz"),
    ("updated_at", "timestamptz"),
    ("state", "jsonb"),
    ("first_source", "text"),
    ("first_campaign", "text"),
    ("first_form_id", "text"),
    ("mql_at", "timestamptz"),
    ("qualified_at", "timestamptz"),
)
_UNNEST_LEADS = "unnest({})".format(
    ", ".join(f"${n}::{t}[]" for n, (_, t) in enumerate(_LEAD_COLUMNS, 1))
)
_LEAD_NAMES = ", ".join(c for c, _ in _LEAD_COLUMNS)
_INSERT_LEADS = f"INSERT INTO {leads.name} ({_LEAD_NAMES}) SELECT * FROM {_UNNEST_LEADS}"
_UPDATE_LEADS = (
    f"UPDATE {leads.name} AS l SET "
    + ", ".join(f"{c} = v.{c}" for c, _ in _LEAD_COLUMNS if c != "id")
    + f" FROM {_UNNEST_LEADS} AS v({_LEAD_NAMES}) WHERE l.id = v.id"
)
_FIND_IDENTITIES = (
    f"SELECT i.kind, i.value, i.lead_id FROM {identities.name} AS i"
    " JOIN unnest($1::text[], $2::text[]) AS w(kind, value)"
    " ON i.kind = w.kind AND i.value = w.value"
)
_ERASED_AMONG = f"SELECT email_hash FROM {erased_emails.name} WHERE email_hash = ANY($1::text[])"
_SELECT = f"SELECT state::text FROM {leads.name} WHERE id = ANY($1::text[]) ORDER BY id"
_SELECT_LOCKED = _SELECT + " FOR UPDATE"
_INSERT_IDENTITIES = (
    f"INSERT INTO {identities.name} (kind, value, lead_id)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[])"
)
# WITH ORDINALITY … ORDER BY: ids are assigned in the order the entries were made
_INSERT_TIMELINE = (
    f"INSERT INTO {timeline.name} (lead_id, at, kind, type, event_id, data)"
    " SELECT lead_id, at, kind, type, event_id, data FROM unnest($1::text[],"
    " $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::jsonb[])"
    " WITH ORDINALITY AS t(lead_id, at, kind, type, event_id, data, n) ORDER BY n"
)
# shared.outbox.enqueue's rows, written set-based: same columns, same skip of a known event
# id, ids (the relay's publishing order) in the order of the events.
_INSERT_OUTBOX = (
    f"INSERT INTO {outbox.name} (source, topic, event_id, ce_type, ce_source, ce_subject,"
    " ce_time, partition_key, extensions, data, created_at, sent_at, available_at)"
    " SELECT $1::text, $2::text, event_id, ce_type, ce_source, ce_subject, ce_time,"
    " partition_key, extensions, data, $3::timestamptz, NULL, NULL FROM unnest($4::text[],"
    " $5::text[], $6::text[], $7::text[], $8::timestamptz[], $9::text[], $10::jsonb[],"
    " $11::jsonb[]) WITH ORDINALITY AS e(event_id, ce_type, ce_source, ce_subject, ce_time,"
    " partition_key, extensions, data, n) ORDER BY n ON CONFLICT (event_id) DO NOTHING"
)


def _shifted(statement: str, by: int) -> str:
    return re.sub(r"\$(\d+)", lambda m: f"${int(m.group(1)) + by}", statement)


#: Everything a batch writes (new leads, changed leads, identities, timeline, outbox), as one
#: statement of data-modifying CTEs: one round trip instead of five, which is what a loaded
#: machine makes expensive (each one waits for both processes to be scheduled).
_WRITE_PARTS = (
    (_INSERT_LEADS, len(_LEAD_COLUMNS)),
    (_UPDATE_LEADS, len(_LEAD_COLUMNS)),
    (_INSERT_IDENTITIES, 3),
    (_INSERT_TIMELINE, 6),
    (_INSERT_OUTBOX, 11),
)
_WRITE_ALL = (
    "WITH "
    + ", ".join(
        f"w{i} AS ({_shifted(sql, sum(n for _, n in _WRITE_PARTS[:i]))})"
        for i, (sql, _) in enumerate(_WRITE_PARTS)
    )
    + " SELECT 1"
)


def _columns(rows: Iterable[Lead], now: datetime) -> list[list[Any]]:
    """Leads as one array per column (:data:`_LEAD_COLUMNS`), for the ``unnest`` statements."""
    leads_ = list(rows)
    dicts = [_row(lead, now, state=False) for lead in leads_]
    return [
        [state_json(lead) for lead in leads_] if name == "state" else [d[name] for d in dicts]
        for name, _ in _LEAD_COLUMNS
    ]


def state_json(lead: Lead) -> str:
    """``dumps(lead.to_state())``, with orjson serializing the dataclass directly (times as
    RFC 3339 with ``Z``, as :meth:`Lead.to_state` writes them)."""
    # orjson writes plain tuples as arrays but not named tuples: the hits are handed to it as
    # tuples for the call (a ``default`` hook called for each hit cost about as much again as
    # the whole encoding)
    hits = lead.hits
    try:
        lead.hits = list(map(tuple, hits))  # type: ignore[arg-type]
        return orjson.dumps(lead, option=orjson.OPT_UTC_Z).decode()
    except TypeError:
        lead.hits = hits
        return json.dumps(lead.to_state())
    finally:
        lead.hits = hits


async def _run(conn: AsyncConnection, statement: str, *args: Any) -> None:
    """A pre-built statement with positional (``$n``) arguments, as the driver takes them:
    no SQLAlchemy compilation nor per-row parameter processing, errors wrapped as usual
    (a duplicate identity is an :class:`sqlalchemy.exc.IntegrityError`)."""
    await conn.exec_driver_sql(statement, args)


def _outbox_args(topic: str, events: Sequence[CloudEvent]) -> list[Any]:
    """:func:`shared.outbox.enqueue`'s rows for the lead events, as :data:`_INSERT_OUTBOX`
    takes them."""
    return [
        SOURCE,
        topic,
        utcnow(),
        [e.id for e in events],
        [e.type for e in events],
        [e.source for e in events],
        [e.subject for e in events],
        [e.time for e in events],
        [e.key for e in events],
        [dumps(dict(e.extensions)) for e in events],
        [dumps(dict(e.data)) for e in events],
    ]


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
        if not is_sqlite(self.conn):
            found = await self.conn.exec_driver_sql(
                _FIND_IDENTITIES, ([k for k, _ in wanted], [v for _, v in wanted])
            )
            return {(r.kind, r.value): r.lead_id for r in found}
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
        if missing and not is_sqlite(self.conn):
            # the state as JSON text, parsed by orjson (the driver's codec uses the stdlib)
            rows = await self.conn.exec_driver_sql(_SELECT_LOCKED if lock else _SELECT, (missing,))
            for (state,) in rows:
                lead = Lead.from_state(orjson.loads(state))
                self.loaded[lead.id] = lead
            missing = []
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
        if events and self.topic is None:
            raise RuntimeError("this LeadRepository was made without a topic to publish on")
        if not is_sqlite(self.conn):
            await self.flush(now, merges=merges, events=events)  # the events in the same trip
        else:
            await self.flush(now, merges=merges)
            if events:
                await enqueue(self.conn, SOURCE, str(self.topic), events)

    async def flush(
        self,
        now: datetime,
        *,
        merges: Sequence[tuple[str, str]] = (),
        events: Sequence[CloudEvent] = (),
    ) -> None:
        """Write everything back with bulk statements; ``merges`` are (from, into) lead ids.
        ``events`` (PostgreSQL only, see :meth:`commit`) go to the outbox with the rows."""
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
        if not is_sqlite(conn):
            await self._write_pg(now, events)
        else:
            await self._write_generic(now)
        self._new.clear()
        self._dirty.clear()
        self._deleted.clear()
        self._identities.clear()
        self._dropped.clear()
        self._pending.clear()
        self._timeline.clear()

    async def _write_pg(self, now: datetime, events: Sequence[CloudEvent]) -> None:
        """The hot path on PostgreSQL: one pre-built statement (:data:`_WRITE_ALL`) taking an
        array per column, JSON encoded with orjson: no SQLAlchemy compilation per batch, no
        per-row parameter processing, one round trip."""
        fresh = [r for r in self._identities if not r.get("dropped")]
        if not (self._new or self._dirty or fresh or self._timeline or events):
            return
        tl = self._timeline
        await _run(
            self.conn,
            _WRITE_ALL,
            *_columns((self.loaded[i] for i in sorted(self._new)), now),
            *_columns((self.loaded[i] for i in sorted(self._dirty)), now),
            [r["kind"] for r in fresh],
            [r["value"] for r in fresh],
            [r["lead_id"] for r in fresh],
            [r["lead_id"] for r in tl],
            [r["at"] for r in tl],
            [r["kind"] for r in tl],
            [r["type"] for r in tl],
            [r["event_id"] for r in tl],
            [dumps(r["data"]) for r in tl],
            *_outbox_args(self.topic or "", events),
        )

    async def _write_generic(self, now: datetime) -> None:
        """Inserts and updates through SQLAlchemy (SQLite)."""
        conn = self.conn
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


async def erased_among(conn: AsyncConnection, hashes: Iterable[str]) -> set[str]:
    """Which of these identifier hashes belong to erased people."""
    wanted = sorted(set(hashes))
    if not wanted:
        return set()
    if not is_sqlite(conn):
        return {h for (h,) in await conn.exec_driver_sql(_ERASED_AMONG, (wanted,))}
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
