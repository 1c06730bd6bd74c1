"""Segment tracking-API parity over HTTP: encodings, group/alias, analytics.js short paths,
per-message batch validation and the 429 headers (in-process ASGI, real broker)."""

from __future__ import annotations

import gzip
import zlib

import httpx
import orjson

from shared.events import InteractionType
from shared.settings import DEV_WRITE_KEY
from tests.capture.conftest import Running, make_config, start
from tests.support import wait_for_events

AUTH = httpx.BasicAuth(DEV_WRITE_KEY, "")
JSON = {"content-type": "application/json"}


def _problem(resp: httpx.Response, status: int) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"


async def test_gzip_deflate_group_alias_and_per_message_batch(capture: Running) -> None:
    c = capture.client
    batch = {
        "batch": [
            {"type": "identify", "userId": "u-1", "traits": {"email": "Ann@Acme.example"}},
            {"type": "group", "userId": "u-1", "groupId": "acme", "traits": {"name": "Acme"}},
            {"type": "alias", "previousId": "anon-1", "userId": "u-1", "messageId": "al-1"},
            {"type": "track", "userId": "u-1", "messageId": "bad-1"},  # no event name
            {"type": "track", "userId": "u-1", "event": "Signed Up", "messageId": "t-1"},
        ]
    }
    body = orjson.dumps(batch)
    resp = await c.post(
        "/v1/batch",
        auth=AUTH,
        content=gzip.compress(body),
        headers={**JSON, "content-encoding": "gzip"},
    )
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["success"] is True and answer["accepted"] == 4
    assert [(r["index"], r["messageId"]) for r in answer["rejected"]] == [(3, "bad-1")]
    single = {"userId": "u-2", "groupId": "globex", "traits": {"name": "Globex"}}
    resp = await c.post(
        "/v1/group",
        auth=AUTH,
        content=zlib.compress(orjson.dumps(single)),
        headers={**JSON, "content-encoding": "deflate"},
    )
    assert resp.status_code == 200 and resp.json() == {"success": True}
    events = await wait_for_events(capture.bootstrap, capture.topic, lambda evs: len(evs) >= 5)
    identified = [e for e in events if e.type == InteractionType.IDENTIFIED]
    by_kind = {next(iter(e.data["custom"] or {"identify": 0})): e for e in identified}
    assert by_kind["identify"].key == "ann@acme.example"
    assert by_kind["alias"].key == "u-1"
    assert by_kind["alias"].data["anonymous_id"] == "anon-1"
    companies = sorted(
        (e.key, e.data["contact"]["company"])
        for e in identified
        if "group" in (e.data["custom"] or {})
    )
    assert companies == [("u-1", "Acme"), ("u-2", "Globex")]
    [tracked] = [e for e in events if e.type == InteractionType.TRACKED]
    assert tracked.key == "u-1" and tracked.data["track"]["event"] == "Signed Up"


async def test_bad_bodies_are_problems(capture_sqlite: Running) -> None:
    c = capture_sqlite.client
    gz = {**JSON, "content-encoding": "gzip"}
    bomb = gzip.compress(b'{"batch": [' + b" " * 5_000_000 + b"]}")
    _problem(await c.post("/v1/batch", auth=AUTH, content=bomb, headers=gz), 413)
    _problem(await c.post("/v1/batch", auth=AUTH, content=b"\x1f\x8bnope", headers=gz), 400)
    _problem(
        await c.post("/v1/track", auth=AUTH, content=gzip.compress(b"{")[:-4], headers=gz), 400
    )
    br = {**JSON, "content-encoding": "br"}
    _problem(await c.post("/v1/track", auth=AUTH, content=b"{}", headers=br), 415)
    # Only a wholly malformed batch is refused whole.
    _problem(await c.post("/v1/batch", auth=AUTH, json={"batch": {"type": "track"}}), 400)
    _problem(await c.post("/v1/batch", auth=AUTH, content=b"[1,", headers=JSON), 400)
    every_bad = await c.post("/v1/batch", auth=AUTH, json={"batch": [{"type": "alias"}, 7]})
    assert every_bad.status_code == 200 and every_bad.json()["accepted"] == 0
    assert [r["index"] for r in every_bad.json()["rejected"]] == [0, 1]


async def test_analytics_js_short_paths_take_text_plain_with_the_write_key(
    capture_sqlite: Running,
) -> None:
    c = capture_sqlite.client
    text = {"content-type": "text/plain;charset=UTF-8", "origin": "https://www.example.com"}
    base = {"writeKey": DEV_WRITE_KEY, "anonymousId": "aj-1", "messageId": None}
    calls = {
        "t": {"type": "track", "event": "Clicked"},
        "p": {"type": "page", "name": "Home"},
        "i": {"type": "identify", "traits": {"email": "js@x.example"}},
        "g": {"type": "group", "groupId": "x-co", "traits": {"name": "X Co"}},
        "a": {"type": "alias", "previousId": "aj-1", "userId": "js-user"},
        "s": {"type": "screen", "name": "Main"},
    }
    for i, (short, call) in enumerate(calls.items()):
        msg = {**base, **call, "messageId": f"js-{i}"}
        resp = await c.post(f"/v1/{short}", content=orjson.dumps(msg), headers=text)
        assert resp.status_code == 200, (short, resp.text)
        assert resp.headers["access-control-allow-origin"] == "https://www.example.com"
    batched = {
        "writeKey": DEV_WRITE_KEY,
        "batch": [{**base, "type": "track", "event": "Batched", "messageId": "js-b"}],
    }
    resp = await c.post("/v1/b", content=orjson.dumps(batched), headers=text)
    assert resp.status_code == 200 and resp.json()["accepted"] == 1
    no_key = {k: v for k, v in base.items() if k != "writeKey"} | calls["t"]
    _problem(await c.post("/v1/t", content=orjson.dumps(no_key), headers=text), 401)
    assert (await c.post("/v1/x", content=b"{}", headers=text)).status_code in (404, 405)
    pre = await c.options(
        "/v1/t",
        headers={
            "origin": "https://www.example.com",
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type,x-retry-count",
        },
    )
    assert pre.status_code == 204
    allowed = pre.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "x-retry-count" in allowed
    events = await wait_for_events(
        capture_sqlite.bootstrap, capture_sqlite.topic, lambda evs: len(evs) >= 7
    )
    keys = {e.key for e in events}
    assert keys == {"aj-1", "js@x.example", "js-user"}


async def test_429_says_when_to_come_back_both_ways(
    kafka_bootstrap: str, sqlite_db_url: str
) -> None:
    config = make_config(rate_limit={"per_second": 0.01, "burst": 1})
    async with start(kafka_bootstrap, sqlite_db_url, config=config) as app:
        text = {"content-type": "text/plain"}
        msg = orjson.dumps({"writeKey": DEV_WRITE_KEY, "anonymousId": "r", "event": "e"})
        assert (await app.client.post("/v1/t", content=msg, headers=text)).status_code == 200
        resp = await app.client.post("/v1/t", content=msg, headers=text)
        _problem(resp, 429)
        assert int(resp.headers["x-ratelimit-reset"]) == int(resp.headers["retry-after"]) >= 1
