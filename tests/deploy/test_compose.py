"""``docker-compose.yml`` run without Docker: every service as a local process with exactly the
command and environment Compose would give it, then a demo request through to an assignment.

No Docker engine runs here. What differs from the containers is only what must: the host names
``kafka`` and ``postgres`` are mapped to a local bundled broker and a fresh PostgreSQL database,
each replica listens on a port of its own (they would each have a container), and idempotent
production is off because the bundled broker rejects it (Apache Kafka in Compose accepts it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from shared.broker import BundledBroker, free_port
from shared.settings import Settings
from tests.deploy.compose import (
    ROOT,
    InterpolationError,
    load_compose,
    service_environment,
    start_order,
)

TOKEN = "compose-test-admin-token-0123456789"
#: What an operator's .env file next to docker-compose.yml would hold.
DOTENV = {"LEADFLOW_API_TOKEN": TOKEN, "POSTGRES_PASSWORD": "s3cret"}
APP_SERVICES = ("capture", "scoring", "routing")
#: Variables of the host that must not leak into a "container".
OURS = ("LEADFLOW_", "KAFKA_", "DATABASE_URL", "META_", "GOOGLE_ADS_", "LINKEDIN_", "OTEL_")


def _entrypoint() -> list[str]:
    """The image's ENTRYPOINT (deploy/Dockerfile), as the command a local process runs."""
    import json

    lines = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8").splitlines()
    entry = [json.loads(line.split(None, 1)[1]) for line in lines if line.startswith("ENTRYPOINT")]
    assert entry == [["leadflow"]], entry  # the last stage runs the leadflow command
    return [sys.executable, "-m", "services.cli"]


def test_compose_refuses_to_start_without_an_admin_token() -> None:
    with pytest.raises(InterpolationError, match="LEADFLOW_API_TOKEN"):
        load_compose({})


def test_compose_shape() -> None:
    """Two replicas of scoring and routing, only capture published, one-shot init before all."""
    services = load_compose(DOTENV)["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["init"]["command"] == ["init"]
    for name in APP_SERVICES:
        svc = services[name]
        assert svc["command"] == [name]
        assert svc["depends_on"]["init"] == {"condition": "service_completed_successfully"}
        assert svc["healthcheck"]["test"][:3] == ["CMD", "leadflow", "healthcheck"]
        replicas = svc.get("deploy", {}).get("replicas", 1)
        assert replicas == (1 if name == "capture" else 2)
        assert ("ports" in svc) == (name == "capture"), name
    published = [n for n, s in services.items() if s.get("ports")]
    assert published == ["capture"]
    env = service_environment(services["scoring"])
    assert set(Settings.model_fields) >= {k.lower() for k in env if k.startswith(("LEADFLOW_",))}
    Settings(**{k.lower(): v for k, v in env.items() if v and k.lower() in Settings.model_fields})


def _mapped(env: dict[str, str], bootstrap: str, db_url: str) -> dict[str, str]:
    """The container environment with Compose's host names pointed at local infrastructure."""
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    url = urlsplit(env["DATABASE_URL"])
    assert (url.hostname, url.port, url.path) == ("postgres", 5432, "/leadflow"), url
    out = {k: v for k, v in os.environ.items() if not k.startswith(OURS)}
    out.update(env)
    out["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    out["DATABASE_URL"] = db_url
    out["KAFKA_ENABLE_IDEMPOTENCE"] = "false"  # the bundled broker refuses idempotent producers
    return out


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    """A broker of this test's own: the services use the default topic prefix and groups."""
    b = BundledBroker(log_path=tmp_path / "broker.log").start()
    try:
        yield b.bootstrap
    finally:
        b.stop()


def _wait(
    url: str, procs: list[subprocess.Popen[Any]], until: Any = None, timeout: float = 40
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        for p in procs:
            assert p.poll() is None, f"a service exited with {p.returncode}"
        try:
            resp = httpx.get(url, timeout=2.0, headers={"Authorization": f"Bearer {TOKEN}"})
            last = resp.status_code, resp.text[:300]
            if resp.status_code == 200 and (until is None or until(resp.json())):
                return resp.json()
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise AssertionError(f"{url}: not there in {timeout}s (last: {last})")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_compose_services_as_processes_route_a_demo_request(
    broker: str, pg_db_url: str, tmp_path: Path
) -> None:
    t0 = time.monotonic()

    def phase(what: str) -> None:  # shown with -s or on failure: where the time went
        print(f"{time.monotonic() - t0:6.1f}s {what}")

    services = load_compose(DOTENV)["services"]
    order = [n for n in start_order(services) if n not in ("kafka", "postgres")]
    assert order.index("init") < min(order.index(n) for n in APP_SERVICES)
    entry = _entrypoint()

    # The one-shot job first: topics and migrations, exit 0 (service_completed_successfully).
    init = services["init"]
    job = subprocess.run(
        [*entry, *init["command"]],
        env=_mapped(service_environment(init), broker, pg_db_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert job.returncode == 0, job.stdout + job.stderr
    phase("init job done")
    assert "partitions" in job.stdout and "database migrated" in job.stdout

    procs: list[subprocess.Popen[Any]] = []
    urls: dict[str, list[str]] = {}
    checks: list[tuple[list[str], dict[str, str]]] = []
    try:
        for name in APP_SERVICES:
            svc = services[name]
            for replica in range(svc.get("deploy", {}).get("replicas", 1)):
                env = _mapped(service_environment(svc), broker, pg_db_url)
                port = free_port()  # each replica has a container (and a port) of its own
                env[f"LEADFLOW_{name.upper()}_PORT"] = str(port)
                log = open(tmp_path / f"{name}-{replica}.log", "wb")  # noqa: SIM115
                procs.append(
                    subprocess.Popen(
                        [*entry, *svc["command"]], env=env, stdout=log, stderr=subprocess.STDOUT
                    )
                )
                urls.setdefault(name, []).append(f"http://127.0.0.1:{port}")
                check = svc["healthcheck"]["test"]
                assert check[:2] == ["CMD", "leadflow"]
                if replica == 0:  # one run per service: each is a whole Python process
                    checks.append(([*entry, *check[2:]], env))
        phase("services started")
        for name in APP_SERVICES:
            for url in urls[name]:
                # generous: five Python processes start at once on a possibly busy machine
                _wait(f"{url}/readyz", procs, timeout=120)
                phase(f"{url} ready ({name})")
        # The Compose health check command itself passes (run side by side: each is a process).
        runs = [subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE) for cmd, env in checks]
        for run in runs:
            _, err = run.communicate(timeout=60)
            assert run.returncode == 0, err

        phase("health checks pass")
        resp = httpx.post(
            f"{urls['capture'][0]}/v1/forms/demo-request/submissions",
            json={
                "email": "vp@bigsoft.example",
                "job_title": "VP Engineering",
                "company_size": "500",
                "industry": "software",
                "country": "US",
                "company": "BigSoft",
                "interest": "demo",
            },
            timeout=10,
        )
        assert resp.status_code == 202, resp.text
        lead = _wait(
            f"{urls['scoring'][0]}/v1/leads?email=vp@bigsoft.example",
            procs,
            until=lambda b: bool(b["items"]) and b["items"][0]["stage"] == "SQL",
        )
        phase("lead is SQL")
        lead_id = lead["items"][0]["id"]
        # Either routing replica answers from the shared database.
        _wait(
            f"{urls['routing'][1]}/v1/assignments",
            procs,
            until=lambda b: any(a["lead_id"] == lead_id for a in b["items"]),
        )
        phase("assigned")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
