"""The holiday file: years chinesecalendar does not know yet, the coverage warning, and clear errors."""

from __future__ import annotations

from datetime import UTC, date, datetime

import chinese_calendar
import orjson
import pytest

from config.calendar import CalendarConfigError, coverage_warning, load_calendar
from config.settings import ROOT
from core.sla import parse_limit
from tests import accounts


def library_knows(d: date) -> bool:
    try:
        chinese_calendar.is_workday(d)
        return True
    except NotImplementedError:
        return False


def test_shipped_file_warns_when_the_next_60_days_run_past_the_library():
    cal = load_calendar(ROOT / "config" / "holidays.yaml")
    # Independently: the first day within 60 days of 2026-11-22 that chinesecalendar cannot answer.
    start = date(2026, 11, 22)
    expected = next(date.fromordinal(start.toordinal() + i) for i in range(60)
                    if not library_knows(date.fromordinal(start.toordinal() + i)))
    assert expected == date(2027, 1, 1)
    warning = coverage_warning(cal, start)
    assert warning is not None and "2027-01-01" in warning and "config/holidays.yaml" in warning
    assert coverage_warning(cal, date(2026, 10, 1)) is None  # 60 days ahead still inside 2026


def test_a_year_given_in_the_file_is_covered_and_used(tmp_path):
    f = tmp_path / "holidays.yaml"
    f.write_text("years:\n  2027:\n    holidays: [2027-01-01, 2027-02-08]\n    workdays: [2027-02-20]\n")
    cal = load_calendar(f)
    assert coverage_warning(cal, date(2026, 11, 22)) is None
    assert not cal.is_workday(date(2027, 1, 1))  # a Friday, off
    assert cal.is_workday(date(2027, 2, 20))  # a Saturday, 调休 working day
    assert cal.is_workday(date(2027, 1, 4)) and cal.covered(date(2027, 1, 4))  # an unlisted Monday
    assert not cal.is_workday(date(2027, 1, 2))  # an unlisted Saturday
    # 2 working days from Thursday 2026-12-31 09:00 (Shanghai): Thu (7 h), then Fri 01-01 is off, so Mon 01-04.
    start = datetime(2026, 12, 31, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai
    d = cal.add(start, parse_limit("2wd"))
    assert d.due == datetime(2027, 1, 4, 10, 0, tzinfo=UTC) and not d.provisional  # Mon 18:00 Shanghai
    plain = load_calendar(tmp_path / "missing.yaml").add(start, parse_limit("2wd"))
    assert plain.provisional and plain.due == datetime(2027, 1, 1, 10, 0, tzinfo=UTC)  # Mon–Fri fallback: Fri 18:00


@pytest.mark.parametrize(("text", "message"), [
    ("years:\n  2027:\n    holidays: [2028-01-01]\n", "2028-01-01 is not in 2027; move it under years.2028"),
    ("years:\n  2027:\n    holidays: [2027-01-01]\n    workdays: [2027-01-01]\n", "listed under both 'holidays' and 'workdays'"),
    ("years:\n  2027:\n    holidays: [January first]\n", "is not a date; write it as 2027-MM-DD"),
    ("years:\n  2027:\n    extra: [2027-01-01]\n", "give only 'holidays' and 'workdays'"),
    ("years: [2027]\n", "'years' must be a mapping"),
    ("years: {2027: {holidays: [2027-01-01]\n", "not valid YAML"),
])
def test_broken_files_name_file_entry_and_fix(tmp_path, text, message):
    f = tmp_path / "holidays.yaml"
    f.write_text(text)
    with pytest.raises(CalendarConfigError) as exc:
        load_calendar(f)
    assert message in str(exc.value) and "holidays.yaml" in str(exc.value)


def test_healthz_carries_the_warning(settings, r, engine):

    client = accounts.client(settings)
    body = orjson.loads(client.get("/healthz").data)
    today = datetime.now(UTC).date()
    expected = coverage_warning(load_calendar(settings.holidays_file), today)
    assert body["warnings"] == ([expected] if expected else [])
