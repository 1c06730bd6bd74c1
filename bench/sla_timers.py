"""SLA timers at scale: lateness with two routing replicas, and what a second replica adds.

Production shape, on a throwaway PostgreSQL database and the bundled broker, with routing run as
real processes (``leadflow routing``, as docker-compose starts it):

* N open assignments spread over a 24x7 desk of reps, with 2N pending timers (a warning and a
  breach each) due evenly over a window; the default escalation ladder (reassign, then queue)
  and the manager notification act on every breach. Two replicas fire them; the lateness of
  each timer is ``fired_at - due_at`` (a timer still pending at the end counts as late as the
  end), and a double fire is a second SLA event for one lead or a second reassignment of one
  assignment.
* Throughput: a backlog of already-due breaches drained by one replica, then an equal backlog
  by two; the ratio of their rates is ``sla_timer_replica_speedup``.

    python -m bench.sla_timers            # full: 50,000 assignments, 100,000 timers over 5 min
    BENCH_QUICK=1 python -m bench.sla_timers
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import yaml

from shared.broker import BundledBroker, free_port
from shared.config import load_config
from shared.db import create_engine
from shared.migrate import migrate

PG = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
ROOT = Path(__file__).resolve().parents[1]
REPS = 20
TOKEN = "bench-token"
WARNING = "io.leadflow.routing.sla_warning"
BREACHED = "io.leadflow.routing.sla_breached"


@dataclass(frozen=True)
class Size:
    assignments: int  # open assignments, each with a warning and a breach timer
    window: float  # seconds over which their timers fall due
    backlog: int  # already-due breaches per throughput run


FULL = Size(assignments=50_000, window=300.0, backlog=6_000)
QUICK = Size(assignments=2_000, window=20.0, backlog=2_000)


def _config() -> dict[str, Any]:
    """The packaged config with a 24x7 desk of reps and no capacity limits: every breach is
    reassigned (the default ladder's first step) to another rep of the desk."""
    cfg = copy.deepcopy(load_config())
    routing = cfg["routing"]
    routing["calendars"]["always-on"] = {"timezone": "UTC", "hours": "24x7"}
    routing["teams"] = {
        "lead-desk": {
            "name": "Lead desk",
            "calendar": "always-on",
            "manager": {"name": "Eva Manager", "email": "eva.manager@example.com"},
        }
    }
    routing["fallback_team"] = "lead-desk"
    routing["rules"] = []
    routing["reps"] = [
        {
            "id": f"rep-{i:02d}",
            "name": f"Rep {i}",
            "email": f"rep{i}@example.com",
            "team": "lead-desk",
            "timezone": "UTC",
            "hours": "24x7",
        }
        for i in range(REPS)
    ]
    routing.pop("webhooks", None)
    routing.pop("nurture", None)  # a ladder of its own, beside the point here
    return cfg


def _lead(lid: str) -> dict[str, Any]:
    """A lead as scoring publishes it (routing keeps it with the assignment)."""
    email = f"{lid}@acme.example"
    return {
        "id": lid,
        "key": email,
        "email": email,
        "first_name": "Jane",
        "last_name": "Doe",
        "company": "Acme",
        "job_title": "VP Sales",
        "industry": "software",
        "company_size": 500,
        "country": "DE",
        "status": "prospect",
        "stage": "SQL",
        "temperature": "warm",
        "score": {"total": 87, "fit": 40, "engagement": 47, "reasons": []},
        "owner": None,
        "created_at": "2026-11-26T09:00:00Z",
    }


def _say(what: str) -> None:
    print(f"[sla_timers {time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


def _pg(dbname: str, driver: str = "postgresql") -> str:
    return f"{PG.rsplit('/', 1)[0]}/{dbname}".replace("postgresql://", f"{driver}://", 1)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def _database() -> Iterator[str]:
    """A fresh, migrated database (asyncpg URL for asyncpg), dropped afterwards."""
    name = f"lf_bench_sla_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:

        async def _migrate() -> None:
            engine = create_engine(_pg(name, "postgresql+asyncpg"))
            try:
                await migrate(engine)
            finally:
                await engine.dispose()

        asyncio.run(_migrate())
        yield name
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _seed(
    dbname: str,
    n: int,
    first_due: datetime,
    window: float,
    *,
    tag: str,
    warnings: bool,
    timers: bool = True,
) -> None:
    """``n`` open assignments, round-robin over the reps, each with a breach timer (and a
    warning timer just before it, if ``warnings``), due evenly from ``first_due`` on; without
    ``timers``, the assignments only (load that is not due in this run)."""
    conn = await asyncpg.connect(_pg(dbname))
    try:
        per = 2 if warnings else 1
        step = window / max(1, n * per)
        past = first_due - timedelta(hours=4)
        a_rows, t_rows = [], []
        load: dict[str, int] = {}
        for i in range(n):
            rep = f"rep-{i % REPS:02d}"
            load[rep] = load.get(rep, 0) + 1
            aid, lid = f"{tag}-a-{i}", f"{tag}-lead-{i}"
            owner = {"id": rep, "name": rep, "email": f"{rep}@example.com", "team": "lead-desk"}
            lead = _lead(lid)
            warn_at = first_due + timedelta(seconds=step * per * i)
            due_at = warn_at + timedelta(seconds=step * (per - 1))
            a_rows.append(
                (
                    aid,
                    lid,
                    lead["key"],
                    rep,
                    json.dumps(owner),
                    "desk",
                    "open",
                    "warm",
                    warn_at,
                    due_at,
                    past,
                    "fallback:no_rule",
                    json.dumps(lead),
                    past,
                )
            )
            if timers and warnings:
                t_rows.append((aid, "warn", warn_at))
            if timers:
                t_rows.append((aid, "breach", due_at))
        await conn.executemany(
            "INSERT INTO routing_assignments (id, lead_id, lead_key, owner_id, owner, team,"
            " state, policy, warn_at, due_at, assigned_at, reason, lead, breached,"
            " escalation_level, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
            " $11, $12, $13, false, 0, $14)",
            a_rows,
        )
        await conn.executemany(
            "INSERT INTO routing_timers (assignment_id, kind, due_at, state)"
            " VALUES ($1, $2, $3, 'pending')",
            t_rows,
        )
        # The reps' open counts, where the schema keeps them (folded at the next pick).
        if await conn.fetchval("SELECT to_regclass('routing_rep_load_deltas') IS NOT NULL"):
            await conn.executemany(
                "INSERT INTO routing_rep_load_deltas (rep_id, delta) VALUES ($1, $2)",
                list(load.items()),
            )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


class Replicas:
    """``count`` routing processes on one database and broker, stopped with SIGTERM."""

    def __init__(self, count: int, dbname: str, bootstrap: str, config: Path, log: Path) -> None:
        self.ports = [free_port() for _ in range(count)]
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "LEADFLOW_DEV": "true",
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "DATABASE_URL": _pg(dbname, "postgresql+asyncpg"),
            "LEADFLOW_CONFIG": str(config),
            "LEADFLOW_TOPIC_PREFIX": f"bench{uuid.uuid4().hex[:8]}.",
            "LEADFLOW_API_TOKEN": TOKEN,
            "LEADFLOW_LOG_LEVEL": "WARNING",
        }
        self.log = log.open("ab")
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", "services.cli", "routing"],
                env={**env, "LEADFLOW_ROUTING_PORT": str(port)},
                cwd=ROOT,
                stdout=self.log,
                stderr=subprocess.STDOUT,
            )
            for port in self.ports
        ]

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for port, proc in zip(self.ports, self.procs, strict=True):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"routing exited with {proc.returncode}; see {self.log.name}"
                    )
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"routing on {port} not ready; see {self.log.name}")
                time.sleep(0.2)

    def stop(self) -> float:
        """SIGTERM every replica; the seconds until the last one exited."""
        started = time.monotonic()
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.log.close()
        return time.monotonic() - started


