"""Benchmarks: consumer-side throughput, a batch per transaction against a transaction per event.

Each benchmark measures its baseline and the design in the same run, on the same machine and
database, and prints the ratio: absolute numbers vary by machine, ratios much less.

    make bench                      # SQLite, and PostgreSQL when reachable
    BENCH_EVENTS=20000 make bench   # more events
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scoring.config import load_rules
from services.scoring.handlers import ScoringHandler
from shared.bus import claim
from shared.config import load_config
from shared.contract import Contact, Interaction
from shared.db import create_engine
from shared.events import CloudEvent, InteractionType, derived_event_id, utcnow
from shared.migrate import migrate
from shared.outbox import enqueue
from shared.topics import Topics

N = int(os.environ.get("BENCH_EVENTS", "5000"))
BATCH = 500
PG = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

Handler = Callable[[AsyncConnection, Sequence[CloudEvent]], Awaitable[None]]


def _plain_events(n: int) -> list[CloudEvent]:
    return [
        CloudEvent(type="io.bench.in", source="bench", data={"n": i}, key=f"u{i % 1000}@x.io")
        for i in range(n)
    ]


async def _echo(conn: AsyncConnection, events: Sequence[CloudEvent]) -> None:
    out = [
        CloudEvent(
            type="io.bench.out",
            source="bench",
            data=dict(e.data),
            id=derived_event_id(e.id, "out"),
            key=e.key,
        )
        for e in events
    ]
    await enqueue(conn, "bench", "bench.out", out)


def _interactions(n: int) -> list[CloudEvent]:
    """Form fills and page views of 1,000 people, as capture writes them."""
    out = []
    for i in range(n):
        email = f"p{i % 1000}@corp.example"
        form = i % 3 == 0
        ix = Interaction(
            lead_key=email,
            occurred_at=utcnow(),
            channel="form" if form else "tracking",
            form_id="contact-sales" if form else None,
            intent="generic" if form else None,
            contact=Contact(
                email=email, job_title="VP of Sales", company_size=500, industry="software"
            ),
            custom={},
            track=None if form else {"event": "page", "name": "Pricing", "properties": {}},
        )
        ce_type = InteractionType.FORM_SUBMITTED if form else InteractionType.TRACKED
        out.append(
            CloudEvent(type=ce_type, source="/leadflow/capture", data=ix.to_data(), key=email)
        )
    return out


async def _measure(url: str, events: list[CloudEvent], handler: Handler, batch: int) -> float:
    engine = create_engine(url)
    try:
        await migrate(engine)
        start = time.perf_counter()
        for i in range(0, len(events), batch):
            chunk = events[i : i + batch]
            async with engine.begin() as conn:
                fresh = await claim(conn, "bench", [e.id for e in chunk])
                await handler(conn, [e for e in chunk if e.id in fresh])
        return len(events) / (time.perf_counter() - start)
    finally:
        await engine.dispose()


class Databases:
    """Fresh SQLite files and PostgreSQL databases, one per measurement, removed afterwards."""

    def __init__(self, tmp: str) -> None:
        self.tmp = tmp
        self.pg_names: list[str] = []
        self.pg_ok = True

    def sqlite(self) -> str:
        return f"sqlite+aiosqlite:///{self.tmp}/{uuid.uuid4().hex}.db"

    async def postgres(self) -> str | None:
        if not self.pg_ok:
            return None
        try:
            conn = await asyncpg.connect(PG, timeout=3)
        except (OSError, asyncpg.PostgresError):
            self.pg_ok = False
            return None
        name = f"lf_bench_{uuid.uuid4().hex[:8]}"
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.pg_names.append(name)
        root = PG.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        return f"{root}/{name}"

    async def drop(self) -> None:
        if not self.pg_names:
            return
        conn = await asyncpg.connect(PG)
        try:
            for name in self.pg_names:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def main() -> None:
    rules = load_rules(load_config())
    scoring = ScoringHandler(rules, Topics("bench."))
    cases: list[tuple[str, Callable[[int], list[CloudEvent]], Handler]] = [
        ("inbox + outbox unit of work", _plain_events, _echo),
        ("scoring handler (score, stage, outbox)", _interactions, scoring),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dbs = Databases(tmp)
        try:
            for title, make, handler in cases:
                events = make(N)
                for db_name in ("SQLite", "PostgreSQL"):
                    urls = (
                        [dbs.sqlite(), dbs.sqlite()]
                        if db_name == "SQLite"
                        else [await dbs.postgres(), await dbs.postgres()]
                    )
                    if None in urls:
                        continue
                    base = await _measure(str(urls[0]), events, handler, 1)
                    design = await _measure(str(urls[1]), events, handler, BATCH)
                    rows.append((title, db_name, base, design))
        finally:
            await dbs.drop()
    print(f"{N} events; baseline: one transaction per event; design: one per batch of {BATCH}")
    print(f"{'benchmark':<42}{'database':<12}{'baseline ev/s':>15}{'design ev/s':>13}{'ratio':>8}")
    for title, db_name, base, design in rows:
        print(f"{title:<42}{db_name:<12}{base:>15,.0f}{design:>13,.0f}{design / base:>7.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
