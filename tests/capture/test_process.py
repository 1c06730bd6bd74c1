"""The real process: ``python -m services.cli capture`` serves, publishes and drains on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest

from shared.broker import free_port
from tests.support import make_settings, process_env, start_service, wait_for, wait_for_events


@pytest.mark.slow
async def test_cli_process_serves_and_stops_cleanly(
    kafka_bootstrap: str, pg_db_url: str, tmp_path: Path
) -> None:
    settings = make_settings(kafka_bootstrap, pg_db_url)
    port = free_port()
    env = process_env(settings, LEADFLOW_CAPTURE_PORT=str(port))
    log_path = tmp_path / "capture.log"
    proc = await start_service("capture", env, log_path)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5) as c:

            async def ready() -> bool:
                try:
                    return (await c.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(ready, timeout=60, what="capture process ready")
            resp = await c.post(
                "/v1/forms/demo-request/submissions",
                data={"email": "proc@example.com", "company_size": "500+"},
            )
            assert resp.status_code == 202, resp.text
            spec = await c.get("/openapi.json")
            assert "/v1/forms/{form_id}/submissions" in spec.json()["paths"]
        topic = f"{settings.leadflow_topic_prefix}interactions"
        [event] = await wait_for_events(kafka_bootstrap, topic, lambda evs: len(evs) >= 1)
        assert event.id == resp.json()["event_id"]
        assert event.data["contact"]["company_size"] == 500
        proc.send_signal(signal.SIGTERM)
        # uvicorn re-raises SIGTERM after its graceful shutdown, so -15 is a clean exit too.
        assert await asyncio.wait_for(proc.wait(), 30) in (0, -signal.SIGTERM)
        log = log_path.read_text()
        assert "Application shutdown complete" in log and "Traceback" not in log
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
