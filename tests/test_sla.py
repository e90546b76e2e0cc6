"""Tests for core.sla: SLA deadlines on the Chinese working calendar.

All expected deadlines below are computed by hand; times in comments are
Asia/Shanghai (CST = UTC+8) wall-clock times.  Default office hours are
09:00-12:00 and 14:00-18:00, i.e. 7 working hours per working day.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.sla import (
    Deadline,
    Limit,
    OfficeHours,
    WorkingCalendar,
    parse_limit,
    state,
)

CST = timezone(timedelta(hours=8))
CAL = WorkingCalendar()


def cst(*args: int) -> datetime:
    return datetime(*args, tzinfo=CST)


def utc_of(*args: int) -> datetime:
    """A CST wall-clock time expressed in UTC (what `add` returns)."""
    return cst(*args).astimezone(UTC)


def due(start: datetime, limit: str, cal: WorkingCalendar = CAL) -> Deadline:
    return cal.add(start, parse_limit(limit))


# ----------------------------------------------------------------- parse_limit


@pytest.mark.parametrize(
    ("text", "amount", "unit"),
    [("30m", 30, "m"), ("4h", 4, "h"), ("2wh", 2, "wh"), ("3wd", 3, "wd"), (" 10000wd ", 10000, "wd"), ("1m", 1, "m")],
)
def test_parse_limit_valid_and_round_trips(text: str, amount: int, unit: str) -> None:
    limit = parse_limit(text)
    assert limit == Limit(amount, unit)
    assert str(limit) == text.strip()
    assert parse_limit(str(limit)) == limit


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "h",
        "30",
        "0m",
        "0wd",
        "-1h",
        "+1h",
        "1.5h",
        "10001h",
        "3d",
        "2WH",
        "2 wh",
        "wh2",
        "2whx",
        "１h",
        "2wh\n3",
    ],
)
def test_parse_limit_rejects_bad_input(text: str) -> None:
    with pytest.raises(ValueError, match="expected '<amount><unit>'"):
        parse_limit(text)


def test_parse_limit_rejects_non_string() -> None:
    with pytest.raises(TypeError):
        parse_limit(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(("amount", "unit"), [(0, "h"), (10001, "h"), (-3, "wd"), (2, "d"), (True, "h"), (1.5, "h")])
def test_limit_constructor_validates(amount: object, unit: str) -> None:
    with pytest.raises(ValueError):
        Limit(amount, unit)  # type: ignore[arg-type]


@given(st.integers(1, 10_000), st.sampled_from(["m", "h", "wh", "wd"]))
def test_limit_str_round_trip_property(amount: int, unit: str) -> None:
    limit = Limit(amount, unit)
    assert parse_limit(str(limit)) == limit


# ------------------------------------------------------------ calendar basics


def test_library_schedule_2026_national_day() -> None:
    # Official 2026 schedule as shipped by chinesecalendar 1.11.0:
    # 2026-10-01 (Thu) .. 2026-10-07 (Wed) off for National Day;
    # make-up working days 2026-09-20 (Sun) and 2026-10-10 (Sat);
    # 2026-09-25 (Fri) .. 09-27 off for Mid-autumn.
    for day in range(1, 8):
        assert not CAL.is_workday(date(2026, 10, day))
    assert CAL.is_workday(date(2026, 9, 20))  # Sunday, make-up working day
    assert CAL.is_workday(date(2026, 10, 10))  # Saturday, make-up working day
    assert not CAL.is_workday(date(2026, 10, 11))  # ordinary Sunday
    assert not CAL.is_workday(date(2026, 9, 25))  # Friday, Mid-autumn
    assert CAL.is_workday(date(2026, 10, 8))
    assert CAL.covered(date(2026, 10, 1))


def test_uncovered_year_falls_back_to_monday_to_friday() -> None:
    # chinesecalendar 1.11.0 has no data for 2027.
    assert not CAL.covered(date(2027, 1, 1))
    assert CAL.is_workday(date(2027, 1, 1))  # Friday: plain Mon-Fri fallback
    assert not CAL.is_workday(date(2027, 1, 2))  # Saturday
    assert not CAL.is_workday(date(2027, 1, 3))  # Sunday
    assert CAL.is_workday(date(2027, 1, 4))  # Monday


def test_extra_holidays_override_library_and_fallback() -> None:
    cal = WorkingCalendar(
        extra_holidays={
            date(2027, 1, 1): False,  # New Year's Day off
            date(2027, 1, 2): True,  # Saturday made a working day
            date(2026, 10, 11): True,  # override a day the library knows (Sunday)
        }
    )
    assert not cal.is_workday(date(2027, 1, 1)) and cal.covered(date(2027, 1, 1))
    assert cal.is_workday(date(2027, 1, 2)) and cal.covered(date(2027, 1, 2))
    assert not cal.covered(date(2027, 1, 3))
    assert cal.is_workday(date(2026, 10, 11))


def test_extra_holidays_validation() -> None:
    with pytest.raises(ValueError):
        WorkingCalendar(extra_holidays={datetime(2027, 1, 1): False})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        WorkingCalendar(extra_holidays={date(2027, 1, 1): 0})  # type: ignore[dict-item]


def test_office_hours_validation_and_per_day() -> None:
    assert OfficeHours().per_day == timedelta(hours=7)
    assert OfficeHours(intervals=[(time(8, 30), time(17, 30))]).intervals == ((time(8, 30), time(17, 30)),)
    with pytest.raises(ValueError):
        OfficeHours(tz="Not/AZone")
    with pytest.raises(ValueError):
        OfficeHours(intervals=[])
    with pytest.raises(ValueError):
        OfficeHours(intervals=[(time(12), time(9))])
    with pytest.raises(ValueError):
        OfficeHours(intervals=[(time(9), time(13)), (time(12), time(18))])


# ------------------------------------------------------- hand-computed "wh"/"wd"


def test_wh_across_lunch_break() -> None:
    # Wed 2026-06-10 11:30 + 2wh: 11:30-12:00 = 0.5h, lunch skipped, 14:00 + 1.5h = 15:30.
    result = due(cst(2026, 6, 10, 11, 30), "2wh")
    assert result == Deadline(utc_of(2026, 6, 10, 15, 30), provisional=False)
    assert result.due.tzinfo is UTC
    assert result.due == datetime(2026, 6, 10, 7, 30, tzinfo=UTC)


def test_wh_ending_exactly_at_interval_end_stays_there() -> None:
    # 10:00 + 2wh = 12:00 exactly (not 14:00); 16:00 + 2wh = 18:00 exactly.
    assert due(cst(2026, 6, 10, 10), "2wh").due == utc_of(2026, 6, 10, 12)
    assert due(cst(2026, 6, 10, 16), "2wh").due == utc_of(2026, 6, 10, 18)


def test_wh_started_during_lunch_or_before_office() -> None:
    # 12:30 (lunch) + 1wh -> counts from 14:00 -> 15:00.
    assert due(cst(2026, 6, 10, 12, 30), "1wh").due == utc_of(2026, 6, 10, 15)
    # 07:00 + 4wh -> 09:00-12:00 = 3h, 14:00 + 1h = 15:00.
    assert due(cst(2026, 6, 10, 7), "4wh").due == utc_of(2026, 6, 10, 15)


def test_wh_across_weekend() -> None:
    # Fri 2026-06-12 20:00 + 2wh: Sat/Sun off -> Mon 06-15 09:00 + 2h = 11:00.
    assert due(cst(2026, 6, 12, 20), "2wh") == Deadline(utc_of(2026, 6, 15, 11), provisional=False)
    # Fri 2026-06-12 17:00 + 3wh: 17:00-18:00 = 1h, Mon 09:00 + 2h = 11:00.
    assert due(cst(2026, 6, 12, 17), "3wh").due == utc_of(2026, 6, 15, 11)
    # Sat 2026-06-13 10:00 + 1wd (7h): Mon 09:00-12:00 = 3h, 14:00 + 4h = 18:00 Mon.
    assert due(cst(2026, 6, 13, 10), "1wd").due == utc_of(2026, 6, 15, 18)


def test_wd_is_seven_working_hours_per_day() -> None:
    # Mon 2026-06-08 10:00 + 1wd = 7h: Mon 10-12 (2h) + 14-18 (4h) = 6h, Tue 09:00 + 1h = 10:00.
    assert due(cst(2026, 6, 8, 10), "1wd").due == utc_of(2026, 6, 9, 10)
    # Mon 2026-06-08 09:00 + 3wd = 21h = Mon, Tue, Wed in full -> Wed 06-10 18:00.
    assert due(cst(2026, 6, 8, 9), "3wd").due == utc_of(2026, 6, 10, 18)
    # Fri 2026-06-12 20:00 + 1wd -> Mon 06-15 full day -> 18:00.
    assert due(cst(2026, 6, 12, 20), "1wd").due == utc_of(2026, 6, 15, 18)


def test_national_day_2026() -> None:
    # Official 2026 schedule (chinesecalendar): 10-01..10-07 off, 10-10 (Sat) make-up working day.
    # Wed 2026-09-30 16:00 + 1wd (7h): 16-18 = 2h (5h left); 10-01..10-07 off;
    # Thu 10-08 09-12 = 3h (2h left); 14:00 + 2h = 16:00 on 10-08.
    assert due(cst(2026, 9, 30, 16), "1wd") == Deadline(utc_of(2026, 10, 8, 16), provisional=False)
    # Wed 2026-09-30 16:00 + 3wd (21h): 09-30 2h (19 left); 10-08 7h (12 left);
    # Fri 10-09 7h (5 left); Sat 10-10 (make-up day) 09-12 3h (2 left); 14:00 + 2h = 16:00 Sat 10-10.
    assert due(cst(2026, 9, 30, 16), "3wd").due == utc_of(2026, 10, 10, 16)
    # Fri 2026-10-09 17:00 + 3wh: 1h on Fri, Sat 10-10 09:00 + 2h = 11:00 (Saturday, make-up day).
    assert due(cst(2026, 10, 9, 17), "3wh").due == utc_of(2026, 10, 10, 11)
    # Sat 2026-10-10 17:00 + 2wh: 1h Sat, Sun 10-11 off, Mon 10-12 09:00 + 1h = 10:00.
    assert due(cst(2026, 10, 10, 17), "2wh").due == utc_of(2026, 10, 12, 10)


def test_mid_autumn_and_september_make_up_day_2026() -> None:
    # Official 2026 schedule (chinesecalendar): Sun 2026-09-20 is a make-up working day.
    # Fri 2026-09-18 17:00 + 2wh: 1h Fri, Sat 09-19 off, Sun 09-20 09:00 + 1h = 10:00.
    assert due(cst(2026, 9, 18, 17), "2wh").due == utc_of(2026, 9, 20, 10)
    # Mid-autumn: Fri 09-25..Sun 09-27 off.  Thu 09-24 17:00 + 2wh: 1h Thu, Mon 09-28 09:00 + 1h = 10:00.
    assert due(cst(2026, 9, 24, 17), "2wh").due == utc_of(2026, 9, 28, 10)


def test_year_end_into_2027_is_provisional_with_mon_fri_fallback() -> None:
    # Thu 2026-12-31 15:00 + 2wd (14h): 12-31 15-18 = 3h (11 left);
    # Fri 2027-01-01 unknown to the library -> Mon-Fri fallback says working: 7h (4 left);
    # Sat/Sun off; Mon 01-04 09-12 = 3h (1 left); 14:00 + 1h = 15:00 on 2027-01-04.
    assert due(cst(2026, 12, 31, 15), "2wd") == Deadline(utc_of(2027, 1, 4, 15), provisional=True)
    # Staying inside 2026 is not provisional: 15:00 + 3wh = 18:00 on 12-31.
    assert due(cst(2026, 12, 31, 15), "3wh") == Deadline(utc_of(2026, 12, 31, 18), provisional=False)
    # Thu 2026-12-31 15:00 + 10wh: 3h on 12-31, Fri 2027-01-01 (fallback working) 7h -> 18:00 01-01.
    assert due(cst(2026, 12, 31, 15), "10wh") == Deadline(utc_of(2027, 1, 1, 18), provisional=True)


def test_year_end_with_extra_holidays_override() -> None:
    cal = WorkingCalendar(extra_holidays={date(2027, 1, 1): False, date(2027, 1, 2): True})
    # Thu 2026-12-31 15:00 + 10wh: 3h on 12-31 (7 left); Fri 01-01 off (override);
    # Sat 01-02 working (override): 09-12 3h + 14-18 4h = 7h -> due Sat 2027-01-02 18:00.
    # Every day visited is covered (library or override) -> not provisional.
    assert due(cst(2026, 12, 31, 15), "10wh", cal) == Deadline(utc_of(2027, 1, 2, 18), provisional=False)
    # + 11wh: one more hour -> Sun 01-03 (fallback: off, uncovered), Mon 01-04 09:00 + 1h = 10:00, provisional.
    assert due(cst(2026, 12, 31, 15), "11wh", cal) == Deadline(utc_of(2027, 1, 4, 10), provisional=True)
    # Fri 2027-01-01 10:00 (off by override) + 2wh -> Sat 01-02 09:00 + 2h = 11:00, covered by overrides.
    assert due(cst(2027, 1, 1, 10), "2wh", cal) == Deadline(utc_of(2027, 1, 2, 11), provisional=False)


def test_custom_office_hours_and_zone() -> None:
    office = OfficeHours(tz="Asia/Shanghai", intervals=[(time(8, 30), time(17, 30))])
    cal = WorkingCalendar(office)
    # 9h per day: Mon 2026-06-08 17:00 + 1wd = 9h: 0.5h Mon, Tue 08:30 + 8.5h = 17:00.
    assert cal.add(cst(2026, 6, 8, 17), parse_limit("1wd")).due == utc_of(2026, 6, 9, 17)


def test_input_in_other_zone_returns_utc() -> None:
    # 2026-06-10 03:30 UTC == 11:30 CST -> same as the lunch-break case.
    result = CAL.add(datetime(2026, 6, 10, 3, 30, tzinfo=UTC), parse_limit("2wh"))
    assert result.due == datetime(2026, 6, 10, 7, 30, tzinfo=UTC)
    assert result.due.utcoffset() == timedelta(0)


# --------------------------------------------------------------- "m" / "h"


def test_calendar_units_ignore_calendars() -> None:
    # National Day holiday: 2026-10-01 10:00 + 30m = 10:30; + 4h = 14:00 (lunch and holiday ignored).
    assert due(cst(2026, 10, 1, 10), "30m") == Deadline(utc_of(2026, 10, 1, 10, 30), provisional=False)
    assert due(cst(2026, 10, 1, 10), "4h") == Deadline(utc_of(2026, 10, 1, 14), provisional=False)
    # Fri 20:00 + 48h = Sun 20:00.
    assert due(cst(2026, 6, 12, 20), "48h").due == utc_of(2026, 6, 14, 20)
    # 2027 is unknown to the library, but calendar time never consults it.
    assert due(cst(2026, 12, 31, 23), "72h") == Deadline(utc_of(2027, 1, 3, 23), provisional=False)


# --------------------------------------------------------- working_time_between


def test_working_time_between_examples() -> None:
    # Wed 11:30 -> 15:30 spans lunch: 0.5h + 1.5h = 2h.
    assert CAL.working_time_between(cst(2026, 6, 10, 11, 30), cst(2026, 6, 10, 15, 30)) == timedelta(hours=2)
    # Fri 17:00 -> Mon 11:00: 1h + 2h = 3h.
    assert CAL.working_time_between(cst(2026, 6, 12, 17), cst(2026, 6, 15, 11)) == timedelta(hours=3)
    # 2026-09-30 00:00 -> 2026-10-11 00:00: 09-30, 10-08, 10-09, 10-10 = 4 days x 7h.
    assert CAL.working_time_between(cst(2026, 9, 30), cst(2026, 10, 11)) == timedelta(hours=28)
    # Reversed or equal bounds -> 0.
    assert CAL.working_time_between(cst(2026, 6, 15, 11), cst(2026, 6, 12, 17)) == timedelta(0)
    assert CAL.working_time_between(cst(2026, 6, 15, 11), cst(2026, 6, 15, 11)) == timedelta(0)


# ------------------------------------------------------------------- state


def test_state() -> None:
    start, end = cst(2026, 6, 10, 9), cst(2026, 6, 10, 19)  # 10h window, warning in the last 2h
    assert state(cst(2026, 6, 10, 8), start, end) == "on_track"  # before start
    assert state(cst(2026, 6, 10, 16, 59), start, end) == "on_track"
    assert state(cst(2026, 6, 10, 17), start, end) == "warning"  # exactly 20% left
    assert state(cst(2026, 6, 10, 19), start, end) == "warning"  # at the deadline, not yet overdue
    assert state(cst(2026, 6, 10, 19, 0, 1), start, end) == "overdue"
    assert state(cst(2026, 6, 10, 14), start, end, warn_share=0.5) == "warning"
    assert state(cst(2026, 6, 10, 9), start, start) == "warning"  # zero-length window
    with pytest.raises(ValueError):
        state(start, start, end, warn_share=1.5)


# ------------------------------------------------------------------ errors


def test_naive_datetimes_rejected() -> None:
    naive = datetime(2026, 6, 10, 11, 30)
    with pytest.raises(ValueError, match="naive"):
        CAL.add(naive, parse_limit("2wh"))
    with pytest.raises(ValueError, match="naive"):
        CAL.add(naive, parse_limit("2h"))
    with pytest.raises(ValueError, match="naive"):
        CAL.working_time_between(naive, cst(2026, 6, 10, 12))
    with pytest.raises(ValueError, match="naive"):
        state(naive, cst(2026, 6, 10), cst(2026, 6, 11))


def test_large_limit_terminates() -> None:
    result = due(cst(2026, 1, 5, 9), "10000wd")
    assert result.due > cst(2060, 1, 1)
    assert result.provisional


# ------------------------------------------------------------ property tests

STARTS = st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2027, 6, 30), timezones=st.just(UTC))
UNIT = st.sampled_from(["m", "h", "wh", "wd"])
AMOUNT = st.integers(1, 120)
CALENDARS = st.sampled_from(
    [CAL, WorkingCalendar(extra_holidays={date(2027, 1, 1): False, date(2027, 1, 2): True, date(2026, 10, 3): True})]
)


@given(CALENDARS, STARTS, AMOUNT, UNIT)
def test_due_not_before_start(cal: WorkingCalendar, start: datetime, amount: int, unit: str) -> None:
    result = cal.add(start, Limit(amount, unit))
    assert result.due >= start
    assert result.due.utcoffset() == timedelta(0)


@given(CALENDARS, STARTS, AMOUNT, AMOUNT, UNIT)
def test_monotonic_in_amount(cal: WorkingCalendar, start: datetime, a1: int, a2: int, unit: str) -> None:
    lo, hi = sorted((a1, a2))
    assert cal.add(start, Limit(lo, unit)).due <= cal.add(start, Limit(hi, unit)).due


@given(CALENDARS, STARTS, STARTS, AMOUNT, UNIT)
def test_monotonic_in_start(cal: WorkingCalendar, s1: datetime, s2: datetime, amount: int, unit: str) -> None:
    early, late = sorted((s1, s2))
    limit = Limit(amount, unit)
    assert cal.add(early, limit).due <= cal.add(late, limit).due


@given(CALENDARS, STARTS, AMOUNT, st.sampled_from(["wh", "wd"]))
def test_working_time_between_inverts_add(cal: WorkingCalendar, start: datetime, amount: int, unit: str) -> None:
    limit = Limit(amount, unit)
    expected = timedelta(hours=amount) if unit == "wh" else amount * timedelta(hours=7)
    assert cal.duration(limit) == expected
    result = cal.add(start, limit)
    assert cal.working_time_between(start, result.due) == expected
    # Minimality: the deadline is the earliest instant with that much working time,
    # so one microsecond earlier there is strictly less.
    assert cal.working_time_between(start, result.due - timedelta(microseconds=1)) < expected


@given(CALENDARS, STARTS, STARTS, STARTS)
def test_working_time_between_is_additive(cal: WorkingCalendar, a: datetime, b: datetime, c: datetime) -> None:
    a, b, c = sorted((a, b, c))
    assert cal.working_time_between(a, b) + cal.working_time_between(b, c) == cal.working_time_between(a, c)


@settings(max_examples=50)
@given(STARTS, AMOUNT, UNIT)
def test_calendar_units_are_plain_arithmetic(start: datetime, amount: int, unit: str) -> None:
    if unit in ("wh", "wd"):
        unit = "h"
    step = timedelta(minutes=1) if unit == "m" else timedelta(hours=1)
    assert CAL.add(start, Limit(amount, unit)) == Deadline(start + amount * step, provisional=False)


def test_provisional_between() -> None:
    assert not CAL.provisional_between(cst(2026, 12, 1), cst(2026, 12, 31, 23))
    assert CAL.provisional_between(cst(2026, 12, 31), cst(2027, 1, 1, 1))
    assert CAL.provisional_between(cst(2027, 1, 1, 1), cst(2026, 12, 31))  # order does not matter


def test_one_time_zone():
    """The city's zone is written once (core.records.CITY_TZ): no other zone built from a literal, no other default."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    literal = re.compile(r"""ZoneInfo\(\s*["']|=\s*["']Asia/Shanghai["']""")
    found = sorted(f"{p.relative_to(root)}:{n}" for folder in ("core", "config", "dashboard", "ingest", "layouts", "app.py")
                   for p in ([root / folder] if folder.endswith(".py") else (root / folder).rglob("*.py"))
                   for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if literal.search(line))
    assert [f.rsplit(":", 1)[0] for f in found] == ["core/records.py"], found
