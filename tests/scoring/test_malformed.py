"""Malformed interaction data never breaks scoring: fuzzed through the domain, and a set of
nasty events through the real handler on PostgreSQL (strict column types) and SQLite."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from services.scoring.domain import lifecycle, profile
from services.scoring.domain.identity import identifiers_of
from services.scoring.domain.model import Lead
from services.scoring.handlers import ScoringHandler
from services.scoring.repository import _row
from services.scoring.tables import leads
from shared.db import create_engine
from shared.events import CloudEvent, InteractionType, SalesType
from shared.topics import Topics
from tests.scoring.helpers import T0, default_rules

RULES = default_rules()
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=400),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
FIELDS = ["email", "phone", "first_name", "job_title", "company_size", "industry", "country"]
CONTACT = JSON | st.fixed_dictionaries({}, optional={f: JSON for f in FIELDS})
DATA = st.fixed_dictionaries(
    {},
    optional={
        "contact": CONTACT,
        "anonymous_id": JSON,
        "user_id": JSON,
        "lead_key": JSON,
        "intent": JSON | st.sampled_from(["demo_request", "newsletter"]),
        "form_id": JSON,
        "asset": JSON,
        "webinar": JSON,
        "track": JSON,
        "consent": JSON,
        "occurred_at": JSON,
        "attribution": JSON
        | st.fixed_dictionaries({}, optional={"utm_source": JSON, "utm_campaign": JSON}),
    },
)
TYPES = st.sampled_from(sorted([v for k, v in vars(InteractionType).items() if k.isupper()]))
LIMITS = {
    "key": None,
    "email": 320,
    "phone": 32,
    "owner_id": 200,
    "first_source": 200,
    "first_campaign": 200,
    "first_form_id": 200,
}


@settings(max_examples=300)
@given(TYPES, DATA)
def test_any_data_gives_a_storable_lead(event_type: str, data: dict) -> None:
    ids = identifiers_of(data, None)
    if not ids.pairs():
        return
    lead = profile.new_lead("l1", ids, T0)
    profile.add_identifiers(lead, ids)
    lifecycle.apply_interaction(lead, "e1", event_type, data, T0, RULES, T0)
    row = _row(lead, T0)
    for column, limit in LIMITS.items():
        value = row[column]
        assert value is None or (isinstance(value, str) and (limit is None or len(value) <= limit))
    state = orjson.loads(orjson.dumps(row["state"]))
    assert Lead.from_state(state) == lead
    orjson.dumps(lead.to_resource())


def _ev(type_: str, data: dict, key: str | None = "k@x.io") -> CloudEvent:
    return CloudEvent(type=type_, source="t", data=data, key=key)


NASTY = [
    _ev(InteractionType.FORM_SUBMITTED, {}),
    _ev(InteractionType.FORM_SUBMITTED, {"contact": "jane@acme.com"}, key=None),
    _ev(InteractionType.FORM_SUBMITTED, {"contact": {"email": "x" * 400 + "@a.io"}}),
    _ev(
        InteractionType.FORM_SUBMITTED,
        {
            "contact": {
                "email": "z@a.io",
                "company_size": "1e999",
                "first_name": {"a": 1},
                "country": 49,
            }
        },
    ),
    _ev(InteractionType.TRACKED, {"anonymous_id": ["a"], "track": "page", "occurred_at": 5}),
    _ev(InteractionType.TRACKED, {"anonymous_id": "a" * 5000, "lead_key": "b" * 5000}),
    _ev(
        InteractionType.WEBINAR_ATTENDED,
        {
            "contact": {"email": "w@a.io"},
            "webinar": {"attended_minutes": "lots"},
            "attribution": {"utm_source": "s" * 999},
        },
    ),
    _ev(InteractionType.IDENTIFIED, {"contact": {"email": "w@a.io"}, "anonymous_id": 12345}),
    _ev("io.leadflow.routing.assigned", {"lead_id": ["x"], "owner": {"id": {"deep": 1}}}),
    _ev(SalesType.WON, {"lead_id": None, "email": 42}),
    _ev(
        InteractionType.FORM_SUBMITTED,
        {"contact": {"email": "n\x00ul@a.io", "first_name": "\x00"}, "custom": {"\x00k": ["\x00"]}},
    ),
    _ev(
        InteractionType.ERASURE_REQUESTED,
        {"contact": "x", "custom": "why", "ad": [1], "channel": 5},
        key=None,
    ),
    _ev(
        InteractionType.ERASURE_REQUESTED,
        {"contact": {"email": "W@a.io"}, "custom": {"reason": ["x"]}, "ad": {"platform": {}}},
    ),
    _ev(
        InteractionType.ERASURE_REQUESTED,
        {"anonymous_id": "a" * 5000, "contact": {"phone": "\x00", "email": 7}},
        key="ghost@x.io",
    ),
]


async def test_nasty_events_are_handled_not_crashed(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        handler = ScoringHandler(RULES, Topics("n."))
        async with engine.begin() as conn:
            await handler(conn, NASTY)
        async with engine.connect() as conn:
            n = (await conn.execute(select(func.count()).select_from(leads))).scalar_one()
            erased = (
                await conn.execute(
                    select(func.count()).select_from(leads).where(leads.c.email.is_(None))
                )
            ).scalar_one()
        assert n == 4  # k@x.io (the Kafka key), z@a.io, w@a.io, nul@a.io
        assert erased == 1  # w@a.io, by the erasure request
    finally:
        await engine.dispose()
