"""SLA deadlines on the Chinese working calendar.

Pure module: depends only on the standard library and ``chinesecalendar``.

Limits
------
A :class:`Limit` is written ``<amount><unit>`` (for example ``"30m"``, ``"4h"``,
``"2wh"``, ``"3wd"``):

* ``m``  -- calendar minutes (24x7, calendars ignored)
* ``h``  -- calendar hours (24x7, calendars ignored)
* ``wh`` -- working hours: time counted only inside the office intervals of
  working days
* ``wd`` -- working days.  Rule (common practice for 12345 hotlines):
  ``N wd`` is ``N x (working time per day)`` of working time, computed exactly
  like ``wh``.  With the default office hours a working day is 7 h, so a case
  reported at 10:00 on a Monday with ``1wd`` is due at 10:00 on Tuesday, and a
  case reported at 20:00 on a Friday with ``1wd`` is due at 18:00 on the next
  working day.

Working-time rules
------------------
* Working time before the first office interval, during breaks (lunch), after
  the last interval and on days off does not count.  A start outside office
  hours therefore begins counting at the next interval start.
* When the working time runs out exactly at the end of an interval, the
  deadline is that interval's end (``10:00 + 2wh`` is due at ``12:00``, not at
  ``14:00``).
* Working days come from ``chinesecalendar`` (statutory holidays and make-up
  working days, 调休), overridden by ``extra_holidays``.  For dates the library
  has no data for (it raises ``NotImplementedError`` outside the years it
  ships) and without an override, plain Monday-Friday is assumed and the result
  is flagged ``provisional``.
* All computations are done on the wall clock of the office time zone
  (default ``Asia/Shanghai``, which has no DST).  Inputs must be
  timezone-aware; deadlines are returned in UTC.

Status
------
:func:`state` uses *calendar* time for every unit (simplicity over precision):
a case is ``"warning"`` when the remaining share of ``due - start`` is
``<= warn_share`` and ``"overdue"`` once ``now`` is strictly after ``due``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from types import MappingProxyType
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import chinese_calendar

from core.records import CITY_TZ

__all__ = [
    "MAX_AMOUNT",
    "UNITS",
    "Deadline",
    "Limit",
    "OfficeHours",
    "SlaState",
    "WorkingCalendar",
    "parse_limit",
    "state",
]

MAX_AMOUNT = 10_000
UNITS: tuple[str, ...] = ("m", "h", "wh", "wd")
_CALENDAR_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1)}
_LIMIT_RE = re.compile(r"([0-9]+)(m|h|wh|wd)")
_FORMAT_HELP = (
    "expected '<amount><unit>' with a positive integer amount <= "
    f"{MAX_AMOUNT} and unit one of 'm' (calendar minutes), 'h' (calendar hours), "
    "'wh' (working hours), 'wd' (working days), e.g. '30m', '4h', '2wh', '3wd'"
)

SlaState = Literal["on_track", "warning", "overdue"]
_DAY = timedelta(days=1)
_ZERO = timedelta(0)


# --------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class Limit:
    """An SLA limit such as ``2wh``.  ``str(limit)`` round-trips via :func:`parse_limit`."""

    amount: int
    unit: str

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not isinstance(self.amount, int):
            raise ValueError(f"invalid limit amount {self.amount!r}: {_FORMAT_HELP}")
        if not 1 <= self.amount <= MAX_AMOUNT:
            raise ValueError(f"invalid limit amount {self.amount}: {_FORMAT_HELP}")
        if self.unit not in UNITS:
            raise ValueError(f"invalid limit unit {self.unit!r}: {_FORMAT_HELP}")

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"


def parse_limit(text: str) -> Limit:
    """Parse ``"30m"``, ``"4h"``, ``"2wh"``, ``"3wd"`` into a :class:`Limit`.

    Surrounding whitespace is ignored; everything else is strict (lower-case
    unit, ASCII digits, no sign, no decimals, no inner spaces).
    """
    if not isinstance(text, str):
        raise TypeError(f"limit must be a string, got {type(text).__name__}: {_FORMAT_HELP}")
    match = _LIMIT_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"invalid limit {text!r}: {_FORMAT_HELP}")
    amount = int(match.group(1))
    if not 1 <= amount <= MAX_AMOUNT:
        raise ValueError(f"invalid limit {text!r}: amount out of range; {_FORMAT_HELP}")
    return Limit(amount, match.group(2))


# --------------------------------------------------------------------- office hours

_DEFAULT_INTERVALS: tuple[tuple[time, time], ...] = (
    (time(9, 0), time(12, 0)),
    (time(14, 0), time(18, 0)),
)


@dataclass(frozen=True)
class OfficeHours:
    """Office time zone and the local (start, end) intervals of every working day.

    Intervals must be naive ``time`` values, each with ``start < end``, sorted
    and non-overlapping (an interval cannot end at 24:00).  A list is accepted
    and stored as a tuple.
    """

    tz: str = CITY_TZ.key
    intervals: tuple[tuple[time, time], ...] = field(default=_DEFAULT_INTERVALS)

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
            raise ValueError(f"unknown time zone {self.tz!r}") from exc
        intervals = tuple((s, e) for s, e in self.intervals)
        if not intervals:
            raise ValueError("office hours need at least one (start, end) interval")
        previous_end: time | None = None
        for start, end in intervals:
            if not isinstance(start, time) or not isinstance(end, time):
                raise ValueError(f"office interval bounds must be datetime.time values: {(start, end)!r}")
            if start.tzinfo is not None or end.tzinfo is not None:
                raise ValueError("office interval times must be naive local times (the zone is `tz`)")
            if not start < end:
                raise ValueError(f"office interval must have start < end: {start}-{end}")
            if previous_end is not None and start < previous_end:
                raise ValueError("office intervals must be sorted and non-overlapping")
            previous_end = end
        object.__setattr__(self, "intervals", intervals)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    @property
    def per_day(self) -> timedelta:
        """Working time in one working day (7 h for the default intervals)."""
        return sum((_offset(e) - _offset(s) for s, e in self.intervals), _ZERO)


def _offset(t: time) -> timedelta:
    return timedelta(hours=t.hour, minutes=t.minute, seconds=t.second, microseconds=t.microsecond)


# ------------------------------------------------------------------------ calendar


@lru_cache(maxsize=8192)
def _library_workday(d: date) -> bool | None:
    """chinesecalendar's answer for ``d``, or None when it has no data for that year."""
    try:
        return bool(chinese_calendar.is_workday(d))
    except NotImplementedError:
        return None


