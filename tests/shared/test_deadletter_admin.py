"""Seeing and replaying dead letters: the admin HTTP API and ``leadflow deadletter``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from services.cli import app as cli
from shared.db import create_engine
from shared.deadletter_api import router
from shared.deadletters import DeadLetter, insert
from shared.events import CloudEvent
from shared.http import create_app
from shared.messaging_tables import outbox
from shared.runtime import Runtime
from shared.settings import get_settings
from tests.support import AUTH, make_settings


async def _seed(db_url: str) -> tuple[int, int, CloudEvent]:
    engine = create_engine(db_url)
    ev = CloudEvent(type="io.test.in", source="t", data={"n": 1}, key="k")
    try:
        async with engine.begin() as conn:
            event_id = await insert(
                conn,
                DeadLetter(
                    kind="event",
                    source="t",
                    consumer="g",
                    dedupe_key="g/topic/0/1",
                    reason="ValueError: cannot score this",
                    topic="t.interactions",
                    partition=0,
                    offset=1,
                    event_id=ev.id,
                    ce_type=ev.type,
                    key=b"k",
                    value=ev.value(),
                    headers=ev.headers(),
                ),
            )
            record_id = await insert(
                conn,
                DeadLetter(
                    kind="record",
                    source="t",
                    consumer="g",
                    dedupe_key="g/topic/0/2",
                    reason="InvalidEvent: missing ce_id header",
                    topic="t.interactions",
                    partition=0,
                    offset=2,
                    value=b"\x00\x00avro",
                ),
            )
    finally:
        await engine.dispose()
    assert event_id is not None and record_id is not None
    return event_id, record_id, ev


async def _outbox_rows(db_url: str, event_id: str) -> list[Any]:
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            return list(
                (await conn.execute(select(outbox).where(outbox.c.event_id == event_id))).all()
            )
    finally:
        await engine.dispose()


async def test_deadletter_http_api(db_url: str) -> None:
    event_dl, record_dl, ev = await _seed(db_url)
    settings = make_settings("127.0.0.1:1", db_url)
    runtime = Runtime("t", settings, create_engine(db_url))
    app = create_app(runtime, "t", [router])
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/v1/deadletters")).status_code == 401
            listed = (await client.get("/v1/deadletters", headers=AUTH)).json()
            assert [i["id"] for i in listed["items"]] == [event_dl, record_dl]
            shown = (await client.get(f"/v1/deadletters/{record_dl}", headers=AUTH)).json()
            assert shown["value_encoding"] == "base64" and shown["reason"].startswith("Invalid")
            for bad, status in (("999", 404), ("abc", 422), ("0", 422), ("9" * 30, 422)):
                r = await client.get(f"/v1/deadletters/{bad}", headers=AUTH)
                assert r.status_code == status, bad
                assert r.headers["content-type"] == "application/problem+json"
            r = await client.post(f"/v1/deadletters/{record_dl}/replay", headers=AUTH)
            assert r.status_code == 409 and "not a Leadflow CloudEvent" in r.json()["detail"]
            first = await client.post(f"/v1/deadletters/{event_dl}/replay", headers=AUTH)
            again = await client.post(f"/v1/deadletters/{event_dl}/replay", headers=AUTH)
            assert first.status_code == again.status_code == 200
            replay_id = first.json()["replay_event_id"]
            assert again.json()["replay_event_id"] == replay_id
            assert (await client.post("/v1/deadletters/5/replay")).status_code == 401
            listed = (await client.get("/v1/deadletters", headers=AUTH)).json()
            assert [i["id"] for i in listed["items"]] == [record_dl]
    finally:
        await runtime.engine.dispose()
    [row] = await _outbox_rows(db_url, replay_id)
    assert row.topic == "t.interactions" and row.partition_key == "k"
    assert row.extensions["replayof"] == ev.id and row.extensions["replayconsumer"] == "g"
    assert row.data == {"n": 1}


@pytest.fixture
def cli_env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("LEADFLOW_DEV", "1")
    get_settings.cache_clear()
    yield db_url
    get_settings.cache_clear()


def test_deadletter_command(cli_env: str) -> None:
    # Synchronous: the command runs its own event loop, as from a shell.
    event_dl, record_dl, _ = asyncio.run(_seed(cli_env))
    runner = CliRunner()
    out = runner.invoke(cli, ["deadletter", "list"])
    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[0].startswith(f"{event_dl}\t")
    assert "InvalidEvent" in out.output
    shown = runner.invoke(cli, ["deadletter", "show", str(record_dl)])
    assert shown.exit_code == 0 and '"value_encoding": "base64"' in shown.output
    assert runner.invoke(cli, ["deadletter", "show", "999"]).exit_code == 1
    assert runner.invoke(cli, ["deadletter", "replay"]).exit_code == 2
    done = runner.invoke(cli, ["deadletter", "replay", "--all"])
    assert done.exit_code == 0, done.output
    lines = dict(line.split("\t", 1) for line in done.output.splitlines())
    assert lines[str(record_dl)].startswith("not replayed")
    replay_id = lines[str(event_dl)]
    again = runner.invoke(cli, ["deadletter", "replay", str(event_dl)])
    assert again.exit_code == 0 and replay_id in again.output
    assert len(asyncio.run(_outbox_rows(cli_env, replay_id))) == 1
    listed = runner.invoke(cli, ["deadletter", "list", "--all"])
    assert f"replayed as {replay_id}" in listed.output
