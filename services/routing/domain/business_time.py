"""Business calendars: weekly opening hours in a time zone, with holidays.

Holidays are explicit dates, plus, when a calendar names ``holidays_country`` (and optionally
``holidays_subdivision``), that country's public holidays for any year, computed by the
``holidays`` library (rules in code, no I/O) and cached per year.

All instants are aware datetimes; results are in UTC. Opening hours are local wall-clock times,
so the length of a business day follows daylight-saving changes (a 00:00-24:00 day lasts 23 or
25 hours on a transition day) and an hour that does not exist locally is simply never open.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays as public_holidays

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: How far ahead a search for open time may go before the calendar is declared never open.
MAX_SEARCH_DAYS = 3 * 366

Span = tuple[time, time | None]  # None as the end means midnight at the end of the day


@dataclass(frozen=True)
class Calendar:
    """Weekly opening hours (local time in ``tz``) minus holidays (local dates)."""

    tz: ZoneInfo
    weekly: Mapping[int, Sequence[Span]]
    holidays: frozenset[date] = field(default_factory=frozenset)
    name: str = ""
    #: ISO 3166-1 alpha-2 code whose public holidays (every year) are also closed days.
    holidays_country: str | None = None
    #: A subdivision of that country (``BY`` for Bavaria), adding its regional holidays.
    holidays_subdivision: str | None = None
    #: The last instant :meth:`is_open` was asked about, and the answer: routing a batch of
    #: leads asks about the same instant once per lead and rep (a memo, not state).
    _last_open: list[tuple[datetime, bool]] = field(
        default_factory=list, compare=False, hash=False, repr=False
    )

    def is_holiday(self, day: date) -> bool:
        """Whether the local date ``day`` is closed: an explicit date or a public holiday."""
        if day in self.holidays:
            return True
        if self.holidays_country is None:
            return False
        return day in _public_holidays(self.holidays_country, self.holidays_subdivision, day.year)

    def intervals(self, start: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Open intervals in UTC, in order, from the local day of ``start`` onwards."""
        day = start.astimezone(self.tz).date() - timedelta(days=1)
        last_end: datetime | None = None
        for _ in range(MAX_SEARCH_DAYS):
            if not self.is_holiday(day):
                for begin, end in self.weekly.get(day.weekday(), ()):
                    a = _utc(day, begin, self.tz)
                    b = (
                        _utc(day + timedelta(days=1), time(0), self.tz)
                        if end is None
                        else _utc(day, end, self.tz)
                    )
                    if last_end is not None and a < last_end:
                        a = last_end  # a DST fold can make local spans overlap in UTC
                    if b > a:
                        yield a, b
                        last_end = b
            day += timedelta(days=1)

    def is_open(self, at: datetime) -> bool:
        """Whether ``at`` falls in opening hours."""
        memo = self._last_open
        if memo and memo[0][0] == at:
            return memo[0][1]
        answer = self._is_open(at)
        memo[:] = [(at, answer)]
        return answer

    def _is_open(self, at: datetime) -> bool:
        for a, b in self.intervals(at):
            if a > at:
                return False
            if a <= at < b:
                return True
        return False


@lru_cache(maxsize=256)
def _public_holidays(country: str, subdivision: str | None, year: int) -> frozenset[date]:
    """The public holidays of ``country`` (and ``subdivision``) in ``year``."""
    return frozenset(public_holidays.country_holidays(country, subdiv=subdivision, years=year))


def check_holidays_country(country: str, subdivision: str | None = None) -> None:
    """Raise ValueError unless the ``holidays`` library knows the country and subdivision."""
    supported = public_holidays.list_supported_countries()
    if country not in supported:
        raise ValueError(f"no public holidays known for country {country!r}")
    if subdivision is not None and subdivision not in supported[country]:
        known = ", ".join(supported[country]) or "none"
        raise ValueError(f"unknown subdivision {subdivision!r} of {country} (known: {known})")


def _utc(day: date, at: time, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, at, tzinfo=tz).astimezone(UTC)


def add_business_time(start: datetime, seconds: float, calendar: Calendar) -> datetime:
    """The instant when ``seconds`` of open time have passed since ``start``.

    Raises ValueError if the calendar has no open time in the search horizon.
    """
    start = start.astimezone(UTC)
    remaining = timedelta(seconds=seconds)
    if remaining <= timedelta(0):
        return start
    for a, b in calendar.intervals(start):
        if b <= start:
            continue
        a = max(a, start)
        if remaining <= b - a:
            return a + remaining
        remaining -= b - a
    raise ValueError(f"calendar {calendar.name or '?'} has no open hours ahead")


def business_seconds_between(a: datetime, b: datetime, calendar: Calendar) -> float:
    """Open time between ``a`` and ``b`` in seconds (0 when ``b`` is not after ``a``)."""
    a, b = a.astimezone(UTC), b.astimezone(UTC)
    if b <= a:
        return 0.0
    total = timedelta(0)
    for x, y in calendar.intervals(a):
        if x >= b:
            break
        lo, hi = max(x, a), min(y, b)
        if hi > lo:
            total += hi - lo
    return total.total_seconds()


def parse_span(text: str) -> Span:
    """``"09:00-17:30"`` as a span; ``"24:00"`` is accepted as the end of the day."""
    try:
        left, right = (p.strip() for p in text.split("-", 1))
        begin = time.fromisoformat(left)
        end = None if right == "24:00" else time.fromisoformat(right)
    except ValueError:
        raise ValueError(f"{text!r} is not a span like '09:00-17:00'") from None
    if end is not None and end <= begin:
        raise ValueError(f"{text!r}: the end must be after the start (no overnight spans)")
    return begin, end


def make_calendar(
    timezone: str,
    hours: str | Mapping[str, Sequence[str]],
    holidays: Sequence[str] = (),
    name: str = "",
    holidays_country: str | None = None,
    holidays_subdivision: str | None = None,
) -> Calendar:
    """A calendar from config values; ``hours`` is ``"24x7"`` or ``{mon: ["09:00-17:00"]}``."""
    try:
        tz = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {timezone!r}") from None
    weekly: dict[int, list[Span]] = {}
    if hours == "24x7":
        weekly = {i: [(time(0), None)] for i in range(7)}
    elif isinstance(hours, Mapping):
        for day, spans in hours.items():
            if day not in DAYS:
                raise ValueError(f"unknown day {day!r} (use {', '.join(DAYS)})")
            weekly[DAYS.index(day)] = sorted((parse_span(s) for s in spans), key=lambda s: s[0])
    else:
        raise ValueError("hours must be '24x7' or a mapping of day to spans")
    if not any(weekly.values()):
        raise ValueError("a calendar needs some opening hours")
    try:
        days = frozenset(date.fromisoformat(str(h)) for h in holidays)
    except ValueError as exc:
        raise ValueError(f"bad holiday date: {exc}") from None
    if holidays_subdivision is not None and holidays_country is None:
        raise ValueError("holidays_subdivision needs holidays_country")
    if holidays_country is not None:
        holidays_country = holidays_country.upper()
        check_holidays_country(holidays_country, holidays_subdivision)
    return Calendar(
        tz=tz,
        weekly=weekly,
        holidays=days,
        name=name,
        holidays_country=holidays_country,
        holidays_subdivision=holidays_subdivision,
    )


def local_day_start(at: datetime, tz: ZoneInfo) -> datetime:
    """UTC instant of the local midnight that starts ``at``'s day in ``tz``."""
    local = at.astimezone(tz).date()
    return datetime.combine(local, time(0), tzinfo=tz).astimezone(UTC)
