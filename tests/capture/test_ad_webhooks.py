"""Ad-platform webhooks with real payload shapes, signed with test secrets."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from services.capture import repository
from services.capture.events import ad_event_id, erasure_event_id
from services.capture.tables import ad_fetches
from shared.db import create_engine, insert_for
from shared.event_schemas import schema_errors
from shared.events import InteractionType, utcnow
from shared.logs import configure_logging
from shared.outbox import pending_count
from shared.topics import Topics
from tests.capture.conftest import Running, make_config, start
from tests.capture.standin import StandIn, running_standin
from tests.support import read_topic, wait_for, wait_for_events

META_SECRET, LI_SECRET, GOOGLE_KEY = "meta-test-secret", "li-test-secret", "xyz123"
BIG = 9007199254740993  # 2**53 + 1: a float would turn it into ...992


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    async with running_standin() as s:
        yield s


@pytest.fixture
async def app(kafka_bootstrap: str, db_url: str, standin: StandIn) -> AsyncIterator[Running]:
    config = make_config(
        ad_fetch={
            "max_attempts": 3,
            "first_retry_seconds": 0.1,
            "max_retry_seconds": 0.5,
            "linkedin_api_version": "202510",  # not the default: the configured one is sent
        }
    )
    async with start(
        kafka_bootstrap,
        db_url,
        config=config,
        meta_app_secret=META_SECRET,
        meta_verify_token="verify-me",
        meta_access_token="meta-token",
        meta_graph_url=f"{standin.url}/graph",
        google_ads_webhook_key=GOOGLE_KEY,
        linkedin_client_secret=LI_SECRET,
        linkedin_access_token="li-token",
        linkedin_api_url=f"{standin.url}/li",
    ) as running:
        yield running


def meta_sign(raw: bytes) -> str:
    return "sha256=" + hmac.new(META_SECRET.encode(), raw, hashlib.sha256).hexdigest()


def meta_body(*lead_ids: int | str) -> bytes:
    changes = ", ".join(
        f'{{"field": "leadgen", "value": {{"leadgen_id": {json.dumps(i)}, "page_id": 123123123, '
        f'"form_id": {BIG}, "adgroup_id": 12312312312, "ad_id": 12312312312, '
        f'"created_time": 1440120384}}}}'
        for i in lead_ids
    )
    return (
        f'{{"object": "page", "entry": [{{"id": 153125381133, "time": 1438292065, '
        f'"changes": [{changes}, {{"field": "feed", "value": {{}}}}]}}]}}'
    ).encode()


async def test_meta_verification(app: Running) -> None:
    ok = await app.client.get(
        "/v1/webhooks/meta",
        params={
            "hub.mode": "subscribe",
            "hub.challenge": "1158201444",
            "hub.verify_token": "verify-me",
        },
    )
    assert ok.status_code == 200 and ok.text == "1158201444"
    bad = await app.client.get(
        "/v1/webhooks/meta",
        params={"hub.mode": "subscribe", "hub.challenge": "1", "hub.verify_token": "nope"},
    )
    assert bad.status_code == 403


async def test_meta_leads_fetched_with_retries_and_deduped(app: Running, standin: StandIn) -> None:
    standin.answers[f"/graph/{BIG}"] = (
        f'{{"created_time": "2015-02-28T08:49:14+0000", "id": "{BIG}", "ad_id": {BIG}, '
        f'"form_id": "12312312312", "field_data": ['
        '{"name": "full_name", "values": ["Joe Example"]},'
        '{"name": "email", "values": ["Joe@Example.com"]},'
        '{"name": "phone_number", "values": ["+15555550100"]},'
        '{"name": "favourite_tool", "values": ["excel"]}]}'
    )
    standin.answers["/graph/777"] = {
        "id": "777",
        "field_data": [{"name": "email", "values": ["ann@example.com"]}],
    }
    standin.failures["/graph/777"] = 2  # the Graph API is slow twice: retried with backoff
    raw = meta_body(BIG, "777")
    forged = await app.client.post(
        "/v1/webhooks/meta",
        content=raw,
        headers={"x-hub-signature-256": meta_sign(raw + b" "), "content-type": "application/json"},
    )
    assert forged.status_code == 403
    unsigned = await app.client.post("/v1/webhooks/meta", content=raw)
    assert unsigned.status_code == 401
    resp = await app.client.post(
        "/v1/webhooks/meta",
        content=raw,
        headers={"x-hub-signature-256": meta_sign(raw), "content-type": "application/json"},
    )
    assert resp.status_code == 200 and resp.json() == {"received": 2, "new": 2}
    events = await wait_for_events(app.bootstrap, app.topic, lambda evs: len(evs) >= 2)
    by_id = {e.id: e for e in events}
    joe = by_id[ad_event_id("meta", str(BIG))]
    assert joe.type == InteractionType.AD_LEAD_RECEIVED and joe.key == "joe@example.com"
    assert joe.data["ad"]["lead_id"] == str(BIG) and joe.data["ad"]["ad_id"] == str(BIG)
    assert joe.data["ad"]["platform"] == "meta" and joe.data["channel"] == "ad"
    assert (
        joe.data["contact"]["first_name"] == "Joe" and joe.data["contact"]["last_name"] == "Example"
    )
    assert joe.data["contact"]["phone"] == "+15555550100"
    assert joe.data["custom"] == {"favourite_tool": "excel"}
    assert joe.data["occurred_at"] == "2015-02-28T08:49:14Z"
    assert by_id[ad_event_id("meta", "777")].key == "ann@example.com"
    assert standin.calls.count("/graph/777") == 3
    assert standin.headers[0]["authorization"] == "Bearer meta-token"
    # Meta redelivers for 36 hours: the same lead ids are not fetched or published again.
    again = await app.client.post(
        "/v1/webhooks/meta", content=raw, headers={"x-hub-signature-256": meta_sign(raw)}
    )
    assert again.json() == {"received": 2, "new": 0}
    await settled(app)
    assert standin.calls.count("/graph/777") == 3 and standin.calls.count(f"/graph/{BIG}") == 1
    assert len(await read_topic(app.bootstrap, app.topic)) == 2
    # Done rows keep only what dedupe needs: Meta sends no erasure requests, so no identifiers.
    for lead_id in (str(BIG), "777"):
        row = await _fetch_row(app, lead_id)
        assert row.notification == {} and row.email is None and row.phone is None


async def test_failed_fetch_is_dead_lettered(app: Running, standin: StandIn) -> None:
    standin.failures["/graph/999"] = 100
    raw = meta_body(999)
    resp = await app.client.post(
        "/v1/webhooks/meta", content=raw, headers={"x-hub-signature-256": meta_sign(raw)}
    )
    assert resp.status_code == 200
    topic = Topics(app.settings.leadflow_topic_prefix).deadletter
    [dead] = await wait_for_events(app.bootstrap, topic, lambda evs: len(evs) >= 1)
    assert dead.data["lead_id"] == "999" and dead.data["attempts"] == 3
    async with app.app.state.runtime.engine.connect() as conn:
        row = (await conn.execute(select(ad_fetches))).one()
    assert row.status == "dead" and "500" in row.last_error


async def test_google_ads_lead(app: Running) -> None:
    body = {
        "lead_id": "TeSter-123-ABC",
        "api_version": "1.0",
        "form_id": BIG,
        "campaign_id": 20000000000,
        "Google_key": GOOGLE_KEY,
        "is_test": True,
        "gcl_id": "TeSter-123-ABC",
        "adgroup_id": 20000000000,
        "creative_id": 30000000000,
        "lead_submit_time": "2024-09-26T12:30:00Z",
        "user_column_data": [
            {
                "column_name": "Full Name",
                "string_value": "FirstName LastName",
                "column_id": "FULL_NAME",
            },
            {"column_name": "User Email", "string_value": "test@example.com", "column_id": "EMAIL"},
            {
                "column_name": "User Phone",
                "string_value": "+16505550123",
                "column_id": "PHONE_NUMBER",
            },
            {
                "column_name": "Work Email",
                "string_value": "work-test@example.com",
                "column_id": "WORK_EMAIL",
            },
            {"column_name": "What is your budget?", "string_value": "10k"},
        ],
    }
    raw = json.dumps(body).encode()
    wrong = await app.client.post(
        "/v1/webhooks/google-ads", content=raw.replace(GOOGLE_KEY.encode(), b"nope")
    )
    assert wrong.status_code == 403
    first = await app.client.post("/v1/webhooks/google-ads", content=raw)
    second = await app.client.post("/v1/webhooks/google-ads", content=raw)
    assert first.status_code == second.status_code == 200
    assert (
        first.json()["event_id"]
        == second.json()["event_id"]
        == ad_event_id("google", "TeSter-123-ABC")
    )
    events = await wait_for_events(app.bootstrap, app.topic, lambda evs: len(evs) >= 1)
    [ev] = events
    ad = ev.data["ad"]
    assert ad["form_id"] == str(BIG) and ad["ad_id"] == "30000000000" and ad["is_test"] is True
    assert ev.key == "test@example.com" and ev.data["occurred_at"] == "2024-09-26T12:30:00Z"
    assert ev.data["custom"] == {"email": "work-test@example.com", "What is your budget?": "10k"}


async def test_linkedin_challenge_signatures_and_fetch(app: Running, standin: StandIn) -> None:
    code = "890e4bb8-d6b7-4fd9-8c1d-5a3dd4ad3f39"  # LinkedIn's challenge codes are UUIDs
    challenge = await app.client.get("/v1/webhooks/linkedin", params={"challengeCode": code})
    expected = hmac.new(LI_SECRET.encode(), code.encode(), hashlib.sha256).hexdigest()
    assert challenge.json() == {"challengeCode": code, "challengeResponse": expected}
    standin.answers["/li/rest/leadFormResponses/1a2b3c-4"] = {
        "formResponse": {
            "answers": [
                {
                    "questionId": 1,
                    "answerDetails": {"textQuestionAnswer": {"answer": "li@example.com"}},
                },
                {"questionId": 2, "answerDetails": {"textQuestionAnswer": {"answer": "Lin"}}},
                {"questionId": 9, "answerDetails": {"textQuestionAnswer": {"answer": "soon"}}},
            ]
        }
    }
    standin.answers["/li/rest/leadForms/1"] = {
        "content": {
            "questions": [
                {"questionId": 1, "predefinedField": "EMAIL"},
                {"questionId": 2, "predefinedField": "FIRST_NAME"},
                {"questionId": 9, "name": "timeline"},
            ]
        }
    }
    note = {
        "type": "LEAD_ACTION",
        "leadGenFormResponse": "urn:li:leadGenFormResponse:1a2b3c-4",
        "leadGenForm": "urn:li:versionedLeadGenForm:(urn:li:leadGenForm:1,1)",
        "owner": {"sponsoredAccount": "urn:li:sponsoredAccount:123"},
        "associatedEntity": {"sponsoredCreative": "urn:li:sponsoredCreative:456"},
        "leadType": "SPONSORED",
        "leadAction": "CREATED",
        "occurredAt": 1686182358881,
    }
    raw = json.dumps(note).encode()
    reading_one = hmac.new(LI_SECRET.encode(), b"hmacsha256=" + raw, hashlib.sha256).hexdigest()
    reading_two = "hmacsha256=" + hmac.new(LI_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    bad = await app.client.post(
        "/v1/webhooks/linkedin", content=raw, headers={"x-li-signature": "hmacsha256=00"}
    )
    assert bad.status_code == 401
    for sig in (reading_one, reading_two):
        resp = await app.client.post(
            "/v1/webhooks/linkedin", content=raw, headers={"x-li-signature": sig}
        )
        assert resp.status_code == 200, resp.text
    [ev] = await wait_for_events(app.bootstrap, app.topic, lambda evs: len(evs) >= 1)
    assert ev.key == "li@example.com" and ev.data["contact"]["first_name"] == "Lin"
    assert ev.data["ad"]["form_id"] == "1" and ev.data["ad"]["ad_id"] == "456"
    assert ev.data["custom"] == {"timeline": "soon"}
    assert ev.data["occurred_at"] == "2023-06-07T23:59:18.881000Z"

    async def fetched_once() -> bool:
        return standin.calls.count("/li/rest/leadFormResponses/1a2b3c-4") == 1

    await wait_for(fetched_once)
    li = [h for c, h in zip(standin.calls, standin.headers, strict=True) if c.startswith("/li/")]
    assert li and all(h.get("linkedin-version") == "202510" for h in li)


def li_sign(raw: bytes) -> str:
    return "hmacsha256=" + hmac.new(LI_SECRET.encode(), raw, hashlib.sha256).hexdigest()


def li_note(lead_id: str, action: str) -> bytes:
    return json.dumps(
        {
            "type": "LEAD_ACTION",
            "leadGenFormResponse": f"urn:li:leadGenFormResponse:{lead_id}",
            "leadGenForm": "urn:li:versionedLeadGenForm:(urn:li:leadGenForm:1,1)",
            "owner": {"sponsoredAccount": "urn:li:sponsoredAccount:123"},
            "associatedEntity": {"sponsoredCreative": "urn:li:sponsoredCreative:456"},
            "leadType": "SPONSORED",
            "leadAction": action,
            "occurredAt": 1686182358881,
        }
    ).encode()


async def _post_li(app: Running, raw: bytes) -> dict[str, object]:
    resp = await app.client.post(
        "/v1/webhooks/linkedin", content=raw, headers={"x-li-signature": li_sign(raw)}
    )
    assert resp.status_code == 200, resp.text
    body: dict[str, object] = resp.json()
    return body


async def _fetch_row(app: Running, lead_id: str) -> Any:
    async with app.app.state.runtime.engine.connect() as conn:
        return (await conn.execute(select(ad_fetches).where(ad_fetches.c.lead_id == lead_id))).one()


async def test_linkedin_deleted_after_fetch_requests_erasure(
    app: Running, standin: StandIn
) -> None:
    standin.answers["/li/rest/leadFormResponses/del-1"] = {
        "formResponse": {
            "answers": [
                {"questionId": 1, "answerDetails": {"textQuestionAnswer": {"answer": "Del@X.com"}}},
                {"questionId": 2, "answerDetails": {"textQuestionAnswer": {"answer": "Dee"}}},
                {
                    "questionId": 3,
                    "answerDetails": {"textQuestionAnswer": {"answer": "+1 415 555 0123"}},
                },
            ]
        }
    }
    standin.answers["/li/rest/leadForms/1"] = {
        "content": {
            "questions": [
                {"questionId": 1, "predefinedField": "EMAIL"},
                {"questionId": 2, "predefinedField": "FIRST_NAME"},
                {"questionId": 3, "predefinedField": "PHONE_NUMBER"},
            ]
        }
    }
    assert (await _post_li(app, li_note("del-1", "CREATED")))["new"] == 1
    [lead] = await wait_for_events(app.bootstrap, app.topic, lambda evs: len(evs) >= 1)
    assert lead.type == InteractionType.AD_LEAD_RECEIVED and lead.key == "del@x.com"
    # Finished: only dedupe data and the normalised identifiers are kept, no fetched answers.
    row = await _fetch_row(app, "del-1")
    assert row.status == "done" and row.event_id == lead.id and row.notification == {}
    assert (row.email, row.phone) == ("del@x.com", "+14155550123")
    assert row.identifiers_until is not None and row.identifiers_until > utcnow()

    body = await _post_li(app, li_note("del-1", "DELETED"))
    assert body["deleted"] is True and body["event_id"] == erasure_event_id("linkedin", "del-1")
    again = await _post_li(app, li_note("del-1", "DELETED"))  # a redelivery: same id
    assert again["event_id"] == body["event_id"]
    events = await wait_for_events(app.bootstrap, app.topic, lambda evs: len(evs) >= 2)
    [erasure] = [e for e in events if e.type == InteractionType.ERASURE_REQUESTED]
    assert erasure.id == body["event_id"] and erasure.key == "del@x.com"
    assert erasure.data["channel"] == "ad" and erasure.data["lead_key"] == "del@x.com"
    contact = {k: v for k, v in erasure.data["contact"].items() if v is not None}
    assert contact == {"email": "del@x.com", "phone": "+14155550123"}
    assert erasure.data["ad"]["platform"] == "linkedin" and erasure.data["ad"]["lead_id"] == "del-1"
    assert erasure.data["custom"] == {"reason": "linkedin_lead_deleted"}
    assert erasure.data["occurred_at"] == "2023-06-07T23:59:18.881000Z"
    assert schema_errors(erasure) == []
    row = await _fetch_row(app, "del-1")
    assert row.status == "deleted" and row.email is None and row.phone is None
    # A late CREATED redelivery is not fetched again.
    assert (await _post_li(app, li_note("del-1", "CREATED")))["new"] == 0
    await settled(app)
    assert standin.calls.count("/li/rest/leadFormResponses/del-1") == 1
    assert len(await read_topic(app.bootstrap, app.topic)) == 2


async def test_linkedin_deleted_before_fetch_requests_erasure_by_lead_id(
    app: Running, standin: StandIn
) -> None:
    body = await _post_li(app, li_note("never-fetched", "DELETED"))
    [erasure] = await wait_for_events(app.bootstrap, app.topic, lambda evs: len(evs) >= 1)
    assert erasure.type == InteractionType.ERASURE_REQUESTED and erasure.id == body["event_id"]
    assert erasure.key == "linkedin:never-fetched" and erasure.data["contact"] is None
    assert erasure.data["ad"]["lead_id"] == "never-fetched"
    assert erasure.data["custom"] == {"reason": "linkedin_lead_deleted"}
    assert schema_errors(erasure) == []
    assert (await _post_li(app, li_note("never-fetched", "CREATED")))["new"] == 0
    await settled(app)
    assert standin.calls == []
    assert len(await read_topic(app.bootstrap, app.topic)) == 1


async def settled(app: Running) -> None:
    """Wait until the ad fetcher has run a whole pass since now and the spool is empty, so a
    negative check ("not fetched or published again") is not made before the work could
    have happened. The fetcher is woken for each pass (idle, it sleeps up to 30 s)."""
    fetcher = app.app.state.capture.fetcher
    # The pass running now may have begun before the caller's request: wait for the next one.
    target = fetcher.passes + 2

    async def idle() -> bool:
        fetcher.wake()
        return bool(fetcher.passes >= target)

    await wait_for(idle, what="two fetcher passes")
    engine = app.app.state.runtime.engine

    async def spool_empty() -> bool:
        return await pending_count(engine, "capture") == 0

    await wait_for(spool_empty, what="capture's spool drained")


# --- C1: the validation GET must not sign what an attacker chooses ----------------------


async def test_linkedin_validation_refuses_to_sign_notifications(app: Running) -> None:
    created = li_note("ATTACKER-LEAD-1", "CREATED")
    deleted = li_note("VICTIM-LEAD-42", "DELETED")
    for body in (created, deleted):
        # The attack: have the validation GET sign the exact body, then post it signed.
        got = await app.client.get("/v1/webhooks/linkedin", params={"challengeCode": body.decode()})
        assert got.status_code == 400, got.text
        assert got.headers["content-type"] == "application/problem+json"
        forged = "hmacsha256=" + got.json().get("challengeResponse", "0" * 64)
        posted = await app.client.post(
            "/v1/webhooks/linkedin", content=body, headers={"x-li-signature": forged}
        )
        assert posted.status_code == 401, posted.text
    for junk in ("c-1", "x" * 36, str(uuid.uuid4()) + "0", "{}"):
        got = await app.client.get("/v1/webhooks/linkedin", params={"challengeCode": junk})
        assert got.status_code == 400, junk
    async with app.app.state.runtime.engine.connect() as conn:
        assert (await conn.execute(select(ad_fetches))).all() == []
    # A real challenge still validates, with the HMAC LinkedIn expects.
    code = str(uuid.uuid4())
    ok = await app.client.get("/v1/webhooks/linkedin", params={"challengeCode": code})
    expected = hmac.new(LI_SECRET.encode(), code.encode(), hashlib.sha256).hexdigest()
    assert ok.status_code == 200 and ok.json() == {
        "challengeCode": code,
        "challengeResponse": expected,
    }


async def test_platform_ids_stay_inside_the_lead_path(app: Running, standin: StandIn) -> None:
    evil = "x/../../v2/organizationAcls"
    assert (await _post_li(app, li_note(evil, "CREATED")))["new"] == 1
    raw = meta_body("1/../../me?fields=accounts")
    resp = await app.client.post(
        "/v1/webhooks/meta", content=raw, headers={"x-hub-signature-256": meta_sign(raw)}
    )
    assert resp.status_code == 200 and resp.json()["new"] == 1

    async def both_tried() -> bool:
        return len(standin.raw_paths) >= 2

    await wait_for(both_tried)
    li = [p for p in standin.raw_paths if p.startswith("/li/")]
    meta = [p for p in standin.raw_paths if p.startswith("/graph")]
    assert li and all(
        p == "/li/rest/leadFormResponses/x%2F..%2F..%2Fv2%2ForganizationAcls" for p in li
    )
    assert meta and all(p == "/graph/1%2F..%2F..%2Fme%3Ffields%3Daccounts" for p in meta)
    assert all("fields" not in q or q["fields"] != "accounts" for q in standin.queries)


# --- H5: the Meta token never appears in a log line ------------------------------------


@pytest.fixture
def app_logging() -> Any:
    """Logging as ``leadflow capture`` sets it up (INFO), plus a handler keeping every record;
    the test's logging setup is restored afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    levels = {n: logging.getLogger(n).level for n in ("httpx", "httpcore", "aiokafka", "kafka")}
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    configure_logging("INFO")
    root.addHandler(Keep(logging.DEBUG))
    try:
        yield records
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


