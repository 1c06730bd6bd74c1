"""The assignment lifecycle as a pure state machine: no database, no broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.routing.domain.assignment import (
    ACTIVE,
    Assignment,
    IllegalTransition,
    Owner,
    State,
)
from services.routing.domain.business_time import make_calendar

T0 = datetime(2026, 11, 27, 16, 55, tzinfo=UTC)  # a Friday, 5 minutes before closing time
ALWAYS = make_calendar("UTC", "24x7")
OFFICE = make_calendar("UTC", {d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")})


def assignment(state: State = State.OPEN, **changes: object) -> Assignment:
    a = Assignment(
        id="a-1",
        lead_id="lead-1",
        lead_key="jane@acme.example",
        owner=Owner("anna", "Anna", "anna@example.com", "emea"),
        team="emea",
        state=state,
        policy="hot",
        warn_at=T0 + timedelta(minutes=4),
        due_at=T0 + timedelta(minutes=5),
        assigned_at=T0,
        reason="rule:emea",
        lead={"id": "lead-1", "email": "jane@acme.example"},
    )
    return a if not changes else Assignment(**{**a.__dict__, **changes})  # type: ignore[arg-type]


def test_the_states_are_the_stored_strings() -> None:
    assert [s.value for s in State] == ["open", "met", "breached", "reassigned", "closed"]
    assert State("breached") is State.BREACHED
    assert {"open", "breached"} == ACTIVE


def test_a_touch_in_time_meets_the_sla_with_wall_and_business_seconds() -> None:
    now = T0 + timedelta(days=3)
    # Touched on Monday 09:10: 2 days 16 h 15 min of wall-clock time, 15 min of office time.
    met = assignment().first_touch(datetime(2026, 11, 30, 9, 10, tzinfo=UTC), OFFICE, now)
    assert met.state is State.MET
    assert met.met_at == datetime(2026, 11, 30, 9, 10, tzinfo=UTC)
    assert met.response_seconds == (2 * 24 * 60 + 16 * 60 + 15) * 60
    assert met.business_seconds == 15 * 60
    assert met.updated_at == now
    assert not met.active


def test_a_touch_after_the_breach_is_recorded_and_the_breach_stands() -> None:
    breached = assignment().breach(T0 + timedelta(minutes=5))
    late = breached.first_touch(T0 + timedelta(minutes=7), ALWAYS, T0 + timedelta(minutes=8))
    assert late.state is State.BREACHED and late.breached
    assert late.response_seconds == 7 * 60
    assert late.touched and late.active


def test_only_the_first_touch_counts() -> None:
    met = assignment().first_touch(T0 + timedelta(minutes=1), ALWAYS, T0 + timedelta(minutes=1))
    again = met.first_touch(T0 + timedelta(minutes=3), ALWAYS, T0 + timedelta(minutes=3))
    assert again is met
    late = assignment().breach(T0).first_touch(T0 + timedelta(minutes=6), ALWAYS, T0)
    assert late.first_touch(T0 + timedelta(minutes=9), ALWAYS, T0) is late


def test_a_touch_dated_before_the_assignment_counts_from_the_assignment() -> None:
    met = assignment().first_touch(T0 - timedelta(hours=1), ALWAYS, T0)
    assert met.met_at == T0 and met.response_seconds == 0 and met.business_seconds == 0


def test_a_breach_only_ends_an_open_assignment() -> None:
    breached = assignment().breach(T0 + timedelta(minutes=5))
    assert breached.state is State.BREACHED and breached.breached and breached.active
    for state in (State.MET, State.BREACHED, State.REASSIGNED, State.CLOSED):
        with pytest.raises(IllegalTransition) as exc:
            assignment(state).breach(T0)
        assert exc.value.state is state and exc.value.action == "breach"


@pytest.mark.parametrize("state", [State.OPEN, State.BREACHED])
def test_active_assignments_can_be_reassigned_and_closed(state: State) -> None:
    a = assignment(state)
    for ended in (a.reassign(T0), a.close(T0)):
        assert ended.ended and not ended.active and ended.updated_at == T0
    assert a.reassign(T0).state is State.REASSIGNED
    assert a.close(T0).state is State.CLOSED


@pytest.mark.parametrize("state", [State.MET, State.REASSIGNED, State.CLOSED])
def test_an_ended_assignment_refuses_every_transition(state: State) -> None:
    a = assignment(state, met_at=T0 + timedelta(minutes=1))
    for change in (
        lambda: a.reassign(T0),
        lambda: a.close(T0),
        lambda: a.breach(T0),
    ):
        with pytest.raises(IllegalTransition, match=f"assignment is {state}"):
            change()
    if state is State.MET:
        assert a.first_touch(T0, ALWAYS, T0) is a  # touched before: the first touch counts
    else:
        with pytest.raises(IllegalTransition):
            a.first_touch(T0, ALWAYS, T0)


def test_changes_since_names_only_what_a_transition_changed() -> None:
    a = assignment()
    assert a.close(T0).changes_since(a) == {"state": State.CLOSED, "updated_at": T0}
    assert a.breach(T0).changes_since(a) == {
        "state": State.BREACHED,
        "breached": True,
        "updated_at": T0,
    }
    assert a.changes_since(a) == {}
