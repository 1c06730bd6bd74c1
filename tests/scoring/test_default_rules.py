"""The packaged default config gives the outcomes the issue asks for (table-driven)."""

from __future__ import annotations

from datetime import timedelta
from functools import partial

import pytest

from services.scoring.domain import lifecycle, profile
from services.scoring.domain.identity import identifiers_of
from shared.contract import Interaction
from shared.events import InteractionType as IT
from shared.events import LeadType
from tests.scoring.helpers import T0, VP_SALES, default_rules, drive, ix
from tests.scoring.helpers import interaction as _interaction

RULES = default_rules()
interaction = partial(_interaction, at=T0)
GOOD_FIT = {"job_title": "Director of Marketing", "company_size": 250, "industry": "SaaS"}


def webinar_and_content(contact: dict[str, object]) -> list:
    return [
        interaction(IT.WEBINAR_REGISTERED, contact=contact, at=T0),
        interaction(
            IT.WEBINAR_ATTENDED,
            contact=contact,
            at=T0 + timedelta(hours=1),
            webinar={"id": "w-1", "attended_minutes": 45},
        ),
        interaction(
            IT.CONTENT_DOWNLOADED,
            contact=contact,
            at=T0 + timedelta(hours=2),
            asset={"id": "guide", "type": "whitepaper", "gated": True},
        ),
    ]


CASES = [
    # (name, events, temperature, stage, status)
    ("newsletter alone", [interaction(intent="newsletter", at=T0)], "cold", "IQL", "lead"),
    (
        "demo request VP software 500",
        [interaction(intent="demo_request", contact=VP_SALES)],
        "hot",
        "SQL",
        "lead",
    ),
    ("webinar plus content with fit", webinar_and_content(GOOD_FIT), "warm", "MQL", "lead"),
    ("webinar plus content without fit", webinar_and_content({}), "warm", "IQL", "lead"),
    (
        "contact sales with good fit",
        [interaction(intent="contact", contact=VP_SALES)],
        "hot",
        "SQL",
        "lead",
    ),
    ("contact sales without fit", [interaction(intent="contact")], "hot", "IQL", "lead"),
    (
        "demo request from a competitor",
        [interaction(intent="demo_request", email="spy@competitor.example", contact=VP_SALES)],
        "hot",
        "IQL",
        "disqualified",
    ),
]


@pytest.mark.parametrize(
    ("name", "events", "temperature", "stage", "status"), CASES, ids=[c[0] for c in CASES]
)
def test_default_config_outcomes(
    name: str, events: list, temperature: str, stage: str, status: str
) -> None:
    lead = drive(events, RULES)
    assert (lead.temperature, lead.stage, lead.status) == (temperature, stage, status), lead.reasons


def test_free_mail_is_negative_fit() -> None:
    work = drive([interaction(intent="newsletter", contact=VP_SALES)], RULES)
    free = drive(
        [interaction(intent="newsletter", email="jane@gmail.com", contact=VP_SALES)], RULES
    )
    assert free.fit == work.fit - 10
    assert {"rule": "free-mail-domain", "points": -10} in [
        {k: r[k] for k in ("rule", "points")} for r in free.reasons
    ]


def test_reasons_add_up_to_the_score() -> None:
    lead = drive(webinar_and_content(GOOD_FIT), RULES, now=T0 + timedelta(days=20))
    # Not exact, and cannot be: each reason shows its decayed points rounded to cents and the
    # score is the whole-number rounding of their exact sum. The bound is that arithmetic's.
    exact_gap = abs(sum(r["points"] for r in lead.reasons) - lead.total)
    assert exact_gap <= 0.5 + 0.005 * len(lead.reasons)
    assert any(isinstance(r["points"], float) and r["points"] % 1 for r in lead.reasons)
    assert all(set(r) == {"rule", "points", "at"} for r in lead.reasons)


def test_qualified_once_and_stage_reported() -> None:
    demo = interaction(intent="demo_request", contact=VP_SALES, at=T0)
    contact = interaction(intent="contact", contact=VP_SALES, at=T0 + timedelta(hours=1))
    lead = profile.new_lead("l", identifiers_of(Interaction.from_data(demo.data), demo.key), T0)
    announced = []
    for ev, now in ((demo, T0), (contact, T0 + timedelta(hours=1))):
        msg = Interaction.from_data(ev.data)
        profile.add_identifiers(lead, identifiers_of(msg, ev.key))
        changes = lifecycle.apply_interaction(lead, ev.id, ev.type, msg, RULES, now)
        announced.append([(c.type, c.change) for c in changes])
    first, second = announced
    assert (LeadType.STAGE_CHANGED, {"from": "IQL", "to": "SQL"}) in first
    assert (LeadType.QUALIFIED, {"from": "IQL", "to": "SQL"}) in first
    assert [t for t, _ in second if t in (LeadType.QUALIFIED, LeadType.STAGE_CHANGED)] == []
    assert (lead.stage, lead.qualified_at) == ("SQL", T0)


def test_a_new_lead_is_not_reactivated() -> None:
    from services.scoring.domain import lifecycle, profile
    from services.scoring.domain.identity import Identifiers

    lead = profile.new_lead("l", Identifiers("n@x.io", None, None), T0)
    changes = lifecycle.apply_interaction(
        lead, "e", IT.FORM_SUBMITTED, ix(intent="demo_request"), RULES, T0
    )
    temp = [c.change for c in changes if c.type.endswith("temperature_changed")]
    assert temp == [{"from": "cold", "to": "hot"}]


def test_lead_cools_down_and_is_reactivated() -> None:
    from services.scoring.domain import lifecycle

    lead = drive([interaction(intent="contact", contact=VP_SALES)], RULES)
    assert lead.temperature == "hot"
    changes = lifecycle.refresh(lead, RULES, T0 + timedelta(days=40))
    assert lead.temperature == "cold"
    assert [c.change for c in changes if c.type.endswith("temperature_changed")] == [
        {"from": "hot", "to": "cold"}
    ]
    later = T0 + timedelta(days=41)
    back = lifecycle.apply_interaction(
        lead, "e-2", IT.FORM_SUBMITTED, ix(intent="demo_request", occurred_at=later), RULES, later
    )
    temp = [c.change for c in back if c.type.endswith("temperature_changed")]
    assert lead.temperature == "hot" and temp and temp[0]["reactivated"] is True
    assert lead.stage == "SQL"  # never moved back while it was cold