async def test_meta_token_is_never_logged(
    app_logging: list[logging.LogRecord], app: Running, standin: StandIn
) -> None:
    standin.answers["/graph/4242"] = {
        "id": "4242",
        "field_data": [{"name": "email", "values": ["tok@example.com"]}],
    }
    raw = meta_body(4242)
    resp = await app.client.post(
        "/v1/webhooks/meta", content=raw, headers={"x-hub-signature-256": meta_sign(raw)}
    )
    assert resp.status_code == 200
    await wait_for_events(app.bootstrap, app.topic, lambda evs: len(evs) >= 1)
    logging.getLogger("services.capture").info("sentinel")  # the capture handler works
    lines = [r.getMessage() for r in app_logging]
    assert "sentinel" in lines
    assert not [line for line in lines if "meta-token" in line]
    [headers], [query] = standin.headers, standin.queries
    assert headers["authorization"] == "Bearer meta-token"
    proof = hmac.new(META_SECRET.encode(), b"meta-token", hashlib.sha256).hexdigest()
    assert query["appsecret_proof"] == proof and "access_token" not in query


# --- H6: odd platform answers are cleaned; a failed store costs an attempt ---------------


async def test_fetched_answers_are_cleaned(app: Running, standin: StandIn) -> None:
    def lead(email: str, extra: str) -> str:
        return (
            '{"field_data": [{"name": "email", "values": ["' + email + '"]}, '
            '{"name": "first_name", "values": ["Nu\\u0000ll"]}, '
            '{"name": "note", "values": [' + extra + "]}]}"
        )

    standin.answers["/graph/111"] = lead("n@example.com", '"a\\u0000b"')
    standin.answers["/graph/222"] = lead("d@example.com", "12.5")
    standin.answers["/graph/333"] = lead("s@example.com", '"x\\ud800y"')
    standin.answers["/graph/444"] = lead("ok@example.com", '"fine"')
    raw = meta_body(111, 222, 333, 444)
    resp = await app.client.post(
        "/v1/webhooks/meta", content=raw, headers={"x-hub-signature-256": meta_sign(raw)}
    )
    assert resp.json() == {"received": 4, "new": 4}
    events = await wait_for_events(app.bootstrap, app.topic, lambda evs: len(evs) >= 4)
    notes = {e.key: e.data["custom"]["note"] for e in events}
    assert notes == {
        "n@example.com": "ab",
        "d@example.com": 12.5,
        "s@example.com": "x?y",
        "ok@example.com": "fine",
    }
    assert {e.data["contact"]["first_name"] for e in events} == {"Null"}
    assert all(schema_errors(e) == [] for e in events)
    for lead_id in ("111", "222", "333", "444"):
        assert (await _fetch_row(app, lead_id)).status == "done"


