"""Leadflow in the production shape, for the resilience drills.

A fresh migrated PostgreSQL database, a private bundled broker and every service as its own OS
process, started with the commands Compose runs (``leadflow capture|scoring|routing``) in
production mode (no ``LEADFLOW_DEV``): one capture (with Compose's two worker processes), two
replicas each of scoring and routing.
Scoring and routing reach PostgreSQL through a :class:`~tests.tcpproxy.TcpProxy` the drills can
cut; capture connects directly, because the database drill is about the consumers (capture's own
outage behaviour has its own tests).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import asyncpg
import httpx
import yaml

from shared.broker import BundledBroker, free_port
from shared.config import load_config
from shared.topics import Topics
from tests.tcpproxy import TcpProxy

PG_ADMIN = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
ROOT = Path(__file__).resolve().parents[2]
LEADFLOW = str(ROOT / ".venv" / "bin" / "leadflow")
WRITE_KEY = "chaos-write-key"
#: SLA clocks of the drills, in plain seconds (the desk's calendar is 24x7). The warning comes
#: early and the breach more than a timer lease (30 s) after it: a replica killed while holding
#: the warning's lease would otherwise let the breach overtake it, and routing then drops the
#: warning for good (``fire_timer`` in routing's handlers/escalation.py warns only while "open").
#: ``CHAOS_SLA_SECONDS=5 CHAOS_SLA_WARN_FRACTION=0.8`` reproduces that.
SLA_SECONDS = float(os.environ.get("CHAOS_SLA_SECONDS", "40"))
SLA_WARN_FRACTION = float(os.environ.get("CHAOS_SLA_WARN_FRACTION", "0.2"))
#: How long a consumer group takes to notice a dead member (kept short: the drills kill often).
GROUP_TIMEOUTS = {
    "KAFKA_SESSION_TIMEOUT_MS": "3000",
    "KAFKA_HEARTBEAT_INTERVAL_MS": "300",
    "KAFKA_REBALANCE_TIMEOUT_MS": "3000",
}


def chaos_config() -> dict[str, Any]:
    """The packaged config, changed only where a load drill from one IP needs it.

    * capture's per-IP rate limit is lifted (all load comes from 127.0.0.1);
    * every lead is routed to the 24x7 desk, so assignment does not depend on the hour;
    * SLA policies are seconds long, so SLA timers fire (and could fire twice) during a drill;
      a breach only notifies the manager, so the assignment stays the lead's live one.
    """
    code = os.environ.get("CHAOS_CODE")
    config = load_config(Path(code) / "shared" / "default_config.yaml" if code else None)
    config["capture"]["rate_limit"] = {"per_second": 1_000_000, "burst": 1_000_000}
    routing = config["routing"]
    routing["rules"] = [{"name": "everyone", "team": "lead-desk", "when": {}}]
    routing["sla"]["policies"] = {
        name: {"business_seconds": SLA_SECONDS} for name in routing["sla"]["policies"]
    }
    routing["sla"]["warn_fraction"] = SLA_WARN_FRACTION
    routing["escalation"]["ladder"] = ["notify_manager"]
    return config


@dataclass
class Service:
    """One service process: ``leadflow <command>`` on its own port, logging to a file."""

    name: str
    command: str
    port: int
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n--- start #{self.starts} at {time.time():.3f}\n".encode())
            out.flush()
            # its own process group: a service with worker processes (capture) is killed
            # whole, as a container's are
            self.proc = subprocess.Popen(
                [LEADFLOW, self.command],
                env=self.env,
                stdout=out,
                stderr=out,
                cwd=ROOT,
                start_new_session=True,
            )

    def kill(self) -> None:
        """kill -9: no drain, no commit, no goodbye to the group."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@dataclass
