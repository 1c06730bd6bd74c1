"""Speed to lead: a demo-request POST to capture until ``routing.assigned`` for that lead is
on Kafka, with all three services as processes and a steady background of other interactions
(tracked page views through ``/v1/batch``, 500 a second in the full and quick runs); first,
on the same stack, with no other load (``speed_to_lead_idle_*``: the fixed waits alone).

The clock starts before the POST is sent and stops when a plain consumer of the routing topic
(no group, 5 ms fetch wait so the measuring adds little) reads the assignment. Afterwards
each lead's time is split into hops by the timestamps of its records (when each service
produced them), read back from the interactions and leads topics once the clock has stopped,
so that tracing costs the measured system nothing: capture (POST → interaction on Kafka),
scoring (→ ``lead.qualified``), routing (→ ``routing.assigned``) and reading it.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.common import Sizes, background_load, demo_body, result, stack
from shared.events import LeadType, RoutingType, from_kafka, headers_dict
from shared.topics import Topics

DEMO = "/v1/forms/demo-request/submissions"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


#: The hops of a lead's way, each ending when the named record was produced (read, for the last).
HOPS = ("capture", "scoring", "routing", "read")


@dataclass
class Trace:
    """Each measured lead's end-to-end time (ms) and its hops (ms, by :data:`HOPS`)."""

    total: list[float] = field(default_factory=list)
    hops: dict[str, list[float]] = field(default_factory=lambda: {h: [] for h in HOPS})

    def hop_note(self) -> str:
        """p50/p99 of each hop, for a result's note."""
        parts = [
            f"{h} {percentile(v, 50):.0f}/{percentile(v, 99):.0f}"
            for h, v in self.hops.items()
            if v
        ]
        return "hops p50/p99 ms: " + ", ".join(parts)


async def _produced_at(
    bootstrap: str, topics: Topics, keys: set[str]
) -> dict[str, dict[str, float]]:
    """When capture produced each lead's interaction and scoring its ``lead.qualified``
    (record timestamps, s), read back from the start of both topics."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    out: dict[str, dict[str, float]] = {}
    try:
        hops = {
            topics.interactions: ("capture", None),
            topics.leads: ("scoring", LeadType.QUALIFIED),
        }
        parts = [
            TopicPartition(topic, p) for topic in hops for p in await _partitions(consumer, topic)
        ]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        left = {tp for tp, end in ends.items() if end > 0}
        while left:
            batches = await consumer.getmany(*left, timeout_ms=1000)
            for tp, records in batches.items():
                hop, wanted = hops[tp.topic]
                for rec in records:
                    key = rec.key.decode() if rec.key else ""
                    if key in keys and (
                        wanted is None or headers_dict(rec.headers).get("ce_type") == wanted
                    ):
                        out.setdefault(key, {}).setdefault(hop, rec.timestamp / 1000)
                if records and records[-1].offset + 1 >= ends[tp]:
                    left.discard(tp)
    finally:
        await consumer.stop()
    return out


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    """The topic's partitions (metadata fetched if the consumer has none for it yet)."""
    await consumer._client._wait_on_metadata(topic)
    return consumer.partitions_for_topic(topic) or set()


async def _measure(capture: str, bootstrap: str, topics: Topics, samples: int) -> Trace:
    consumer = AIOKafkaConsumer(
        topics.routing,
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="latest",
        fetch_max_wait_ms=5,
    )
    await consumer.start()
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    # wall-clock times (s) of each lead's post, and of the records each hop produced
    posted: dict[str, float] = {}
    stamps: dict[str, dict[str, float]] = {}
    done = asyncio.Event()
    expected: set[str] = set()

    async def read() -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=50)
            now, wall = time.perf_counter(), time.time()
            for records in batches.values():
                for rec in records:
                    ev = from_kafka(rec.key, rec.value, rec.headers)
                    if ev.type == RoutingType.ASSIGNED and ev.key in sent and ev.key not in seen:
                        seen[ev.key] = now
                        stamps[ev.key] = {"routing": rec.timestamp / 1000, "read": wall}
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
                posted[email] = time.time()
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
    produced = await _produced_at(bootstrap, topics, expected)
    trace = Trace()
    for key in expected:
        if key not in seen:
            continue
        trace.total.append((seen[key] - sent[key]) * 1000)
        at, previous = {**produced.get(key, {}), **stamps[key]}, posted[key]
        for hop in HOPS:
            if hop in at:
                trace.hops[hop].append(max(0.0, at[hop] - previous) * 1000)
                previous = at[hop]
    return trace


def run(quick: bool, smoke: bool = False) -> list[dict[str, Any]]:
    sizes = Sizes.pick(quick, smoke)
    with tempfile.TemporaryDirectory(prefix="lf-bench-stl-") as tmp_name:
        tmp = Path(tmp_name)
        with stack(tmp) as st:
            st.start("capture", "scoring", "routing")
            topics = Topics(st.prefix)
            # First with nothing else going on (the fixed waits alone), then under load.
            idle_trace = asyncio.run(
                _measure(st.urls["capture"], st.bootstrap, topics, max(3, sizes.speed_samples // 2))
            )
            seconds = sizes.speed_samples * 0.3 + 30
            with background_load(st.urls["capture"], seconds, sizes.background_per_second):
                time.sleep(1.0)
                trace = asyncio.run(
                    _measure(st.urls["capture"], st.bootstrap, topics, sizes.speed_samples)
                )
    latencies, idle = trace.total, idle_trace.total
    note = (
        f"{len(latencies)} demo requests, 4/s, over {sizes.background_per_second} "
        f"background interactions/s; {trace.hop_note()}"
    )
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    i50, i99 = percentile(idle, 50), percentile(idle, 99)
    idle_note = f"{len(idle)} demo requests, 4/s, no other load; {idle_trace.hop_note()}"
    return [
        result("speed_to_lead_idle_p50_ms", i50, "ms", 150.0, ratio=i50 / 150.0, note=idle_note),
        result("speed_to_lead_idle_p99_ms", i99, "ms", 150.0, ratio=i99 / 150.0, note=idle_note),
        result("speed_to_lead_p50_ms", p50, "ms", 150.0, ratio=p50 / 150.0, note=note),
        result("speed_to_lead_p99_ms", p99, "ms", 150.0, ratio=p99 / 150.0, note=note),
    ]


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=2))
