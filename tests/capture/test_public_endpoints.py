"""Downloads, webinars and the protections of the public endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.events import InteractionType
from tests.capture.conftest import Running, make_config, start
from tests.support import read_topic, wait_for_events

ORIGIN = "https://www.example.com"


async def test_download_and_webinar_events(capture: Running) -> None:
    c = capture.client
    d = await c.post(
        "/v1/downloads",
        json={
            "email": "d@example.com",
            "asset_id": "guide-1",
            "asset_type": "whitepaper",
            "gated": True,
        },
    )
    r = await c.post("/v1/webinars/w-42/registrations", data={"email": "w@example.com"})
    a = await c.post(
        "/v1/webinars/w-42/attendance",
        json={"email": "W@example.com", "attended_minutes": 35},
        headers={"Authorization": "Bearer test-token"},
    )
    assert (d.status_code, r.status_code, a.status_code) == (202, 202, 202), (d.text, a.text)
    events = await wait_for_events(capture.bootstrap, capture.topic, lambda evs: len(evs) >= 3)
    by_type = {e.type: e for e in events}
    assert by_type[InteractionType.CONTENT_DOWNLOADED].data["asset"] == {
        "id": "guide-1",
        "type": "whitepaper",
        "gated": True,
    }
    assert by_type[InteractionType.WEBINAR_REGISTERED].data["webinar"] == {
        "id": "w-42",
        "attended_minutes": None,
    }
    attended = by_type[InteractionType.WEBINAR_ATTENDED]
    assert attended.key == "w@example.com"
    assert attended.data["webinar"] == {"id": "w-42", "attended_minutes": 35}


async def test_public_endpoint_validation(capture_sqlite: Running) -> None:
    c = capture_sqlite.client
    bad_type = await c.post(
        "/v1/downloads", json={"email": "d@example.com", "asset_id": "g", "asset_type": "video"}
    )
    assert bad_type.status_code == 422
    assert (await c.post("/v1/downloads", json={"email": "d@example.com"})).status_code == 422
    no_token = await c.post(
        "/v1/webinars/w/attendance", json={"email": "a@b.co", "attended_minutes": 1}
    )
    assert no_token.status_code == 401
    bad_minutes = await c.post(
        "/v1/webinars/w/attendance",
        json={"email": "a@b.co", "attended_minutes": "x"},
        headers={"Authorization": "Bearer test-token"},
    )
    assert bad_minutes.status_code == 422


async def test_cors_honeypot_and_redirect(capture_sqlite: Running) -> None:
    c = capture_sqlite.client
    url = "/v1/forms/test-form/submissions"
    pre = await c.options(url, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == ORIGIN
    evil = await c.options(url, headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403
    posted = await c.post(url, json={"email": "c@example.com"}, headers={"Origin": ORIGIN})
    assert posted.status_code == 202 and posted.headers["access-control-allow-origin"] == ORIGIN
    assert (
        await c.post(
            url, json={"email": "c@example.com"}, headers={"Origin": "https://evil.example"}
        )
    ).status_code == 403
    bot = await c.post(url, data={"email": "bot@example.com", "_hp": "I am a bot"})
    assert bot.status_code == 202 and bot.json()["status"] == "accepted"
    sloppy_bot = await c.post(url, data={"email": "not an email", "_hp": "x"})
    assert sloppy_bot.status_code == 202  # a bot learns nothing, not even what was invalid
    redirect = await c.post(url, data={"email": "r@example.com", "_redirect": f"{ORIGIN}/thanks"})
    assert redirect.status_code == 303 and redirect.headers["location"] == f"{ORIGIN}/thanks"
    elsewhere = await c.post(
        url, data={"email": "r@example.com", "_redirect": "https://evil.example/x"}
    )
    assert elsewhere.status_code == 422
    events = await wait_for_events(
        capture_sqlite.bootstrap, capture_sqlite.topic, lambda evs: len(evs) >= 2
    )
    assert sorted(e.key for e in events) == ["c@example.com", "r@example.com"]
    assert all("_redirect" not in (e.data["custom"] or {}) for e in events)


@pytest.fixture
async def strict(kafka_bootstrap: str, sqlite_db_url: str) -> AsyncIterator[Running]:
    config = make_config(rate_limit={"per_second": 0.5, "burst": 3})
    async with start(kafka_bootstrap, sqlite_db_url, config=config) as running:
        yield running


async def test_rate_limit_per_ip(strict: Running) -> None:
    statuses = [
        (
            await strict.client.post(
                "/v1/forms/newsletter/submissions", json={"email": f"{i}@example.com"}
            )
        ).status_code
        for i in range(5)
    ]
    assert statuses == [202, 202, 202, 429, 429]
    limited = await strict.client.post("/v1/forms/newsletter/submissions", json={})
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert limited.headers["content-type"] == "application/problem+json"
    events = await wait_for_events(strict.bootstrap, strict.topic, lambda evs: len(evs) >= 3)
    assert len(events) == 3
    assert len(await read_topic(strict.bootstrap, strict.topic)) == 3
