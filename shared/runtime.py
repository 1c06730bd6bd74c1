"""A service's running parts and their lifecycle: engine, producer, outbox relay and workers.

Start-up never blocks on the broker: the producer and consumers connect in the background and
retry, so an HTTP API (capture in particular) answers while Kafka is away. ``stop`` drains:
each worker finishes and commits what it holds before the producer and engine close.

Consumers get their own engine (:attr:`Runtime.consumer_engine`), so a burst of API requests
cannot exhaust the pool they need. Workers that crash are restarted; :meth:`Runtime.readiness`
reports what is not working (a dead or restarting worker, a stalled or waiting consumer, the
database or broker unreachable, a relay failing for long) and turns green again by itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.bus import ConsumerRunner, TopicSetupError, ensure_topics, make_producer
from shared.db import READ_ONLY, create_engine
from shared.deadletters import scrub_error
from shared.outbox import OutboxRelay
from shared.retention import Retention, check_windows
from shared.settings import Settings
from shared.topics import Topics

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
            engine,
            None,
            name,
            poll_seconds=settings.leadflow_outbox_poll_seconds,
            deadletter_topic=Topics(settings.leadflow_topic_prefix).deadletter,
        )
        outbox_keep = timedelta(hours=settings.leadflow_outbox_retention_hours)
        inbox_keep = timedelta(days=settings.leadflow_inbox_retention_days)
        check_windows(outbox_keep=outbox_keep, inbox_keep=inbox_keep)
        self.retention = Retention(
            engine,
            name,
            lambda: [str(w.group_id) for w in self.workers if hasattr(w, "group_id")],
            outbox_keep=outbox_keep,
            inbox_keep=inbox_keep,
        )
        self._consumer_engine: AsyncEngine | None = None
        # id(worker) -> (when it crashed, scrubbed reason) while it waits to be restarted.
        self._crashed: dict[int, tuple[float, str]] = {}
        self.workers: list[Worker] = [self.relay, self.retention]
        self.kafka_ready = asyncio.Event()
        self.state: dict[str, Any] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._worker_tasks: dict[int, asyncio.Task[None]] = {}
        self._stopping = False
        #: Why Kafka setup fails for good (a missing permission), for readiness; None when fine.
        self.setup_problem: str | None = None
        #: Whether this process is useless while Kafka is away. Capture is not: it spools what it
        #: accepts to its database, so it stays ready (in a load balancer) while the database
        #: answers, and reports the broker as ``degraded`` instead.
        self.broker_required = True

    @property
    def producer(self) -> AIOKafkaProducer:
        """The Kafka producer; it exists once :meth:`start` has begun connecting."""
        if self._producer is None:
            raise RuntimeError("the Kafka producer is made when the runtime starts")
        return self._producer

    @property
    def consumer_engine(self) -> AsyncEngine:
        """A second engine on the same database, for consumers only.

        The HTTP API, timers and the relay share :attr:`engine`; a consumer with its own small
        pool keeps consuming when they exhaust theirs (and vice versa).
        """
        if self._consumer_engine is None:
            url = self.engine.url
            if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
                return self.engine  # a second in-memory engine would be another database
            kwargs: dict[str, Any] = {}
            if url.get_backend_name() != "sqlite":
                # No ping before each batch: a batch that meets a lost connection is retried
                # (shared.bus.classify: transient), and SQLAlchemy replaces the pool's
                # connections on that error, so the ping would only add a round trip to
                # every batch of every consumer.
                kwargs.update(pool_size=2, max_overflow=3, pool_pre_ping=False)
            self._consumer_engine = create_engine(
                url.render_as_string(hide_password=False), **kwargs
            )
        return self._consumer_engine

    def add_worker(self, worker: Worker) -> None:
        """Register a loop to run once Kafka is reachable (before :meth:`start`)."""
        self.workers.append(worker)

    async def start(self) -> None:
        """Begin connecting to Kafka and running workers in the background."""
        self._tasks.append(asyncio.create_task(self._boot(), name=f"{self.name}-boot"))

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the producer is up and every consumer has joined its group."""
        await asyncio.wait_for(self.kafka_ready.wait(), timeout)
        events = [getattr(w, "joined", None) for w in self.workers]
        joined = [e for e in events if isinstance(e, asyncio.Event)]  # consumers have one
        await asyncio.wait_for(asyncio.gather(*(j.wait() for j in joined)), timeout)

    async def _boot(self) -> None:
        delay = 0.2
        while not self._stopping:
            self._producer = self._producer_factory(self.settings)
            self.relay.producer = self._producer
            try:
                await self._producer.start()
                await ensure_topics(self.settings)
                self.setup_problem = None
                break
            except TopicSetupError as exc:
                # Kafka answers but refuses: say what the operator must grant, and check again
                # now and then (an ACL can be added without restarting the service).
                self.setup_problem = f"topics cannot be created: {exc}"
                log.error("%s: %s", self.name, self.setup_problem)
                wait = 10.0
            except Exception as exc:
                log.warning("%s: Kafka not reachable yet (%s); retrying", self.name, exc)
                wait, delay = delay, min(delay * 2, 5.0)
            try:
                await self._producer.stop()
            except Exception:
                log.debug("stopping a producer that never started", exc_info=True)
            await asyncio.sleep(wait)
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
            except Exception as exc:
                reason = scrub_error(exc)
                self._crashed[id(worker)] = (time.monotonic(), reason)
                log.error(
                    "%s: worker %s crashed (%s); restarting in %.1fs",
                    self.name,
                    _worker_name(worker),
                    reason,
                    delay,
                )
                log.debug("worker crash", exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            self._crashed.pop(id(worker), None)

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
        if self._consumer_engine is not None:
            await self._consumer_engine.dispose()
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
                await conn.execution_options(**{READ_ONLY: True})
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

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether this process does its job now, and a report naming what does not.

        Not ready while: the database or broker does not answer (the broker is only
        ``degraded`` where :attr:`broker_required` is False: capture spools meanwhile); a
        worker task is dead or waiting to be restarted after a crash; a consumer waits for the
        database or has not polled Kafka for ``LEADFLOW_CONSUMER_STALL_SECONDS``; the relay has
        been failing for that long. Each condition clears by itself once the cause is gone.
        """
        stall = self.settings.leadflow_consumer_stall_seconds
        db, broker = await asyncio.gather(
            _bounded(self.check_database()), _bounded(self.check_broker())
        )
        problems: list[str] = []
        degraded: list[str] = []
        # What only Kafka being away causes is not fatal where the broker is not required.
        kafka_problems = problems if self.broker_required else degraded
        if self.setup_problem:
            problems.append(self.setup_problem)
        if not db:
            problems.append("database unreachable")
        if not broker:
            kafka_problems.append("broker unreachable")
        now = time.monotonic()
        workers: dict[str, Any] = {}
        for worker in self.workers:
            name = _worker_name(worker)
            task = self._worker_tasks.get(id(worker))
            info: dict[str, Any] = {"running": task is not None and not task.done()}
            if self.kafka_ready.is_set() and not self._stopping and not info["running"]:
                problems.append(f"{name}: not running")
            crashed = self._crashed.get(id(worker))
            if crashed is not None:
                info["crashed"] = crashed[1]
                problems.append(f"{name}: crashed ({crashed[1]}), restarting")
            if isinstance(worker, ConsumerRunner):
                health = worker.health(stall, now)
                info.update(
                    partitions=health.partitions,
                    seconds_since_poll=health.seconds_since_poll,
                    waiting_for=health.waiting_for,
                )
                if health.problem and self.kafka_ready.is_set():
                    problems.append(f"{name}: {health.problem}")
            if worker is self.relay:
                info.update(active=self.relay.active, healthy=self.relay.healthy)
                since = self.relay.failing_since
                if since is not None and now - since > stall:
                    (problems if broker else kafka_problems).append(
                        f"outbox relay failing for {now - since:.0f}s ({self.relay.last_error})"
                    )
            workers[name] = info
        report = {
            "status": "unavailable" if problems else "degraded" if degraded else "ready",
            "database": "up" if db else "down",
            "broker": "up" if broker else "down",
            "workers": workers,
            "problems": problems,
        }
        if degraded:
            report["degraded"] = degraded
        return not problems, report


async def _bounded(check: Awaitable[bool], timeout: float = 3.0) -> bool:
    """A health check that answers within ``timeout`` (a hung pool or socket is a failure)."""
    try:
        return await asyncio.wait_for(check, timeout)
    except Exception:
        return False


def _worker_name(worker: object) -> str:
    group = getattr(worker, "group_id", None)
    if group:
        return f"consumer {group}"
    if isinstance(worker, OutboxRelay):
        return "outbox relay"
    return type(worker).__name__
