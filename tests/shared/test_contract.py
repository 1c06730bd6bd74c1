"""The typed event contract: what it accepts, what it refuses, and that it agrees with the
JSON Schemas published for other languages."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.contract import (
    CONTACT_FIELDS,
    INTERACTION_PARTS,
    Assigned,
    Contact,
    Interaction,
    InvalidEvent,
    LeadEvent,
    Owner,
    SalesActivity,
)
from shared.event_schemas import CONTACT, INTERACTION, schema_errors
from shared.events import CloudEvent, InteractionType, LeadType, RoutingType

AT = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)

FULL = Interaction(
    lead_key="jane@acme.io",
    occurred_at=AT,
    channel="form",
    form_id="demo",
    intent="demo_request",
    contact=Contact(
        email="jane@acme.io",
        phone="+4930123456",
        first_name="Jane",
        company="Acme",
        company_size=1000,
        company_size_raw="1,000",
        country="DE",
    ),
    anonymous_id="anon-1",
    attribution={"utm_source": "google"},
    consent={"marketing": True},
    custom={"plan": "pro"},
    message="call me",
)


def _event(data: dict[str, Any], ce_type: str = InteractionType.FORM_SUBMITTED) -> CloudEvent:
    return CloudEvent(type=ce_type, source="t", data=data)


def test_an_interaction_survives_the_trip_through_event_data() -> None:
    data = FULL.to_data()
    assert Interaction.from_data(data) == FULL
    assert schema_errors(_event(data)) == []
    # every part of docs/events.md is present, absent ones null
    assert set(INTERACTION_PARTS) <= set(data) and data["asset"] is None


def test_the_types_and_the_json_schemas_name_the_same_fields() -> None:
    assert set(CONTACT["properties"]) == set(CONTACT_FIELDS)
    interaction_fields = {f.name for f in fields(Interaction)}
    assert set(INTERACTION["properties"]) == interaction_fields


@pytest.mark.parametrize(
    ("contact", "where"),
    [
        ({"email": "Jane@Acme.io"}, "contact/email"),  # not lower-cased by the producer
        ({"email": "not an email"}, "contact/email"),
        ({"phone": "030 123456"}, "contact/phone"),  # not E.164
        ({"country": "Germany"}, "contact/country"),
        ({"company_size": "1,000"}, "contact/company_size"),
        ({"company_size": -1}, "contact/company_size"),
        ({"first_name": 7}, "contact/first_name"),
    ],
)
def test_out_of_shape_contact_values_are_refused_not_repaired(
    contact: dict[str, Any], where: str
) -> None:
    data = {**FULL.to_data(), "contact": contact}
    with pytest.raises(InvalidEvent, match=where):
        Interaction.from_data(data)
    assert schema_errors(_event(data)), "the JSON Schema must refuse it too"


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"lead_key": ""}, "lead_key"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"channel": "carrier-pigeon"}, "channel"),
        ({"intent": "maybe"}, "intent"),
        ({"custom": ["a"]}, "custom"),
        ({"message": "hi\x00there"}, "NUL"),
    ],
)
def test_broken_interaction_data_is_refused(change: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidEvent, match=where):
        Interaction.from_data({**FULL.to_data(), **change})


def test_unknown_keys_are_ignored_so_the_contract_can_grow() -> None:
    data = {**FULL.to_data(), "new_part": {"x": 1}}
    assert Interaction.from_data(data) == FULL


def test_a_lead_event_reads_the_lead_its_consumers_need() -> None:
    lead = {
        "id": "L1",
        "key": "jane@acme.io",
        "email": "jane@acme.io",
        "country": "DE",
        "company_size": 1000,
        "status": "lead",
        "stage": "SQL",
        "temperature": "hot",
        "score": {
            "total": 80,
            "fit": 30,
            "engagement": 50,
            "reasons": [{"rule": "r", "points": 80}],
        },
        "owner": {"id": "rep-1", "name": "Ann", "email": "ann@x.io", "team": "emea"},
        "created_at": "2026-03-02T09:30:00Z",
    }
    data = {"lead": lead, "cause": {"event_id": "e1", "type": "t"}}
    assert schema_errors(_event(data, LeadType.QUALIFIED)) == []
    ev = LeadEvent.from_data(data)
    assert ev.lead.id == "L1" and ev.lead.temperature == "hot"
    assert ev.lead.owner == Owner("rep-1", "Ann", "ann@x.io", "emea")
    assert ev.lead.field("country") == "DE" and ev.lead.field("company_size") == 1000
    assert ev.lead.score.total == 80
    assert LeadEvent.from_data(ev.to_data()).lead.to_data() == ev.lead.to_data()
    for broken in (
        {**lead, "stage": "SAL"},
        {**lead, "score": None},
        {k: lead[k] for k in ("id",)},
    ):
        with pytest.raises(InvalidEvent):
            LeadEvent.from_data({"lead": broken})


def test_a_sales_activity_names_its_lead_by_id_or_email() -> None:
    assert SalesActivity.from_data({"email": " Jane@Acme.IO "}).email == "jane@acme.io"
    assert SalesActivity.from_data({"lead_id": "L1"}).lead_id == "L1"
    # an unreadable time from a sales tool falls back to the envelope's, the touch is kept
    assert SalesActivity.from_data({"lead_id": "L1", "occurred_at": "soon"}).occurred_at is None
    with pytest.raises(InvalidEvent, match="lead_id or email"):
        SalesActivity.from_data({"note": "called"})


def test_a_contact_built_in_code_is_checked_too() -> None:
    with pytest.raises(InvalidEvent):
        replace(FULL.contact or Contact(), phone="12345")


def test_an_assignment_names_the_lead_and_its_new_owner() -> None:
    assigned = Assigned(
        assignment_id="a-1",
        lead_id="L1",
        owner=Owner("rep-1", "Ann", "ann@x.io", "emea"),
        assigned_at=AT,
        reason="rule: emea",
        lead={
            "email": "jane@acme.io",
            "first_name": "Jane",
            "last_name": None,
            "company": "Acme",
            "job_title": None,
            "temperature": "hot",
            "stage": "SQL",
            "score": 80,
        },
        sla={"policy": "hot", "due_at": "2026-03-02T09:35:00Z", "warn_at": None},
    )
    data = assigned.to_data()
    assert schema_errors(_event(data, RoutingType.ASSIGNED)) == []
    assert Assigned.from_data(data) == assigned
    moved = replace(assigned, previous_owner=Owner("rep-0"), previous_assignment_id="a-0")
    assert Assigned.from_data(moved.to_data()) == moved
    without_sla = {k: v for k, v in data.items() if k != "sla"}
    for broken in ({**data, "owner": {"name": "no id"}}, without_sla):
        with pytest.raises(InvalidEvent):
            Assigned.from_data(broken)
