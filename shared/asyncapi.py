"""The AsyncAPI 3.0 document of Leadflow's topics, generated from the code's event types.

``docs/asyncapi.yaml`` is this module's output (``python -m shared.asyncapi docs/asyncapi.yaml``);
a test regenerates it and fails when the file and the code disagree, and validates it against the
official AsyncAPI 3.0.0 JSON Schema. Every event type in :mod:`shared.events` is one message, with
its data schema (``shared/schemas/<type>.json``, JSON Schema draft 2020-12), the CloudEvents
headers and the Kafka key binding.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from shared.events import (
    INTERACTION_TYPES,
    LEAD_TYPES,
    NURTURE_TYPES,
    ROUTING_TYPES,
    SALES_TYPES,
)
from shared.topics import Topics

SCHEMA_FORMAT = "application/schema+json;version=draft-2020-12"
KAFKA_BINDING = "0.5.0"

#: Which topic carries which event types, who writes and who reads it.
CHANNELS: tuple[tuple[str, str, frozenset[str], str], ...] = (
    (
        "interactions",
        "Every captured interaction.",
        INTERACTION_TYPES,
        "capture",
    ),
    (
        "leads",
        "Lead state changes, each carrying the whole lead snapshot and the score's reasons.",
        LEAD_TYPES,
        "scoring",
    ),
    (
        "routing",
        "Assignments and SLA clock events.",
        ROUTING_TYPES,
        "routing",
    ),
    (
        "nurture",
        "Nurture tracks: a lead enrolled, a step due (send content, invite to a webinar, a "
        "call task, a wait) with the lead, the step and why, and the lead leaving its track.",
        NURTURE_TYPES,
        "routing",
    ),
    (
        "sales",
        "Sales activity, written by sales tools (or routing's activity API) and read by scoring "
        "and routing. Any CloudEvents producer may write here, in binary or structured mode.",
        SALES_TYPES,
        "sales tools",
    ),
)

_KEY = {
    "type": "string",
    "description": "The lead key (normalised email, else E.164 phone, else anonymous id): one "
    "lead's events share a partition and stay in order.",
}

_CE_HEADERS = {
    "type": "object",
    "required": ["ce_id", "ce_source", "ce_specversion", "ce_type", "ce_time"],
    "properties": {
        "ce_id": {"type": "string", "maxLength": 200},
        "ce_source": {"type": "string", "maxLength": 200},
        "ce_specversion": {"const": "1.0"},
        "ce_type": {"type": "string"},
        "ce_time": {"type": "string", "format": "date-time"},
        "ce_subject": {"type": "string", "description": "the lead id once known"},
        "ce_partitionkey": {"type": "string", "description": "the Kafka key, repeated"},
        "ce_traceparent": {
            "type": "string",
            "description": "W3C trace context (CloudEvents distributed tracing extension): one "
            "form fill is one trace through capture, scoring and routing",
        },
        "content-type": {"const": "application/json"},
    },
}


def message_name(ce_type: str) -> str:
    """``io.leadflow.lead.scored`` → ``lead.scored`` (the component's key)."""
    return ce_type.removeprefix("io.leadflow.")


def _message(ce_type: str) -> dict[str, Any]:
    return {
        "name": ce_type,
        "title": ce_type,
        "contentType": "application/json",
        "headers": {"$ref": "#/components/schemas/cloudEventHeaders"},
        "payload": {
            "schemaFormat": SCHEMA_FORMAT,
            "schema": {"$ref": f"../shared/schemas/{ce_type}.json"},
        },
        "bindings": {"kafka": {"key": _KEY, "bindingVersion": KAFKA_BINDING}},
    }


def _refs(types: Iterable[str]) -> dict[str, Any]:
    return {
        message_name(t): {"$ref": f"#/components/messages/{message_name(t)}"} for t in sorted(types)
    }


def build_document(topics: Topics | None = None) -> dict[str, Any]:
    """The whole AsyncAPI document as plain data."""
    topics = topics or Topics()
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for name, description, types, writer in CHANNELS:
        address = getattr(topics, name)
        channels[name] = {
            "address": address,
            "description": f"{description} Written by {writer}.",
            "messages": _refs(types),
            "bindings": {"kafka": {"topic": address, "bindingVersion": KAFKA_BINDING}},
        }
        operations[f"send_{name}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{name}"},
            "summary": f"{writer} publishes to {address}",
        }
        messages.update({message_name(t): _message(t) for t in sorted(types)})
    channels["deadletter"] = {
        "address": topics.deadletter,
        "description": "Anything a consumer could not process, as it arrived, with "
        "ce_deadletterreason and ce_deadletterconsumer headers. Replay with "
        "`leadflow deadletter replay`.",
        "messages": {"deadletter": {"$ref": "#/components/messages/deadletter"}},
        "bindings": {"kafka": {"topic": topics.deadletter, "bindingVersion": KAFKA_BINDING}},
    }
    messages["deadletter"] = {
        "name": "deadletter",
        "title": "a dead-lettered record",
        "payload": {"description": "the original record's value, undecodable bytes as base64"},
    }
    operations["receive_sales"] = {
        "action": "receive",
        "channel": {"$ref": "#/channels/sales"},
        "summary": "scoring and routing consume sales activity from any CloudEvents producer",
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Leadflow events",
            "version": "1.0.0",
            "description": (
                "CloudEvents 1.0 on Kafka. Leadflow produces binary mode: attributes as ce_* "
                "headers, content-type application/json, the value is the data, the key is the "
                "lead key. Its consumers also accept structured mode (content-type "
                "application/cloudevents+json, the whole event as the value) and deduplicate on "
                "source and id. Topic names carry LEADFLOW_TOPIC_PREFIX (default 'leadflow.'). "
                "Generated from the code by shared/asyncapi.py; shapes explained in "
                "docs/events.md."
            ),
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": "localhost:9092",
                "protocol": "kafka",
                "description": "KAFKA_BOOTSTRAP_SERVERS; TLS and SASL: docs/configuration.md",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": {"cloudEventHeaders": _CE_HEADERS},
            "messages": messages,
        },
    }


def render(document: dict[str, Any] | None = None) -> str:
    """The document as the YAML written to ``docs/asyncapi.yaml``."""
    header = "# Generated by `python -m shared.asyncapi docs/asyncapi.yaml`: do not edit by hand.\n"
    body = yaml.safe_dump(document or build_document(), sort_keys=False, width=100)
    return header + body


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/asyncapi.yaml")
    target.write_text(render(), encoding="utf-8")
