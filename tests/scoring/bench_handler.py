"""Throughput of the scoring batch handler (not a test; run it the same way every time).

    .venv/bin/python -m tests.scoring.bench_handler [--pg postgresql://postgres@127.0.0.1/postgres]

5,000 interactions over 1,000 people in consumer-sized batches of 500, each batch one
transaction with the inbox claim, as the ConsumerRunner does it. Prints events per second,
the median of three runs, on SQLite and (if reachable) PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid

import asyncpg

from services.scoring.handlers import ScoringHandler
from shared.bus import claim
from shared.db import create_engine
from shared.events import InteractionType
from shared.migrate import migrate
from shared.topics import Topics
from tests.scoring.helpers import VP_SALES, default_rules, interaction

EVENTS, PEOPLE, BATCH = 5_000, 1_000, 500


def _events() -> list:
    return [
        interaction(
            InteractionType.TRACKED if i % 3 else InteractionType.FORM_SUBMITTED,
            email=f"p{i % PEOPLE}@corp.io",
            intent=None if i % 3 else "generic",
            contact=VP_SALES,
            track={"event": "page", "name": "Pricing"},
        )
        for i in range(EVENTS)
    ]


async def _run(url: str) -> float:
    engine = create_engine(url)
    try:
        await migrate(engine)
        handler = ScoringHandler(default_rules(), Topics("bench."))
        events = _events()
        started = time.perf_counter()
        for k in range(0, EVENTS, BATCH):
            batch = events[k : k + BATCH]
            async with engine.begin() as conn:
                await claim(conn, "bench", [e.id for e in batch])
                await handler(conn, batch)
        return EVENTS / (time.perf_counter() - started)
    finally:
        await engine.dispose()


async def _sqlite() -> float:
    with tempfile.TemporaryDirectory() as folder:
        return await _run(f"sqlite+aiosqlite:///{folder}/bench.db")


async def _pg(base: str) -> float:
    name = f"lf_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(base)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = base.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        return await _run(f"{url}/{name}")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def main(pg: str | None) -> None:
    for label, run in (("sqlite", _sqlite), ("postgresql", lambda: _pg(pg or ""))):
        if label == "postgresql" and not pg:
            continue
        rates = [await run() for _ in range(3)]
        print(
            f"scoring handler {label}: {statistics.median(rates):,.0f} events/s "
            f"(runs: {', '.join(f'{r:,.0f}' for r in rates)})"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    asyncio.run(main(parser.parse_args().pg))
