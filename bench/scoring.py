"""Scoring throughput against the database's own floor, both measured in the same run.

``scoring_vs_db_upsert_floor``: interactions/s through the scoring handler (inbox claim, rules,
lead state, timeline, ``leadflow.leads`` events in the outbox; PostgreSQL, batches of 500)
divided by the interactions/s of the least work a database-backed consumer can do with the same
events: their ids inserted into an inbox with ``unnest``, the events folded per lead in Python,
one ``INSERT … ON CONFLICT DO UPDATE`` per batch with the JSON encoded in Python. Each side
gets its own throwaway PostgreSQL database, and their batches alternate, so load from other
processes on the machine falls on both alike. The garbage collector is tuned as the services
tune it once started (:func:`shared.http.settle_heap`), for both sides.

    python -m bench.scoring          # BENCH_QUICK=1 for a short run
    python -m bench.scoring --profile [N]   # cProfile of the scoring side, top N (30) entries

``--profile`` runs the same batches with the scoring side under cProfile (the floor is not
run) and prints the handler's CPU time per event and where it goes, by own time and by
cumulative time.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import orjson

from services.scoring.config import load_rules
from services.scoring.handlers import ScoringHandler
from shared.bus import claim
from shared.config import load_config
from shared.contract import Contact, Interaction
from shared.db import create_engine
from shared.events import CloudEvent, InteractionType, utcnow
from shared.http import settle_heap
from shared.migrate import migrate
from shared.topics import Topics

PG = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BATCH = 500
CONSUMER = "scoring"


def interactions(n: int, people: int = 1000) -> list[CloudEvent]:
    """Form fills and page views of ``people`` people, as capture writes them (in time order)."""
    out = []
    start = utcnow() - timedelta(seconds=n)
    for i in range(n):
        email = f"p{i % people}@corp.example"
        form = i % 3 == 0
        ix = Interaction(
            lead_key=email,
            occurred_at=start + timedelta(seconds=i),
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


@asynccontextmanager
async def throwaway_db() -> AsyncIterator[str]:
    """A fresh PostgreSQL database (its asyncpg URL), dropped afterwards."""
    name = f"lf_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(PG, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"{PG.rsplit('/', 1)[0]}/{name}"
    finally:
        admin = await asyncpg.connect(PG, timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


FLOOR_SCHEMA = """
CREATE TABLE floor_inbox (event_id text PRIMARY KEY);
CREATE TABLE floor_leads (
    key text PRIMARY KEY, events integer NOT NULL, last_at timestamptz NOT NULL,
    state jsonb NOT NULL
);
"""
FLOOR_INBOX = "INSERT INTO floor_inbox (event_id) SELECT unnest($1::text[])"
FLOOR_UPSERT = """
INSERT INTO floor_leads (key, events, last_at, state)
SELECT * FROM unnest($1::text[], $2::integer[], $3::timestamptz[], $4::jsonb[])
ON CONFLICT (key) DO UPDATE SET
    events = floor_leads.events + excluded.events,
    last_at = excluded.last_at,
    state = floor_leads.state || excluded.state
"""


def _fold(chunk: list[CloudEvent]) -> tuple[list[str], list[int], list[Any], list[str]]:
    """The floor's Python side: events folded per lead, JSON encoded (orjson)."""
    folded: dict[str, tuple[int, Any, dict[str, Any]]] = {}
    for ev in chunk:
        key = ev.key or ev.id
        n = folded[key][0] + 1 if key in folded else 1
        folded[key] = (n, ev.time, {"last": ev.data, "type": ev.type})
    return (
        list(folded),
        [v[0] for v in folded.values()],
        [v[1] for v in folded.values()],
        [orjson.dumps(v[2]).decode() for v in folded.values()],
    )


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a local process has used, from /proc (0 where unavailable)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Side:
    """What one side spent: wall time, and CPU in this process and in its PostgreSQL backend."""

    backend: int
    wall: float = 0.0
    cpu: float = 0.0

    @asynccontextmanager
    async def measure(self) -> AsyncIterator[None]:
        wall, cpu, db = time.perf_counter(), time.process_time(), _cpu_seconds(self.backend)
        yield
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu + _cpu_seconds(self.backend) - db


