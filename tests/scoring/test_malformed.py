"""Malformed event data never breaks scoring: data out of contract is refused with
:class:`InvalidEvent` (which the consumer runner dead-letters), never another error, and data in
contract always gives a storable lead; fuzzed through the domain, and a set of nasty events
through the real handler on PostgreSQL (strict column types) and SQLite."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from services.scoring.domain import lifecycle, profile
from services.scoring.domain.identity import identifiers_of
from services.scoring.domain.model import Lead
from services.scoring.handlers import ScoringHandler, parse
from services.scoring.repository import _row
from services.scoring.tables import leads
from shared.contract import CHANNELS, Interaction, InvalidEvent
from shared.db import create_engine
from shared.events import CloudEvent, InteractionType, SalesType
from shared.topics import Topics
from tests.scoring.helpers import T0, assigned_data, default_rules

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
TEXT = st.text(max_size=400)
#: Plausible values beside arbitrary ones, so that many examples are in contract.
FIELDS = {
    "email": st.sampled_from(["jane@acme.com", "x" * 300 + "@a.io", "Jane@Acme.com"]) | JSON,
    "phone": st.sampled_from(["+4915112345678", "0151 1234"]) | JSON,
    "first_name": TEXT | JSON,
    "job_title": TEXT | JSON,
    "company_size": st.integers(-5, 10**10) | JSON,
    "industry": TEXT,
    "country": st.sampled_from(["DE", "de", "Germany"]) | JSON,
}
CONTACT = JSON | st.fixed_dictionaries({}, optional=FIELDS)
DATA = st.fixed_dictionaries(
    {
        "lead_key": TEXT | JSON,
        "occurred_at": st.just("2026-11-02T09:00:00Z") | JSON,
        "channel": st.sampled_from(sorted(CHANNELS)) | JSON,
    },
    optional={
        "contact": CONTACT,
        "anonymous_id": TEXT | JSON,
        "user_id": TEXT | JSON,
        "intent": JSON | st.sampled_from(["demo_request", "newsletter"]),
        "form_id": TEXT | JSON,
        "asset": JSON,
        "webinar": JSON,
        "track": JSON,
        "consent": JSON,
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


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(TYPES, DATA)
def test_any_data_is_refused_or_gives_a_storable_lead(event_type: str, data: dict) -> None:
    try:
        ix = Interaction.from_data(data)
    except InvalidEvent:
        return  # dead-lettered by the consumer runner
    ids = identifiers_of(ix, None)
    if not ids.pairs():
        return
    lead = profile.new_lead("l1", ids, T0)
    profile.add_identifiers(lead, ids)
    lifecycle.apply_interaction(lead, "e1", event_type, ix, RULES, T0)
    row = _row(lead, T0)
    for column, limit in LIMITS.items():
        value = row[column]
        assert value is None or (isinstance(value, str) and (limit is None or len(value) <= limit))
    state = orjson.loads(orjson.dumps(row["state"]))
    assert Lead.from_state(state) == lead
    orjson.dumps(lead.to_resource())


def _ev(type_: str, data: dict, key: str | None = "k@x.io") -> CloudEvent:
    return CloudEvent(type=type_, source="t", data=data, key=key)


def _ix(type_: str, key: str | None = "k@x.io", **data: object) -> CloudEvent:
    """An event with interaction data in contract, plus ``data``."""
    base = {"lead_key": key or "k", "occurred_at": "2026-11-02T09:00:00Z", "channel": "form"}
    return _ev(type_, {**base, **data}, key=key)


#: Out of contract: each is refused on its own, so the runner dead-letters it alone.
REFUSED = [
    _ev(InteractionType.FORM_SUBMITTED, {}),
    _ix(InteractionType.FORM_SUBMITTED, key=None, contact="jane@acme.com"),
    _ix(InteractionType.FORM_SUBMITTED, contact={"email": "x" * 400 + "@a.io"}),
    _ix(InteractionType.FORM_SUBMITTED, contact={"email": "Jane@Acme.com"}),
    _ix(InteractionType.FORM_SUBMITTED, contact={"email": "z@a.io", "company_size": "1,000"}),
    _ix(InteractionType.FORM_SUBMITTED, contact={"phone": "0151 12345678", "country": "DE"}),
    _ix(InteractionType.FORM_SUBMITTED, contact={"email": "z@a.io", "first_name": {"a": 1}}),
    _ix(InteractionType.FORM_SUBMITTED, contact={"email": "z@a.io", "country": 49}),
    _ix(InteractionType.TRACKED, anonymous_id=["a"], track="page"),
    _ix(InteractionType.TRACKED, occurred_at=5),
    _ix(InteractionType.IDENTIFIED, contact={"email": "w@a.io"}, anonymous_id=12345),
    _ix(InteractionType.FORM_SUBMITTED, contact={"email": "n\x00ul@a.io"}),
    _ix(InteractionType.FORM_SUBMITTED, custom={"\x00k": ["\x00"]}),
    _ev("io.leadflow.routing.assigned", {"lead_id": ["x"], "owner": {"id": "rep-1"}}),
    _ev("io.leadflow.routing.assigned", {"lead_id": "x", "owner": {"id": {"deep": 1}}}),
    _ev("io.leadflow.routing.assigned", {"lead_id": "x", "owner": {"id": "r", "name": "\x00"}}),
    _ev(SalesType.WON, {"lead_id": None, "email": 42}),
    _ev(InteractionType.ERASURE_REQUESTED, {"contact": "x", "custom": "why", "channel": 5}),
    _ix(InteractionType.ERASURE_REQUESTED, contact={"email": "W@a.io"}),
    _ix(InteractionType.ERASURE_REQUESTED, contact={"phone": "\x00", "email": 7}),
]
#: In contract, if odd: handled.
HANDLED = [
    _ix(InteractionType.FORM_SUBMITTED, key="k@x.io"),
    _ix(InteractionType.FORM_SUBMITTED, contact={"email": "z@a.io", "company_size": 10**8}),
    _ix(InteractionType.TRACKED, key="b" * 5000, anonymous_id="a" * 5000),
    _ix(
        InteractionType.WEBINAR_ATTENDED,
        contact={"email": "w@a.io"},
        webinar={"attended_minutes": "lots"},
        attribution={"utm_source": "s" * 999},
        form_id="f" * 999,
    ),
    _ix(InteractionType.IDENTIFIED, contact={"email": "w@a.io"}, anonymous_id=" "),
    _ev("io.leadflow.routing.assigned", assigned_data("nobody", {"id": "rep-1"})),
    _ev(SalesType.WON, {"lead_id": None, "email": " W@a.io "}),
    _ix(
        InteractionType.ERASURE_REQUESTED,
        contact={"email": "w@a.io"},
        custom={"reason": ["x"]},
        ad={"platform": {}},
    ),
    _ix(InteractionType.ERASURE_REQUESTED, key="ghost@x.io", anonymous_id="a" * 5000),
]


@pytest.mark.parametrize("event", REFUSED, ids=range(len(REFUSED)))
def test_data_out_of_contract_is_refused(event: CloudEvent) -> None:
    with pytest.raises(InvalidEvent):
        parse(event)


async def test_nasty_events_are_refused_alone_or_handled(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        handler = ScoringHandler(RULES, Topics("n."))
        # one refused event refuses its batch before anything is written
        with pytest.raises(InvalidEvent):
            async with engine.begin() as conn:
                await handler(conn, [HANDLED[0], REFUSED[3], HANDLED[1]])
        async with engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(leads))).scalar_one() == 0
        # as the runner then does: one event at a time, each refused one alone
        for ev in REFUSED + HANDLED:
            try:
                async with engine.begin() as conn:
                    await handler(conn, [ev])
            except InvalidEvent:
                assert ev in REFUSED
            else:
                assert ev in HANDLED
        async with engine.connect() as conn:
            n = (await conn.execute(select(func.count()).select_from(leads))).scalar_one()
            erased = (
                await conn.execute(
                    select(func.count()).select_from(leads).where(leads.c.email.is_(None))
                )
            ).scalar_one()
        assert n == 3  # k@x.io, z@a.io, w@a.io (the over-long ids are no identifiers)
        assert erased == 1  # w@a.io, by the erasure request
    finally:
        await engine.dispose()
