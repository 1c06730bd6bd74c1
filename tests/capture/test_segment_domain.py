"""Pure tests of Segment group/alias parsing, batch triage and Content-Encoding decoding."""

from __future__ import annotations

import gzip
import zlib
from datetime import UTC, datetime

import pytest

from services.capture.domain.interaction import InvalidSubmission
from services.capture.domain.segment import (
    BodyTooLarge,
    CorruptBody,
    UnsupportedEncoding,
    decode_content,
    parse_message,
    triage_batch,
)
from shared.contract import Interaction
from shared.events import InteractionType

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_group_gives_the_lead_its_company_not_the_accounts_email() -> None:
    call = parse_message(
        {
            "userId": "u-1",
            "groupId": "acme-1",
            "messageId": "g-1",
            "traits": {
                "name": "Acme GmbH",
                "industry": "Software",
                "employees": 250,
                "email": "billing@acme.example",
                "address": {"country": "Germany"},
                "plan": "enterprise",
            },
        },
        "group",
        NOW,
    )
    assert call.event_type == InteractionType.IDENTIFIED and call.message_id == "g-1"
    ix = call.interaction
    assert ix.lead_key == "u-1" and ix.user_id == "u-1" and ix.anonymous_id is None
    assert ix.contact is not None and ix.contact.email is None
    assert (ix.contact.company, ix.contact.industry) == ("Acme GmbH", "Software")
    assert (ix.contact.company_size, ix.contact.country) == (250, "DE")
    assert ix.custom is not None and ix.custom["group"]["group_id"] == "acme-1"
    assert ix.custom["group"]["traits"]["plan"] == "enterprise"
    # the event data is inside the contract scoring reads
    assert Interaction.from_data(ix.to_data()) == Interaction.from_data(ix.to_data())


def test_alias_carries_both_ids_keyed_by_the_kept_one() -> None:
    call = parse_message({"previousId": "anon-7", "userId": "u-7"}, "alias", NOW)
    ix = call.interaction
    assert call.event_type == InteractionType.IDENTIFIED
    assert (ix.lead_key, ix.anonymous_id, ix.user_id) == ("u-7", "anon-7", "u-7")
    assert ix.custom == {"alias": {"previous_id": "anon-7", "user_id": "u-7"}}


@pytest.mark.parametrize(
    ("message", "call_type", "loc"),
    [
        ({"userId": "u"}, "group", "/body/groupId"),
        ({"groupId": "g"}, "group", "/body/anonymousId"),
        ({"userId": "u"}, "alias", "/body/previousId"),
        ({"previousId": "p"}, "alias", "/body/userId"),
        ({"userId": "u"}, "merge", "/body/type"),
    ],
)
def test_bad_group_and_alias_calls_name_the_field(
    message: dict[str, str], call_type: str, loc: str
) -> None:
    with pytest.raises(InvalidSubmission) as caught:
        parse_message(message, call_type, NOW)
    assert caught.value.errors[0]["loc"] == loc


def test_a_batch_rejects_bad_messages_one_by_one() -> None:
    items = [
        {"type": "track", "userId": "u", "event": "Signed Up", "messageId": "ok-1"},
        {"type": "group", "userId": "u", "groupId": "g"},
        {"type": "alias", "previousId": "a", "userId": "u"},
        {"type": "track", "userId": "u", "messageId": "no-event"},
        "not an object",
        {"type": "explode", "userId": "u"},
        {"type": "track", "userId": "u", "event": "x", "properties": {"b": "x" * 40_000}},
    ]
    triage = triage_batch(items, NOW, {"ip": "1.2.3.4"}, 32 * 1024)
    assert [c.interaction.lead_key for c in triage.calls] == ["u", "u", "u"]
    assert [r["index"] for r in triage.rejected] == [3, 4, 5, 6]
    assert triage.rejected[0]["messageId"] == "no-event"
    assert triage.rejected[0]["errors"] == [
        {"loc": "/body/batch/3/event", "msg": "track needs an event name"}
    ]
    assert triage.rejected[2]["errors"][0]["loc"] == "/body/batch/5/type"


def test_gzip_and_deflate_decode() -> None:
    body = b'{"batch": []}' * 10
    assert decode_content(gzip.compress(body), "gzip", 1000) == body
    assert decode_content(gzip.compress(body[:50]) + gzip.compress(body[50:]), "gzip", 1000) == body
    assert decode_content(zlib.compress(body), "deflate", 1000) == body
    raw = zlib.compressobj(wbits=-15)
    assert decode_content(raw.compress(body) + raw.flush(), "Deflate", 1000) == body
    assert decode_content(body, "identity", 1000) == body
    assert decode_content(zlib.compress(gzip.compress(body)), "gzip, deflate", 1000) == body


def test_a_compression_bomb_stops_at_the_limit() -> None:
    bomb = gzip.compress(b"\x00" * 5_000_000)  # 5 MB decoded from about 5 KB
    assert len(bomb) < 10_000
    with pytest.raises(BodyTooLarge):
        decode_content(bomb, "gzip", 500 * 1024)
    with pytest.raises(BodyTooLarge):
        decode_content(zlib.compress(b"x" * 2000), "deflate", 1000)


@pytest.mark.parametrize(
    ("body", "encoding", "error"),
    [
        (b"not gzip at all", "gzip", CorruptBody),
        (gzip.compress(b"{}" * 100, mtime=0)[:-12], "gzip", CorruptBody),
        (b"", "gzip", CorruptBody),
        (gzip.compress(b"{}", mtime=0) + b"trailing", "gzip", CorruptBody),
        (b"\xff\xfe\xfd", "deflate", CorruptBody),
        (b"{}", "br", UnsupportedEncoding),
    ],
)
def test_corrupt_or_unknown_encodings(body: bytes, encoding: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_content(body, encoding, 1000)


def test_segment_reserved_traits_fill_the_contact() -> None:
    traits = {
        "email": "a@b.example",
        "firstName": "Ada",
        "lastName": "Lovelace",
        "title": "CTO",
        "company": {"name": "Engines Ltd", "industry": "Computing", "employee_count": 12},
        "address": {"country": "United Kingdom"},
        "plan": "pro",
    }
    ix = parse_message({"userId": "u", "traits": traits}, "identify", NOW).interaction
    assert ix.contact is not None
    assert (ix.contact.first_name, ix.contact.last_name, ix.contact.job_title) == (
        "Ada",
        "Lovelace",
        "CTO",
    )
    assert (ix.contact.company, ix.contact.industry, ix.contact.company_size) == (
        "Engines Ltd",
        "Computing",
        12,
    )
    assert ix.contact.country == "GB"
    assert ix.custom == {"address": {"country": "United Kingdom"}, "plan": "pro"}
    # our own names win over Segment's
    ix = parse_message(
        {"userId": "u", "traits": {"first_name": "Own", "firstName": "Theirs"}}, "identify", NOW
    ).interaction
    assert ix.contact is not None and ix.contact.first_name == "Own"
