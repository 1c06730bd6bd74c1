"""Topic creation refused by the broker for good: a clear error naming the permission, not
"Kafka not reachable yet" forever. A fake admin client plays the broker."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import pytest
from aiokafka.errors import ClusterAuthorizationFailedError

from shared.bus import TopicSetupError, ensure_topics
from shared.settings import Settings
from shared.topics import Topics

TopicError = namedtuple("TopicError", "topic error_code error_message")


class FakeAdmin:
    """Answers like a broker: existing topics, and one error code per topic to create."""

    def __init__(self, existing: list[str], code: int = 0, raises: Exception | None = None):
        self.existing, self.code, self.raises = existing, code, raises
        self.created: list[Any] = []
        self.closed = False

    def __call__(self, **options: Any) -> FakeAdmin:
        assert options["bootstrap_servers"] == "broker:9092"
        return self

    async def start(self) -> None:
        pass

    async def list_topics(self) -> list[str]:
        return self.existing

    async def create_topics(self, topics: list[Any]) -> Any:
        if self.raises:
            raise self.raises
        self.created = topics
        response = type("Response", (), {})()
        response.topic_errors = [TopicError(t.name, self.code, None) for t in topics]
        return response

    async def close(self) -> None:
        self.closed = True


def settings(**kw: Any) -> Settings:
    return Settings(kafka_bootstrap_servers="broker:9092", leadflow_dev=True, **kw)


async def test_creates_missing_topics_with_partitions_and_replication_from_settings() -> None:
    admin = FakeAdmin(existing=["leadflow.leads"])
    made = await ensure_topics(
        settings(kafka_topic_partitions=12, kafka_replication_factor=3), admin_factory=admin
    )
    assert "leadflow.leads" not in made and "leadflow.interactions" in made
    assert {(t.num_partitions, t.replication_factor) for t in admin.created} == {(12, 3)}
    assert admin.closed


async def test_nothing_to_create_needs_no_permission() -> None:
    admin = FakeAdmin(existing=Topics().all(), code=29)
    assert await ensure_topics(settings(), admin_factory=admin) == []


@pytest.mark.parametrize(
    ("code", "words"),
    [(29, "TopicAuthorizationFailed"), (31, "ClusterAuthorizationFailed")],
)
async def test_missing_create_permission_is_named(code: int, words: str) -> None:
    admin = FakeAdmin(existing=[], code=code)
    with pytest.raises(TopicSetupError) as err:
        await ensure_topics(settings(), admin_factory=admin)
    message = str(err.value)
    assert words in message and "CREATE permission" in message
    assert "leadflow.interactions" in message
    assert admin.closed


async def test_authorization_raised_by_the_client_is_named_too() -> None:
    admin = FakeAdmin(existing=[], raises=ClusterAuthorizationFailedError())
    with pytest.raises(TopicSetupError, match="ClusterAuthorizationFailed"):
        await ensure_topics(settings(), admin_factory=admin)


async def test_replication_factor_larger_than_the_cluster_is_not_retried() -> None:
    admin = FakeAdmin(existing=[], code=38)  # INVALID_REPLICATION_FACTOR
    with pytest.raises(TopicSetupError, match="INVALID_REPLICATION_FACTOR"):
        await ensure_topics(settings(kafka_replication_factor=3), admin_factory=admin)


async def test_topics_created_meanwhile_by_another_replica_are_fine() -> None:
    admin = FakeAdmin(existing=[], code=36)  # TOPIC_ALREADY_EXISTS
    assert await ensure_topics(settings(), admin_factory=admin) == Topics().all()


class FakeProducer:
    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


async def test_a_service_reports_the_missing_permission_in_readiness(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    import shared.runtime as runtime_module
    from shared.db import create_engine

    calls = []

    async def refuse(_settings: Settings) -> list[str]:
        calls.append(1)
        raise TopicSetupError("TopicAuthorizationFailed: the Kafka principal lacks CREATE")

    monkeypatch.setattr(runtime_module, "ensure_topics", refuse)
    runtime = runtime_module.Runtime(
        "scoring",
        settings(),
        create_engine("sqlite+aiosqlite://"),
        producer_factory=lambda _s: FakeProducer(),  # type: ignore[arg-type,return-value]
    )
    await runtime.start()
    try:
        for _ in range(100):
            if runtime.setup_problem:
                break
            await asyncio.sleep(0.02)
        ok, report = await runtime.readiness()
        assert not ok
        assert any("TopicAuthorizationFailed" in p for p in report["problems"])
        assert "Kafka not reachable yet" not in caplog.text
        assert "TopicAuthorizationFailed" in caplog.text
    finally:
        await runtime.stop(timeout=1)
    assert calls


def test_init_exits_1_naming_the_permission(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import shared.bus
    from services.cli import app
    from shared.settings import get_settings

    async def refuse(_settings: Settings) -> list[str]:
        raise TopicSetupError("ClusterAuthorizationFailed: the Kafka principal lacks CREATE")

    monkeypatch.setattr(shared.bus, "ensure_topics", refuse)
    monkeypatch.setenv("LEADFLOW_DEV", "1")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker:9092")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["init"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert "cannot create the topics: ClusterAuthorizationFailed" in result.output
