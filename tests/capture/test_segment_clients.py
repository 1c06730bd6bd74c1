"""Segment's own client libraries, installed from their registries, against a running capture.

``segment-analytics-python`` (plain and gzip) runs in-process; ``@segment/analytics-node`` runs
in node from a small script. Every call must land on the right lead: its event is on the
interactions topic and scoring's identity rules (``identifiers_of``) read the person's id from it.
In CI (``CI`` set) a missing node or npm, or a failed install, is a failure, never a skip.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from services.capture.main import build_app
from services.scoring.domain.identity import ANON, EMAIL, identifiers_of
from shared.broker import free_port
from shared.contract import Interaction
from shared.events import CloudEvent, InteractionType
from shared.settings import DEV_WRITE_KEY
from shared.topics import Topics
from tests.browser import serve
from tests.capture.conftest import make_config
from tests.support import make_settings, wait_for_events

IN_CI = bool(os.environ.get("CI"))
ROOT = Path(__file__).resolve().parents[2]
NODE_CLIENT = "@segment/analytics-node@3.1.0"
NODE_CACHE = ROOT / ".venv" / "node_modules-cache" / "segment-analytics-node-3.1.0"


@dataclass
class Live:
    """A capture on a real port, with the Content-Encoding of every request it received."""

    url: str
    bootstrap: str
    topic: str
    encodings: list[str] = field(default_factory=list)


@asynccontextmanager
async def live_capture(kafka_bootstrap: str, db_url: str) -> AsyncIterator[Live]:
    settings = make_settings(kafka_bootstrap, db_url)
    app = build_app(settings, make_config())
    port = free_port()
    live = Live(
        f"http://127.0.0.1:{port}",
        kafka_bootstrap,
        Topics(settings.leadflow_topic_prefix).interactions,
    )

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            headers = dict(scope["headers"])
            live.encodings.append(headers.get(b"content-encoding", b"").decode())
        await app(scope, receive, send)

    async with app.router.lifespan_context(app):
        await app.state.runtime.wait_ready()
        async with serve(recording, port):
            yield live


def _by_call(events: list[CloudEvent]) -> dict[str, CloudEvent]:
    """Each event by the Segment call it came from."""
    out = {}
    for ev in events:
        custom = ev.data.get("custom") or {}
        if ev.type == InteractionType.TRACKED:
            event = ev.data["track"]["event"]
            out["page" if event == "page" else "track"] = ev
        elif "group" in custom:
            out["group"] = ev
        elif "alias" in custom:
            out["alias"] = ev
        else:
            out["identify"] = ev
    return out


def _assert_landed(events: list[CloudEvent], user: str, email: str, previous: str) -> None:
    calls = _by_call(events)
    assert set(calls) == {"identify", "track", "page", "group", "alias"}, sorted(calls)
    ids = {
        name: identifiers_of(Interaction.from_data(ev.data), ev.key) for name, ev in calls.items()
    }
    # identify joins the user id to the email; every later call names that user id.
    assert ids["identify"].email == email and ids["identify"].anonymous_id == user
    for name in ("track", "page", "group"):
        assert (ANON, user) in ids[name].pairs(), name
    assert (EMAIL, email) in ids["identify"].pairs()
    assert calls["track"].data["track"]["event"] == "Signed Up"
    assert calls["track"].data["track"]["properties"] == {"plan": "pro"}
    assert calls["group"].data["contact"]["company"] == "Acme"
    alias = calls["alias"]
    assert (alias.key, alias.data["anonymous_id"], alias.data["user_id"]) == (user, previous, user)


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
async def test_analytics_python(kafka_bootstrap: str, sqlite_db_url: str, gzip: bool) -> None:
    from segment.analytics import Client

    errors: list[Any] = []
    async with live_capture(kafka_bootstrap, sqlite_db_url) as live:
        client = Client(
            DEV_WRITE_KEY,
            host=live.url,
            gzip=gzip,
            max_retries=1,
            max_total_backoff_duration=5,
            upload_interval=0.05,
            on_error=lambda error, batch: errors.append(error),
        )
        user, email = f"py-{gzip}", f"py-{str(gzip).lower()}@example.com"
        client.identify(user, {"email": email.upper(), "first_name": "Py"})
        client.track(user, "Signed Up", {"plan": "pro"})
        client.page(user, "Docs", "Pricing")
        client.group(user, "acme", {"name": "Acme", "employees": 120})
        client.alias("anon-py", user)
        # Bounded: a client stuck retrying fails the test instead of hanging it.
        await asyncio.wait_for(asyncio.to_thread(client.flush), timeout=20)
        client.join()
        assert errors == []
        events = await wait_for_events(live.bootstrap, live.topic, lambda evs: len(evs) >= 5)
        assert len(events) == 5
        _assert_landed(events, user, email, "anon-py")
        assert set(live.encodings) == ({"gzip"} if gzip else {""})


NODE_SCRIPT = """
const { Analytics } = require('@segment/analytics-node')
const [host, writeKey] = process.argv.slice(2)
const analytics = new Analytics({ writeKey, host, maxRetries: 1, flushInterval: 50 })
analytics.on('error', (err) => { console.error('segment error', err); process.exitCode = 1 })
const userId = 'node-u'
analytics.identify({ userId, traits: { email: 'Node@Example.com', firstName: 'No' } })
analytics.track({ userId, event: 'Signed Up', properties: { plan: 'pro' } })
analytics.page({ userId, name: 'Pricing', category: 'Docs' })
analytics.group({ userId, groupId: 'acme', traits: { name: 'Acme' } })
analytics.alias({ previousId: 'anon-node', userId })
analytics.closeAndFlush({ timeout: 15000 }).then(() => console.log('flushed'))
"""


def _node_client(tmp_path: Path) -> Path:
    """The directory holding node_modules/@segment/analytics-node (installed once, cached)."""

    def unavailable(why: str) -> None:
        if IN_CI:
            pytest.fail(f"{NODE_CLIENT}: {why}")
        pytest.skip(f"{NODE_CLIENT}: {why}")

    node, npm = shutil.which("node"), shutil.which("npm")
    if not (node and npm):
        unavailable("node and npm are needed")
    if (NODE_CACHE / "node_modules" / "@segment" / "analytics-node" / "package.json").exists():
        return NODE_CACHE
    staging = tmp_path / "npm"
    staging.mkdir()
    try:
        done = subprocess.run(
            [
                npm or "npm",
                "install",
                "--prefix",
                str(staging),
                NODE_CLIENT,
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        unavailable("npm install timed out")
    if done.returncode != 0:
        unavailable(f"npm install failed: {done.stderr[-500:]}")
    NODE_CACHE.parent.mkdir(parents=True, exist_ok=True)
    try:
        staging.rename(NODE_CACHE)  # atomic: a concurrent run keeps its own or finds this
    except OSError:
        return staging
    return NODE_CACHE


async def test_analytics_node(kafka_bootstrap: str, sqlite_db_url: str, tmp_path: Path) -> None:
    modules = _node_client(tmp_path)
    script = tmp_path / "send.js"
    script.write_text(NODE_SCRIPT)
    env = {**os.environ, "NODE_PATH": str(modules / "node_modules")}
    async with live_capture(kafka_bootstrap, sqlite_db_url) as live:
        proc = await asyncio.create_subprocess_exec(
            shutil.which("node") or "node",
            str(script),
            live.url,
            DEV_WRITE_KEY,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
        assert proc.returncode == 0 and b"flushed" in out, (out, err)
        events = await wait_for_events(live.bootstrap, live.topic, lambda evs: len(evs) >= 5)
        assert len(events) == 5
        _assert_landed(events, "node-u", "node@example.com", "anon-node")