_REFUSE = {
    "postgresql": [
        "CREATE FUNCTION lf_refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused'; "
        "END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER lf_refuse BEFORE INSERT ON outbox FOR EACH ROW "
        "WHEN (NEW.partition_key = 'poison@example.com') EXECUTE FUNCTION lf_refuse()",
    ],
    "sqlite": [
        "CREATE TRIGGER lf_refuse BEFORE INSERT ON outbox "
        "WHEN NEW.partition_key = 'poison@example.com' BEGIN SELECT RAISE(ABORT, 'refused'); END",
    ],
}


async def test_failed_store_is_a_failed_attempt(app: Running, standin: StandIn) -> None:
    engine = app.app.state.runtime.engine
    async with engine.begin() as conn:  # the database refuses to spool one lead's event
        for sql in _REFUSE[engine.dialect.name]:
            await conn.exec_driver_sql(sql)
    standin.answers["/graph/501"] = {
        "field_data": [{"name": "email", "values": ["poison@example.com"]}]
    }
    standin.answers["/graph/502"] = {
        "field_data": [{"name": "email", "values": ["fine@example.com"]}]
    }
    raw = meta_body(501, 502)  # the poisoned lead is claimed first
    resp = await app.client.post(
        "/v1/webhooks/meta", content=raw, headers={"x-hub-signature-256": meta_sign(raw)}
    )
    assert resp.json() == {"received": 2, "new": 2}
    [ok] = await wait_for_events(app.bootstrap, app.topic, lambda evs: len(evs) >= 1, timeout=20)
    assert ok.key == "fine@example.com"
    deadletter = Topics(app.settings.leadflow_topic_prefix).deadletter
    [dead] = await wait_for_events(app.bootstrap, deadletter, lambda evs: len(evs) >= 1, timeout=20)
    assert dead.data["lead_id"] == "501" and dead.data["attempts"] == 3
    row = await _fetch_row(app, "501")
    assert (row.status, row.attempts) == ("dead", 3)
    assert "poison@example.com" not in row.last_error  # no personal data in the error
    assert standin.calls.count("/graph/501") == 3


