"""``leadflow dev`` (what ``make run`` runs) as a user would: real processes, real ports, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from shared.broker import free_port

pytestmark = pytest.mark.slow


def _get_json(url: str, timeout: float = 60.0, until: object = None) -> object:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            # dev mode's admin token, which may also read
            resp = httpx.get(url, timeout=2.0, headers={"Authorization": "Bearer dev-token"})
            if resp.status_code == 200:
                last = resp.json()
                if until is None or until(last):  # type: ignore[operator]
                    return last
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url}: condition not met in {timeout}s (last: {last!r})")


def test_dev_runs_the_walkthrough_and_stops_cleanly(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("capture", "scoring", "routing")}
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "LEADFLOW_CONFIG")
    }
    env.update(
        {
            "LEADFLOW_VAR_DIR": str(tmp_path / "var"),
            "LEADFLOW_CAPTURE_PORT": str(ports["capture"]),
            "LEADFLOW_SCORING_PORT": str(ports["scoring"]),
            "LEADFLOW_ROUTING_PORT": str(ports["routing"]),
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "dev", "--broker-port", str(free_port())],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = {n: f"http://127.0.0.1:{p}" for n, p in ports.items()}
        for url in base.values():
            _get_json(f"{url}/healthz", timeout=90)
        for url in base.values():
            _get_json(f"{url}/readyz", timeout=60)
        resp = httpx.post(
            f"{base['capture']}/v1/forms/demo-request/submissions",
            json={
                "email": "vp@bigsoft.example",
                "job_title": "VP Engineering",
                "company_size": "500",
                "industry": "software",
                "country": "US",
                "company": "BigSoft",
            },
            timeout=10,
        )
        assert resp.status_code == 202, resp.text
        lead = _get_json(
            f"{base['scoring']}/v1/leads?email=vp@bigsoft.example",
            until=lambda b: bool(b["items"]) and b["items"][0]["stage"] == "SQL",
        )
        lead_id = lead["items"][0]["id"]  # type: ignore[index]
        _get_json(
            f"{base['routing']}/v1/assignments",
            until=lambda b: any(a["lead_id"] == lead_id for a in b["items"]),
        )
        assert (tmp_path / "var" / "leadflow.db").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out
    assert "capture" in out and f":{ports['capture']}" in out
    assert "stopped" in out
