"""What the benchmark modules share: results, a throwaway PostgreSQL database, the bundled
broker, services as real processes, and the load generator (wrk, else an async one).

Every figure is a pair measured in the same run on the same machine: the design and a
baseline. Absolute numbers vary by machine; ratios much less.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from shared.broker import BundledBroker, free_port

ROOT = Path(__file__).resolve().parent.parent
PG = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TOKEN = "bench-admin-token-0123456789abcdef"
WRITE_KEY = "bench-write-key-0123456789"
CONNECTIONS = 32
"""Concurrent connections of the HTTP load generator (wrk -c)."""


def result(
    name: str,
    value: float | None,
    unit: str,
    baseline: float | None,
    *,
    ratio: float | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """One figure: ``ratio`` defaults to value ÷ baseline when both are known."""
    if ratio is None and value is not None and baseline:
        ratio = value / baseline
    out: dict[str, Any] = {
        "name": name,
        "value": None if value is None else round(value, 3),
        "unit": unit,
        "baseline": None if baseline is None else round(baseline, 3),
        "ratio": None if ratio is None else round(ratio, 3),
    }
    if note:
        out["note"] = note
    return out


@dataclass
class Sizes:
    """How long and how much: full (``make bench``), quick (``BENCH_QUICK=1``), smoke (tests)."""

    load_seconds: float
    speed_samples: int
    background_per_second: int
    rss_leads: int
    batch_events: int
    raw_events: int

    @classmethod
    def pick(cls, quick: bool, smoke: bool = False) -> Sizes:
        if smoke:
            return cls(1.0, 3, 50, 1_000, 20, 2_000)
        if quick:
            return cls(5.0, 40, 500, 100_000, 100, 20_000)
        return cls(10.0, 150, 500, 1_000_000, 100, 50_000)


# ---------------------------------------------------------------------------------------------
# PostgreSQL


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_database() -> str:
    """A fresh PostgreSQL database; returns its asyncpg URL for SQLAlchemy."""
    name = f"lf_bench_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    root = PG.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{root}/{name}"


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def plain_url(url: str) -> str:
    """The asyncpg form of a SQLAlchemy URL."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


# ---------------------------------------------------------------------------------------------
# Processes


@dataclass
class Stack:
    """A broker, a database and the services started on them, torn down on exit."""

    tmp: Path
    broker: BundledBroker
    db_url: str
    prefix: str = field(default_factory=lambda: f"bench{uuid.uuid4().hex[:6]}.")
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def env(self) -> dict[str, str]:
        """The environment Compose gives the services (docker-compose.yml), on this machine."""
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_ENABLE_IDEMPOTENCE": "false",  # the bundled broker rejects it
            "KAFKA_REPLICATION_FACTOR": "1",
            "DATABASE_URL": self.db_url,
            "LEADFLOW_HOST": "127.0.0.1",
            "LEADFLOW_API_TOKEN": TOKEN,
            "LEADFLOW_WRITE_KEYS": WRITE_KEY,
            "LEADFLOW_CONFIG": str(bench_config(self.tmp)),
            "LEADFLOW_TOPIC_PREFIX": self.prefix,
            "LEADFLOW_LOG_LEVEL": "WARNING",
            "LEADFLOW_VAR_DIR": str(self.tmp / "var"),
            # Short group timeouts, as the tests use: a consumer group of the bundled broker
            # otherwise takes about 40 s to form. No figure includes start-up.
            "KAFKA_SESSION_TIMEOUT_MS": "2000",
            "KAFKA_HEARTBEAT_INTERVAL_MS": "300",
            "KAFKA_REBALANCE_TIMEOUT_MS": "2000",
        }
        env.pop("LEADFLOW_DEV", None)
        env.update(self.extra_env)
        return env

    def migrate(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "services.cli", "migrate"],
            env=self.env(),
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )

    def start(self, *names: str) -> None:
        """Start services as ``leadflow NAME`` does, and wait until each is ready."""
        began = time.monotonic()
        env = self.env()
        for name in names:
            port = free_port()
            env[f"LEADFLOW_{name.upper()}_PORT"] = str(port)
            log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "services.cli", name],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=log,
            )
            self.urls[name] = f"http://127.0.0.1:{port}"
        for name in names:
            wait_ready(self.urls[name] + "/readyz", self.tmp / f"{name}.log")
        say(f"started {', '.join(names)} in {time.monotonic() - began:.1f}s")

    def stop(self, grace: float = 30.0) -> None:
        began = time.monotonic()
        stop_all(list(self.procs.values()), grace)
        if self.procs:
            say(f"stopped {', '.join(self.procs)} in {time.monotonic() - began:.1f}s")
        self.procs.clear()


