"""Business time: table-driven cases and hypothesis properties (nights, weekends, holidays, DST)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.routing.config import load_routing_config
from services.routing.domain.business_time import (
    add_business_time,
    business_seconds_between,
    make_calendar,
    parse_span,
)
from services.routing.domain.config import parse_routing_config
from shared.config import ConfigError, load_config

WEEKDAYS = {d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")}
BERLIN = make_calendar("Europe/Berlin", WEEKDAYS, ["2026-12-25"], name="berlin")
NEW_YORK = make_calendar("America/New_York", {**WEEKDAYS, "sat": ["10:00-12:00", "13:00-14:00"]})
ALWAYS_BERLIN = make_calendar("Europe/Berlin", "24x7")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "seconds", "expected"),
    [
        # Thursday 10:00 Berlin (09:00Z) + 1h = 11:00 Berlin
        (utc(2026, 11, 26, 9), 3600, utc(2026, 11, 26, 10)),
        # Thursday 16:30 Berlin + 1h: 30 min today, 30 min Friday from 09:00 Berlin (08:00Z)
        (utc(2026, 11, 26, 15, 30), 3600, utc(2026, 11, 27, 8, 30)),
        # Friday 16:00 Berlin + 2h: 1 h Friday, then Monday 09:00 + 1h
        (utc(2026, 11, 27, 15), 7200, utc(2026, 11, 30, 9)),
        # Saturday night: counting starts Monday 09:00 Berlin
        (utc(2026, 11, 28, 23), 300, utc(2026, 11, 30, 8, 5)),
        # Thursday 24 Dec 16:00 Berlin + 2h: Friday 25th is a holiday -> Monday 28th 10:00 Berlin
        (utc(2026, 12, 24, 15), 7200, utc(2026, 12, 28, 9)),
        # Summer time: 09:00 Berlin is 07:00Z
        (utc(2026, 7, 1, 7), 60, utc(2026, 7, 1, 7, 1)),
        # Zero seconds: the start itself, even outside hours
        (utc(2026, 11, 28, 23), 0, utc(2026, 11, 28, 23)),
    ],
)
def test_add_business_time_cases(start: datetime, seconds: int, expected: datetime) -> None:
    assert add_business_time(start, seconds, BERLIN) == expected


def test_dst_days_have_23_and_25_hours() -> None:
    spring = business_seconds_between(utc(2026, 3, 28, 23), utc(2026, 3, 29, 22), ALWAYS_BERLIN)
    assert spring == 23 * 3600
    autumn = business_seconds_between(utc(2026, 10, 24, 22), utc(2026, 10, 25, 23), ALWAYS_BERLIN)
    assert autumn == 25 * 3600


def test_business_seconds_between_cases() -> None:
    # A whole week of the Berlin calendar is 5 x 8 h.
    assert business_seconds_between(utc(2026, 11, 23), utc(2026, 11, 30), BERLIN) == 40 * 3600
    # Christmas week loses a day.
    assert business_seconds_between(utc(2026, 12, 21), utc(2026, 12, 28), BERLIN) == 32 * 3600
    assert business_seconds_between(utc(2026, 11, 30), utc(2026, 11, 23), BERLIN) == 0
    # Saturday in New York has two spans (3 h).
    assert business_seconds_between(utc(2026, 11, 28), utc(2026, 11, 29), NEW_YORK) == 3 * 3600


def test_is_open() -> None:
    assert BERLIN.is_open(utc(2026, 11, 26, 9))
    assert not BERLIN.is_open(utc(2026, 11, 26, 16))  # 17:00 Berlin: closed
    assert not BERLIN.is_open(utc(2026, 11, 28, 12))  # Saturday
    assert not BERLIN.is_open(utc(2026, 12, 25, 10))  # holiday


@pytest.mark.parametrize("bad", ["9-17", "17:00-09:00", "09:00", "aa:bb-cc:dd"])
def test_bad_spans_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_span(bad)


def test_bad_calendars_are_rejected() -> None:
    with pytest.raises(ValueError, match="time zone"):
        make_calendar("Mars/Olympus", "24x7")
    with pytest.raises(ValueError, match="day"):
        make_calendar("UTC", {"someday": ["09:00-10:00"]})
    with pytest.raises(ValueError, match="opening hours"):
        make_calendar("UTC", {"mon": []})


instants = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
)
calendars = st.sampled_from([BERLIN, NEW_YORK, ALWAYS_BERLIN])


@settings(max_examples=300, deadline=None)
@given(start=instants, seconds=st.integers(min_value=0, max_value=30 * 86400), cal=calendars)
def test_add_then_measure_gives_the_same_duration(
    start: datetime, seconds: int, cal: object
) -> None:
    end = add_business_time(start, seconds, cal)  # type: ignore[arg-type]
    assert end >= start
    assert business_seconds_between(start, end, cal) == pytest.approx(seconds, abs=1e-6)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(start=instants, a=st.integers(0, 10 * 86400), b=st.integers(0, 10 * 86400), cal=calendars)
def test_adding_is_additive_and_monotonic(start: datetime, a: int, b: int, cal: object) -> None:
    one = add_business_time(add_business_time(start, a, cal), b, cal)  # type: ignore[arg-type]
    both = add_business_time(start, a + b, cal)  # type: ignore[arg-type]
    assert one == both
    if a <= b:
        assert add_business_time(start, a, cal) <= add_business_time(start, b, cal)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(a=instants, span=st.integers(0, 20 * 86400), cal=calendars)
def test_measured_time_never_exceeds_wall_time(a: datetime, span: int, cal: object) -> None:
    b = a + timedelta(seconds=span)
    measured = business_seconds_between(a, b, cal)  # type: ignore[arg-type]
    assert 0 <= measured <= span


def test_adding_across_a_dst_change_counts_real_hours() -> None:
    # Saturday 28 March 2026 12:00 CET (11:00Z) + 24 h of a 24x7 Berlin calendar: the night
    # loses an hour, so it is Sunday 13:00 CEST (11:00Z) — 24 real hours later.
    end = add_business_time(utc(2026, 3, 28, 11), 24 * 3600, ALWAYS_BERLIN)
    assert end == utc(2026, 3, 29, 11)
    # Office hours stay 09:00-17:00 local on both sides of the change.
    assert add_business_time(utc(2026, 3, 27, 15, 30), 3600, BERLIN) == utc(2026, 3, 30, 7, 30)


# Public holidays from the ``holidays`` library: they do not run out after a hand-typed list.
GERMANY = make_calendar("Europe/Berlin", WEEKDAYS, holidays_country="DE", name="de")
BAVARIA = make_calendar(
    "Europe/Berlin", WEEKDAYS, holidays_country="DE", holidays_subdivision="BY", name="by"
)


def test_a_2031_german_public_holiday_is_not_a_working_day() -> None:
    # Friday 3 Oct 2031 (German Unity Day), 10:00 Berlin (08:00Z): closed all day.
    unity_day = utc(2031, 10, 3, 8)
    assert not GERMANY.is_open(unity_day)
    assert GERMANY.is_holiday(unity_day.date())
    assert BERLIN.is_open(unity_day)  # explicit dates only: an ordinary Friday
    # One business hour from Thursday 16:30 Berlin runs 30 min, skips Friday and the weekend.
    assert add_business_time(utc(2031, 10, 2, 14, 30), 3600, GERMANY) == utc(2031, 10, 6, 7, 30)
    assert business_seconds_between(utc(2031, 10, 3), utc(2031, 10, 4), GERMANY) == 0
    # Thursday 25 Dec 2031 too, and the explicit dates still count alongside.
    assert not GERMANY.is_open(utc(2031, 12, 25, 10))
    both = make_calendar("Europe/Berlin", WEEKDAYS, ["2031-12-24"], holidays_country="de")
    assert not both.is_open(utc(2031, 12, 24, 10)) and not both.is_open(utc(2031, 12, 25, 10))
    assert both.is_open(utc(2031, 12, 23, 10))


def test_a_subdivision_adds_its_regional_holidays() -> None:
    epiphany = utc(2031, 1, 6, 10)  # a Monday; a holiday in Bavaria, not nationwide
    assert not BAVARIA.is_open(epiphany)
    assert GERMANY.is_open(epiphany)


@pytest.mark.parametrize(
    ("country", "subdivision", "message"),
    [
        ("XX", None, "no public holidays known for country 'XX'"),
        ("DE", "ZZ", "unknown subdivision 'ZZ' of DE"),
        (None, "BY", "holidays_subdivision needs holidays_country"),
    ],
)
def test_an_unknown_holidays_country_or_subdivision_is_refused(
    country: str | None, subdivision: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_calendar(
            "Europe/Berlin",
            WEEKDAYS,
            holidays_country=country,
            holidays_subdivision=subdivision,
        )


def test_the_default_calendars_have_public_holidays_every_year() -> None:
    config = load_config()
    routing = load_routing_config(config)
    emea = next(t.calendar for t in routing.teams.values() if t.calendar.name == "emea-office")
    americas = next(
        t.calendar for t in routing.teams.values() if t.calendar.name == "americas-office"
    )
    for year in (2027, 2031, 2040):
        assert not emea.is_open(datetime(year, 12, 25, 10, tzinfo=emea.tz))
        assert not americas.is_open(datetime(year, 7, 4, 12, tzinfo=americas.tz))
    # A rep with their own hours and no holidays of their own keeps the team's country.
    rep_spec = {"id": "x", "name": "X", "email": "x@example.com", "team": "emea"}
    section = copy.deepcopy(config["routing"])
    team = next(n for n, t in routing.teams.items() if t.calendar.name == "emea-office")
    section["reps"].append({**rep_spec, "team": team, "hours": {"mon": ["08:00-12:00"]}})
    rep = parse_routing_config(section).reps["x"]
    assert rep.calendar.holidays_country == "DE"
    assert not rep.calendar.is_open(utc(2031, 4, 14, 7))  # Easter Monday 2031, 09:00 Berlin
    assert rep.calendar.is_open(utc(2031, 4, 7, 7))


def test_a_subdivision_without_a_country_is_refused_by_the_schema() -> None:
    config = copy.deepcopy(load_config())
    calendar = next(iter(config["routing"]["calendars"].values()))
    calendar.pop("holidays_country", None)
    calendar["holidays_subdivision"] = "BY"
    with pytest.raises(ConfigError, match="holidays_country"):
        load_routing_config(config)
