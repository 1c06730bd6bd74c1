"""Deployments that share a Kafka cluster under their own topic prefixes share no consumer group.

Every Leadflow deployment names its consumers alike (``leadflow-scoring``). With one group for
all of them, each start, stop or crash of any deployment's consumer rebalanced every other
deployment's consumers of that name (the test suite, which runs many deployments on one broker,
saw consumers wait for such rebalances). The group now carries the topic prefix.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from shared.bus import ConsumerRunner
from shared.db import create_engine
from shared.events import CloudEvent
from shared.runtime import Runtime
from shared.topics import Topics
from tests.support import make_settings, wait_for


async def _ignore(conn: AsyncConnection, events: Sequence[CloudEvent]) -> None:
    return None


def test_the_default_prefix_keeps_the_groups_of_the_first_releases() -> None:
    assert Topics().group("leadflow-scoring") == "leadflow-scoring"
    assert Topics("prod.").group("leadflow-scoring") == "prod.leadflow-scoring"


async def _assigned(runner: ConsumerRunner) -> None:
    consumer = runner._consumer
    assert consumer is not None

    async def assigned() -> bool:
        return bool(consumer.assignment())

    await wait_for(assigned, what="the deployment's partitions")


async def test_a_deployment_starting_does_not_rebalance_another(
    kafka_bootstrap: str, sqlite_db_url: str
) -> None:
    engine = create_engine(sqlite_db_url)
    runtimes: list[Runtime] = []

    async def deployment() -> ConsumerRunner:
        """One deployment's consumer, under its own prefix, on the shared broker."""
        settings = make_settings(kafka_bootstrap, sqlite_db_url)
        runtime = Runtime("t", settings, engine)
        runner = ConsumerRunner(
            settings=settings,
            engine=engine,
            topics=[Topics(settings.leadflow_topic_prefix).interactions],
            group_id="leadflow-scoring",
            handler=_ignore,
            source="t",
        )
        runtime.add_worker(runner)
        runtimes.append(runtime)
        await runtime.start()
        await runtime.wait_ready()
        await _assigned(runner)
        return runner

    try:
        first = await deployment()
        assert first._consumer is not None
        generation = first._consumer._coordinator.generation
        second = await deployment()
        # one group for both: the second's join made the first rejoin (a new generation)
        assert first._consumer._coordinator.generation == generation
        assert first.kafka_group != second.kafka_group
    finally:
        for runtime in reversed(runtimes):
            await runtime.stop()
        await engine.dispose()
