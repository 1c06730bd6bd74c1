"""JSON Schemas of every event type's data, and validation against them.

The schemas are written out as ``shared/schemas/<type>.json`` (``python -m shared.event_schemas``)
so that consumers in other languages can use them; a test keeps the files equal to this module.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from shared.contract import (
    CHANNELS,
    CONTACT_FIELDS,
    COUNTRY_PATTERN,
    E164_PATTERN,
    EMAIL_PATTERN,
    INTENTS,
    INTERACTION_PARTS,
    STAGES,
    STATUSES,
    TEMPERATURES,
)
from shared.events import (
    INTERACTION_TYPES,
    LEAD_TYPES,
    ROUTING_TYPES,
    SALES_TYPES,
    CloudEvent,
    NurtureType,
    RoutingType,
)

_STR = {"type": ["string", "null"]}
_TIME = {"type": "string", "format": "date-time"}
_OBJ = {"type": ["object", "null"]}

CONTACT = {
    "type": "object",
    "properties": {
        **{name: _STR for name in CONTACT_FIELDS},
        "email": {"type": ["string", "null"], "pattern": EMAIL_PATTERN.pattern, "maxLength": 254},
        "phone": {"type": ["string", "null"], "pattern": E164_PATTERN.pattern},
        "company_size": {"type": ["integer", "null"], "minimum": 0},
        "country": {"type": ["string", "null"], "pattern": COUNTRY_PATTERN.pattern},
    },
}

INTERACTION = {
    "type": "object",
    "required": ["lead_key", "occurred_at", "channel"],
    "properties": {
        "lead_key": {"type": "string", "minLength": 1},
        "occurred_at": _TIME,
        "channel": {"enum": sorted(CHANNELS)},
        "form_id": _STR,
        "intent": {"enum": [None, *sorted(INTENTS)]},
        "contact": {"anyOf": [CONTACT, {"type": "null"}]},
        "anonymous_id": _STR,
        "user_id": _STR,
        **{name: _OBJ for name in INTERACTION_PARTS},
        "message": _STR,
    },
}

OWNER = {
    "type": "object",
    "required": ["id", "name", "email", "team"],
    "properties": {"id": {"type": "string"}, "name": _STR, "email": _STR, "team": _STR},
}

LEAD = {
    "type": "object",
    "required": ["id", "status", "stage", "temperature", "score", "created_at"],
    "properties": {
        "id": {"type": "string"},
        "key": _STR,
        "email": _STR,
        "emails": {"type": "array", "items": {"type": "string"}},
        "status": {"enum": list(STATUSES)},
        "stage": {"enum": list(STAGES)},
        "temperature": {"enum": list(TEMPERATURES)},
        "score": {
            "type": "object",
            "required": ["total", "fit", "engagement", "reasons"],
            "properties": {
                "total": {"type": "number"},
                "fit": {"type": "number"},
                "engagement": {"type": "number"},
                "reasons": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["rule", "points"],
                        "properties": {"rule": {"type": "string"}, "points": {"type": "number"}},
                    },
                },
            },
        },
        "owner": {"anyOf": [OWNER, {"type": "null"}]},
        "created_at": _TIME,
    },
}

LEAD_EVENT = {
    "type": "object",
    "required": ["lead"],
    "properties": {"lead": LEAD, "cause": _OBJ, "change": _OBJ},
}

SLA = {
    "type": "object",
    "required": ["policy", "due_at"],
    "properties": {
        "policy": {"type": "string"},
        "due_at": _TIME,
        "warn_at": {"type": ["string", "null"]},
    },
}

ASSIGNED = {
    "type": "object",
    "required": ["assignment_id", "lead_id", "owner", "lead", "sla", "assigned_at", "reason"],
    "properties": {
        "assignment_id": {"type": "string"},
        "lead_id": {"type": "string"},
        "owner": OWNER,
        "lead": {
            "type": "object",
            "required": [
                "email",
                "first_name",
                "last_name",
                "company",
                "job_title",
                "temperature",
                "stage",
                "score",
            ],
        },
        "sla": SLA,
        "assigned_at": _TIME,
        "reason": {"type": "string"},
        "nurture": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["track", "enrolled_at", "steps"],
                "properties": {
                    "track": {"type": "string"},
                    "enrolled_at": _TIME,
                    "exited_at": {"type": ["string", "null"]},
                    "exit_reason": _STR,
                    "steps": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["step", "fired_at"],
                            "properties": {
                                "step": {"type": "string"},
                                "fired_at": _TIME,
                                "outcome": _STR,
                            },
                        },
                    },
                },
            },
        },
    },
}

ROUTING_EVENT = {
    "type": "object",
    "required": ["lead_id"],
    "properties": {"lead_id": {"type": "string"}, "assignment_id": _STR},
}

SALES_EVENT = {
    "type": "object",
    "anyOf": [{"required": ["lead_id"]}, {"required": ["email"]}],
    "properties": {
        "lead_id": _STR,
        "email": _STR,
        "assignment_id": _STR,
        "rep_id": _STR,
        "occurred_at": {"type": ["string", "null"]},
        "note": _STR,
    },
}


#: What every nurture event carries: the enrolment, the lead and its track, when, and the lead
#: as an email or marketing automation tool needs it (emptied once the person is erased).
_NURTURE_BASE: dict[str, Any] = {
    "enrolment_id": {"type": "string"},
    "lead_id": {"type": "string"},
    "track": {"type": "string"},
    "at": _TIME,
    "lead": {
        "type": "object",
        "properties": {
            "id": _STR,
            "email": _STR,
            "first_name": _STR,
            "last_name": _STR,
            "company": _STR,
            "country": _STR,
            "consent": _OBJ,
        },
    },
}
_NURTURE_REQUIRED = ["enrolment_id", "lead_id", "track", "at", "lead"]

NURTURE_ENROLLED = {
    "type": "object",
    "required": [*_NURTURE_REQUIRED, "reason", "steps"],
    "properties": {
        **_NURTURE_BASE,
        "reason": {"type": "object", "description": "the entry conditions the lead met"},
        "steps": {"type": "array", "items": {"type": "object"}},
        "first_step_due_at": _TIME,
    },
}

NURTURE_STEP_DUE = {
    "type": "object",
    "required": [*_NURTURE_REQUIRED, "step", "due_at", "reason"],
    "properties": {
        **_NURTURE_BASE,
        "step": {
            "type": "object",
            "required": ["index", "id", "action", "contacts"],
            "properties": {
                "index": {"type": "integer", "minimum": 0},
                "id": {"type": "string"},
                "action": {"enum": ["send_content", "invite_webinar", "call_task", "wait"]},
                "contacts": {"type": "boolean"},
                "content": {"type": "string"},
                "webinar": {"type": "string"},
                "team": {"type": "string"},
            },
        },
        "due_at": _TIME,
        "reason": {"type": "object"},
    },
}

NURTURE_EXITED = {
    "type": "object",
    "required": [*_NURTURE_REQUIRED, "reason"],
    "properties": {
        **_NURTURE_BASE,
        "reason": {
            "enum": [
                "sql",
                "re_engaged",
                "temperature",
                "disqualified",
                "consent_withdrawn",
                "erased",
                "merged",
                "completed",
            ]
        },
        "enrolled_at": _TIME,
        "steps_done": {"type": "integer", "minimum": 0},
        "history": {"type": "array", "items": {"type": "object"}},
    },
}


def build_schemas() -> dict[str, dict[str, Any]]:
    """Every event type's data schema, by CloudEvents type."""
    out: dict[str, dict[str, Any]] = {}
    for types, schema in (
        (INTERACTION_TYPES, INTERACTION),
        (LEAD_TYPES, LEAD_EVENT),
        (ROUTING_TYPES - {RoutingType.ASSIGNED, RoutingType.REASSIGNED}, ROUTING_EVENT),
        ({RoutingType.ASSIGNED, RoutingType.REASSIGNED}, ASSIGNED),
        (SALES_TYPES, SALES_EVENT),
        ({NurtureType.ENROLLED}, NURTURE_ENROLLED),
        ({NurtureType.STEP_DUE}, NURTURE_STEP_DUE),
        ({NurtureType.EXITED}, NURTURE_EXITED),
    ):
        for t in sorted(types):
            out[t] = {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "$id": f"https://leadflow.dev/schemas/{t}.json",
                "title": f"data of {t}",
                **schema,
            }
    return out


@cache
def _validator(ce_type: str) -> Draft202012Validator | None:
    path = resources.files("shared").joinpath("schemas", f"{ce_type}.json")
    if not path.is_file():
        return None
    return Draft202012Validator(json.loads(path.read_text(encoding="utf-8")))


def schema_errors(event: CloudEvent) -> list[str]:
    """Messages for every way ``event.data`` breaks its type's schema (empty when valid)."""
    validator = _validator(event.type)
    if validator is None:
        return [f"no schema for type {event.type}"]
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(data)'}: {e.message}"
        for e in validator.iter_errors(dict(event.data))
    ]


def write_schemas(folder: Path) -> None:
    """Write one JSON file per event type into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for t, schema in build_schemas().items():
        (folder / f"{t}.json").write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    write_schemas(Path(__file__).parent / "schemas")
