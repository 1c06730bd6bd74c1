"""Dead letters: records, events and outbox rows Leadflow could not handle, kept for replay.

A consumer parks what is wrong *with the event itself* (not a CloudEvent, a handler that keeps
failing on it, a constraint it keeps violating) in the ``deadletters`` table of its service's
database, in the same transaction that puts a copy on the dead-letter topic; the outbox relay
parks rows the broker refuses on their own (too large, not serialisable). Availability errors
are never dead-lettered: they are waited out (see :func:`shared.bus.is_transient`).

Writing a dead letter must not fail on what the record holds, so every copy is sanitised:
bytes that are not NUL-free UTF-8 are stored base64, text loses NUL characters and lone
surrogates, ids too long for their column are replaced by a hash, and error text is scrubbed
of SQL, parameters and driver messages (:func:`scrub_error`).

Replay is idempotent. An event is sent back to its topic through the outbox with an id derived
from the dead letter (replaying twice writes one outbox row) and two extensions: ``replayof``
(the original id) and ``replayconsumer`` (the group that failed it). Other groups ignore it;
that group restores the original id and processes it through its inbox as usual. Dead-lettering
does not record the original id in the inbox, so the replay is applied; if a redelivery of the
original was applied meanwhile, the inbox makes the replay a no-op.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db import insert_for, is_sqlite
from shared.events import CloudEvent, InvalidEvent, derived_event_id, from_kafka, utcnow
from shared.logs import redact
from shared.messaging_tables import deadletters, outbox

#: Extension naming the original event id of a replayed event.
REPLAY_OF = "replayof"
#: Extension naming the consumer group a replayed event is meant for.
REPLAY_CONSUMER = "replayconsumer"
#: Width of the id columns (inbox, outbox, dead letters).
ID_LIMIT = 200
REASON_LIMIT = 500


class ReplayError(Exception):
    """A dead letter that cannot be replayed (its reason is the message)."""


# ---------------------------------------------------------------------------------------------
# Sanitising (pure)


def encode_bytes(raw: bytes | None) -> tuple[str | None, str | None]:
    """Bytes as storable text and its encoding: ``utf-8`` if NUL-free UTF-8, else ``base64``."""
    if raw is None:
        return None, None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        return base64.b64encode(raw).decode("ascii"), "base64"
    return text, "utf-8"


def decode_bytes(text: str | None, encoding: str | None) -> bytes | None:
    """The inverse of :func:`encode_bytes`."""
    if text is None:
        return None
    return base64.b64decode(text) if encoding == "base64" else text.encode("utf-8")


def clean_text(value: str) -> str:
    """Text any database column takes: no NUL, no lone surrogates."""
    return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def clean_json(value: Any) -> Any:
    """A JSON value with :func:`clean_text` applied to every string, keys included."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    return value


def bounded_id(value: str, limit: int = ID_LIMIT) -> str:
    """``value`` cleaned; if longer than ``limit``, a stable hash of it instead."""
    value = clean_text(value)
    if len(value) <= limit:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8")).hexdigest()


_SQLA_PREFIX = re.compile(r"^\([\w.]+\)\s*(<class '[\w.]+'>:\s*)?")


def scrub_error(exc: BaseException, limit: int = 300) -> str:
    """The exception's class and a short message without SQL, parameters or row data.

    Database driver messages can quote the row ("Key (email)=(dana@...)", "invalid input syntax
    for type uuid: ...") and SQLAlchemy appends ``[SQL: ...] [parameters: ...]``; both end up in
    logs and in the ``deadletterreason`` header, which goes to Kafka. For database errors only
    the driver's error class, SQLSTATE and the constraint, table or column name are kept
    (SQLite's first line, which names columns, not values); other exceptions keep the first
    line of their message.
    """
    from sqlalchemy.exc import DBAPIError, StatementError

    name = type(exc).__name__
    if isinstance(exc, StatementError):
        orig = exc.orig
        # The asyncpg dialect wraps asyncpg's error in an adapter exception.
        inner = getattr(orig, "__cause__", None) or orig
        if inner is None or not isinstance(exc, DBAPIError):
            return name
        parts = [f"{name} ({type(inner).__name__}"]
        sqlstate = getattr(inner, "sqlstate", None)
        if isinstance(sqlstate, str):
            parts.append(f", sqlstate {sqlstate}")
        for attr in ("constraint_name", "table_name", "column_name"):
            val = getattr(inner, attr, None)
            if isinstance(val, str) and val:
                parts.append(f", {attr.removesuffix('_name')} {val}")
        parts.append(")")
        if type(inner).__module__.startswith("sqlite3"):
            first = str(inner).splitlines()[0] if str(inner) else ""
            parts.append(f": {first}")
        return clean_text("".join(parts))[:limit]
    text = redact(str(exc))  # configured secrets, credentials in URLs
    text = text.split("[SQL:", 1)[0].split("[parameters:", 1)[0]
    first = text.strip().splitlines()[0] if text.strip() else ""
    first = _SQLA_PREFIX.sub("", first)
    out = f"{name}: {first}" if first else name
    return clean_text(out)[:limit]