async def _pending(dbname: str, tag: str) -> int:
    conn = await asyncpg.connect(_pg(dbname))
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM routing_timers WHERE state = 'pending'"
                " AND assignment_id LIKE $1 AND kind IN ('warn', 'breach')",
                f"{tag}-%",
            )
        )
    finally:
        await conn.close()


def _wait_fired(dbname: str, tag: str, until: float) -> bool:
    """Poll until every seeded timer of ``tag`` fired, or the monotonic deadline."""
    while time.monotonic() < until:
        if asyncio.run(_pending(dbname, tag)) == 0:
            return True
        time.sleep(0.5)
    return False


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _lateness(dbname: str, tag: str, end: datetime) -> tuple[list[float], list[float], int]:
    """Lateness (ms) of the warnings and of the breaches, and the number of double fires."""
    conn = await asyncpg.connect(_pg(dbname))
    try:
        rows = await conn.fetch(
            "SELECT kind, due_at, fired_at, state FROM routing_timers"
            " WHERE assignment_id LIKE $1 AND kind IN ('warn', 'breach')",
            f"{tag}-%",
        )
        doubles = await conn.fetchval(
            "SELECT count(*) - count(DISTINCT (ce_type, ce_subject)) FROM outbox"
            " WHERE ce_type = ANY($1::text[])",
            [WARNING, BREACHED],
        )
        doubles += await conn.fetchval(
            "SELECT count(*) - count(DISTINCT previous_assignment_id) FROM routing_assignments"
            " WHERE previous_assignment_id IS NOT NULL"
        )
    finally:
        await conn.close()
    late: dict[str, list[float]] = {"warn": [], "breach": []}
    for r in rows:
        fired = r["fired_at"] if r["state"] == "fired" else end
        late[r["kind"]].append((fired - r["due_at"]).total_seconds() * 1000)
    return late["warn"], late["breach"], int(doubles)


def _row(name: str, value: float, unit: str, baseline: float | None = None) -> dict[str, Any]:
    ratio = value / baseline if baseline else None
    return {
        "name": name,
        "value": round(value, 2),
        "unit": unit,
        "baseline": baseline,
        "ratio": ratio,
    }


