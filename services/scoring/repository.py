"""Lead storage, the write side, on an AsyncConnection (SQLAlchemy Core; PostgreSQL and SQLite).

Reads and writes are set-based: a consumer batch loads all its leads with one SELECT and
writes them back with one bulk statement per table, and its lead events go to the outbox in
the same transaction (:meth:`LeadRepository.commit`).
"""

from __future__ import annotations

import json
from collections.abc import Coroutine, Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import bindparam, delete, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scoring.domain.model import Hit, Lead, hits_added
from services.scoring.events import SOURCE
from services.scoring.lead_cache import LeadCache
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
    ("state", "json"),
    ("first_source", "text"),
    ("first_campaign", "text"),
    ("first_form_id", "text"),
    ("mql_at", "timestamptz"),
    ("qualified_at", "timestamptz"),
)
_LEAD_NAMES = ", ".join(c for c, _ in _LEAD_COLUMNS)


def _rows_from(
    param: int,
    columns: Sequence[tuple[str, str]],
    documents: Sequence[tuple[int, str, str]] = (),
    *,
    alias: str = "v",
    ordered: bool = False,
) -> str:
    """Rows whose plain columns travel as one JSON array of objects (``$param``) and whose JSON
    documents (``documents``: parameter, column, ``json`` or ``jsonb``) as one array each,
    zipped row by row.

    A document inside the JSON parameter would be parsed twice by PostgreSQL (as part of the
    array, then as its own jsonb), which cost more than the driver's per-element checks saved.
    ``ordered``: each row's position as ``n`` (``ORDER BY n`` keeps the order the rows were
    made in, which is the order their ids are assigned).
    """
    typed = ", ".join(f"{c} {t}" for c, t in columns)
    arrays = "".join(f", unnest(${n}::{kind}[])" for n, _, kind in documents)
    names = [c for c, _ in columns] + [c for _, c, _ in documents] + (["n"] if ordered else [])
    ordinality = " WITH ORDINALITY" if ordered else ""
    return (
        f"ROWS FROM (json_to_recordset(${param}::json) AS ({typed}){arrays}){ordinality}"
        f" AS {alias}({', '.join(names)})"
    )


# The lookups by a list of keys probe the primary key once per key, whatever the plan: as
# ``id = ANY($1)`` or a join with ``unnest``, PostgreSQL kept a generic plan made while the
# table was young, a sequential scan, as it grew (``LIMIT 1`` and ``FOR UPDATE`` keep the
# subquery from being turned into such a join).
_FIND_IDENTITIES = (
    "SELECT i.kind, i.value, i.lead_id FROM unnest($1::text[], $2::text[]) AS w(kind, value)"
    f" CROSS JOIN LATERAL (SELECT kind, value, lead_id FROM {identities.name}"
    " WHERE kind = w.kind AND value = w.value LIMIT 1) AS i"
)
_ERASED_AMONG = f"SELECT email_hash FROM {erased_emails.name} WHERE email_hash = ANY($1::text[])"
_STATES = (
    "SELECT l.state::text FROM unnest($1::text[]) AS k(id) CROSS JOIN LATERAL"
    f" (SELECT state FROM {leads.name} WHERE id = k.id {{}}) AS l"
)
_SELECT = _STATES.format("LIMIT 1")
# Rows are locked in the order of the ids given (sorted: one lock order, no deadlock).
_SELECT_LOCKED = _STATES.format("FOR UPDATE")
#: A row version as :class:`LeadCache` compares them: the writing transaction and the place.
_VERSION = "{0}xmin::text || ',' || {0}ctid::text"
#: The locked rows' versions, and the state only of those whose version is not the one given
#: (the one this process wrote, :class:`LeadCache`): a state not asked for is not detoasted.
_SELECT_VERSIONED = (
    "SELECT k.id, CASE WHEN l.version = k.known THEN NULL ELSE l.state::text END AS state"
    " FROM unnest($1::text[], $2::text[]) AS k(id, known) CROSS JOIN LATERAL"
    f" (SELECT {_VERSION.format('')} AS version, state FROM {leads.name} WHERE id = k.id"
    " FOR UPDATE) AS l"
)
#: A lead row's columns but its state, which travels as a document (see :func:`_rows_from`).
_LEAD_PLAIN = tuple((c, t) for c, t in _LEAD_COLUMNS if c != "state")
_TIMELINE_PLAIN = (
    ("lead_id", "text"),
    ("at", "timestamptz"),
    ("kind", "text"),
    ("type", "text"),
    ("event_id", "text"),
)
_TIMELINE_NAMES = "lead_id, at, kind, type, event_id, data"
_OUTBOX_PLAIN = (
    ("event_id", "text"),
    ("ce_type", "text"),
    ("ce_source", "text"),
    ("ce_subject", "text"),
    ("ce_time", "timestamptz"),
    ("partition_key", "text"),
)
_OUTBOX_DOCUMENTS = [(12, "extensions", "jsonb"), (13, "data", "jsonb")]
_OUTBOX_NAMES = "event_id, ce_type, ce_source, ce_subject, ce_time, partition_key, extensions, data"

