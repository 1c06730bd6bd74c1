"""A 2xx means durable: a frozen broker loses nothing and duplicates nothing."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from sqlalchemy import func, select

from shared.broker import BundledBroker
from shared.messaging_tables import outbox
from shared.outbox import pending_count
from tests.capture.conftest import make_config, start
from tests.support import wait_for, wait_for_events


async def test_frozen_broker_spools_and_every_event_lands_once(db_url: str, tmp_path: Path) -> None:
    # Our own broker: we freeze it, and the session broker must never be harmed.
    broker = BundledBroker(log_path=tmp_path / "tansu.log").start()
    assert broker.proc is not None
    try:
        config = make_config(publish_timeout_seconds=1.0)
        async with start(broker.bootstrap, db_url, config=config) as running:
            accepted: list[str] = []
            failures: list[str] = []
            stop = asyncio.Event()

            async def stream() -> None:
                n = 0
                while not stop.is_set():
                    resp = await running.client.post(
                        "/v1/forms/newsletter/submissions",
                        json={"email": f"u{n % 7}@example.com", "n": n},
                    )
                    if resp.status_code == 202:
                        accepted.append(resp.json()["event_id"])
                    else:
                        failures.append(resp.text)
                    n += 1
                    await asyncio.sleep(0.01)  # pacing of the stream, not a wait for a condition

            task = asyncio.create_task(stream())

            async def at_least(n: int) -> bool:
                return len(accepted) >= n

            await wait_for(lambda: at_least(10), what="submissions before the freeze")
            os.kill(broker.proc.pid, signal.SIGSTOP)
            try:
                frozen_at = len(accepted)
                # Submissions keep being accepted while the broker is frozen: they are spooled.
                await wait_for(
                    lambda: at_least(frozen_at + 20),
                    timeout=20,
                    what="submissions accepted during the freeze",
                )
                await asyncio.sleep(1.0)  # keep the broker frozen a little longer
            finally:
                os.kill(broker.proc.pid, signal.SIGCONT)
            resumed_at = len(accepted)
            await wait_for(lambda: at_least(resumed_at + 20), what="submissions after the freeze")
            stop.set()
            await task
            assert failures == []
            engine = running.app.state.runtime.engine

            async def spool_drained() -> bool:
                return await pending_count(engine, "capture") == 0

            await wait_for(spool_drained, timeout=30, what="spool drained")
            async with engine.connect() as conn:
                spooled = (
                    await conn.execute(select(func.count()).select_from(outbox))
                ).scalar_one()
            assert spooled > 0, "nothing was spooled: the freeze did not bite"
            expected = set(accepted)
            events = await wait_for_events(
                broker.bootstrap,
                running.topic,
                lambda evs: expected <= {e.id for e in evs},
                timeout=30,
            )
            ids = [e.id for e in events]
            assert len(ids) == len(set(ids)), "an event reached Kafka twice"
            assert set(ids) == expected
            # One lead's events stay in order on its partition.
            per_key: dict[str, list[int]] = {}
            for ev in events:
                per_key.setdefault(ev.key or "", []).append(int(ev.data["custom"]["n"]))
            for key, ns in per_key.items():
                assert ns == sorted(ns), f"events of {key} out of order"
    finally:
        broker.stop()