# ---------------------------------------------------------------------------------------------
# Writing


@dataclass
class DeadLetter:
    """What to park; :meth:`row` turns it into a storable row."""

    kind: str
    source: str
    consumer: str
    dedupe_key: str
    reason: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    event_id: str | None = None
    ce_type: str | None = None
    key: bytes | None = None
    value: bytes | None = None
    headers: Sequence[tuple[str, bytes]] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        """The sanitised ``deadletters`` row."""
        key, key_enc = encode_bytes(self.key)
        value, value_enc = encode_bytes(self.value)
        headers = []
        for name, raw in self.headers or ():
            text, enc = encode_bytes(raw if isinstance(raw, bytes) else None)
            headers.append(
                {"name": clean_text(str(name))[:ID_LIMIT], "value": text, "encoding": enc}
            )
        return {
            "dedupe_key": bounded_id(self.dedupe_key),
            "kind": self.kind,
            "source": bounded_id(self.source, 100),
            "consumer": bounded_id(self.consumer, 100),
            "topic": clean_text(self.topic)[:255] if self.topic is not None else None,
            "kafka_partition": self.partition,
            "kafka_offset": self.offset,
            "event_id": bounded_id(self.event_id) if self.event_id is not None else None,
            "ce_type": bounded_id(self.ce_type) if self.ce_type is not None else None,
            "record_key": key,
            "key_encoding": key_enc,
            "headers": headers,
            "value": value,
            "value_encoding": value_enc,
            "reason": clean_text(self.reason)[:REASON_LIMIT] or "unknown",
            "created_at": utcnow(),
            "replayed_at": None,
            "replay_event_id": None,
        }

    def minimal(self) -> DeadLetter:
        """A copy that cannot fail on data: the value (text or base64), no key, headers or ids."""
        return DeadLetter(
            kind=self.kind,
            source=self.source,
            consumer=self.consumer,
            dedupe_key=self.dedupe_key,
            reason=self.reason.split(":", 1)[0],
            topic=self.topic,
            partition=self.partition,
            offset=self.offset,
            value=self.value,
        )


async def insert(conn: AsyncConnection, dead: DeadLetter, *, again: bool = False) -> int | None:
    """Write a dead letter in the caller's transaction; return its id.

    The same ``dedupe_key`` twice is one dead letter; with ``again`` (an outbox row refused
    again after a replay) the existing one is re-opened with the new reason.
    """
    row = dead.row()
    ins = insert_for(conn)(deadletters)
    if again:
        ins = ins.on_conflict_do_update(
            index_elements=["dedupe_key"],
            set_={"reason": row["reason"], "replayed_at": None, "replay_event_id": None},
        )
    else:
        ins = ins.on_conflict_do_nothing(index_elements=["dedupe_key"])
    await conn.execute(ins, [row])
    found = await conn.execute(
        select(deadletters.c.id).where(deadletters.c.dedupe_key == row["dedupe_key"])
    )
    return found.scalar_one_or_none()


def restore_replay(ev: CloudEvent) -> CloudEvent:
    """A replayed event as it was first sent: original id, no replay extensions."""
    original = ev.extensions.get(REPLAY_OF)
    if original is None:
        return ev
    ext = {k: v for k, v in ev.extensions.items() if k not in (REPLAY_OF, REPLAY_CONSUMER)}
    return dataclasses.replace(ev, id=original, extensions=ext)


# ---------------------------------------------------------------------------------------------
# Reading and replaying

_SUMMARY = (
    "id",
    "kind",
    "source",
    "consumer",
    "topic",
    "kafka_partition",
    "kafka_offset",
    "event_id",
    "ce_type",
    "reason",
    "created_at",
    "replayed_at",
    "replay_event_id",
)


