"""Building interaction data, Segment calls, ad mapping, rate limits and JSON safety (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.capture.domain import jsonsafe
from services.capture.domain.ads import (
    google_fields,
    linkedin_signature_ok,
    loads_exact,
    meta_fields,
    meta_leadgen_changes,
    meta_signature_ok,
)
from services.capture.domain.interaction import FormSettings, InvalidSubmission, build_interaction
from services.capture.domain.ratelimit import TokenBuckets
from services.capture.domain.tracking import parse_call
from services.capture.events import (
    SOURCE_URI,
    ad_event_id,
    erasure_event_id,
    fetch_deadletter_event,
    interaction_event,
    submission_event_id,
    tracking_event_id,
)
from shared.events import InteractionType

FORM = FormSettings("demo", "demo_request", default_region="DE", consent_text_version="v3")
T = datetime(2026, 11, 26, 10, tzinfo=UTC)


def test_lead_key_prefers_email_then_phone() -> None:
    both = build_interaction(
        {"email": "A@B.co", "phone": "+4915112345678"}, channel="form", occurred_at=T, form=FORM
    )
    phone = build_interaction(
        {"phone": "0151 12345678", "anonymous_id": "a1"}, channel="form", occurred_at=T, form=FORM
    )
    assert both.lead_key == "a@b.co" and phone.lead_key == "+4915112345678"
    assert phone.anonymous_id == "a1"


def test_every_documented_part_is_present() -> None:
    ix = build_interaction({"email": "a@b.co"}, channel="form", occurred_at=T, form=FORM)
    data = ix.to_data()
    assert data["occurred_at"] == "2026-11-26T10:00:00Z" and data["message"] is None
    for part in (
        "lead_key",
        "occurred_at",
        "channel",
        "form_id",
        "intent",
        "contact",
        "anonymous_id",
        "user_id",
        "attribution",
        "consent",
        "custom",
        "asset",
        "webinar",
        "ad",
        "track",
    ):
        assert part in data
    assert data["intent"] == "demo_request" and data["consent"] is None
    assert set(data["contact"]) >= {
        "email",
        "phone",
        "first_name",
        "last_name",
        "company",
        "job_title",
        "industry",
        "company_size",
        "company_size_raw",
        "country",
    }


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({}, "/body/email"),
        ({"email": "nope"}, "/body/email"),
        ({"phone": "12"}, "/body/phone"),
        ({"email": "a@b.co", "first_name": {"x": 1}}, "/body/first_name"),
        ({"email": "a@b.co", "company_size": [1]}, "/body/company_size"),
    ],
)
def test_invalid_submissions_name_the_field(fields: dict, loc: str) -> None:
    with pytest.raises(InvalidSubmission) as exc:
        build_interaction(fields, channel="form", occurred_at=T, form=FORM)
    assert exc.value.errors[0]["loc"] == loc


def test_event_ids_stay_what_they_were() -> None:
    # Derived ids dedupe repeats across restarts and deploys: a changed derivation would make
    # a redelivered ad lead or a retried form count twice.
    assert tracking_event_id("m-1") == "54817835-26e8-528f-9982-d8c155ea414d"
    assert submission_event_id("form:demo", "k-1") == "b5cc7e1f-74ae-517b-a365-234a05da45e4"
    assert ad_event_id("google", "L1") == "9d4b9e10-65dc-55bd-9057-e77f3c7802e9"
    assert erasure_event_id("linkedin", "L1") == "b3a32c29-ee0c-59d1-8835-0e8e0eb4ea86"
    dead = fetch_deadletter_event("meta", "L1", 3, "boom", {})
    assert dead.id == "d28a8d9d-dd25-5db9-9815-a866ed63a0fb" and dead.key == "meta:L1"


def test_interaction_event_is_keyed_by_the_lead() -> None:
    ix = build_interaction({"email": "A@B.co"}, channel="form", occurred_at=T, form=FORM)
    ev = interaction_event(InteractionType.FORM_SUBMITTED, ix, id="e-1", time=T)
    assert (ev.source, ev.key, ev.id, ev.time) == (SOURCE_URI, "a@b.co", "e-1", T)
    assert ev.data == ix.to_data()


def test_country_field_sets_phone_region() -> None:
    contact = build_interaction(
        {"phone": "(650) 555-0123", "country": "USA"}, channel="form", occurred_at=T, form=FORM
    ).contact
    assert contact is not None and (contact.phone, contact.country) == ("+16505550123", "US")


def test_identify_joins_anonymous_id_to_email() -> None:
    call = parse_call({"anonymousId": "a-1", "traits": {"email": "X@Y.com"}}, "identify", T)
    assert call.event_type == InteractionType.IDENTIFIED
    assert call.interaction.lead_key == "x@y.com"
    assert call.interaction.anonymous_id == "a-1"


def test_track_with_bad_traits_is_still_recorded() -> None:
    call = parse_call({"anonymousId": "a-1", "event": "E", "traits": {"email": "bad"}}, "track", T)
    assert call.interaction.lead_key == "a-1" and call.interaction.contact is None


def test_meta_changes_keep_ids_exact() -> None:
    raw = (
        b'{"entry": [{"changes": [{"field": "leadgen", "value": {"leadgen_id": '
        b'123456789012345678901, "form_id": 9007199254740993}}, {"field": "x"}]}]}'
    )
    [change] = meta_leadgen_changes(loads_exact(raw))
    assert change["leadgen_id"] == "123456789012345678901"
    assert change["form_id"] == "9007199254740993" and change["ad_id"] is None


def test_field_mapping() -> None:
    meta = meta_fields(
        {
            "field_data": [
                {"name": "full_name", "values": ["Ann van Berg"]},
                {"name": "city", "values": ["Köln"]},
            ]
        }
    )
    assert meta == {"first_name": "Ann", "last_name": "van Berg", "custom": {"city": "Köln"}}
    google = google_fields(
        {
            "user_column_data": [
                {"column_id": "FIRST_NAME", "string_value": "A"},
                {"column_id": "WORK_PHONE", "string_value": "+1"},
                {"column_id": "PHONE_NUMBER", "string_value": "+2"},
            ]
        }
    )
    assert google == {"first_name": "A", "phone": "+1", "custom": {"phone": "+2"}}


def test_signatures() -> None:
    import hashlib
    import hmac

    body = b'{"a": 1}'
    good = "sha256=" + hmac.new(b"s", body, hashlib.sha256).hexdigest()
    assert meta_signature_ok("s", body, good)
    assert not meta_signature_ok("s", body + b" ", good)
    assert not meta_signature_ok("s", body, None) and not meta_signature_ok("s", body, "md5=x")
    one = hmac.new(b"s", b"hmacsha256=" + body, hashlib.sha256).hexdigest()
    two = "hmacsha256=" + hmac.new(b"s", body, hashlib.sha256).hexdigest()
    assert linkedin_signature_ok("s", body, one) and linkedin_signature_ok("s", body, two)
    assert not linkedin_signature_ok("t", body, one)


def test_token_bucket() -> None:
    buckets = TokenBuckets(rate=1.0, burst=2)
    assert [buckets.take("ip", 0.0) for _ in range(3)] == [0.0, 0.0, 1.0]
    assert buckets.take("other", 0.0) == 0.0
    assert buckets.take("ip", 1.0) == 0.0
    assert TokenBuckets.retry_after(0.2) == "1"


@given(st.lists(st.floats(0, 0.5), max_size=50), st.floats(0.1, 10), st.integers(1, 20))
def test_token_bucket_never_exceeds_rate(gaps: list[float], rate: float, burst: int) -> None:
    buckets, now, allowed = TokenBuckets(rate, burst), 0.0, 0
    for gap in gaps:
        now += gap
        allowed += buckets.take("k", now) == 0.0
    assert allowed <= burst + rate * now + 1e-6


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
@settings(max_examples=300)
def test_cleaned_json_is_publishable(value: object) -> None:
    cleaned = jsonsafe.clean(value)
    orjson.dumps(cleaned)  # what the producer does: must not raise
    assert "\\u0000" not in orjson.dumps(cleaned).decode()


def test_jsonsafe_loads() -> None:
    assert jsonsafe.loads(b'{"n": 123456789012345678901234}') == {"n": "123456789012345678901234"}
    assert jsonsafe.loads(b'{"s": "a\\u0000b\\ud800"}') == {"s": "ab?"}
    for bad in (b"NaN", b"1e999", b"{", b"[" * 100 + b"]" * 100):
        with pytest.raises(ValueError):
            jsonsafe.loads(bad)
    assert loads_exact(b"1.5") == Decimal("1.5")


def test_click_ids_and_the_last_touch_are_attribution_not_custom() -> None:
    # capture.js posts them with every form; they landed in the free-form ``custom`` part, where
    # scoring never looked (a lead showed its first campaign as its last touch).
    fields = {
        "email": "a@b.co",
        "utm_source": "google",
        "last_utm_source": "newsletter",
        "last_utm_campaign": "fall",
        "gclid": "G1",
        "li_fat_id": "L1",
        "landing_url": "https://x.example/?gclid=G1",
    }
    ix = build_interaction(fields, channel="form", occurred_at=T, form=FORM)
    assert ix.attribution is not None
    assert ix.attribution["gclid"] == "G1" and ix.attribution["li_fat_id"] == "L1"
    assert ix.attribution["last_utm_source"] == "newsletter"
    assert ix.attribution["landing_url"] == "https://x.example/?gclid=G1"
    assert not ix.custom


def _exact_loads(raw: bytes, identity_keys: frozenset[str]) -> object:
    """:func:`jsonsafe.loads` without its orjson shortcut: the stdlib parse, then ``clean``."""
    import json

    try:
        parsed = json.loads(
            raw,
            parse_int=jsonsafe._int,
            parse_float=jsonsafe._float,
            parse_constant=jsonsafe._constant,
        )
    except (ValueError, RecursionError):
        return ("refused",)
    try:
        return jsonsafe.clean(parsed, identity_keys=identity_keys)
    except jsonsafe.ControlCharacters as exc:
        return ("control", exc.loc)
    except jsonsafe.UnsafeJson:
        return ("refused",)


_ATOMS = st.sampled_from(
    [
        *("1", "-0", "1.5", "1e400", "12345678901234567890", "-9223372036854775809"),
        *("true", "null", "NaN", '"a"', '"a\\u0000b"', '"\\ud800"', '"x\\t"', '"\u0085"'),
        *('"\\u00e9"', '""'),
    ]
)
_KEYS = st.sampled_from(['"email"', '"phone"', '"a"', '"b\\u0000"'])
_DOCUMENTS = st.recursive(
    _ATOMS,
    lambda inner: (
        st.lists(inner, max_size=3).map(lambda xs: "[" + ",".join(xs) + "]")
        | st.lists(st.tuples(_KEYS, inner), max_size=3).map(
            lambda kvs: "{" + ",".join(f"{k}:{v}" for k, v in kvs) + "}"
        )
    ),
    max_leaves=12,
)


@given(_DOCUMENTS, st.integers(0, 40), st.booleans())
@settings(max_examples=400)
def test_jsonsafe_loads_shortcut_is_exact(doc: str, depth: int, identity: bool) -> None:
    # Most documents are parsed by orjson and only checked; the answer (or the refusal) must be
    # what the exact path gives, at every depth around the limit.
    raw = ("[" * depth + doc + "]" * depth).encode()
    keys = jsonsafe.IDENTITY_KEYS if identity else frozenset()
    expected = _exact_loads(raw, keys)
    try:
        got: object = jsonsafe.loads(raw, keys)
    except jsonsafe.ControlCharacters as exc:
        got = ("control", exc.loc)
    except jsonsafe.UnsafeJson:
        got = ("refused",)
    assert got == expected
