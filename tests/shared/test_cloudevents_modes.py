"""Consuming both CloudEvents Kafka modes, as the protocol binding asks of a consumer.

The records are written by the official CloudEvents SDK, so "structured mode works" means what
other producers will actually send, not what Leadflow's own encoder happens to produce.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson
import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent as SdkEvent

from shared.events import CloudEvent, InvalidEvent, from_kafka, inbox_key


def _sdk_event(**extra: object) -> SdkEvent:
    attributes: dict[str, object] = {
        "type": "io.leadflow.sales.first_touch",
        "source": "/crm/pipedrive",
        "id": "42",
        "time": datetime(2026, 11, 30, 9, 15, tzinfo=UTC),
        "subject": "lead-7",
        "partitionkey": "lead-7",
        **extra,
    }
    return SdkEvent(attributes=attributes, data={"lead_id": "lead-7", "channel": "call"})


def _headers(message: ce_kafka.KafkaMessage) -> list[tuple[str, bytes]]:
    return list(message.headers.items())


def _key(message: ce_kafka.KafkaMessage) -> bytes | None:
    key = message.key
    return key.encode() if isinstance(key, str) else key


def test_structured_mode_from_the_sdk_is_decoded() -> None:
    message = ce_kafka.to_structured(_sdk_event(), JSONFormat())
    assert dict(message.headers)["content-type"].startswith(b"application/cloudevents+json")

    ev = from_kafka(_key(message), message.value, _headers(message))

    assert (ev.type, ev.source, ev.id, ev.subject) == (
        "io.leadflow.sales.first_touch",
        "/crm/pipedrive",
        "42",
        "lead-7",
    )
    assert ev.time == datetime(2026, 11, 30, 9, 15, tzinfo=UTC)
    assert dict(ev.data) == {"lead_id": "lead-7", "channel": "call"}
    assert ev.key == "lead-7"


def test_binary_mode_from_the_sdk_is_decoded_the_same_way() -> None:
    structured = ce_kafka.to_structured(_sdk_event(), JSONFormat())
    binary = ce_kafka.to_binary(_sdk_event(), JSONFormat())

    a = from_kafka(_key(structured), structured.value, _headers(structured))
    b = from_kafka(_key(binary), binary.value, _headers(binary))

    assert (a.type, a.source, a.id, a.subject, a.time, dict(a.data)) == (
        b.type,
        b.source,
        b.id,
        b.subject,
        b.time,
        dict(b.data),
    )


def test_structured_extensions_are_kept_and_data_base64_is_read() -> None:
    value = orjson.dumps(
        {
            "specversion": "1.0",
            "type": "io.leadflow.sales.first_touch",
            "source": "/crm/x",
            "id": "1",
            "time": "2026-11-30T09:00:00Z",
            "tenant": "acme",
            "data_base64": base64.b64encode(b'{"lead_id": "l1"}').decode(),
        }
    )
    ev = from_kafka(None, value, [("content-type", b"application/cloudevents+json; charset=utf-8")])
    assert dict(ev.data) == {"lead_id": "l1"}
    assert ev.extensions == {"tenant": "acme"}


@pytest.mark.parametrize(
    ("envelope", "message"),
    [
        ({"type": "t", "source": "s", "id": "1", "time": "2026-11-30T09:00:00Z"}, "specversion"),
        ({"specversion": "1.0", "source": "s", "id": "1"}, "type"),
        ({"specversion": "1.0", "type": "t", "source": "s", "id": "1", "data": [1]}, "object"),
        ({"specversion": "1.0", "type": "t", "source": "s", "id": {"a": 1}}, "string"),
    ],
)
def test_bad_structured_records_are_invalid_events(
    envelope: dict[str, object], message: str
) -> None:
    headers = [("content-type", b"application/cloudevents+json")]
    with pytest.raises(InvalidEvent, match=message):
        from_kafka(None, orjson.dumps(envelope), headers)


def test_structured_value_that_is_not_json_is_an_invalid_event() -> None:
    with pytest.raises(InvalidEvent, match="JSON"):
        from_kafka(None, b"{nope", [("content-type", b"application/cloudevents+json")])


def test_missing_time_takes_the_record_timestamp_not_now() -> None:
    message = ce_kafka.to_binary(_sdk_event(), JSONFormat())
    headers = [(k, v) for k, v in message.headers.items() if k != "ce_time"]
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    ev = from_kafka(_key(message), message.value, headers, int(stamp.timestamp() * 1000))

    assert ev.time == stamp


def test_missing_time_without_a_record_timestamp_is_invalid() -> None:
    message = ce_kafka.to_binary(_sdk_event(), JSONFormat())
    headers = [(k, v) for k, v in message.headers.items() if k != "ce_time"]
    with pytest.raises(InvalidEvent, match="time"):
        from_kafka(_key(message), message.value, headers)


def test_inbox_key_tells_two_sources_apart_and_keeps_leadflow_ids() -> None:
    a = CloudEvent(type="t", source="/crm/pipedrive", data={}, id="42")
    b = CloudEvent(type="t", source="/crm/hubspot", data={}, id="42")
    own = CloudEvent(type="t", source="/leadflow/capture", data={}, id="42")

    assert inbox_key(a) != inbox_key(b)
    assert inbox_key(a) == inbox_key(
        CloudEvent(type="u", source="/crm/pipedrive", data={}, id="42")
    )
    # Leadflow's own ids are UUIDs unique across its sources; rows written before keys
    # included the source must keep matching their redeliveries.
    assert inbox_key(own) == "42"


def test_derived_ids_are_uuid5_of_their_causes() -> None:
    # Ids derived before must stay the same (repeats and replays depend on it).
    import uuid

    from shared.events import _NAMESPACE, derived_event_id

    for parts in [("capture", "segment", "m-1"), ("a",), ("", "é\u20ac\U0001f600", "x\x1fy")]:
        assert derived_event_id(*parts) == str(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)))
    assert derived_event_id("capture", "segment", "m-1") == "54817835-26e8-528f-9982-d8c155ea414d"
