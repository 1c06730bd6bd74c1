"""No input, however malformed, yields a 5xx (a bounded stand-in for a schemathesis run).

Random bytes, random JSON and random form fields go to every capture endpoint through
httpx.ASGITransport against a running app on the real broker and SQLite.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.settings import DEV_WRITE_KEY
from tests.capture.conftest import Running, make_config, start

SECRET = "fuzz-secret"
ENDPOINTS = [
    "/v1/forms/newsletter/submissions",
    "/v1/forms/test-form/submissions",
    "/v1/forms/%00weird/submissions",
    "/v1/downloads",
    "/v1/webinars/w1/registrations",
    "/v1/webinars/w1/attendance",
    "/v1/track",
    "/v1/identify",
    "/v1/page",
    "/v1/batch",
    "/v1/webhooks/meta",
    "/v1/webhooks/google-ads",
    "/v1/webhooks/linkedin",
]
CONTENT_TYPES = [
    "application/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "multipart/form-data",
    "text/plain",
    "application/xml",
    "",
    "application/json; charset=latin-1",
]
FIELD_NAMES = [
    "email",
    "phone",
    "first_name",
    "company_size",
    "country",
    "consent_marketing",
    "anonymous_id",
    "utm_source",
    "_hp",
    "_redirect",
    "asset_id",
    "asset_type",
    "gated",
    "attended_minutes",
    "userId",
    "anonymousId",
    "event",
    "traits",
    "properties",
    "context",
    "messageId",
    "timestamp",
    "batch",
    "type",
    "google_key",
    "lead_id",
    "user_column_data",
    "entry",
    "leadGenFormResponse",
    "leadAction",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.text(max_size=40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(
        [
            "a@b.co",
            "+4915112345678",
            "51-200",
            "true",
            "https://x.example/",
            "\x00",
            "\ud800",
            "1e999",
            DEV_WRITE_KEY,
        ]
    )
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
objects = st.dictionaries(
    st.sampled_from(FIELD_NAMES) | st.text(max_size=10), json_values, max_size=8
)


@pytest.fixture
async def app(kafka_bootstrap: str, sqlite_db_url: str) -> AsyncIterator[Running]:
    config = make_config(rate_limit={"per_second": 10_000, "burst": 100_000})
    async with start(
        kafka_bootstrap,
        sqlite_db_url,
        config=config,
        meta_app_secret=SECRET,
        meta_verify_token=SECRET,
        google_ads_webhook_key=SECRET,
        linkedin_client_secret=SECRET,
        # Leads the fuzzer manages to store are fetched from a closed local port, never the
        # real platforms.
        meta_graph_url="http://127.0.0.1:9/graph",
        linkedin_api_url="http://127.0.0.1:9/li",
    ) as running:
        yield running


def _headers(path: str, body: bytes, content_type: str, extra: dict[str, str]) -> dict[str, str]:
    headers = {"content-type": content_type} if content_type else {}
    if path.endswith("/attendance"):
        headers["authorization"] = "Bearer test-token"
    if path.startswith("/v1/track") or path in ("/v1/identify", "/v1/page", "/v1/batch"):
        headers["authorization"] = httpx.BasicAuth(DEV_WRITE_KEY, "")._auth_header
    if path.endswith("/meta"):
        headers["x-hub-signature-256"] = (
            "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        )
    if path.endswith("/linkedin"):
        headers["x-li-signature"] = hmac.new(
            SECRET.encode(), b"hmacsha256=" + body, hashlib.sha256
        ).hexdigest()
    headers.update(extra)
    return headers


async def _check(
    c: httpx.AsyncClient, method: str, path: str, body: bytes, ctype: str, extra: dict[str, str]
) -> None:
    resp = await c.request(method, path, content=body, headers=_headers(path, body, ctype, extra))
    assert resp.status_code < 500, (path, body[:200], resp.status_code, resp.text[:300])


FUZZ = settings(
    max_examples=250,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
extra_headers = st.dictionaries(
    st.sampled_from(["idempotency-key", "origin", "content-length"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
    max_size=2,
)


@FUZZ
@given(
    path=st.sampled_from(ENDPOINTS),
    body=st.binary(max_size=300),
    ctype=st.sampled_from(CONTENT_TYPES),
    extra=extra_headers,
)
async def test_random_bytes(
    app: Running, path: str, body: bytes, ctype: str, extra: dict[str, str]
) -> None:
    extra.pop("content-length", None)  # a lying length is the server's (h11's) business
    await _check(app.client, "POST", path, body, ctype, extra)


@FUZZ
@given(path=st.sampled_from(ENDPOINTS), value=objects | json_values, extra=extra_headers)
async def test_random_json(app: Running, path: str, value: object, extra: dict[str, str]) -> None:
    extra.pop("content-length", None)
    body = json.dumps(value).encode()
    await _check(app.client, "POST", path, body, "application/json", extra)


@FUZZ
@given(
    path=st.sampled_from(ENDPOINTS[:6]),
    fields=st.dictionaries(
        st.sampled_from(FIELD_NAMES) | st.text(max_size=10),
        st.text(max_size=40) | st.sampled_from(["a@b.co", "on", "x"]),
        max_size=8,
    ),
    multipart=st.booleans(),
)
async def test_random_form_fields(
    app: Running, path: str, fields: dict[str, str], multipart: bool
) -> None:
    c = app.client
    headers = _headers(path, b"", "", {})
    if multipart:
        resp = await c.post(
            path,
            files={k: (None, v) for k, v in fields.items()} or None,
            data=None if fields else {"x": ""},
            headers=headers,
        )
    else:
        resp = await c.post(path, data=fields, headers=headers)
    assert resp.status_code < 500, (path, fields, resp.text[:300])


@FUZZ
@given(
    method=st.sampled_from(["GET", "OPTIONS", "PUT", "DELETE"]),
    path=st.sampled_from(
        [
            *ENDPOINTS,
            "/v1/webhooks/meta?hub.mode=subscribe",
            "/v1/webhooks/linkedin?challengeCode=%00",
            "/v1/nothing",
        ]
    ),
    origin=st.none() | st.text(max_size=20),
)
async def test_other_methods(app: Running, method: str, path: str, origin: str | None) -> None:
    headers = {"origin": origin} if origin and origin.isprintable() and origin.isascii() else {}
    resp = await app.client.request(method, path, headers=headers)
    assert resp.status_code < 500, (method, path, resp.text[:300])