def say(msg: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def stop_all(procs: list[subprocess.Popen[bytes]], grace: float = 30.0) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(url: str, log: Path | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise RuntimeError(f"{url} not ready after {timeout}s\n{tail}")


def bench_config(tmp: Path) -> Path:
    """The default config with the per-IP rate limit raised out of the load generator's way."""
    path = tmp / "leadflow-bench.yaml"
    if not path.exists():
        text = (ROOT / "shared" / "default_config.yaml").read_text()
        text = re.sub(r"per_second: \d+", "per_second: 1000000", text, count=1)
        text = re.sub(r"burst: \d+", "burst: 1000000", text, count=1)
        path.write_text(text)
    return path


@contextmanager
def stack(tmp: Path, **extra_env: str) -> Iterator[Stack]:
    """A bundled broker and a throwaway PostgreSQL database, migrated; services via start()."""
    broker = BundledBroker(log_path=tmp / "broker.log").start()
    db_url = create_database()
    st = Stack(tmp=tmp, broker=broker, db_url=db_url, extra_env=dict(extra_env))
    try:
        st.migrate()
        yield st
    finally:
        st.stop()
        broker.stop()
        drop_database(db_url)


@contextmanager
def process(
    args: list[str], ready_url: str, tmp: Path, name: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A helper process (a baseline app), ready when ``ready_url`` answers 200."""
    log = open(tmp / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=log, env=env or dict(os.environ))
    try:
        wait_ready(ready_url, tmp / f"{name}.log")
        yield proc
    finally:
        stop_all([proc])


def demo_body(email: str) -> dict[str, Any]:
    """A demo request from a VP at a target company: scoring makes it a hot SQL."""
    return {
        "email": email,
        "first_name": "Dana",
        "last_name": "Vance",
        "company": "Acme Software",
        "job_title": "VP of Sales",
        "company_size": "500",
        "industry": "software",
        "country": "DE",
        "consent_marketing": True,
    }


@contextmanager
def background_load(capture_url: str, seconds: float, rate: int) -> Iterator[None]:
    """Tracked page views through ``/v1/batch`` at ``rate`` a second, from bench/loadgen.py in
    its own process, for at most ``seconds``; stopped when the block ends."""
    auth = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    spec = {
        "url": capture_url + "/v1/batch",
        "seconds": seconds,
        "rate": rate,
        "size": 50 if rate >= 100 else 10,
        "kind": "batch",
        "connections": 1,
        "headers": {"Content-Type": "application/json", "Authorization": auth},
        "run": uuid.uuid4().hex[:6],
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.loadgen", json.dumps(spec)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=60)


def rss_mb(pid: int) -> float:
    """Resident set size of a process (MiB), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


# ---------------------------------------------------------------------------------------------
# Load generation

WRK_SCRIPT = r"""
local counter = 0
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function init(args)
  run = args[1] or "r"
  kind = args[2] or "form"
  size = tonumber(args[3] or "1")
end
function request()
  counter = counter + 1
  local who = string.format("%s-%d-%d", run, tid, counter)
  local body
  if kind == "batch" then
    local parts = {}
    for i = 1, size do
      parts[i] = string.format(
        '{"type":"track","userId":"u%s-%d","event":"Viewed","messageId":"m%s-%d",' ..
        '"properties":{"plan":"pro","n":%d}}', who, i, who, i, i)
    end
    body = '{"batch":[' .. table.concat(parts, ",") .. ']}'
  else
    body = string.format(
      '{"email":"u%s@bench.example","first_name":"Bench","last_name":"User",' ..
      '"company":"Bench Corp","consent_marketing":true}', who)
  end
  return wrk.format("POST", nil, wrk.headers, body)
end
"""


@dataclass
class Load:
    """What a load run achieved."""

    requests: int
    errors: int
    seconds: float

    @property
    def ok_per_second(self) -> float:
        return max(self.requests - self.errors, 0) / self.seconds if self.seconds else 0.0


def _units(text: str) -> float:
    mult = {"k": 1e3, "m": 1e6}
    text = text.strip().lower()
    if text and text[-1] in mult:
        return float(text[:-1]) * mult[text[-1]]
    return float(text)


def run_load(
    url: str,
    seconds: float,
    *,
    kind: str = "form",
    size: int = 1,
    connections: int = CONNECTIONS,
    headers: dict[str, str] | None = None,
    tmp: Path | None = None,
) -> Load:
    """POST unique bodies to ``url`` for ``seconds``: wrk if installed, else bench.loadgen."""
    run_id = uuid.uuid4().hex[:8]
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    wrk = shutil.which("wrk")
    if wrk and not os.environ.get("BENCH_NO_WRK"):
        folder = Path(tmp or tempfile.gettempdir())
        script = folder / "bench-post.lua"
        script.write_text(WRK_SCRIPT)
        args = [wrk, "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s"]
        args += ["-s", str(script)]
        for k, v in hdrs.items():
            args += ["-H", f"{k}: {v}"]
        args += [url, "--", run_id, kind, str(size)]
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
        m = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
        if not m:
            raise RuntimeError(f"cannot read wrk output:\n{out}")
        secs = float(m.group(2)) / (1000 if m.group(3) == "ms" else 1)
        errors = 0
        for pattern in (r"Non-2xx or 3xx responses: (\d+)", r"Socket errors: .*timeout (\d+)"):
            e = re.search(pattern, out)
            errors += int(e.group(1)) if e else 0
        return Load(int(m.group(1)), errors, secs)
    args = [
        sys.executable,
        "-m",
        "bench.loadgen",
        json.dumps(
            {
                "url": url,
                "seconds": seconds,
                "kind": kind,
                "size": size,
                "connections": connections,
                "headers": hdrs,
                "run": run_id,
            }
        ),
    ]
    out = subprocess.run(args, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    data = json.loads(out.strip().splitlines()[-1])
    return Load(data["requests"], data["errors"], data["seconds"])