class Cluster:
    """The whole deployment; use ``async with Cluster(workdir) as cluster``."""

    workdir: Path
    replicas: int = 2
    api_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    read_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    prefix: str = field(default_factory=lambda: f"chaos{uuid.uuid4().hex[:8]}.")
    dbname: str = field(default_factory=lambda: f"lf_chaos_{uuid.uuid4().hex[:10]}")
    services: dict[str, Service] = field(default_factory=dict)
    broker: BundledBroker | None = None
    db_proxy: TcpProxy | None = None

    @property
    def topics(self) -> Topics:
        return Topics(self.prefix)

    @property
    def bootstrap(self) -> str:
        assert self.broker is not None
        return self.broker.bootstrap

    @property
    def pg_url(self) -> str:
        """Direct URL of the drill's database (for reconciliation; never through the proxy)."""
        return PG_ADMIN.rsplit("/", 1)[0] + f"/{self.dbname}"

    def _db_url(self, port: int) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{self.dbname}"

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        for svc in self.services.values():
            svc.stop()
        if self.broker is not None:
            self.thaw_broker()
            self.broker.stop()
        if self.db_proxy is not None:
            self.db_proxy.stop()
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
        finally:
            await conn.close()

    async def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(f'CREATE DATABASE "{self.dbname}"')
        finally:
            await conn.close()
        self.broker = BundledBroker(log_path=self.workdir / "broker.log").start()
        pg_port = int(PG_ADMIN.split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        self.db_proxy = TcpProxy("127.0.0.1", pg_port).start()
        config = self.workdir / "leadflow.yaml"
        config.write_text(yaml.safe_dump(chaos_config(), sort_keys=False))
        base = {k: v for k, v in os.environ.items() if not k.startswith(("LEADFLOW_", "KAFKA_"))}
        base.pop("DATABASE_URL", None)
        if code := os.environ.get("CHAOS_CODE"):
            # Drill another copy of the code (e.g. ``git archive`` of an older commit) to see
            # which drills it fails; the harness itself stays this checkout's.
            base["PYTHONPATH"] = code
        env = {
            **base,
            **GROUP_TIMEOUTS,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "DATABASE_URL": self._db_url(pg_port),
            "LEADFLOW_CONFIG": str(config),
            "LEADFLOW_TOPIC_PREFIX": self.prefix,
            "LEADFLOW_API_TOKEN": self.api_token,
            "LEADFLOW_READ_TOKENS": self.read_token,
            "LEADFLOW_WRITE_KEYS": WRITE_KEY,
            "LEADFLOW_OUTBOX_POLL_SECONDS": "0.2",
            "LEADFLOW_VAR_DIR": str(self.workdir / "var"),
        }
        await _run([LEADFLOW, "migrate"], env, self.workdir / "migrate.log")
        # as Compose runs it: two worker processes on one port
        self._add("capture", "capture", {**env, "LEADFLOW_CAPTURE_WORKERS": "2"})
        proxied = {**env, "DATABASE_URL": self._db_url(self.db_proxy.port)}
        for command in ("scoring", "routing"):
            for i in range(1, self.replicas + 1):
                self._add(f"{command}-{i}", command, proxied)
        for svc in self.services.values():
            svc.start()
        await self.wait_ready(*self.services, timeout=90)

    def _add(self, name: str, command: str, env: dict[str, str]) -> None:
        port = free_port()
        env = {**env, f"LEADFLOW_{command.upper()}_PORT": str(port)}
        self.services[name] = Service(name, command, port, env, self.workdir / f"{name}.log")

    def replicas_of(self, command: str) -> list[Service]:
        return [s for s in self.services.values() if s.command == command]

    # --- faults -------------------------------------------------------------------------

    def kill(self, name: str) -> None:
        self.services[name].kill()

    def restart(self, name: str) -> None:
        self.services[name].kill()
        self.services[name].start()

    def freeze_broker(self) -> None:
        """SIGSTOP: the broker keeps its sockets open but answers nothing (a hung host)."""
        assert self.broker is not None and self.broker.proc is not None
        self.broker.proc.send_signal(signal.SIGSTOP)

    def thaw_broker(self) -> None:
        assert self.broker is not None
        if self.broker.proc is not None and self.broker.proc.poll() is None:
            self.broker.proc.send_signal(signal.SIGCONT)

    def cut_db(self) -> None:
        assert self.db_proxy is not None
        self.db_proxy.cut()

    def freeze_db(self) -> None:
        """Connections stay open but nothing flows (a hung host): callers wait for timeouts."""
        assert self.db_proxy is not None
        self.db_proxy.freeze()

    def restore_db(self) -> None:
        assert self.db_proxy is not None
        self.db_proxy.restore()

    # --- probes -------------------------------------------------------------------------

    def auth(self, *, admin: bool = False) -> dict[str, str]:
        """Headers for the non-public endpoints (reads take the read token)."""
        return {"Authorization": f"Bearer {self.api_token if admin else self.read_token}"}

    async def readyz(self, name: str) -> int:
        """The HTTP status of ``/readyz`` (0: no answer, e.g. the process is down)."""
        try:
            async with httpx.AsyncClient(timeout=2.0) as client:
                return (await client.get(f"{self.services[name].url}/readyz")).status_code
        except httpx.HTTPError:
            return 0

    async def wait_ready(self, *names: str, timeout: float = 60.0) -> float:
        """Wait until every named service answers ``/readyz`` 200; return the seconds waited."""
        started = time.monotonic()
        pending = set(names)
        while pending:
            for name in list(pending):
                proc = self.services[name].proc
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}; see its log")
                if await self.readyz(name) == 200:
                    pending.discard(name)
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"not ready after {timeout}s: {sorted(pending)}")
            if pending:
                await asyncio.sleep(0.2)
        return time.monotonic() - started

    def log_tail(self, name: str, lines: int = 40) -> str:
        text = self.services[name].log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


async def _run(argv: list[str], env: dict[str, str], log: Path) -> None:
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=out, stderr=out)
        if await proc.wait() != 0:
            raise RuntimeError(f"{' '.join(argv)} failed; see {log}")
