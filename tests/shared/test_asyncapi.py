"""docs/asyncapi.yaml is valid AsyncAPI 3.0 and says what the code does.

The official JSON Schema (``@asyncapi/specs`` 6.11.1, Apache-2.0, vendored under
tests/fixtures) checks the document; regenerating it from the code's event types checks that no
type, topic or binding has drifted.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from jsonschema import Draft7Validator

from shared.asyncapi import build_document, message_name, render
from shared.events import INTERACTION_TYPES, LEAD_TYPES, NURTURE_TYPES, ROUTING_TYPES, SALES_TYPES
from shared.topics import Topics

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "asyncapi.yaml"
SPEC = ROOT / "tests" / "fixtures" / "asyncapi-3.0.0.schema.json"


def test_document_is_valid_asyncapi_3() -> None:
    validator = Draft7Validator(json.loads(SPEC.read_text(encoding="utf-8")))
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(_doc())]
    assert errors == []


def test_document_is_what_the_code_generates() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/asyncapi.yaml is stale: run `python -m shared.asyncapi docs/asyncapi.yaml`"
    )


def test_every_event_type_and_topic_is_documented_with_its_key_and_schema() -> None:
    doc = _doc()
    messages = doc["components"]["messages"]
    for ce_type in INTERACTION_TYPES | LEAD_TYPES | ROUTING_TYPES | SALES_TYPES | NURTURE_TYPES:
        msg = messages[message_name(ce_type)]
        assert msg["bindings"]["kafka"]["key"]["type"] == "string"
        schema = ROOT / "docs" / msg["payload"]["schema"]["$ref"]
        assert schema.resolve().is_file(), schema
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == set(Topics().all())


def test_a_new_event_type_would_change_the_document() -> None:
    doc = build_document(Topics("acme."))
    assert doc["channels"]["leads"]["address"] == "acme.leads"


def _doc() -> dict[str, object]:
    loaded: dict[str, object] = yaml.safe_load(DOC.read_text(encoding="utf-8"))
    return loaded