@dataclass(frozen=True)
class Deadline:
    """A computed deadline (UTC).  ``provisional`` is True when any day between the
    start day and the due day had to be guessed (Mon-Fri fallback)."""

    due: datetime
    provisional: bool


def _require_aware(value: datetime, name: str) -> None:
    if not isinstance(value, datetime):
        raise ValueError(f"{name} must be a timezone-aware datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(
            f"{name} is a naive datetime ({value.isoformat()}); pass a timezone-aware datetime, "
            "e.g. datetime(..., tzinfo=datetime.UTC)"
        )


class WorkingCalendar:
    """Chinese working calendar plus office hours.

    ``extra_holidays`` maps a date to ``True`` (working day) or ``False`` (day off)
    and takes precedence over chinesecalendar; use it to add a year the library
    does not know yet, or local adjustments.
    """

    def __init__(self, office: OfficeHours | None = None, extra_holidays: Mapping[date, bool] | None = None,
                 covered_years: Iterable[int] = ()) -> None:
        self.office = office if office is not None else OfficeHours()
        overrides: dict[date, bool] = {}
        for day, working in (extra_holidays or {}).items():
            if isinstance(day, datetime) or not isinstance(day, date):
                raise ValueError(f"extra_holidays keys must be dates, got {day!r}")
            if not isinstance(working, bool):
                raise ValueError(f"extra_holidays[{day}] must be True (working day) or False (day off)")
            overrides[day] = working
        self.extra_holidays: Mapping[date, bool] = MappingProxyType(overrides)
        # Years whose whole schedule was given (a holiday file): days not listed are plain Mon-Fri, and known.
        self.covered_years: frozenset[int] = frozenset(int(y) for y in covered_years)
        self._zone = self.office.zone
        self._intervals = tuple((_offset(s), _offset(e)) for s, e in self.office.intervals)
        self._first_start = self._intervals[0][0]
        self._per_day = self.office.per_day
        self._days: dict[date, tuple[bool, bool]] = {}

    def __repr__(self) -> str:
        return f"WorkingCalendar(office={self.office!r}, extra_holidays={len(self.extra_holidays)} days)"

    # ------------------------------------------------------------------ days

    def _day(self, d: date) -> tuple[bool, bool]:
        """(is working day, covered) for ``d``, memoised per calendar."""
        cached = self._days.get(d)
        if cached is None:
            override = self.extra_holidays.get(d)
            if override is not None:
                cached = (override, True)
            elif d.year in self.covered_years:
                cached = (d.weekday() < 5, True)
            else:
                known = _library_workday(d)
                cached = (known, True) if known is not None else (d.weekday() < 5, False)
            self._days[d] = cached
        return cached

    def is_workday(self, d: date) -> bool:
        """Whether ``d`` is a working day (overrides, then chinesecalendar, then Mon-Fri)."""
        if isinstance(d, datetime):
            d = d.date()
        return self._day(d)[0]

    def covered(self, d: date) -> bool:
        """Whether ``d`` is known (in ``extra_holidays`` or chinesecalendar's data)."""
        if isinstance(d, datetime):
            d = d.date()
        return self._day(d)[1]

    def first_uncovered(self, start: date, days: int) -> date | None:
        """The first day in [start, start + days) the calendar does not know, or None."""
        if isinstance(start, datetime):
            start = start.date()
        for i in range(days):
            d = start + timedelta(days=i)
            if not self._day(d)[1]:
                return d
        return None

    # ------------------------------------------------------------------ limits

    def duration(self, limit: Limit) -> timedelta:
        """The length of ``limit``: calendar time for ``m``/``h``, working time for ``wh``/``wd``."""
        if limit.unit in _CALENDAR_UNITS:
            return limit.amount * _CALENDAR_UNITS[limit.unit]
        if limit.unit == "wh":
            return timedelta(hours=limit.amount)
        return limit.amount * self._per_day

    def _to_wall(self, value: datetime) -> datetime:
        return value.astimezone(self._zone).replace(tzinfo=None)

    def _from_wall(self, wall: datetime) -> datetime:
        return wall.replace(tzinfo=self._zone).astimezone(UTC)

    def add(self, start: datetime, limit: Limit) -> Deadline:
        """Deadline for a case started at ``start`` (aware) with ``limit``; due is in UTC."""
        _require_aware(start, "start")
        if not isinstance(limit, Limit):
            raise ValueError(f"limit must be a Limit (see parse_limit), got {limit!r}")
        if limit.unit in _CALENDAR_UNITS:
            return Deadline(start.astimezone(UTC) + self.duration(limit), provisional=False)
        wall_due, provisional = self._add_working(self._to_wall(start), self.duration(limit))
        return Deadline(self._from_wall(wall_due), provisional)

    def _add_working(self, wall: datetime, amount: timedelta) -> tuple[datetime, bool]:
        day = wall.date()
        midnight = datetime.combine(day, time())
        offset = wall - midnight
        remaining = amount
        provisional = False
        while True:
            working, known = self._day(day)
            if not known:
                provisional = True
            if working:
                if offset <= self._first_start and remaining > self._per_day:
                    # Whole working day consumed: skip it without walking intervals.
                    remaining -= self._per_day
                else:
                    for begin, end in self._intervals:
                        segment_start = max(begin, offset)
                        if segment_start >= end:
                            continue
                        available = end - segment_start
                        if remaining <= available:
                            return midnight + segment_start + remaining, provisional
                        remaining -= available
            day += _DAY
            midnight += _DAY
            offset = _ZERO

    def working_time_between(self, a: datetime, b: datetime) -> timedelta:
        """Working time inside office hours on working days between ``a`` and ``b`` (0 if b <= a)."""
        _require_aware(a, "a")
        _require_aware(b, "b")
        if b <= a:
            return _ZERO
        wall_a, wall_b = self._to_wall(a), self._to_wall(b)
        total = _ZERO
        day = wall_a.date()
        last = wall_b.date()
        while day <= last:
            if self._day(day)[0]:
                midnight = datetime.combine(day, time())
                if wall_a <= midnight and midnight + _DAY <= wall_b:
                    total += self._per_day
                else:
                    for begin, end in self._intervals:
                        lo = max(midnight + begin, wall_a)
                        hi = min(midnight + end, wall_b)
                        if hi > lo:
                            total += hi - lo
            day += _DAY
        return total

    def provisional_between(self, a: datetime, b: datetime) -> bool:
        """True when any day from ``a``'s to ``b``'s office-local date is not covered."""
        _require_aware(a, "a")
        _require_aware(b, "b")
        first, last = sorted((self._to_wall(a).date(), self._to_wall(b).date()))
        return any(not self._day(first + i * _DAY)[1] for i in range((last - first).days + 1))


# -------------------------------------------------------------------------- status


def state(now: datetime, start: datetime, due: datetime, warn_share: float = 0.2) -> SlaState:
    """SLA status of a case, in calendar time for every unit.

    * ``"overdue"``  when ``now > due``;
    * ``"warning"``  when ``(due - now) / (due - start) <= warn_share``
      (also when ``due <= start`` and the deadline has not passed);
    * ``"on_track"`` otherwise (including ``now`` before ``start``).
    """
    _require_aware(now, "now")
    _require_aware(start, "start")
    _require_aware(due, "due")
    if not 0 <= warn_share <= 1:
        raise ValueError(f"warn_share must be between 0 and 1, got {warn_share!r}")
    if now > due:
        return "overdue"
    total = due - start
    if total <= _ZERO:
        return "warning"
    return "warning" if (due - now) / total <= warn_share else "on_track"
