"""Property-based fuzzing of every service's OpenAPI with schemathesis: no input yields a 5xx,
and every answer has the content type and shape its operation declares (problem+json for
errors, the response model for successes).

The three services run as real processes (``python -m services.cli <name>``) on the test broker
and a fresh database; schemathesis generates requests from each service's own OpenAPI document
and sends them over HTTP. Bounded: a fixed number of examples per operation, derandomized so a
CI run is repeatable.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)

from services.capture.main import build_app as capture_app
from services.routing.main import build_app as routing_app
from services.scoring.main import build_app as scoring_app
from shared.broker import free_port
from shared.settings import Settings

pytestmark = pytest.mark.slow

TOKEN = "fuzz-token"
WRITE_KEY = "fuzz-write-key"
TRACKING = ("/v1/track", "/v1/identify", "/v1/page", "/v1/screen", "/v1/batch")


def _openapi(factory: Any) -> dict[str, Any]:
    # Building an app touches no network or database; it only needs settings to read.
    dummy = Settings(
        leadflow_dev=True,
        kafka_bootstrap_servers="127.0.0.1:1",
        database_url="sqlite+aiosqlite:///:memory:",
    )
    spec: dict[str, Any] = factory(dummy).openapi()
    return spec


SCHEMAS = {
    "capture": schemathesis.openapi.from_dict(_openapi(capture_app)),
    "scoring": schemathesis.openapi.from_dict(_openapi(scoring_app)),
    "routing": schemathesis.openapi.from_dict(_openapi(routing_app)),
}


@pytest.fixture(scope="module")
def live(
    kafka_bootstrap: str, sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """The three services as processes; yields their base URLs."""
    folder = tmp_path_factory.mktemp("fuzz")
    db = folder / "leadflow.db"
    shutil.copy(sqlite_template, db)
    env = {
        **os.environ,
        "LEADFLOW_DEV": "1",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "LEADFLOW_TOPIC_PREFIX": f"fuzz{free_port()}.",
        "LEADFLOW_API_TOKEN": TOKEN,
        "LEADFLOW_WRITE_KEYS": WRITE_KEY,
        "KAFKA_SESSION_TIMEOUT_MS": "1000",
        "KAFKA_HEARTBEAT_INTERVAL_MS": "100",
        "KAFKA_REBALANCE_TIMEOUT_MS": "1000",
        "LEADFLOW_LOG_LEVEL": "ERROR",
    }
    urls: dict[str, str] = {}
    procs: list[subprocess.Popen[bytes]] = []
    for name in SCHEMAS:
        port = free_port()
        env[f"LEADFLOW_{name.upper()}_PORT"] = str(port)
        log = open(folder / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "services.cli", name], env=env, stdout=log, stderr=log
            )
        )
        urls[name] = f"http://127.0.0.1:{port}"
    try:
        for name, url in urls.items():
            _wait_ready(url, folder / f"{name}.log")
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        # A 5xx that the check missed would still have left a traceback in a log.
        for name in SCHEMAS:
            text = (folder / f"{name}.log").read_text(errors="replace")
            assert "unhandled error" not in text, (
                f"{name} logged an unhandled error:\n{text[-3000:]}"
            )


def _wait_ready(url: str, log: Path, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready:\n{log.read_text(errors='replace')[-3000:]}")


def _auth(path: str) -> dict[str, str]:
    if path.startswith(TRACKING):
        return {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
    return {"Authorization": f"Bearer {TOKEN}"}


#: What every answer must satisfy.
CHECKS = [not_a_server_error, content_type_conformance, response_schema_conformance]

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "25")),
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    database=None,
)


@SCHEMAS["capture"].parametrize()
@FUZZ
def test_capture_answers_as_documented(case: Any, live: dict[str, str]) -> None:
    case.call_and_validate(base_url=live["capture"], headers=_auth(case.path), checks=CHECKS)


@SCHEMAS["scoring"].parametrize()
@FUZZ
def test_scoring_answers_as_documented(case: Any, live: dict[str, str]) -> None:
    case.call_and_validate(base_url=live["scoring"], headers=_auth(case.path), checks=CHECKS)


@SCHEMAS["routing"].parametrize()
@FUZZ
def test_routing_answers_as_documented(case: Any, live: dict[str, str]) -> None:
    case.call_and_validate(base_url=live["routing"], headers=_auth(case.path), checks=CHECKS)