def _summary(row: Any) -> dict[str, Any]:
    m = row._mapping
    out = {k: m[k] for k in _SUMMARY}
    for k in ("created_at", "replayed_at"):
        out[k] = out[k].isoformat() if out[k] is not None else None
    return out


async def list_deadletters(
    engine: AsyncEngine, *, include_replayed: bool = False, limit: int = 100, after: int = 0
) -> list[dict[str, Any]]:
    """Dead letters in id order (open ones only unless ``include_replayed``)."""
    q = select(deadletters).where(deadletters.c.id > after).order_by(deadletters.c.id).limit(limit)
    if not include_replayed:
        q = q.where(deadletters.c.replayed_at.is_(None))
    async with engine.connect() as conn:
        return [_summary(r) for r in (await conn.execute(q)).all()]


async def get_deadletter(engine: AsyncEngine, dead_id: int) -> dict[str, Any] | None:
    """One dead letter with its key, headers and value (as stored: text or base64)."""
    async with engine.connect() as conn:
        row = (await conn.execute(select(deadletters).where(deadletters.c.id == dead_id))).first()
    if row is None:
        return None
    out = _summary(row)
    m = row._mapping
    out.update(
        dedupe_key=m["dedupe_key"],
        key=m["record_key"],
        key_encoding=m["key_encoding"],
        headers=m["headers"],
        value=m["value"],
        value_encoding=m["value_encoding"],
    )
    return out


def _record_event(m: Any) -> CloudEvent:
    headers = [
        (h["name"], decode_bytes(h.get("value"), h.get("encoding")) or b"")
        for h in m["headers"] or ()
    ]
    key = decode_bytes(m["record_key"], m["key_encoding"])
    value = decode_bytes(m["value"], m["value_encoding"])
    try:
        return restore_replay(from_kafka(key, value, headers))
    except InvalidEvent as exc:
        raise ReplayError(f"the record is not a Leadflow CloudEvent ({exc})") from None


async def replay(engine: AsyncEngine, dead_id: int) -> str:
    """Send a dead letter back (idempotent); return the event id it is published under.

    Raises LookupError for an unknown id and :class:`ReplayError` when it cannot be replayed.
    """
    from shared.outbox import enqueue  # the outbox parks into this module: import late

    async with engine.begin() as conn:
        q = select(deadletters).where(deadletters.c.id == dead_id)
        if not is_sqlite(conn):
            q = q.with_for_update()
        row = (await conn.execute(q)).first()
        if row is None:
            raise LookupError(f"no dead letter {dead_id}")
        m = row._mapping
        if m["replayed_at"] is not None and m["replay_event_id"]:
            return str(m["replay_event_id"])
        if m["kind"] == "outbox":
            # The row is still in the outbox, marked done: hand it back to the relay.
            done = await conn.execute(
                update(outbox)
                .where(outbox.c.event_id == m["event_id"], outbox.c.source == m["source"])
                .values(sent_at=None, available_at=None)
            )
            if not done.rowcount:
                raise ReplayError("the outbox row is gone (past outbox retention)")
            replay_id = str(m["event_id"])
        else:
            if not m["topic"]:
                raise ReplayError("the dead letter has no topic")
            ev = _record_event(m)
            replay_id = derived_event_id("replay", m["dedupe_key"])
            again = dataclasses.replace(
                ev,
                id=replay_id,
                extensions={**ev.extensions, REPLAY_OF: ev.id, REPLAY_CONSUMER: m["consumer"]},
            )
            await enqueue(conn, m["source"], m["topic"], [again])
        await conn.execute(
            update(deadletters)
            .where(deadletters.c.id == dead_id)
            .values(replayed_at=utcnow(), replay_event_id=replay_id)
        )
    return replay_id


async def replay_all(engine: AsyncEngine) -> list[tuple[int, str]]:
    """Replay every open dead letter; return (id, replay event id or error) for each."""
    out: list[tuple[int, str]] = []
    after = 0
    while True:
        batch = await list_deadletters(engine, after=after, limit=200)
        if not batch:
            return out
        for item in batch:
            after = item["id"]
            try:
                out.append((item["id"], await replay(engine, item["id"])))
            except ReplayError as exc:
                out.append((item["id"], f"not replayed: {exc}"))


def as_json(value: Any) -> str:
    """Pretty JSON for the command line."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)
