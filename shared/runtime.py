"""A service's running parts and their lifecycle: engine, producer, outbox relay and workers.

Start-up never blocks on the broker: the producer and consumers connect in the background and
retry, so an HTTP API (capture in particular) answers while Kafka is away. ``stop`` drains:
each worker finishes and commits what it holds before the producer and engine close.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.bus import ensure_topics, make_producer
from shared.outbox import OutboxRelay
from shared.retention import Retention
from shared.settings import Settings

log = logging.getLogger(__name__)


class Worker(Protocol):
    """A background loop with a graceful stop."""

    async def run(self) -> None: ...

    async def stop(self) -> None: ...


class Runtime:
    """Everything one Leadflow process runs besides its HTTP routes."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        engine: AsyncEngine,
        *,
        producer_factory: Callable[[Settings], AIOKafkaProducer] = make_producer,
    ) -> None:
        self.name = name
        self.settings = settings
        self.engine = engine
        # aiokafka binds a producer to the running loop when it is made, and an app may be built
        # before its server starts the loop: the producer is therefore made in ``_boot``.
        self._producer: AIOKafkaProducer | None = None
        self._producer_factory = producer_factory
        self.relay = OutboxRelay(
            engine, None, name, poll_seconds=settings.leadflow_outbox_poll_seconds
        )
        self.retention = Retention(
            engine,
            name,
            lambda: [str(w.group_id) for w in self.workers if hasattr(w, "group_id")],
            outbox_keep=timedelta(hours=settings.leadflow_outbox_retention_hours),
            inbox_keep=timedelta(days=settings.leadflow_inbox_retention_days),
        )
        self.workers: list[Worker] = [self.relay, self.retention]
        self.kafka_ready = asyncio.Event()
        self.state: dict[str, Any] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._worker_tasks: dict[int, asyncio.Task[None]] = {}
        self._stopping = False

    @property
    def producer(self) -> AIOKafkaProducer:
        """The Kafka producer; it exists once :meth:`start` has begun connecting."""
        if self._producer is None:
            raise RuntimeError("the Kafka producer is made when the runtime starts")
        return self._producer

    def add_worker(self, worker: Worker) -> None:
        """Register a loop to run once Kafka is reachable (before :meth:`start`)."""
        self.workers.append(worker)

    async def start(self) -> None:
        """Begin connecting to Kafka and running workers in the background."""
        self._tasks.append(asyncio.create_task(self._boot(), name=f"{self.name}-boot"))

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the producer is up and every consumer has joined its group."""
        await asyncio.wait_for(self.kafka_ready.wait(), timeout)
        joined = [w for w in self.workers if hasattr(w, "joined")]
        await asyncio.wait_for(asyncio.gather(*(w.joined.wait() for w in joined)), timeout)  # type: ignore[attr-defined]

    async def _boot(self) -> None:
        delay = 0.2
        while not self._stopping:
            self._producer = self._producer_factory(self.settings)
            self.relay.producer = self._producer
            try:
                await self._producer.start()
                await ensure_topics(self.settings)
                break
            except Exception as exc:
                log.warning("%s: Kafka not reachable yet (%s); retrying", self.name, exc)
                try:
                    await self._producer.stop()
                except Exception:
                    log.debug("stopping a producer that never started", exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        if self._stopping:
            return
        self.kafka_ready.set()
        for worker in self.workers:
            task = asyncio.create_task(self._supervise(worker))
            self._worker_tasks[id(worker)] = task
            self._tasks.append(task)

    async def _supervise(self, worker: Worker) -> None:
        delay = 0.5
        while not self._stopping:
            try:
                await worker.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: worker %s crashed; restarting", self.name, type(worker).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def stop(self, timeout: float = 15.0) -> None:
        """Drain workers (each commits what it holds), then close Kafka and the database."""
        self._stopping = True
        # Consumers and timers first, so what their last batch wrote is still relayed.
        others = [w for w in self.workers if w is not self.relay]
        for worker in others:
            await worker.stop()
        await self._wait([self._worker_tasks.get(id(w)) for w in others], timeout)
        await self.relay.stop()
        await self._wait(self._tasks, timeout)
        if self._producer is not None:
            try:
                await self._producer.stop()
            except Exception:
                log.debug("producer stop failed", exc_info=True)
        await self.engine.dispose()

    @staticmethod
    async def _wait(tasks: Sequence[asyncio.Task[None] | None], timeout: float) -> None:
        live = [t for t in tasks if t is not None]
        if not live:
            return
        _, pending = await asyncio.wait(live, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def check_database(self) -> bool:
        """Whether the database answers."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def check_broker(self) -> bool:
        """Whether the broker answers a metadata request."""
        if not self.kafka_ready.is_set():
            return False
        try:
            await asyncio.wait_for(self.producer.client.fetch_all_metadata(), 3.0)
            return True
        except Exception:
            return False
