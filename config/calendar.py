"""The working calendar: chinesecalendar's data plus config/holidays.yaml, validated at start."""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from pathlib import Path

from config.files import ConfigFileError, read_yaml, shown
from config.settings import get_settings
from core.sla import WorkingCalendar

COVERAGE_DAYS = 60  # /healthz warns when the calendar does not know this many days ahead


class CalendarConfigError(ConfigFileError):
    pass


def _read_days(where: str, year: int, key: str, days: object, working: bool, overrides: dict[date, bool],
               problems: list[str]) -> None:
    """One year's ``holidays`` or ``workdays`` list into ``overrides`` (date → working?)."""
    if not isinstance(days, list):
        problems.append(f"{where}: years.{year}.{key}: must be a list of dates like [{year}-01-01]")
        return
    for d in days:
        if not isinstance(d, date):
            problems.append(f"{where}: years.{year}.{key}: {d!r} is not a date; write it as {year}-MM-DD")
        elif d.year != year:
            problems.append(f"{where}: years.{year}.{key}: {d} is not in {year}; move it under years.{d.year}")
        elif d in overrides and overrides[d] != working:
            problems.append(f"{where}: years.{year}: {d} is listed under both 'holidays' and 'workdays'; keep one")
        else:
            overrides[d] = working


def _read_year(where: str, year: object, spec: object, overrides: dict[date, bool], problems: list[str]) -> bool:
    """One entry of ``years``; True if the year is covered (it may still have problems in its lists)."""
    if not isinstance(year, int) or not 2000 <= year <= 2100:
        problems.append(f"{where}: years.{year}: a year must be a number like 2027")
        return False
    spec = spec or {}
    if not isinstance(spec, dict) or set(spec) - {"holidays", "workdays"}:
        problems.append(f"{where}: years.{year}: give only 'holidays' and 'workdays' lists of dates")
        return False
    for key, working in (("holidays", False), ("workdays", True)):
        _read_days(where, year, key, spec.get(key) or [], working, overrides, problems)
    return True


def load_calendar(path: Path | str | None = None) -> WorkingCalendar:
    """The calendar with the holiday file's years; CalendarConfigError names the file, the entry and the fix."""
    path = Path(path or get_settings().holidays_file)
    where = shown(path)
    data = read_yaml(path, CalendarConfigError)
    if data is None:
        return WorkingCalendar()
    problems: list[str] = []
    years = data.get("years") if isinstance(data, dict) else None
    if years is None:
        years = {}
    if not isinstance(years, dict):
        raise CalendarConfigError([f"{where}: 'years' must be a mapping of year → {{holidays: [...], workdays: [...]}}"])
    overrides: dict[date, bool] = {}
    covered = [year for year, spec in years.items() if _read_year(where, year, spec, overrides, problems)]
    if problems:
        raise CalendarConfigError(problems)
    return WorkingCalendar(extra_holidays=overrides, covered_years=covered)


@lru_cache(maxsize=4)
def _cached(path: str) -> WorkingCalendar:
    return load_calendar(path)


def get_calendar(path: Path | str | None = None) -> WorkingCalendar:
    return _cached(str(Path(path or get_settings().holidays_file).resolve()))


def coverage_warning(calendar: WorkingCalendar, today: date, days: int = COVERAGE_DAYS) -> str | None:
    """A warning when the next ``days`` days are not all known to the calendar, else None."""
    gap = calendar.first_uncovered(today, days)
    if gap is None:
        return None
    return (f"working calendar: {gap} onwards is not covered (chinesecalendar knows years up to "
            f"{gap.year - 1}); deadlines after it use plain Mon–Fri and are marked provisional — add the "
            f"official {gap.year} schedule to config/holidays.yaml")
