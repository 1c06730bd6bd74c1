"""The API's response models give the JSON the routes answered before they were typed."""

from __future__ import annotations

from typing import get_args

from services.scoring.api import LeadOut, Stage, Status, Temperature
from services.scoring.api_reports import KpisOut
from shared.contract import STAGES, STATUSES, TEMPERATURES, Owner
from tests.scoring.helpers import T0, VP_SALES, default_rules, drive, interaction


def test_a_lead_renders_as_its_resource() -> None:
    events = [
        interaction(
            intent="demo_request",
            contact={**VP_SALES, "phone": "+4915112345678", "country": "DE"},
            anonymous_id="a-1",
            consent={"marketing": True, "at": "2026-11-02T09:00:00Z"},
            attribution={"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "q4"},
            at=T0,
        )
    ]
    lead = drive(events, default_rules())
    lead.owner = Owner("rep-anna", "Anna", None, "emea").to_data()
    resource = lead.to_resource()
    assert any(isinstance(r["points"], float) for r in resource["score"]["reasons"])
    assert any(isinstance(r["points"], int) for r in resource["score"]["reasons"])
    out = LeadOut.of(lead).model_dump(mode="json", by_alias=True)
    assert out == resource
    assert list(out) == list(resource)
    assert [type(r["points"]) for r in out["score"]["reasons"]] == [
        type(r["points"]) for r in resource["score"]["reasons"]
    ]


def test_kpis_keep_their_from_key() -> None:
    row_model = KpisOut.model_fields["totals"].annotation
    assert row_model is not None
    # Every required field of a row, with a value of its kind, whatever the row holds today.
    item = {
        name: "total" if name == "key" else _sample(field.annotation)
        for name, field in row_model.model_fields.items()  # type: ignore[union-attr]
        if field.is_required()
    }
    body = {"from": "a", "to": "b", "group_by": "source", "items": [item], "totals": item}
    out = KpisOut.model_validate(body).model_dump(mode="json", by_alias=True)
    assert out["from"] == "a" and "from_" not in out
    assert out["totals"]["key"] == "total"


def _sample(annotation: object) -> object:
    text = str(annotation)
    if "list" in text:
        return []
    if "dict" in text:
        return {}
    if "float" in text:
        return 0.5
    if "int" in text:
        return 1
    if "None" in text:
        return None
    return "x"


def test_the_api_names_the_states_the_contract_names() -> None:
    # mypy needs the Literals spelled out; this keeps them equal to the contract's lists
    assert get_args(Stage) == STAGES
    assert get_args(Status) == STATUSES
    assert get_args(Temperature) == TEMPERATURES