# --- M4: a DELETED names the platform lead even when capture no longer knows the person ----


async def test_linkedin_deleted_after_identifiers_expired(app: Running, standin: StandIn) -> None:
    standin.answers["/li/rest/leadFormResponses/old-1"] = {
        "formResponse": {
            "answers": [
                {"questionId": 1, "answerDetails": {"textQuestionAnswer": {"answer": "o@x.com"}}}
            ]
        }
    }
    standin.answers["/li/rest/leadForms/1"] = {
        "content": {"questions": [{"questionId": 1, "predefinedField": "EMAIL"}]}
    }
    await _post_li(app, li_note("old-1", "CREATED"))
    [lead] = await wait_for_events(app.bootstrap, app.topic, lambda evs: len(evs) >= 1)
    # What scoring indexes the person by, besides the email: the platform and its lead id.
    assert (lead.data["ad"]["platform"], lead.data["ad"]["lead_id"]) == ("linkedin", "old-1")
    engine = app.app.state.runtime.engine
    async with engine.begin() as conn:  # keep_identifiers_days have passed
        await conn.execute(
            update(ad_fetches)
            .where(ad_fetches.c.lead_id == "old-1")
            .values(identifiers_until=utcnow() - timedelta(seconds=1))
        )
        assert await repository.prune_identifiers(conn) == 1
    await _post_li(app, li_note("old-1", "DELETED"))
    events = await wait_for_events(app.bootstrap, app.topic, lambda evs: len(evs) >= 2)
    [erasure] = [e for e in events if e.type == InteractionType.ERASURE_REQUESTED]
    assert erasure.key == "linkedin:old-1" and erasure.data["contact"] is None
    assert (erasure.data["ad"]["platform"], erasure.data["ad"]["lead_id"]) == ("linkedin", "old-1")
    assert schema_errors(erasure) == []