#: Everything a batch writes (new leads, changed leads, identities, timeline, outbox), as one
#: statement of data-modifying CTEs: one round trip instead of five, which is what a loaded
#: machine makes expensive (each one waits for both processes to be scheduled). Each table's
#: plain columns travel as one JSON parameter, encoded by orjson in one call: as an array per
#: column, the driver checked and encoded every element in turn (about an eighth of the
#: handler's CPU in batches of 50). Parameters: $1-$5 the rows of new leads, changed leads,
#: identities, timeline and outbox; $6, $7, $8 the outbox rows' source, topic and time; $9-$13
#: the documents: new and changed leads' states, timeline data, outbox extensions and data.
_WRITE_ALL = (
    f"WITH w0 AS (INSERT INTO {leads.name} ({_LEAD_NAMES})"
    f" SELECT {_LEAD_NAMES} FROM {_rows_from(1, _LEAD_PLAIN, [(9, 'state', 'json')])}"
    f" RETURNING id, {_VERSION.format('')} AS version),"
    f" w1 AS (UPDATE {leads.name} AS l SET "
    + ", ".join(f"{c} = v.{c}" for c, _ in _LEAD_COLUMNS if c != "id")
    + f" FROM {_rows_from(2, _LEAD_PLAIN, [(10, 'state', 'json')])} WHERE l.id = v.id"
    f" RETURNING l.id, {_VERSION.format('l.')} AS version),"
    f" w2 AS (INSERT INTO {identities.name} (kind, value, lead_id) SELECT kind, value, lead_id"
    f" FROM {_rows_from(3, (('kind', 'text'), ('value', 'text'), ('lead_id', 'text')))}),"
    f" w3 AS (INSERT INTO {timeline.name} ({_TIMELINE_NAMES}) SELECT {_TIMELINE_NAMES}"
    f" FROM {_rows_from(4, _TIMELINE_PLAIN, [(11, 'data', 'json')], alias='t', ordered=True)}"
    " ORDER BY n),"
    # shared.outbox.enqueue's rows, set-based: same columns, same skip of a known event id,
    # ids (the relay's publishing order) in the order of the events
    f" w4 AS (INSERT INTO {outbox.name} (source, topic, {_OUTBOX_NAMES}, created_at, sent_at,"
    f" available_at) SELECT $6::text, $7::text, {_OUTBOX_NAMES}, $8::timestamptz, NULL, NULL"
    f" FROM {_rows_from(5, _OUTBOX_PLAIN, _OUTBOX_DOCUMENTS, alias='e', ordered=True)}"
    " ORDER BY n ON CONFLICT (event_id) DO NOTHING)"
    # the versions the leads were written as, for the cache (LeadCache)
    " SELECT id, version FROM w0 UNION ALL SELECT id, version FROM w1"
)
#: orjson's options for those parameters: times as RFC 3339, a naive one taken as UTC (as the
#: driver took it).
_ROWS_JSON = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z


