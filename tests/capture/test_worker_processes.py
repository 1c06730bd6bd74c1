"""``LEADFLOW_CAPTURE_WORKERS``: several processes serve capture's port, ``/metrics`` counts
all of them, and SIGTERM stops them all with what they accepted on Kafka."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from shared.broker import free_port
from shared.settings import DEV_WRITE_KEY
from shared.topics import Topics
from tests.support import (
    TEST_TOKEN,
    make_settings,
    process_env,
    read_topic,
    start_service,
    wait_for,
)

POSTS = 60


def _children(pid: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return {int(x) for x in out.split()}


def _served_by(folder: Path) -> set[str]:
    """The pids that counted an HTTP request (prometheus_client names its files by pid)."""
    return {m.group(1) for f in folder.iterdir() if (m := re.match(r"counter_(\d+)\.db", f.name))}


def _metrics_folder(pid: int) -> Path | None:
    """The multiprocess metrics directory in a process's environment."""
    for line in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0"):
        if line.startswith("PROMETHEUS_MULTIPROC_DIR="):
            return Path(line.split("=", 1)[1])
    return None


@pytest.mark.slow
async def test_two_worker_processes_are_counted_together_and_stop_together(
    kafka_bootstrap: str, pg_db_url: str, tmp_path: Path
) -> None:
    settings = make_settings(kafka_bootstrap, pg_db_url)
    topic = Topics(settings.leadflow_topic_prefix).interactions
    port = free_port()
    env = process_env(
        settings,
        LEADFLOW_CAPTURE_PORT=str(port),
        LEADFLOW_CAPTURE_WORKERS="2",
        LEADFLOW_WRITE_KEYS=DEV_WRITE_KEY,
    )
    log_path = tmp_path / "capture.log"
    proc = await start_service("capture", env, log_path)
    url = f"http://127.0.0.1:{port}"
    auth = httpx.BasicAuth(DEV_WRITE_KEY, "")
    try:

        async def both_ready() -> bool:
            # Ready answers come from either worker: ask on fresh connections until the
            # metrics directory shows requests counted by two processes.
            for _ in range(8):
                try:
                    async with httpx.AsyncClient(base_url=url, timeout=2) as c:
                        if (await c.get("/readyz")).status_code != 200:
                            return False
                except httpx.TransportError:
                    return False
            return len(_children(proc.pid)) >= 2

        await wait_for(both_ready, timeout=90, what="two capture workers ready")
        folders = {f for child in _children(proc.pid) if (f := _metrics_folder(child))}
        assert len(folders) == 1, folders
        folder = folders.pop()

        async def post(i: int) -> int:
            # One connection per post, so that the kernel hands them to either worker.
            async with httpx.AsyncClient(base_url=url, timeout=10, auth=auth) as c:
                call = {"type": "track", "event": "Viewed", "userId": f"w-{i}"}
                return (await c.post("/v1/track", json=call)).status_code

        codes = await asyncio.gather(*(post(i) for i in range(POSTS)))
        assert codes == [200] * POSTS
        assert len(_served_by(folder)) >= 2, "every post went to one worker"

        async with httpx.AsyncClient(base_url=url, timeout=5) as c:
            text = (await c.get("/metrics", headers={"Authorization": f"Bearer {TEST_TOKEN}"})).text
        direct = re.search(r'leadflow_capture_events_total\{path="direct"\} ([\d.]+)', text)
        assert direct is not None, text[:2000]
        assert float(direct.group(1)) == POSTS  # both workers' counts, whichever answered

        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 60)
        log = log_path.read_text()
        assert code == 0, log
        assert "Traceback" not in log
        assert not folder.exists()  # the parent removed the workers' metric files
        events = await read_topic(kafka_bootstrap, topic)
        assert len(events) == POSTS
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
