"""Which errors a consumer waits out and which it dead-letters; what a dead letter may hold.

The classifier is pure: a table of constructed errors (shaped as the drivers raise them) plus
real ones produced by PostgreSQL and SQLite.
"""

from __future__ import annotations

import asyncio
import sqlite3

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from shared.bus import classify, is_transient, scrub_error
from shared.db import create_engine
from shared.deadletters import (
    DeadLetter,
    bounded_id,
    clean_json,
    decode_bytes,
    encode_bytes,
    restore_replay,
)
from shared.events import CloudEvent, InvalidEvent, from_kafka


def _wrapped(driver_error: BaseException, cls: type[sa_exc.DBAPIError] = sa_exc.DBAPIError):
    """A SQLAlchemy error as the asyncpg dialect raises it: adapter error caused by asyncpg's."""
    adapter = Exception(str(driver_error))
    adapter.__cause__ = driver_error
    return cls("INSERT INTO leads VALUES ($1)", {"email": "dana@acme.example"}, adapter)


A = asyncpg.exceptions

CASES: list[tuple[str, BaseException, str]] = [
    ("connection refused", ConnectionRefusedError(111, "Connect call failed"), "transient"),
    ("connection reset", ConnectionResetError(104, "reset"), "transient"),
    ("bare OSError", OSError(113, "No route to host"), "transient"),
    ("asyncio timeout", TimeoutError(), "transient"),
    ("pool exhausted", sa_exc.TimeoutError("QueuePool limit of size 1 overflow 0"), "transient"),
    ("disconnection", sa_exc.DisconnectionError("gone"), "transient"),
    ("starting up", _wrapped(A.CannotConnectNowError("starting up")), "transient"),
    ("admin shutdown", _wrapped(A.AdminShutdownError("terminating")), "transient"),
    ("crash shutdown", _wrapped(A.CrashShutdownError("crash")), "transient"),
    ("read only (failover)", _wrapped(A.ReadOnlySQLTransactionError("read-only")), "transient"),
    ("deadlock", _wrapped(A.DeadlockDetectedError("deadlock detected")), "transient"),
    ("serialization", _wrapped(A.SerializationError("could not serialize")), "transient"),
    ("too many clients", _wrapped(A.TooManyConnectionsError("too many clients")), "transient"),
    ("disk full", _wrapped(A.DiskFullError("no space")), "transient"),
    ("lock timeout", _wrapped(A.LockNotAvailableError("lock timeout")), "transient"),
    ("statement timeout", _wrapped(A.QueryCanceledError("canceling statement")), "transient"),
    ("connection closed", _wrapped(A.ConnectionDoesNotExistError("closed")), "transient"),
    ("password refused", _wrapped(A.InvalidPasswordError("auth failed")), "transient"),
    ("permission denied", _wrapped(A.InsufficientPrivilegeError("denied")), "transient"),
    ("asyncpg interface", A.InterfaceError("connection is closed"), "transient"),
    (
        "sqlalchemy OperationalError",
        sa_exc.OperationalError("SELECT 1", {}, Exception("server closed the connection")),
        "transient",
    ),
    (
        "sqlite locked",
        sa_exc.OperationalError("x", {}, sqlite3.OperationalError("database is locked")),
        "transient",
    ),
    (
        "invalidated connection",
        sa_exc.DBAPIError("x", {}, Exception("?"), connection_invalidated=True),
        "transient",
    ),
    (
        "unique violation",
        _wrapped(A.UniqueViolationError("duplicate key"), sa_exc.IntegrityError),
        "conflict",
    ),
    (
        "sqlite unique",
        sa_exc.IntegrityError("x", {}, sqlite3.IntegrityError("UNIQUE constraint failed")),
        "conflict",
    ),
    ("NUL in text", _wrapped(A.CharacterNotInRepertoireError("invalid byte 0x00")), "poison"),
    ("too long", _wrapped(A.StringDataRightTruncationError("value too long")), "poison"),
    ("bad number", _wrapped(A.NumericValueOutOfRangeError("out of range")), "poison"),
    ("bad json", _wrapped(A.InvalidTextRepresentationError("invalid input")), "poison"),
    (
        "check violation",
        _wrapped(A.CheckViolationError("check"), sa_exc.IntegrityError),
        "conflict",
    ),
    ("handler bug", ValueError("cannot score this"), "poison"),
    ("key error", KeyError("email"), "poison"),
    ("invalid event", InvalidEvent("missing ce_id header"), "poison"),
]


@pytest.mark.parametrize(("case", "error", "kind"), CASES, ids=[c[0] for c in CASES])
def test_error_classification(case: str, error: BaseException, kind: str) -> None:
    assert classify(error) == kind, case
    assert is_transient(error) == (kind == "transient")


def test_transient_cause_counts_through_a_wrapper() -> None:
    try:
        try:
            raise ConnectionRefusedError(111, "refused")
        except OSError as inner:
            raise RuntimeError("handler could not load the lead") from inner
    except RuntimeError as outer:
        assert is_transient(outer)