def _rows_json(rows: Iterable[dict[str, Any]]) -> str:
    return orjson.dumps(list(rows), option=_ROWS_JSON).decode()


def _lead_rows(rows: Sequence[Lead], now: datetime) -> str:
    """Leads' plain columns as :data:`_WRITE_ALL` takes them (their states go apart)."""
    return _rows_json(_row(lead, now, state=False) for lead in rows)


def state_json(lead: Lead) -> str:
    """``dumps(lead.to_state())``, with orjson serializing the dataclass directly (times as
    RFC 3339 with ``Z``, as :meth:`Lead.to_state` writes them), and the hits' JSON reused
    from the lead's last write (:func:`_hits_json`)."""
    hits = lead.hits
    try:
        encoded = _hits_json(hits)
        lead.hits = _HITS_MARK  # type: ignore[assignment]
        text = orjson.dumps(lead, option=orjson.OPT_UTC_Z)
    except TypeError:
        lead.hits = hits
        return json.dumps(lead.to_state())
    finally:
        lead.hits = hits
    return text.replace(_HITS_SLOT, b'"hits":' + encoded, 1).decode()


#: Stands for the hits while the rest of the lead is encoded: a NUL, which no stored text
#: holds (the contract refuses it, PostgreSQL's JSON cannot store it), so its slot is unique.
_HITS_MARK = "\x00"
_HITS_SLOT = b'"hits":"\\u0000"'

#: The JSON of each hit list last written, by the list's identity, with the hits it was made
#: from: a lead kept between batches (the consumer's cache) gains a hit or two per event, and
#: its hits were most of the JSON written for it (33 hits: 3 of 4.7 KB).
_HITS_JSON: dict[int, tuple[list[Hit], bytes]] = {}
_HITS_JSON_SIZE = 4096


def _hits_json(hits: list[Hit]) -> bytes:
    """``orjson.dumps(hits)`` as arrays (orjson writes plain tuples as arrays, not named
    tuples). Reused only for the same list whose first hits are still, one by one, the very
    hits it was made from (hits are immutable, so their JSON is too); hits added since are
    encoded and appended; any other change encodes the list again."""
    memo = _HITS_JSON.get(id(hits))
    if memo is not None:
        seen, done = memo
        added = hits_added(seen, hits)
        if added is not None:
            if not added:
                return done
            more = orjson.dumps(list(map(tuple, added)), option=orjson.OPT_UTC_Z)
            done = done[:-1] + b"," + more[1:] if seen else more
            seen.extend(added)
            _HITS_JSON[id(hits)] = (seen, done)
            return done
    done = orjson.dumps(list(map(tuple, hits)), option=orjson.OPT_UTC_Z)
    if len(_HITS_JSON) >= _HITS_JSON_SIZE:
        _HITS_JSON.clear()
    _HITS_JSON[id(hits)] = (list(hits), done)
    return done


def _outbox_rows(events: Sequence[CloudEvent]) -> str:
    """:func:`shared.outbox.enqueue`'s rows for the lead events, their plain columns as
    :data:`_WRITE_ALL` takes them."""
    return _rows_json(
        {
            "event_id": e.id,
            "ce_type": e.type,
            "ce_source": e.source,
            "ce_subject": e.subject,
            "ce_time": e.time,
            "partition_key": e.key,
        }
        for e in events
    )


