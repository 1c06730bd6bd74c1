"""Benchmarks: consumer-side throughput of the inbox + outbox unit of work.

Each benchmark measures a baseline and the design in the same run, on the same machine and
database, and prints the ratio: absolute numbers vary by machine, ratios much less.

    make bench                      # SQLite and PostgreSQL (if reachable)
    BENCH_EVENTS=20000 make bench   # more events
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Sequence

import asyncpg

from shared.bus import claim
from shared.db import create_engine
from shared.events import CloudEvent, derived_event_id
from shared.migrate import migrate
from shared.outbox import enqueue

N = int(os.environ.get("BENCH_EVENTS", "5000"))
BATCH = 500
PG = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _events(n: int) -> list[CloudEvent]:
    return [
        CloudEvent(
            type="io.bench.in",
            source="bench",
            data={"n": i, "email": f"u{i}@x.io"},
            key=f"u{i % 1000}@x.io",
        )
        for i in range(n)
    ]


async def _apply(engine: object, events: Sequence[CloudEvent]) -> None:
    async with engine.begin() as conn:  # type: ignore[attr-defined]
        fresh = await claim(conn, "bench", [e.id for e in events])
        out = [
            CloudEvent(
                type="io.bench.out",
                source="bench",
                data=dict(e.data),
                id=derived_event_id(e.id, "out"),
                key=e.key,
            )
            for e in events
            if e.id in fresh
        ]
        await enqueue(conn, "bench", "bench.out", out)


async def _measure(url: str, batch: int) -> float:
    engine = create_engine(url)
    try:
        await migrate(engine)
        events = _events(N)
        start = time.perf_counter()
        for i in range(0, N, batch):
            await _apply(engine, events[i : i + batch])
        return N / (time.perf_counter() - start)
    finally:
        await engine.dispose()


async def _pg_database() -> str | None:
    name = f"lf_bench_{uuid.uuid4().hex[:8]}"
    try:
        conn = await asyncpg.connect(PG, timeout=3)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def _drop(name: str) -> None:
    conn = await asyncpg.connect(PG)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def main() -> None:
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = f"sqlite+aiosqlite:///{tmp}/base.db"
        design = f"sqlite+aiosqlite:///{tmp}/design.db"
        rows.append(("SQLite", await _measure(base, 1), await _measure(design, BATCH)))
    names = [await _pg_database(), await _pg_database()]
    if all(names):
        root = PG.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        try:
            rows.append(
                (
                    "PostgreSQL",
                    await _measure(f"{root}/{names[0]}", 1),
                    await _measure(f"{root}/{names[1]}", BATCH),
                )
            )
        finally:
            for n in names:
                await _drop(n)  # type: ignore[arg-type]
    print(
        f"inbox+outbox unit of work, {N} events (baseline: one transaction per event; "
        f"design: one transaction per batch of {BATCH})"
    )
    print(f"{'database':<12}{'baseline ev/s':>16}{'design ev/s':>14}{'ratio':>8}")
    for name, b, d in rows:
        print(f"{name:<12}{b:>16,.0f}{d:>14,.0f}{d / b:>7.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
