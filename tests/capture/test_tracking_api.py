"""The Segment-compatible tracking API against the real broker."""

from __future__ import annotations

import httpx

from shared.events import InteractionType
from shared.settings import DEV_WRITE_KEY
from tests.capture.conftest import Running
from tests.support import wait_for_events

AUTH = httpx.BasicAuth(DEV_WRITE_KEY, "")


async def test_page_track_identify_join_anonymous_history(capture: Running) -> None:
    c = capture.client
    page = await c.post(
        "/v1/page",
        auth=AUTH,
        json={
            "anonymousId": "anon-1",
            "name": "Pricing",
            "messageId": "m-1",
            "context": {
                "page": {"url": "https://x.example/pricing"},
                "campaign": {"source": "newsletter", "name": "q4"},
            },
        },
    )
    track = await c.post(
        "/v1/track",
        auth=AUTH,
        json={"anonymousId": "anon-1", "event": "Demo Video Played", "properties": {"seconds": 30}},
    )
    ident = await c.post(
        "/v1/identify",
        auth=AUTH,
        json={
            "anonymousId": "anon-1",
            "userId": "u-9",
            "messageId": "m-2",
            "traits": {"email": "Jane@Acme.com", "first_name": "Jane", "plan": "pro"},
        },
    )
    for resp in (page, track, ident):
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"success": True}
    events = await wait_for_events(capture.bootstrap, capture.topic, lambda evs: len(evs) >= 3)
    by_type: dict[str, list] = {}
    for ev in events:
        by_type.setdefault(ev.type, []).append(ev)
    tracked = sorted(by_type[InteractionType.TRACKED], key=lambda e: e.data["track"]["event"])
    assert [e.key for e in tracked] == ["anon-1", "anon-1"]
    assert tracked[1].data["track"] == {"event": "page", "name": "Pricing", "properties": {}}
    assert tracked[1].data["attribution"]["utm_source"] == "newsletter"
    assert tracked[1].data["attribution"]["page_url"] == "https://x.example/pricing"
    assert tracked[0].data["track"]["properties"] == {"seconds": 30}
    [identified] = by_type[InteractionType.IDENTIFIED]
    assert identified.key == "jane@acme.com"
    assert identified.data["anonymous_id"] == "anon-1" and identified.data["user_id"] == "u-9"
    assert identified.data["contact"]["email"] == "jane@acme.com"
    assert identified.data["custom"] == {"plan": "pro"}


async def test_batch_and_message_id_dedupe(capture_sqlite: Running) -> None:
    c = capture_sqlite.client
    calls = [
        {"type": "track", "event": f"E{i}", "userId": "u1", "messageId": f"b-{i}"} for i in range(5)
    ]
    first = await c.post("/v1/batch", auth=AUTH, json={"batch": calls})
    again = await c.post("/v1/batch", auth=AUTH, json={"batch": calls[:2]})
    assert first.status_code == again.status_code == 200
    events = await wait_for_events(
        capture_sqlite.bootstrap, capture_sqlite.topic, lambda evs: len(evs) >= 5
    )
    assert sorted(e.data["track"]["event"] for e in events) == [f"E{i}" for i in range(5)]


async def test_auth_limits_and_validation(capture_sqlite: Running) -> None:
    c = capture_sqlite.client
    ok = {"userId": "u", "event": "x"}
    assert (await c.post("/v1/track", json=ok)).status_code == 401
    assert (
        await c.post("/v1/track", json=ok, auth=httpx.BasicAuth("wrong", ""))
    ).status_code == 401
    assert (await c.post("/v1/track", json={**ok, "writeKey": DEV_WRITE_KEY})).status_code == 200
    no_id = await c.post("/v1/track", auth=AUTH, json={"event": "x"})
    assert no_id.status_code == 422 and no_id.json()["errors"][0]["loc"] == "/body/anonymousId"
    assert (await c.post("/v1/track", auth=AUTH, json={"userId": "u"})).status_code == 422
    big = {**ok, "properties": {"blob": "x" * 33_000}}
    assert (await c.post("/v1/track", auth=AUTH, json=big)).status_code == 413
    too_many = {"batch": [{"type": "track", "userId": "u", "event": "e"}] * 2_501}
    assert (await c.post("/v1/batch", auth=AUTH, json=too_many)).status_code == 413
    huge = {"batch": [{"type": "track", "userId": "u", "event": "e", "p": "x" * 30_000}] * 20}
    assert (await c.post("/v1/batch", auth=AUTH, json=huge)).status_code == 413
    # Segment's semantics: the good call is accepted, the bad one rejected on its own.
    bad_item = {"batch": [ok | {"type": "track"}, {"type": "merge", "userId": "u"}]}
    resp = await c.post("/v1/batch", auth=AUTH, json=bad_item)
    assert resp.status_code == 200 and resp.json()["accepted"] == 1
    assert resp.json()["rejected"][0]["errors"][0]["loc"] == "/body/batch/1/type"
    wrong_type = await c.post(
        "/v1/track",
        auth=AUTH,
        content=b"a=b",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert wrong_type.status_code == 415
