"""Form submissions end to end: HTTP → Kafka, on PostgreSQL and SQLite."""

from __future__ import annotations

from shared.events import InteractionType
from tests.capture.conftest import Running
from tests.support import wait_for_events


async def test_json_submission_reaches_kafka_normalised(capture: Running) -> None:
    resp = await capture.client.post(
        "/v1/forms/test-form/submissions",
        json={
            "email": "  Jane.Doe@ACME.com ",
            "phone": "0151 12345678",
            "first_name": " Jane ",
            "last_name": "Doe",
            "company_size": "51-200",
            "country": "Deutschland",
            "consent_marketing": True,
            "utm_source": "google",
            "favourite_colour": "blue",
        },
    )
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["status"] == "accepted" and body["lead_key"] == "jane.doe@acme.com"
    events = await wait_for_events(capture.bootstrap, capture.topic, lambda evs: len(evs) >= 1)
    [ev] = events
    assert ev.id == body["event_id"] and ev.key == "jane.doe@acme.com"
    assert ev.type == InteractionType.FORM_SUBMITTED and ev.source == "/leadflow/capture"
    data = ev.data
    assert data["form_id"] == "test-form" and data["intent"] == "quote"
    assert data["channel"] == "form"
    assert data["contact"]["phone"] == "+4915112345678"
    assert data["contact"]["first_name"] == "Jane"
    assert data["contact"]["company_size"] == 51 and data["contact"]["company_size_raw"] == "51-200"
    assert data["contact"]["country"] == "DE"
    assert data["consent"] == {
        "marketing": True,
        "at": data["occurred_at"],
        "form_id": "test-form",
        "text_version": "v7",
    }
    assert data["attribution"]["utm_source"] == "google"
    assert data["custom"] == {"favourite_colour": "blue"}


async def test_urlencoded_and_multipart(capture_sqlite: Running) -> None:
    c = capture_sqlite.client
    r1 = await c.post(
        "/v1/forms/newsletter/submissions",
        data={"email": "a@example.com", "consent_marketing": "on"},
    )
    r2 = await c.post(
        "/v1/forms/newsletter/submissions",
        files={"email": (None, "b@example.com"), "size": (None, "10")},
    )
    assert r1.status_code == 202 and r2.status_code == 202, (r1.text, r2.text)
    events = await wait_for_events(
        capture_sqlite.bootstrap, capture_sqlite.topic, lambda evs: len(evs) >= 2
    )
    by_key = {e.key: e for e in events}
    assert by_key["a@example.com"].data["consent"]["marketing"] is True
    assert by_key["a@example.com"].data["intent"] == "newsletter"
    assert by_key["b@example.com"].data["custom"] == {"size": "10"}


async def test_errors_are_problems(capture_sqlite: Running) -> None:
    c = capture_sqlite.client
    cases = [
        (c.post("/v1/forms/nope/submissions", json={"email": "a@b.co"}), 404),
        (c.post("/v1/forms/newsletter/submissions", json={"first_name": "x"}), 422),
        (c.post("/v1/forms/newsletter/submissions", json={"email": "not-an-email"}), 422),
        (
            c.post(
                "/v1/forms/newsletter/submissions",
                content=b"{bad",
                headers={"content-type": "application/json"},
            ),
            400,
        ),
        (
            c.post(
                "/v1/forms/newsletter/submissions",
                content=b"[1]",
                headers={"content-type": "application/json"},
            ),
            422,
        ),
        (
            c.post(
                "/v1/forms/newsletter/submissions",
                content=b"x",
                headers={"content-type": "text/csv"},
            ),
            415,
        ),
        (
            c.post("/v1/forms/newsletter/submissions", json={"email": "a@b.co", "x": "y" * 70_000}),
            413,
        ),
        (
            c.post(
                "/v1/forms/newsletter/submissions",
                content=b"a=1&" * 1200,
                headers={"content-type": "application/x-www-form-urlencoded"},
            ),
            413,
        ),
        (
            c.post(
                "/v1/forms/newsletter/submissions",
                json={"email": "a@b.co", "consent_marketing": "maybe"},
            ),
            422,
        ),
    ]
    for request, status in cases:
        resp = await request
        assert resp.status_code == status, resp.text
        assert resp.headers["content-type"] == "application/problem+json"
        assert resp.json()["status"] == status
    missing = await c.post("/v1/forms/newsletter/submissions", json={"first_name": "x"})
    assert missing.json()["errors"][0]["loc"] == "/body/email"
    # Refused requests published nothing. Capture answers only once an event is durable, so
    # anything accepted above would be on the topic before a sentinel sent now: it must be alone.
    sentinel = await c.post("/v1/forms/newsletter/submissions", json={"email": "s@example.com"})
    assert sentinel.status_code == 202
    events = await wait_for_events(
        capture_sqlite.bootstrap, capture_sqlite.topic, lambda evs: len(evs) >= 1
    )
    assert [e.id for e in events] == [sentinel.json()["event_id"]]


async def test_idempotency_key_reused_with_another_body_is_a_422(capture: Running) -> None:
    # Before: the second request silently got the first one's answer, and its lead was lost.
    c = capture.client
    headers = {"Idempotency-Key": "reused-7"}
    first = await c.post(
        "/v1/forms/newsletter/submissions", json={"email": "a@example.com"}, headers=headers
    )
    retry = await c.post(
        "/v1/forms/newsletter/submissions", json={"email": "a@example.com"}, headers=headers
    )
    other = await c.post(
        "/v1/forms/newsletter/submissions", json={"email": "b@example.com"}, headers=headers
    )
    assert first.status_code == retry.status_code == 202
    assert retry.json() == first.json()
    assert other.status_code == 422, other.text
    assert other.headers["content-type"] == "application/problem+json"
    assert other.json()["errors"][0]["loc"] == "/header/Idempotency-Key"


async def test_idempotency_key_repeat_publishes_nothing_new(capture: Running) -> None:
    c = capture.client
    headers = {"Idempotency-Key": "abc-123"}
    first = await c.post(
        "/v1/forms/newsletter/submissions", json={"email": "x@example.com"}, headers=headers
    )
    second = await c.post(
        "/v1/forms/newsletter/submissions", json={"email": "x@example.com"}, headers=headers
    )
    other = await c.post("/v1/forms/newsletter/submissions", json={"email": "y@example.com"})
    assert first.status_code == second.status_code == other.status_code == 202
    assert first.json() == second.json()
    events = await wait_for_events(capture.bootstrap, capture.topic, lambda evs: len(evs) >= 2)
    assert sorted(e.id for e in events) == sorted(
        [first.json()["event_id"], other.json()["event_id"]]
    )