class LeadRepository:
    """The leads of one transaction: load many at once, remember what to write back.

    ``topic`` is where :meth:`commit` publishes the lead events (``leadflow.leads``).
    """

    def __init__(
        self, conn: AsyncConnection, topic: str | None = None, cache: LeadCache | None = None
    ) -> None:
        self.conn = conn
        self.topic = topic
        #: leads this process wrote before (PostgreSQL only; see :class:`LeadCache`)
        self.cache = cache if cache is not None and not is_sqlite(conn) else None
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
        if missing and lock and self.cache is not None:
            await self._load_versioned(missing, self.cache)
            missing = []
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

    async def _load_versioned(self, ids: list[str], cache: LeadCache) -> None:
        """Lock and load leads (sorted ``ids``), taking from ``cache`` those whose row is still
        the version this process wrote, and reading the state of the others."""
        cached = cache.take(ids)
        known = [cached[i][0] if i in cached else None for i in ids]
        rows = await self.conn.exec_driver_sql(_SELECT_VERSIONED, (ids, known))
        hits = misses = 0
        for row in rows:
            state = row.state
            if state is None:
                lead = cached[row.id][1]
                hits += 1
            else:
                lead = Lead.from_state(orjson.loads(state))
                misses += 1
            self.loaded[lead.id] = lead
        cache.count(hits, misses)

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

    def can_write_ahead(self) -> bool:
        """Whether :meth:`write_ahead` may write what is pending now: on PostgreSQL, and only
        while nothing was deleted, dropped or merged (those are written by :meth:`flush`, whose
        deletes must come before the inserts)."""
        return not (is_sqlite(self.conn) or self._deleted or self._dropped)

    def write_ahead(self, now: datetime, events: Sequence[CloudEvent]) -> Coroutine[Any, Any, None]:
        """Take what is pending now (leads, identities, timeline, and ``events`` for the
        outbox), encoded at once and no longer pending, and return its write, ahead of the end
        of the unit of work and in the same transaction: the caller may go on changing leads
        while that write runs (see :meth:`services.scoring.handlers.ScoringHandler._apply`).
        Only where :meth:`can_write_ahead`."""
        if not self.can_write_ahead():
            raise RuntimeError("write_ahead after a delete, drop or merge: use flush")
        return self._send(self._take_rows(now, events))

    async def _write_pg(self, now: datetime, events: Sequence[CloudEvent]) -> None:
        """The hot path on PostgreSQL: one pre-built statement (:data:`_WRITE_ALL`) taking each
        table's rows as one JSON parameter (orjson): no SQLAlchemy compilation per batch, no
        per-row parameter processing, one round trip."""
        await self._send(self._take_rows(now, events))

    def _take_rows(self, now: datetime, events: Sequence[CloudEvent]) -> tuple[Any, ...] | None:
        """:data:`_WRITE_ALL`'s arguments for what is pending (None: nothing is), encoded now;
        the pending leads, identities and timeline are then no longer pending."""
        fresh = [r for r in self._identities if not r.get("dropped")]
        if not (self._new or self._dirty or fresh or self._timeline or events):
            return None
        new = [self.loaded[i] for i in sorted(self._new)]
        dirty = [self.loaded[i] for i in sorted(self._dirty)]
        tl = self._timeline
        args = (
            _lead_rows(new, now),
            _lead_rows(dirty, now),
            _rows_json(
                {"kind": r["kind"], "value": r["value"], "lead_id": r["lead_id"]} for r in fresh
            ),
            _rows_json(
                {k: r[k] for k in ("lead_id", "at", "kind", "type", "event_id")} for r in tl
            ),
            _outbox_rows(events),
            SOURCE,
            self.topic or "",
            utcnow(),
            [state_json(lead) for lead in new],
            [state_json(lead) for lead in dirty],
            [dumps(r["data"]) for r in tl],
            [dumps(dict(e.extensions)) for e in events],
            [dumps(dict(e.data)) for e in events],
        )
        self._new.clear()
        self._dirty.clear()
        self._identities = []
        self._pending.clear()
        self._timeline = []
        return args

    async def _send(self, args: tuple[Any, ...] | None) -> None:
        if args is None:
            return
        # pre-built, with positional ($n) arguments as the driver takes them: no SQLAlchemy
        # compilation nor per-row parameter processing (a duplicate identity is still an
        # IntegrityError)
        written = await self.conn.exec_driver_sql(_WRITE_ALL, args)
        if self.cache is not None:
            for row in written:
                self.cache.put(row.version, self.loaded[row.id])

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