def _lateness_run(
    size: Size, bootstrap: str, config: Path, log: Path
) -> tuple[list[dict[str, Any]], float]:
    with _database() as db:
        lead_time = 30.0 + size.assignments / 4000  # seeding, then the replicas start
        first_due = datetime.now(UTC) + timedelta(seconds=lead_time)
        seeded = time.monotonic()
        asyncio.run(_seed(db, size.assignments, first_due, size.window, tag="l", warnings=True))
        replicas = Replicas(2, db, bootstrap, config, log)
        try:
            replicas.wait_ready()
            if time.monotonic() - seeded > lead_time:
                print("warning: replicas were ready after the first timer was due", file=sys.stderr)
            grace = max(30.0, size.window / 5)
            _wait_fired(db, "l", seeded + lead_time + size.window + grace)
        finally:
            stop_s = replicas.stop()
        warn, breach, doubles = asyncio.run(_lateness(db, "l", datetime.now(UTC)))
    every = warn + breach
    return [
        _row("sla_timer_lateness_p50_ms", _percentile(every, 0.5), "ms"),
        _row("sla_timer_lateness_p99_ms", _percentile(every, 0.99), "ms"),
        _row("sla_timer_breach_lateness_p99_ms", _percentile(breach, 0.99), "ms"),
        _row("sla_timer_warning_lateness_p99_ms", _percentile(warn, 0.99), "ms"),
        _row("sla_timer_double_fires", doubles, "count"),
    ], stop_s


def _drain_rate(replicas: int, size: Size, bootstrap: str, config: Path, log: Path) -> float:
    """Breaches/s fired by ``replicas`` processes from a backlog of breaches all due at once
    (just after the replicas are up): from the first fire to the last."""
    with _database() as db:
        tag = f"b{replicas}"
        lead_time = 10.0
        due = datetime.now(UTC) + timedelta(seconds=lead_time)
        # The same production shape: open assignments not due now, then the backlog.
        asyncio.run(_seed(db, size.assignments, due, 0.0, tag="base", warnings=False, timers=False))
        asyncio.run(_seed(db, size.backlog, due, 0.0, tag=tag, warnings=False))
        procs = Replicas(replicas, db, bootstrap, config, log)
        try:
            procs.wait_ready()
            _wait_fired(db, tag, time.monotonic() + lead_time + 600)
            took = asyncio.run(_fire_span(db, tag))
        finally:
            procs.stop()
    return size.backlog / took if took > 0 else float("nan")


async def _fired_any(dbname: str, tag: str) -> bool:
    conn = await asyncpg.connect(_pg(dbname))
    try:
        return bool(
            await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM routing_timers WHERE state = 'fired'"
                " AND assignment_id LIKE $1)",
                f"{tag}-%",
            )
        )
    finally:
        await conn.close()


async def _fire_span(dbname: str, tag: str) -> float:
    """Seconds from the first to the last fire of the tag's timers."""
    conn = await asyncpg.connect(_pg(dbname))
    try:
        span = await conn.fetchval(
            "SELECT extract(epoch FROM max(fired_at) - min(fired_at)) FROM routing_timers"
            " WHERE assignment_id LIKE $1 AND state = 'fired'",
            f"{tag}-%",
        )
        return float(span or 0.0)
    finally:
        await conn.close()


def run(quick: bool) -> list[dict[str, Any]]:
    """Every SLA-timer figure, measured in this run (see the module docstring)."""
    size = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(prefix="bench-sla-") as tmp:
        work = Path(tmp)
        config = work / "config.yaml"
        config.write_text(yaml.safe_dump(_config()), encoding="utf-8")
        log = work / "routing.log"
        broker = BundledBroker(log_path=work / "broker.log").start()
        try:
            _say(f"lateness: {size.assignments} assignments, {2 * size.assignments} timers")
            rows, stop_s = _lateness_run(size, broker.bootstrap, config, log)
            _say(f"lateness done: {rows}")
            one = _drain_rate(1, size, broker.bootstrap, config, log)
            _say(f"one replica: {one:.1f} breaches/s")
            two = _drain_rate(2, size, broker.bootstrap, config, log)
            _say(f"two replicas: {two:.1f} breaches/s")
            errors = log.read_text(errors="replace").count('"level":"error"')
            if errors:
                _say(f"{errors} errors logged by routing; last lines:")
                sys.stderr.write(log.read_text(errors="replace")[-3000:])
        except Exception:
            sys.stderr.write(log.read_text(errors="replace")[-5000:] if log.exists() else "")
            raise
        finally:
            broker.stop()
    rows += [
        # Breaches/s drained by two replicas against one (the baseline).
        _row("sla_timer_replica_speedup", two, "breaches/s", one),
        _row("sla_timer_stop_seconds", stop_s, "s"),
    ]
    return rows


def main() -> None:
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    rows = run(quick)
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        ratio = "" if r["ratio"] is None else f"  ratio {r['ratio']:.2f}"
        print(f"{r['name']:<{width}}  {r['value']:>12} {r['unit']}{ratio}")


if __name__ == "__main__":
    main()