async def profile(events: list[CloudEvent], batch: int = BATCH, top: int = 30) -> None:
    """Print where the scoring side's time goes (cProfile), same batches, same database."""
    import cProfile
    import pstats

    handler = ScoringHandler(load_rules(load_config()), Topics("bench."))
    profiler = cProfile.Profile()
    cpu = 0.0
    async with throwaway_db() as scoring_url:
        engine = create_engine(scoring_url.replace("postgresql://", "postgresql+asyncpg://", 1))
        try:
            await migrate(engine)
            settle_heap()  # as in rates()
            for i in range(0, len(events), batch):
                chunk = events[i : i + batch]
                started = time.process_time()
                profiler.enable()
                async with engine.begin() as conn:
                    fresh = await claim(conn, CONSUMER, [e.id for e in chunk])
                    await handler(conn, [e for e in chunk if e.id in fresh])
                profiler.disable()
                cpu += time.process_time() - started
        finally:
            await engine.dispose()
    print(f"scoring: {cpu / len(events) * 1e6:.0f} µs of CPU per event in this process (profiled)")
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


async def rates(events: list[CloudEvent], batch: int = BATCH) -> tuple[Side, Side]:
    """What scoring and the floor spend on the events, batch by batch in turn.

    Each side has its own database; their batches alternate, so both see the same machine
    (other processes' load falls on both alike) and each side's time is summed on its own.
    """
    handler = ScoringHandler(load_rules(load_config()), Topics("bench."))
    async with throwaway_db() as scoring_url, throwaway_db() as floor_url:
        engine = create_engine(scoring_url.replace("postgresql://", "postgresql+asyncpg://", 1))
        floor = await asyncpg.connect(floor_url)
        try:
            await migrate(engine)
            await floor.execute(FLOOR_SCHEMA)
            async with engine.connect() as conn:  # batches run one at a time: one connection
                pid = (await conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one()
            scoring, floor_side = Side(int(pid)), Side(floor.get_server_pid())
            # the collector as the scoring service runs it once started (both sides alike)
            settle_heap()
            for i in range(0, len(events), batch):
                chunk = events[i : i + batch]
                async with scoring.measure(), engine.begin() as conn:
                    fresh = await claim(conn, CONSUMER, [e.id for e in chunk])
                    await handler(conn, [e for e in chunk if e.id in fresh])
                async with floor_side.measure():
                    keys, counts, times, states = _fold(chunk)
                    async with floor.transaction():
                        await floor.execute(FLOOR_INBOX, [e.id for e in chunk])
                        await floor.execute(FLOOR_UPSERT, keys, counts, times, states)
            return scoring, floor_side
        finally:
            await floor.close()
            await engine.dispose()


def run(quick: bool) -> list[dict[str, Any]]:
    """The scoring figures: ``scoring_vs_db_upsert_floor`` (value and baseline in events/s)."""
    n = int(os.environ.get("BENCH_SCORING_EVENTS", "3000" if quick else "20000"))
    events = interactions(n)
    scoring, floor = asyncio.run(rates(events))
    rows = [
        {
            "name": "scoring_vs_db_upsert_floor",
            "value": round(n / scoring.wall, 1),
            "unit": "events/s",
            "baseline": round(n / floor.wall, 1),
            "ratio": round(floor.wall / scoring.wall, 3),
        }
    ]
    if scoring.cpu > 0 and floor.cpu > 0:
        # the same per CPU second (this process plus its PostgreSQL backend): what the
        # throughput ratio would be on an idle machine, less sensitive to other processes
        rows.append(
            {
                "name": "scoring_vs_db_upsert_floor_cpu",
                "value": round(n / scoring.cpu, 1),
                "unit": "events/cpu-s",
                "baseline": round(n / floor.cpu, 1),
                "ratio": round(floor.cpu / scoring.cpu, 3),
            }
        )
    return rows


def main() -> None:
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    if len(sys.argv) > 1 and sys.argv[1] == "--profile":
        n = int(os.environ.get("BENCH_SCORING_EVENTS", "3000" if quick else "20000"))
        top = int(sys.argv[2]) if len(sys.argv) > 2 else 30
        asyncio.run(profile(interactions(n), top=top))
        return
    for row in run(quick):
        print(
            f"{row['name']:<32}{row['value']:>12,.0f} {row['unit']:<13}"
            f"baseline {row['baseline']:>10,.0f}  ratio {row['ratio']:.3f}"
        )


if __name__ == "__main__":
    main()
