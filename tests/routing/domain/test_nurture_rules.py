"""Nurture track rules, pure and table-driven: config errors name the key, who enters which
track and why, who leaves and why, re-entry, step schedules in business time, consent."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.routing.domain.business_time import make_calendar
from services.routing.domain.config import RoutingConfigError, parse_routing_config
from services.routing.domain.nurture import (
    SEND,
    SKIP_NO_CONSENT,
    Entry,
    NurtureConfig,
    PastEnrolment,
    Stall,
    Step,
    Track,
    choose_track,
    entry_reason,
    exit_reason,
    may_enter,
    step_due_at,
    step_outcome,
)
from shared.contract import LeadSnapshot
from tests.routing.helpers import BASE_CONFIG

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)  # a Monday
SEGMENTS = {"enterprise": (1000, None), "smb": (None, 999)}
WARM = Track(
    "warm",
    Entry(temperatures=frozenset({"warm"}), stages=frozenset({"IQL", "MQL"})),
    (Step("a", "send_content", 0, {"content": "x"}),),
    score_above=80,
    exit_temperatures=frozenset({"hot"}),
)
STALLED = Track("stalled", Entry(stall=Stall("MQL", 14)), (Step("a", "wait", 60),))
ENTERPRISE = Track(
    "ent",
    Entry(segments=frozenset({"enterprise"}), sources=frozenset({"google"})),
    (Step("a", "call_task", 0, {"team": "emea"}),),
)


def lead(**over: Any) -> LeadSnapshot:
    data: dict[str, Any] = {
        "id": "l1",
        "key": "l1@x.example",
        "email": "l1@x.example",
        "status": "lead",
        "stage": "MQL",
        "temperature": "warm",
        "score": {"total": 40, "fit": 20, "engagement": 20, "reasons": []},
        "created_at": "2026-10-01T09:00:00Z",
        "last_activity_at": "2026-11-29T09:00:00Z",
        "company_size": 5000,
        "first_touch": {"source": "google"},
        "consent": {"marketing": True},
    }
    data.update(over)
    return LeadSnapshot.from_data(data)


# ---- config ------------------------------------------------------------------------------------


def nurture_cfg(track: dict[str, Any], **top: Any) -> dict[str, Any]:
    section = copy.deepcopy(BASE_CONFIG["routing"])
    section["nurture"] = {"tracks": {"t": track}, **top}
    return section


GOOD = {"entry": {"temperature": "warm"}, "steps": [{"action": "wait", "after": "1h"}]}


@pytest.mark.parametrize(
    ("track", "top", "key"),
    [
        ({**GOOD, "steps": []}, {}, "routing.nurture.tracks.t.steps"),
        ({**GOOD, "entry": {}}, {}, "routing.nurture.tracks.t.entry"),
        ({**GOOD, "entry": {"stage": "SQL"}}, {}, "routing.nurture.tracks.t.entry.stage"),
        (
            {**GOOD, "entry": {"temperature": "tepid"}},
            {},
            "routing.nurture.tracks.t.entry.temperature",
        ),
        ({**GOOD, "entry": {"segment": "galactic"}}, {}, "routing.nurture.tracks.t.entry.segment"),
        ({**GOOD, "steps": [{"action": "fax"}]}, {}, "routing.nurture.tracks.t.steps[0].action"),
        (
            {**GOOD, "steps": [{"action": "send_content"}]},
            {},
            "routing.nurture.tracks.t.steps[0].content",
        ),
        (
            {**GOOD, "steps": [{"action": "call_task", "team": "mars"}]},
            {},
            "routing.nurture.tracks.t.steps[0].team",
        ),
        (
            {**GOOD, "steps": [{"action": "wait", "after": "soon"}]},
            {},
            "routing.nurture.tracks.t.steps[0].after",
        ),
        (
            {**GOOD, "steps": [{"id": "x", "action": "wait"}, {"id": "x", "action": "wait"}]},
            {},
            "routing.nurture.tracks.t.steps[1].id",
        ),
        ({**GOOD, "calendar": "nowhere"}, {}, "routing.nurture.tracks.t.calendar"),
        (GOOD, {"calendar": "nowhere"}, "routing.nurture.calendar"),
        (
            {**GOOD, "entry": {"stall": {"stage": "MQL", "no_activity_days": 0}}},
            {},
            "routing.nurture.tracks.t.entry.stall.no_activity_days",
        ),
    ],
)
def test_config_errors_name_the_key(track: dict[str, Any], top: dict[str, Any], key: str) -> None:
    with pytest.raises(RoutingConfigError) as err:
        parse_routing_config(nurture_cfg(track, **top))
    assert err.value.key == key, str(err.value)
    assert str(err.value).startswith(f"invalid config at {key}:")


def test_config_parses_delays_in_business_days_and_calendars() -> None:
    track = {
        "entry": {"temperature": ["warm"], "stage": ["IQL", "MQL"]},
        "steps": [
            {"id": "s1", "action": "send_content", "content": "guide", "after": 0},
            {"id": "s2", "action": "invite_webinar", "webinar": "w1", "after": "2d"},
            {"id": "s3", "action": "call_task", "team": "emea", "after": "90m"},
        ],
        "exit": {"score_above": 75},
        "reentry": {"allowed": True, "cooldown_days": 30},
    }
    cfg = parse_routing_config(nurture_cfg(track, calendar="always"))
    (t,) = cfg.nurture.tracks
    assert [s.after_seconds for s in t.steps] == [0, 2 * 8 * 3600, 5400]
    assert [s.contacts for s in t.steps] == [True, True, True]
    assert t.score_above == 75 and t.reentry and t.reentry_cooldown_days == 30
    assert t.calendar.name == "always"
    assert parse_routing_config(copy.deepcopy(BASE_CONFIG["routing"])).nurture == NurtureConfig()


# ---- entry -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("track", "over", "why"),
    [
        (WARM, {}, {"stage": "MQL", "temperature": "warm"}),
        (WARM, {"stage": "IQL"}, {"stage": "IQL", "temperature": "warm"}),
        (WARM, {"temperature": "hot"}, None),
        (WARM, {"temperature": "cold"}, None),
        (WARM, {"stage": "SQL"}, None),
        (WARM, {"status": "disqualified"}, None),
        (WARM, {"erased": True}, None),
        (WARM, {"consent": {"marketing": False}}, None),
        (WARM, {"consent": None}, {"stage": "MQL", "temperature": "warm"}),
        (STALLED, {}, None),
        (STALLED, {"stage": "IQL", "last_activity_at": "2026-11-01T09:00:00Z"}, None),
        (
            STALLED,
            {"last_activity_at": "2026-11-16T11:00:00Z"},
            {
                "stall": {
                    "stage": "MQL",
                    "no_activity_days": 14.0,
                    "last_activity_at": "2026-11-16T11:00:00+00:00",
                }
            },
        ),
        (STALLED, {"last_activity_at": "2026-11-16T13:00:00Z"}, None),
        (ENTERPRISE, {}, {"segment": "enterprise", "source": "google"}),
        (ENTERPRISE, {"company_size": 50}, None),
        (
            ENTERPRISE,
            {"first_touch": None, "last_touch": {"source": "google"}},
            {"segment": "enterprise", "source": "google"},
        ),
        (ENTERPRISE, {"first_touch": {"source": "bing"}}, None),
    ],
)
def test_entry(track: Track, over: dict[str, Any], why: dict[str, Any] | None) -> None:
    assert entry_reason(track, lead(**over), NOW, SEGMENTS) == why


def test_first_track_in_config_order_wins_and_reentry_rules_apply() -> None:
    cfg = NurtureConfig((ENTERPRISE, WARM))
    assert choose_track(cfg, lead(), [], NOW, SEGMENTS).track.name == "ent"  # type: ignore[union-attr]
    past = [PastEnrolment("ent", NOW - timedelta(days=1))]
    choice = choose_track(cfg, lead(), past, NOW, SEGMENTS)
    assert choice is not None and choice.track.name == "warm"


@pytest.mark.parametrize(
    ("reentry", "cooldown", "past", "allowed"),
    [
        (False, 0, [], True),
        (False, 0, [PastEnrolment("t", NOW - timedelta(days=400))], False),
        (True, 30, [PastEnrolment("t", NOW - timedelta(days=29))], False),
        (True, 30, [PastEnrolment("t", NOW - timedelta(days=30))], True),
        (True, 0, [PastEnrolment("t", None)], False),
        (True, 0, [PastEnrolment("other", None)], True),
    ],
)
def test_reentry(reentry: bool, cooldown: float, past: list[PastEnrolment], allowed: bool) -> None:
    t = Track("t", WARM.entry, WARM.steps, reentry=reentry, reentry_cooldown_days=cooldown)
    assert may_enter(t, past, NOW) is allowed


# ---- exit --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("track", "over", "reason"),
    [
        (WARM, {}, None),
        (WARM, {"stage": "SQL", "status": "prospect"}, "sql"),
        (WARM, {"status": "disqualified"}, "disqualified"),
        (WARM, {"consent": {"marketing": False}}, "consent_withdrawn"),
        (WARM, {"erased": True, "stage": "SQL"}, "erased"),
        (WARM, {"score": {"total": 80, "fit": 40, "engagement": 40}}, "re_engaged"),
        (WARM, {"score": {"total": 79, "fit": 40, "engagement": 39}}, None),
        (WARM, {"temperature": "hot"}, "temperature"),
        (WARM, {"temperature": "cold"}, None),
        (STALLED, {"temperature": "hot", "score": {"total": 99, "fit": 0, "engagement": 99}}, None),
        (None, {}, "completed"),
    ],
)
def test_exit(track: Track | None, over: dict[str, Any], reason: str | None) -> None:
    assert exit_reason(track, lead(**over)) == reason


# ---- steps -------------------------------------------------------------------------------------

OFFICE = make_calendar(
    "Europe/Berlin", {d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")}
)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.parametrize(
    ("after_seconds", "start", "due"),
    [
        (0, "2026-12-01T10:00:00+01:00", "2026-12-01T10:00:00+01:00"),  # open: at once
        (0, "2026-12-05T10:00:00+01:00", "2026-12-07T09:00:00+01:00"),  # Saturday: Monday 9:00
        (2 * 3600, "2026-12-04T16:00:00+01:00", "2026-12-07T10:00:00+01:00"),  # over a weekend
        (16 * 3600, "2026-12-01T09:00:00+01:00", "2026-12-02T17:00:00+01:00"),  # 2 business days
    ],
)
def test_steps_are_due_in_business_time(after_seconds: float, start: str, due: str) -> None:
    t = Track("t", WARM.entry, (Step("a", "wait", after_seconds),), calendar=OFFICE)
    assert step_due_at(t, 0, at(start)) == at(due)
    assert step_due_at(t, 1, at(start)) is None


@pytest.mark.parametrize(
    ("action", "consent", "outcome"),
    [
        ("send_content", {"marketing": True}, SEND),
        ("send_content", None, SKIP_NO_CONSENT),
        ("invite_webinar", {"marketing": "yes"}, SKIP_NO_CONSENT),
        ("call_task", {"marketing": True}, SEND),
        ("call_task", None, SKIP_NO_CONSENT),
        ("wait", None, SEND),
    ],
)
def test_contact_steps_need_recorded_consent(
    action: str, consent: dict[str, Any] | None, outcome: str
) -> None:
    assert step_outcome(Step("s", action, 0), lead(consent=consent)) == outcome