async def test_real_database_errors_are_classified(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        errors = []
        for sql in (
            "INSERT INTO processed_events VALUES ('c', 'e', '2026-01-01')",  # twice: conflict
            "SELECT * FROM no_such_table_here",
        ):
            try:
                async with engine.begin() as conn:
                    await conn.execute(text(sql))
                    await conn.execute(text(sql))
            except Exception as exc:
                errors.append(exc)
        assert classify(errors[0]) == "conflict"
        # A missing table is a broken deployment, not a bad event: never dead-letter for it.
        assert classify(errors[1]) == "transient"
        scrubbed = scrub_error(errors[0])
        assert "IntegrityError" in scrubbed
        assert "INSERT" not in scrubbed and "2026-01-01" not in scrubbed
    finally:
        await engine.dispose()


async def test_pool_timeout_and_refused_connection_are_transient(pg_db_url: str) -> None:
    engine = create_engine(pg_db_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    dead = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/x")
    try:
        async with engine.connect() as held:
            await held.execute(text("SELECT 1"))
            with pytest.raises(Exception) as pool_err:
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
        assert is_transient(pool_err.value), type(pool_err.value)
        with pytest.raises(Exception) as refused:
            async with dead.connect() as conn:
                await conn.execute(text("SELECT 1"))
        assert is_transient(refused.value), type(refused.value)
        # Read-only transaction, as on a replica during failover.
        with pytest.raises(Exception) as ro:
            async with engine.begin() as conn:
                await conn.execute(text("SET TRANSACTION READ ONLY"))
                await conn.execute(text("INSERT INTO processed_events VALUES ('a','b',now())"))
        assert is_transient(ro.value)
    finally:
        await engine.dispose()
        await dead.dispose()
        await asyncio.sleep(0)


def test_scrub_error_drops_sql_parameters_and_row_data() -> None:
    err = _wrapped(A.UniqueViolationError("Key (email)=(dana@acme.example) already exists"))
    out = scrub_error(err)
    assert "dana" not in out and "INSERT" not in out and "parameters" not in out
    assert out.startswith("DBAPIError (UniqueViolationError, sqlstate 23505")
    plain = sa_exc.StatementError("boom", "SELECT secret", {"p": "dana"}, ValueError("x"))
    assert "dana" not in scrub_error(plain) and "SELECT" not in scrub_error(plain)
    assert scrub_error(ValueError("cannot score this\nsecond line")) == (
        "ValueError: cannot score this"
    )
    assert "\x00" not in scrub_error(ValueError("a\x00b"))


@pytest.mark.parametrize(
    "raw",
    [None, b"", b"plain text", "é".encode(), b"\x00\x00\x00\x00\x07avro", b"\xff\xfe", b"a\x00b"],
)
def test_bytes_round_trip_and_are_storable(raw: bytes | None) -> None:
    text_, enc = encode_bytes(raw)
    assert decode_bytes(text_, enc) == raw
    if text_ is not None:
        assert "\x00" not in text_
        text_.encode("utf-8")  # no lone surrogates


def test_dead_letter_row_is_storable_whatever_the_record_holds() -> None:
    dead = DeadLetter(
        kind="record",
        source="s",
        consumer="g",
        dedupe_key="g/" + "t" * 400,
        reason="bad\x00 reason " + "x" * 2000,
        topic="t",
        event_id="i" * 300,
        ce_type="x\x00y",
        key=b"\x00k",
        value=b"\x00\x01",
        headers=[("ce_id\x00", b"\xff"), ("n", b"v")],
    )
    row = dead.row()
    assert len(row["dedupe_key"]) <= 200 and len(row["event_id"]) <= 200
    assert row["ce_type"] == "xy"
    assert row["key_encoding"] == "base64" and row["value_encoding"] == "base64"
    assert len(row["reason"]) <= 500 and "\x00" not in row["reason"]
    assert row["headers"][0]["encoding"] == "base64" and "\x00" not in row["headers"][0]["name"]
    assert bounded_id("a" * 201).startswith("sha256:")
    assert bounded_id("a" * 201) == bounded_id("a" * 201)
    assert clean_json({"k\x00": ["\x00v", "\ud800"]}) == {"k": ["v", "?"]}


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ([("ce_id", b"i" * 201)], "ce_id is longer than 200"),
        ([("ce_type", b"t" * 201)], "ce_type is longer than 200"),
        ([("ce_source", b"s" * 201)], "ce_source is longer than 200"),
        ([("ce_subject", b"s" * 201)], "ce_subject is longer than 200"),
        ([("ce_id", b"a\x00b")], "contains a NUL"),
    ],
)
def test_from_kafka_rejects_attributes_the_database_cannot_store(
    headers: list[tuple[str, bytes]], message: str
) -> None:
    base = dict(CloudEvent(type="t", source="s", data={}, id="i").headers())
    base.update(dict(headers))
    with pytest.raises(InvalidEvent, match=message):
        from_kafka(b"k", b"{}", list(base.items()))
    # 200 characters is fine
    ok = dict(CloudEvent(type="t", source="s", data={}, id="i" * 200).headers())
    assert from_kafka(b"k\x00", b"{}", list(ok.items())).key == "k\ufffd"


def test_restore_replay_gives_back_the_original_event() -> None:
    original = CloudEvent(type="t", source="s", data={"a": 1}, id="orig", extensions={"x": "1"})
    replayed = CloudEvent(
        type="t",
        source="s",
        data={"a": 1},
        id="replay-id",
        extensions={"x": "1", "replayof": "orig", "replayconsumer": "g"},
    )
    back = restore_replay(replayed)
    assert back.id == "orig" and dict(back.extensions) == {"x": "1"}
    assert restore_replay(original) is original
