"""What scoring publishes, built through ``shared.contract`` (pure, no database)."""

from __future__ import annotations

from services.scoring.domain.lifecycle import Change
from services.scoring.events import SOURCE_URI, lead_events, scrubbed
from shared.contract import LeadEvent, Owner
from shared.event_schemas import schema_errors
from shared.events import LeadType, derived_event_id
from tests.scoring.helpers import T0, VP_SALES, default_rules, drive, interaction


def test_lead_events_carry_the_snapshot_and_read_back_through_the_contract() -> None:
    lead = drive([interaction(intent="demo_request", contact=VP_SALES, at=T0)], default_rules())
    lead.owner = Owner("rep-anna", "Anna", "anna@example.com", "emea").to_data()
    changes = [Change(LeadType.SCORED, {"from": 0, "to": lead.total}), Change(LeadType.CREATED)]
    events = lead_events(lead, changes, "cause-1", "io.leadflow.interaction.form_submitted", T0)
    assert [e.type for e in events] == [LeadType.SCORED, LeadType.CREATED]
    for ev in events:
        assert ev.data["lead"] == lead.to_snapshot()
        assert ev.data["cause"] == {
            "event_id": "cause-1",
            "type": "io.leadflow.interaction.form_submitted",
        }
        assert (ev.source, ev.subject, ev.key) == (SOURCE_URI, lead.id, "jane@acme.com")
        assert ev.id == derived_event_id("cause-1", lead.id, ev.type)
        assert schema_errors(ev) == []
        assert LeadEvent.from_data(ev.data).lead.owner == Owner.from_data(lead.owner)
    assert events[0].data["change"] == {"from": 0, "to": lead.total}
    assert "change" not in events[1].data
    assert lead_events(lead, [], "cause-1", "t", T0) == []


def test_a_published_event_of_an_erased_lead_keeps_only_the_lead_id() -> None:
    data = {"lead": {"id": "l-1", "email": "jane@acme.com"}, "cause": {"event_id": "c"}}
    assert scrubbed("l-1")(data) == {
        "lead": {"id": "l-1", "erased": True},
        "cause": {"event_id": "c"},
        "change": None,
    }


def test_a_consent_change_alone_is_announced() -> None:
    # Before: consent moved no score, so no lead event left scoring and routing kept sending
    # nurture steps to a person who had withdrawn until the lead's next score change.
    from services.scoring.domain import lifecycle, profile
    from services.scoring.domain.identity import identifiers_of
    from tests.scoring.helpers import ix

    rules = default_rules()
    first = ix(consent={"marketing": True})
    lead = profile.new_lead("lead-1", identifiers_of(first), T0)
    given = lifecycle.apply_interaction(
        lead, "e1", "io.leadflow.interaction.identified", first, rules, T0
    )
    assert Change(LeadType.CONSENT_CHANGED, {"from": None, "to": True}) in given
    same = lifecycle.apply_interaction(
        lead, "e2", "io.leadflow.interaction.identified", ix(consent={"marketing": True}), rules, T0
    )
    assert not [c for c in same if c.type == LeadType.CONSENT_CHANGED]
    withdrawn = lifecycle.apply_interaction(
        lead,
        "e3",
        "io.leadflow.interaction.identified",
        ix(consent={"marketing": False}),
        rules,
        T0,
    )
    assert Change(LeadType.CONSENT_CHANGED, {"from": True, "to": False}) in withdrawn
    [event] = lead_events(
        lead, [c for c in withdrawn if c.type == LeadType.CONSENT_CHANGED], "e3", "t", T0
    )
    assert schema_errors(event) == []
    assert event.data["lead"]["consent"]["marketing"] is False
