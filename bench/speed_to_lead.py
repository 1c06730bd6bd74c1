"""Speed to lead: a demo-request POST to capture until ``routing.assigned`` for that lead is
on Kafka, with all three services as processes and a steady background of other interactions
(tracked page views through ``/v1/batch``, 500 a second in the full and quick runs); first,
on the same stack, with no other load (``speed_to_lead_idle_*``: the fixed waits alone).

The clock starts before the POST is sent and stops when a plain consumer of the routing topic
(no group, 5 ms fetch wait so the measuring adds little) reads the assignment.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer

from bench.common import Sizes, background_load, demo_body, result, stack
from shared.events import RoutingType, from_kafka
from shared.topics import Topics

DEMO = "/v1/forms/demo-request/submissions"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


async def _measure(capture: str, bootstrap: str, topic: str, samples: int) -> list[float]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="latest",
        fetch_max_wait_ms=5,
    )
    await consumer.start()
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    done = asyncio.Event()
    expected: set[str] = set()

    async def read() -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=50)
            now = time.perf_counter()
            for records in batches.values():
                for rec in records:
                    ev = from_kafka(rec.key, rec.value, rec.headers)
                    if ev.type == RoutingType.ASSIGNED and ev.key in sent and ev.key not in seen:
                        seen[ev.key] = now
            if expected and expected <= seen.keys():
                done.set()

    reader = asyncio.create_task(read())
    try:
        # the consumer has its partitions before the first POST
        while not consumer.assignment():  # noqa: ASYNC110 - aiokafka has no event for it
            await asyncio.sleep(0.05)
        await consumer.seek_to_end()
        run = uuid.uuid4().hex[:6]
        async with httpx.AsyncClient(base_url=capture, timeout=10) as client:

            async def one(i: int) -> None:
                email = f"dana.{run}.{i}@acme-software.example"
                sent[email] = time.perf_counter()
                resp = await client.post(DEMO, json=demo_body(email))
                resp.raise_for_status()

            # warm-up: the first lead goes all the way before anything is measured
            await one(-1)
            deadline = time.monotonic() + 60
            while f"dana.{run}.-1@acme-software.example" not in seen:
                if time.monotonic() > deadline:
                    raise RuntimeError("no routing.assigned within 60 s of the warm-up post")
                await asyncio.sleep(0.05)
            seen.clear()
            sent.clear()
            for i in range(samples):
                expected.add(f"dana.{run}.{i}@acme-software.example")
                await one(i)
                await asyncio.sleep(0.25)
        await asyncio.wait_for(done.wait(), timeout=60)
    finally:
        reader.cancel()
        await consumer.stop()
    return [(seen[k] - sent[k]) * 1000 for k in expected if k in seen]


def run(quick: bool, smoke: bool = False) -> list[dict[str, Any]]:
    sizes = Sizes.pick(quick, smoke)
    with tempfile.TemporaryDirectory(prefix="lf-bench-stl-") as tmp_name:
        tmp = Path(tmp_name)
        with stack(tmp) as st:
            st.start("capture", "scoring", "routing")
            topic = Topics(st.prefix).routing
            # First with nothing else going on (the fixed waits alone), then under load.
            idle = asyncio.run(
                _measure(st.urls["capture"], st.bootstrap, topic, max(3, sizes.speed_samples // 2))
            )
            seconds = sizes.speed_samples * 0.3 + 30
            with background_load(st.urls["capture"], seconds, sizes.background_per_second):
                time.sleep(1.0)
                latencies = asyncio.run(
                    _measure(st.urls["capture"], st.bootstrap, topic, sizes.speed_samples)
                )
    note = (
        f"{len(latencies)} demo requests, 4/s, over {sizes.background_per_second} "
        "background interactions/s"
    )
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    i50, i99 = percentile(idle, 50), percentile(idle, 99)
    idle_note = f"{len(idle)} demo requests, 4/s, no other load"
    return [
        result("speed_to_lead_idle_p50_ms", i50, "ms", 150.0, ratio=i50 / 150.0, note=idle_note),
        result("speed_to_lead_idle_p99_ms", i99, "ms", 150.0, ratio=i99 / 150.0, note=idle_note),
        result("speed_to_lead_p50_ms", p50, "ms", 150.0, ratio=p50 / 150.0, note=note),
        result("speed_to_lead_p99_ms", p99, "ms", 150.0, ratio=p99 / 150.0, note=note),
    ]


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=2))