# --- M7: finished fetch rows are pruned by the sweeper --------------------------------


async def test_finished_fetches_are_pruned(kafka_bootstrap: str, db_url: str) -> None:
    old, recent = utcnow() - timedelta(days=31), utcnow() - timedelta(days=1)
    later = utcnow() + timedelta(days=1)
    rows = [
        ("done-old", "done", old),
        ("dead-old", "dead", old),
        ("deleted-old", "deleted", old),
        ("done-recent", "done", recent),
        ("pending-old", "pending", old),
    ]
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert_for(conn)(ad_fetches),
                [
                    {
                        "platform": "meta",
                        "lead_id": lead_id,
                        "notification": {},
                        "status": status,
                        "attempts": 0,
                        "next_attempt_at": later,  # the fetcher leaves the pending one alone
                        "created_at": at,
                        "updated_at": at,
                    }
                    for lead_id, status, at in rows
                ],
            )
    finally:
        await engine.dispose()
    async with start(kafka_bootstrap, db_url) as running:
        engine = running.app.state.runtime.engine

        async def pruned() -> list[str] | None:
            async with engine.connect() as conn:
                left = sorted((await conn.execute(select(ad_fetches.c.lead_id))).scalars())
            return left if len(left) == 2 else None

        assert await wait_for(pruned, timeout=20) == ["done-recent", "pending-old"]
