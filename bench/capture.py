"""Capture throughput: single form posts against an echo app and a naive database insert, and
``/v1/batch`` events against raw aiokafka production of the same events.

capture runs as ``leadflow capture`` on PostgreSQL and the bundled broker, with the per-IP
rate limit raised out of the way and as many worker processes as Compose gives it
(:data:`WORKERS`; the echo and naive apps get as many); every post is a unique newsletter
signup.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    WRITE_KEY,
    Load,
    Sizes,
    result,
    run_load,
    stack,
    stop_all,
    wait_ready,
)
from shared.broker import free_port
from shared.bus import make_producer
from shared.contract import Contact, Interaction
from shared.events import CloudEvent, InteractionType, utcnow
from shared.outbox import publish
from shared.settings import Settings

FORM = "/v1/forms/newsletter/submissions"
#: Concurrent ``/v1/batch`` requests, and concurrent batches of the raw producer.
BATCH_CONNECTIONS = 32
#: ``LEADFLOW_CAPTURE_WORKERS`` of docker-compose.yml (one per core of the 2-core machine).
WORKERS = 2


def _tracked_events(n: int, run: str) -> list[CloudEvent]:
    """Tracked events as capture writes them for a ``/v1/batch`` of track calls."""
    out = []
    for i in range(n):
        key = f"u{run}-{i}"
        ix = Interaction(
            lead_key=key,
            occurred_at=utcnow(),
            channel="tracking",
            form_id=None,
            intent=None,
            contact=Contact(email=None),
            custom={},
            track={"event": "Viewed", "name": None, "properties": {"plan": "pro", "n": i}},
        )
        out.append(
            CloudEvent(
                type=InteractionType.TRACKED,
                source="/leadflow/capture",
                data=ix.to_data(),
                key=key,
            )
        )
    return out


#: Each pair is measured in this many alternating slices (A, B, A, B...), so that a change in
#: the machine's load during the run (other processes) falls on both sides of a ratio.
SLICES = 2


def _total(loads: list[Load]) -> Load:
    return Load(
        sum(x.requests for x in loads), sum(x.errors for x in loads), sum(x.seconds for x in loads)
    )


async def _raw_produce(bootstrap: str, topic: str, n: int, size: int) -> float:
    """Events/s of aiokafka alone: the producer capture uses, batches sent concurrently."""
    settings = Settings(leadflow_dev=True, kafka_bootstrap_servers=bootstrap)
    producer = make_producer(settings)
    await producer.start()
    try:
        events = _tracked_events(n, "raw")
        chunks = [events[i : i + size] for i in range(0, n, size)]
        queue = list(reversed(chunks))
        await publish(producer, [(topic, events[0])])  # metadata, connection

        async def worker() -> None:
            while queue:
                chunk = queue.pop()
                await publish(producer, [(topic, e) for e in chunk])

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(BATCH_CONNECTIONS)))
        return n / (time.perf_counter() - start)
    finally:
        await producer.stop()


def run(quick: bool, smoke: bool = False) -> list[dict[str, Any]]:
    sizes = Sizes.pick(quick, smoke)
    secs = sizes.load_seconds
    with tempfile.TemporaryDirectory(prefix="lf-bench-capture-") as tmp_name:
        tmp = Path(tmp_name)
        with stack(tmp) as st, contextlib.ExitStack() as procs:
            # Start the baselines and capture together (start-up is not measured), then
            # measure one at a time while the others sit idle.
            ports = {kind: free_port() for kind in ("echo", "naive")}
            for kind, extra in (("echo", []), ("naive", [st.db_url])):
                args = [sys.executable, "-m", "bench.baselines", kind, str(ports[kind]), *extra]
                args.append(str(WORKERS))
                log = procs.enter_context(open(tmp / f"{kind}.log", "ab"))
                proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=log)
                procs.callback(stop_all, [proc])
            st.extra_env["LEADFLOW_CAPTURE_WORKERS"] = str(WORKERS)
            st.start("capture")
            for kind, port in ports.items():
                wait_ready(f"http://127.0.0.1:{port}/readyz", tmp / f"{kind}.log")
            url = st.urls["capture"]
            run_load(url + FORM, min(secs, 2.0), tmp=tmp)  # warm-up
            slices = 1 if smoke else SLICES
            part = float(math.ceil(secs / slices))  # wrk takes whole seconds
            echo_parts: list[Load] = []
            naive_parts: list[Load] = []
            single_parts: list[Load] = []
            base = {kind: f"http://127.0.0.1:{port}{FORM}" for kind, port in ports.items()}
            for _ in range(slices):
                echo_parts.append(run_load(base["echo"], part, tmp=tmp))
                single_parts.append(run_load(url + FORM, part, tmp=tmp))
                naive_parts.append(run_load(base["naive"], part, tmp=tmp))
            echo, naive, single = _total(echo_parts), _total(naive_parts), _total(single_parts)
            auth = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
            batch_parts: list[Load] = []
            raw_rates: list[float] = []
            for _ in range(slices):
                batch_parts.append(
                    run_load(
                        url + "/v1/batch",
                        part,
                        kind="batch",
                        size=sizes.batch_events,
                        connections=BATCH_CONNECTIONS,
                        headers=auth,
                        tmp=tmp,
                    )
                )
                raw_rates.append(
                    asyncio.run(
                        _raw_produce(
                            st.bootstrap,
                            st.prefix + "raw-produce",
                            max(sizes.batch_events, sizes.raw_events // slices),
                            sizes.batch_events,
                        )
                    )
                )
            batch = _total(batch_parts)
            raw = sum(raw_rates) / len(raw_rates)
    batch_eps = batch.ok_per_second * sizes.batch_events
    note_err = f"; errors: capture {single.errors}, batch {batch.errors}"
    return [
        result(
            "capture_single_vs_echo",
            single.ok_per_second,
            "posts/s",
            echo.ok_per_second,
            note=f"{single.seconds:.0f}s, {single.requests} posts{note_err}",
        ),
        result(
            "capture_single_vs_naive_db_insert",
            single.ok_per_second,
            "posts/s",
            naive.ok_per_second,
            note=f"naive errors: {naive.errors}",
        ),
        result(
            "capture_batch_vs_raw_produce",
            batch_eps,
            "events/s",
            raw,
            note=f"batches of {sizes.batch_events} track calls with messageId, "
            f"{BATCH_CONNECTIONS} connections; each pair measured in alternating slices",
        ),
    ]


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=True), indent=2))
