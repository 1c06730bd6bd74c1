"""The public edges of capture: identity fields with control characters, the rate limit behind
proxies and for batches, tracking CORS, and clients that hang up mid-body."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.capture.config import tracking_origins
from services.capture.main import build_app
from shared.broker import free_port
from shared.settings import DEV_WRITE_KEY
from tests.browser import serve
from tests.capture.conftest import Running, make_config, start
from tests.support import make_settings, wait_for, wait_for_events

AUTH = httpx.BasicAuth(DEV_WRITE_KEY, "")
ORIGIN = "https://www.example.com"  # the test form's allowed origin (tests/capture/conftest.py)


async def _only_sentinel_published(app: Running) -> None:
    """Refused requests publish nothing: a valid sentinel sent after them is all there is.
    (Capture answers only once an event is durable, so anything accepted before it would be
    on the topic, or in the spool that publishes it, by the time the sentinel arrives.)"""
    sentinel = await app.client.post(
        "/v1/forms/newsletter/submissions", json={"email": "sentinel@example.com"}
    )
    assert sentinel.status_code == 202
    events = await wait_for_events(app.bootstrap, app.topic, lambda evs: len(evs) >= 1)
    assert [e.key for e in events] == ["sentinel@example.com"]


# --- identity fields with control characters ------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "jane\x00@example.com"),
        ("email", "ja\x00ne@example.com"),
        ("email", "jane@exa\x1fmple.com"),
        ("email", "jane\ud800@example.com"),
        ("phone", "+49 30 \x00 1234567"),
        ("phone", "+4930\x071234567"),
    ],
)
async def test_identity_control_characters_are_refused(
    capture: Running, field: str, value: str
) -> None:
    c = capture.client
    body = {"email": "ok@example.com", field: value}
    raw = ('{"' + field + '": ' + _json_str(value) + ', "first_name": "x"}').encode()
    posts = []
    if "\ud800" not in value:  # a form post is UTF-8 bytes: no lone surrogate possible
        posts += [
            c.post("/v1/forms/newsletter/submissions", data=body),
            c.post("/v1/forms/newsletter/submissions", files={"f": ("f", b"")}, data=body),
        ]
    posts += [
        c.post(
            "/v1/forms/newsletter/submissions",
            content=raw,
            headers={"content-type": "application/json"},
        ),
        c.post(
            "/v1/downloads",
            content=raw[:-1] + b', "asset_id": "wp-1"}',
            headers={"content-type": "application/json"},
        ),
        c.post(
            "/v1/webinars/w-1/registrations",
            content=raw,
            headers={"content-type": "application/json"},
        ),
    ]
    if field == "email":
        traits = '{"traits": {"email": ' + _json_str(value) + "}"
        posts += [
            c.post(
                "/v1/identify",
                auth=AUTH,
                content=(traits + ', "anonymousId": "a-1"}').encode(),
                headers={"content-type": "application/json"},
            ),
            c.post(
                "/v1/batch",
                auth=AUTH,
                content=(
                    '{"batch": [{"type": "page", "anonymousId": "a-1"}, {"type": "identify", '
                    '"anonymousId": "a-1", "context": ' + traits + "}}]}"
                ).encode(),
                headers={"content-type": "application/json"},
            ),
        ]
    locs = []
    for post in posts:
        resp = await post
        assert resp.status_code == 422, resp.text
        assert resp.headers["content-type"] == "application/problem+json"
        [error] = resp.json()["errors"]
        locs.append(error["loc"])
    assert f"/body/{field}" in locs
    if field == "email":
        assert "/body/traits/email" in locs and "/body/batch/1/context/traits/email" in locs
    await _only_sentinel_published(capture)


def _json_str(value: str) -> str:
    """A JSON string literal with every non-printable-ASCII character escaped (lone
    surrogates included, which cannot be encoded to UTF-8 bytes directly)."""
    chars = (c if 32 <= ord(c) < 127 and c not in '"\\' else f"\\u{ord(c):04x}" for c in value)
    return '"' + "".join(chars) + '"'


async def test_free_text_is_still_cleaned(capture: Running) -> None:
    raw = b'{"email": " Jane@Example.com\\n", "first_name": "Ja\\u0000ne", "message": "a\\u0000b"}'
    resp = await capture.client.post(
        "/v1/forms/newsletter/submissions",
        content=raw,
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 202, resp.text  # surrounding whitespace is not a control char
    [event] = await wait_for_events(capture.bootstrap, capture.topic, lambda evs: len(evs) >= 1)
    assert event.key == "jane@example.com"
    assert event.data["contact"]["first_name"] == "Jane" and event.data["message"] == "ab"


# --- the rate limit: clients behind trusted proxies, and batches charged per event ------------


# --- the rate limit: clients behind trusted proxies, and batches charged per event ------------


def _limited(**capture: Any) -> dict[str, Any]:
    return make_config(rate_limit={"per_second": 0.01, "burst": 2}, **capture)


async def _statuses(app: Running, forwarded: list[str | None]) -> list[int]:
    """POST /v1/track (no write key: 401 once admitted) with each X-Forwarded-For value."""
    out = []
    for hop in forwarded:
        headers = {"x-forwarded-for": hop} if hop else {}
        resp = await app.client.post("/v1/track", json={}, headers=headers)
        out.append(resp.status_code)
        if resp.status_code == 429:
            assert int(resp.headers["retry-after"]) >= 1
            assert resp.headers["content-type"] == "application/problem+json"
    return out


async def test_forwarded_for_is_ignored_without_trusted_proxies(
    kafka_bootstrap: str, sqlite_db_url: str
) -> None:
    async with start(kafka_bootstrap, sqlite_db_url, config=_limited()) as app:
        # Anyone can write the header: untrusted, it must not give a fresh bucket per request.
        assert await _statuses(app, ["1.1.1.1", "2.2.2.2", "3.3.3.3"]) == [401, 401, 429]


async def test_clients_behind_a_trusted_proxy_get_their_own_bucket(
    kafka_bootstrap: str, sqlite_db_url: str
) -> None:
    # The ASGI test client's peer is 127.0.0.1: here it plays the load balancer.
    async with start(
        kafka_bootstrap,
        sqlite_db_url,
        config=_limited(),
        leadflow_trusted_proxies="10.0.0.0/8, 127.0.0.1",
    ) as app:
        assert await _statuses(app, ["1.1.1.1", "1.1.1.1", "1.1.1.1"]) == [401, 401, 429]
        # Another visitor is not punished for the first one; a hop added by a second trusted
        # proxy is skipped, and what the client wrote left of its own address is not believed.
        assert await _statuses(app, ["2.2.2.2", "6.6.6.6, 2.2.2.2, 10.1.2.3"]) == [401, 401]
        assert await _statuses(app, ["7.7.7.7, 2.2.2.2"]) == [429]


async def test_a_batch_costs_one_token_per_event(kafka_bootstrap: str, sqlite_db_url: str) -> None:
    config = make_config(rate_limit={"per_second": 1, "burst": 10})
    async with start(kafka_bootstrap, sqlite_db_url, config=config) as app:
        batch = [{"type": "track", "anonymousId": f"a-{i}", "event": "Clicked"} for i in range(20)]
        resp = await app.client.post("/v1/batch", auth=AUTH, json={"batch": batch})
        assert resp.status_code == 200, resp.text
        after = await app.client.post(
            "/v1/track", auth=AUTH, json={"anonymousId": "a-x", "event": "Clicked"}
        )
        assert after.status_code == 429
        # 10 tokens of burst, 20 events: about 10 s of debt before the next token.
        assert int(after.headers["retry-after"]) >= 9


def test_bad_trusted_proxies_stop_startup(tmp_path: Any) -> None:
    settings = make_settings(
        "127.0.0.1:1",
        f"sqlite+aiosqlite:///{tmp_path / 'x.db'}",
        leadflow_trusted_proxies="10.0.0.0/8, not-an-ip",
    )
    with pytest.raises(SystemExit, match="LEADFLOW_TRUSTED_PROXIES"):
        build_app(settings, make_config())


# --- tracking CORS: only configured origins ---------------------------------------------


async def _preflight(app: Running, origin: str) -> httpx.Response:
    return await app.client.options(
        "/v1/track",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization",
        },
    )


async def test_tracking_cors_answers_only_allowed_origins(capture_sqlite: Running) -> None:
    app = capture_sqlite
    ok = await _preflight(app, ORIGIN)  # the forms' allowed origins, by default
    assert ok.status_code == 204
    assert ok.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in ok.headers["access-control-allow-methods"]
    assert "Authorization" in ok.headers["access-control-allow-headers"]
    evil = await _preflight(app, "https://evil.example")
    assert "access-control-allow-origin" not in evil.headers
    assert evil.status_code == 403
    body = {"anonymousId": "a-1", "event": "Clicked"}
    posted = await app.client.post("/v1/track", auth=AUTH, json=body, headers={"Origin": ORIGIN})
    assert posted.headers["access-control-allow-origin"] == ORIGIN
    other = await app.client.post(
        "/v1/track", auth=AUTH, json=body, headers={"Origin": "https://evil.example"}
    )
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers


async def test_tracking_origins_setting(kafka_bootstrap: str, sqlite_db_url: str) -> None:
    async with start(
        kafka_bootstrap, sqlite_db_url, leadflow_tracking_origins="https://app.example/"
    ) as app:
        ok = await _preflight(app, "https://app.example")
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        form_site = await _preflight(app, ORIGIN)
        assert "access-control-allow-origin" not in form_site.headers


def test_tracking_origins_default() -> None:
    dev = make_settings("x:1", "sqlite+aiosqlite:///x.db")
    prod = make_settings(
        "x:1", "sqlite+aiosqlite:///x.db", leadflow_dev=False, leadflow_api_token="t" * 32
    )
    forms = frozenset({"https://a.example"})
    assert tracking_origins(dev, forms) == forms
    assert tracking_origins(dev, frozenset()) == {"*"}  # nothing configured, dev mode only
    assert tracking_origins(prod, frozenset()) == frozenset()


# --- a client hanging up mid-body ----------------------------------------------------


@pytest.fixture
async def served(kafka_bootstrap: str, sqlite_db_url: str) -> AsyncIterator[int]:
    """The capture app under a real uvicorn server; yields its port."""
    port = free_port()
    app = build_app(make_settings(kafka_bootstrap, sqlite_db_url), make_config())
    async with serve(app, port, lifespan="on"):
        yield port


async def test_client_hanging_up_mid_body_is_quiet(
    served: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    _, writer = await asyncio.open_connection("127.0.0.1", served)
    writer.write(
        b"POST /v1/forms/newsletter/submissions HTTP/1.1\r\nHost: t\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        b'{"email": "half'
    )
    await writer.drain()
    writer.close()  # 15 of the 1,000 bytes announced, then the hang-up
    await writer.wait_closed()

    async def answered() -> list[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if "disconnected" in r.getMessage() or r.levelno >= logging.ERROR
        ]

    seen = await wait_for(answered, timeout=10)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == [], [r.getMessage() for r in errors]
    assert any(r.levelno == logging.INFO for r in seen)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served}") as client:
        assert (await client.get("/healthz")).status_code == 200  # still serving
