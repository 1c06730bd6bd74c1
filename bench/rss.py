"""Memory: the largest resident set of the three services at steady state with many leads in
PostgreSQL (1,000,000 in the full run; the quick run uses fewer and says how many).

One real lead is captured and scored through the services; its row is then cloned in SQL
(``generate_series``) into the wanted number of leads with their e-mail identities, spread
over a year of activity, and the services are restarted on that database. RSS is sampled
from /proc every 0.5 s while a steady load runs (form posts and tracked events at the
background rate, lead list and report reads) and for a few seconds after it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.common import (
    ROOT,
    TOKEN,
    Sizes,
    background_load,
    demo_body,
    plain_url,
    result,
    rss_mb,
    stack,
)

SERVICES = ("capture", "scoring", "routing")

CLONE_LEADS = """
INSERT INTO scoring_leads (id, key, email, phone, status, stage, temperature, score_total, fit,
    engagement, owner_id, created_at, last_activity_at, updated_at, state, first_source,
    first_campaign, first_form_id, mql_at, qualified_at)
SELECT 'bench-' || g, 'p' || g || '@bulk.example', 'p' || g || '@bulk.example', NULL, t.status,
    (ARRAY['IQL', 'MQL', 'SQL'])[1 + g % 3], (ARRAY['cold', 'warm', 'hot'])[1 + g % 3],
    t.score_total, t.fit, t.engagement, NULL,
    now() - make_interval(secs => g % 31536000), now() - make_interval(secs => g % 31536000),
    now(), t.state, t.first_source, t.first_campaign, t.first_form_id, t.mql_at, t.qualified_at
FROM scoring_leads t, generate_series($1::int, $2::int) g
WHERE t.id = $3
"""
CLONE_IDENTITIES = """
INSERT INTO scoring_identities (kind, value, lead_id)
SELECT 'email', 'p' || g || '@bulk.example', 'bench-' || g FROM generate_series($1::int, $2::int) g
"""


async def _bulk(url: str, n: int) -> None:
    conn = await asyncpg.connect(plain_url(url))
    try:
        template = await conn.fetchval("SELECT id FROM scoring_leads ORDER BY created_at LIMIT 1")
        step = 100_000
        for lo in range(1, n + 1, step):
            hi = min(n, lo + step - 1)
            async with conn.transaction():
                await conn.execute(CLONE_LEADS, lo, hi, template)
                await conn.execute(CLONE_IDENTITIES, lo, hi)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def _first_lead(url: str, capture: str) -> None:
    async with httpx.AsyncClient(base_url=capture, timeout=10) as client:
        resp = await client.post(
            "/v1/forms/demo-request/submissions", json=demo_body("first@acme-software.example")
        )
        resp.raise_for_status()
    conn = await asyncpg.connect(plain_url(url))
    try:
        deadline = time.monotonic() + 60
        while not await conn.fetchval("SELECT count(*) FROM scoring_leads"):
            if time.monotonic() > deadline:
                raise RuntimeError("the first lead was not scored within 60 s")
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def _reads(urls: dict[str, str], seconds: float) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:
        while time.monotonic() < deadline:
            for path in ("/v1/leads?limit=100", "/v1/leads?stage=SQL&limit=100"):
                await client.get(urls["scoring"] + path)
            await client.get(urls["routing"] + "/v1/assignments")
            await asyncio.sleep(0.5)


def run(quick: bool, smoke: bool = False) -> list[dict[str, Any]]:
    sizes = Sizes.pick(quick, smoke)
    n = sizes.rss_leads
    load_seconds = max(3.0, sizes.load_seconds)
    peaks: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="lf-bench-rss-") as tmp_name:
        tmp = Path(tmp_name)
        with stack(tmp) as st:
            st.start(*SERVICES)
            asyncio.run(_first_lead(st.db_url, st.urls["capture"]))
            st.stop(grace=5.0)  # a throwaway database: no need to wait for a graceful stop
            asyncio.run(_bulk(st.db_url, n))
            st.start(*SERVICES)
            with background_load(st.urls["capture"], load_seconds, sizes.background_per_second):
                end = time.monotonic() + load_seconds + 3.0
                reader = subprocess.Popen(
                    [sys.executable, "-c", _READER, json.dumps([st.urls, load_seconds])],
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                )
                while time.monotonic() < end:
                    for name, proc in st.procs.items():
                        peaks[name] = max(peaks.get(name, 0.0), rss_mb(proc.pid))
                    time.sleep(0.5)
                reader.wait(timeout=60)
    worst = max(peaks, key=lambda k: peaks[k])
    detail = ", ".join(f"{k} {v:.0f}" for k, v in sorted(peaks.items()))
    return [
        result(
            "max_service_rss_mb",
            peaks[worst],
            "MiB",
            200.0,
            note=f"{n:,} leads in PostgreSQL; peaks MiB: {detail}; baseline is the goal",
        )
    ]


_READER = (
    "import asyncio, json, sys; from bench.rss import _reads; "
    "urls, secs = json.loads(sys.argv[1]); asyncio.run(_reads(urls, secs))"
)


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=2))
