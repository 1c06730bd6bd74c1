"""The committed event schemas match their source, and they accept and reject what they should."""

from __future__ import annotations

import json
from importlib import resources

from shared.event_schemas import build_schemas, schema_errors
from shared.events import (
    INTERACTION_TYPES,
    LEAD_TYPES,
    NURTURE_TYPES,
    ROUTING_TYPES,
    SALES_TYPES,
    CloudEvent,
)


def test_committed_schema_files_are_current() -> None:
    folder = resources.files("shared").joinpath("schemas")
    built = build_schemas()
    assert (
        set(built) == INTERACTION_TYPES | LEAD_TYPES | ROUTING_TYPES | SALES_TYPES | NURTURE_TYPES
    )
    for ce_type, schema in built.items():
        on_disk = json.loads(folder.joinpath(f"{ce_type}.json").read_text())
        assert on_disk == schema, f"run: python -m shared.event_schemas ({ce_type} is stale)"


def test_assigned_event_requires_the_contract_fields() -> None:
    ev = CloudEvent(type="io.leadflow.routing.assigned", source="t", data={"lead_id": "1"})
    errors = schema_errors(ev)
    assert any("assignment_id" in e for e in errors)
    assert any("owner" in e for e in errors)


def test_interaction_event_with_unknown_channel_is_rejected() -> None:
    ev = CloudEvent(
        type="io.leadflow.interaction.form_submitted",
        source="t",
        data={
            "lead_key": "a@b.c",
            "occurred_at": "2026-01-01T00:00:00Z",
            "channel": "carrier-pigeon",
        },
    )
    assert schema_errors(ev)
    ok = CloudEvent(type=ev.type, source="t", data={**ev.data, "channel": "form"})
    assert schema_errors(ok) == []
