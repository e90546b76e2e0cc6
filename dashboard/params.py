"""The JSON API's query parameters: their names and bounds, and the validators that turn them into values or an
ApiError naming the parameter and the fix. The API's handlers, the drill-down's URL and the OpenAPI description all
take them from here."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from flask import request

from core.geography import level_of
from core.lifecycle import OPEN_STATUSES, Status
from core.records import CITY_TZ
from dashboard import context, viewers
from store import queries

# words a status filter takes besides the statuses themselves
STATUS_WORDS = {"open": sorted(s.value for s in OPEN_STATUSES)}
# The years a date or time in a query may fall in: far around any stored time (2000–2100), far from datetime's own
# limits (years 1 and 9999), where moving a day or across zones overflowed into a server error.
QUERY_YEARS = range(1900, 2200)
# the case filter's parameters (the case list, the CSV export)
FILTER_PARAMS = ("area", "since", "until", "category", "grade", "source", "status", "dept", "q", "drills")
MAX_TEXT_CHARS = 50  # a title search
SEARCH_DIGITS_MIN = 4  # digits in a row a role without personal data may not search titles for
SEARCH_DIGITS = re.compile(rf"\d{{{SEARCH_DIGITS_MIN},}}")
SOURCE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
MAX_CODE_CHARS = 32  # longer is no area code: refused without echoing it whole
RISK_TOP_DEFAULT = 10
RISK_TOP_MAX = 50


class ApiError(Exception):
    def __init__(self, status: int, message: str, parameter: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.parameter = parameter


def query(allowed: tuple[str, ...]) -> dict[str, str]:
    """The query parameters, each at most once and all known."""
    out: dict[str, str] = {}
    for name in request.args:
        if name not in allowed:
            raise ApiError(400, f"unknown parameter {name!r}; this route takes: {', '.join(allowed) or 'none'}", name)
        values = request.args.getlist(name)
        if len(values) > 1:
            raise ApiError(400, f"{name}: given {len(values)} times; give it once", name)
        value = values[0].strip()
        if value == "":
            raise ApiError(400, f"{name}: empty; give a value or leave the parameter out", name)
        out[name] = value
    return out


def area(code: str, parameter: str = "area"):
    """The Area for a code; 400 if malformed, 404 if no such area, 403 if outside the viewer's jurisdiction."""
    try:
        level_of(code)
    except ValueError as exc:
        raise ApiError(400, f"{parameter}: {exc}", parameter) from None
    found = context.city().geography.get(code)
    if found is None:
        raise ApiError(404, f"{parameter}: no area with code {code!r}; list the codes with /api/v1/areas", parameter)
    if not viewers.in_scope(found.code):
        raise ApiError(403, f"{parameter}: {code} is outside your jurisdiction ({viewers.scope()}); ask for an area "
                            "within it", parameter)
    return found


def home():
    """The area a request means when it names none: the viewer's jurisdiction (a system job: the district)."""
    geo = context.city().geography
    s = viewers.scope()
    return geo.district if s is None else geo.area(s)


def home_code() -> str | None:
    """The case filter's area when the request names none: None (everything) for a district-wide viewer."""
    found = home()
    return None if found.level == "district" else found.code


def statuses(value: str) -> list[str]:
    out: list[str] = []
    for part in value.split(","):
        part = part.strip().lower()
        if part in STATUS_WORDS:
            out += STATUS_WORDS[part]
        elif part in Status._value2member_map_:
            out.append(part)
        else:
            choices = ", ".join([*STATUS_WORDS, *(s.value for s in Status)])
            raise ApiError(400, f"status: unknown status {part!r}; use one of: {choices} (several: comma-separated)", "status")
    return sorted(set(out))


def category(value: str) -> str:
    city = context.city()
    if value in city.categories or any(g.code == value for g in city.groups):
        return value
    raise ApiError(
        400,
        f"category: unknown category {value!r}; use a 4-digit 小类 or 2-digit 大类 code from config/city/categories.yaml",
        "category",
    )


def in_query_years(name: str, value: str, year: int) -> None:
    if year not in QUERY_YEARS:
        raise ApiError(400, f"{name}: {value[:40]!r} is out of range; give a date from {QUERY_YEARS.start} to "
                            f"{QUERY_YEARS.stop - 1}", name)


def when(name: str, value: str) -> datetime:
    """An ISO 8601 time (a date alone means its midnight in the city's zone; no zone means the city's zone)."""
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(400, f"{name}: {value!r} is not an ISO 8601 date or time, e.g. 2026-11-20 or "
                            "2026-11-20T08:00+08:00", name) from None
    in_query_years(name, value, t.year)
    if t.tzinfo is None:
        t = t.replace(tzinfo=CITY_TZ)
    return t.astimezone(UTC)


def period(p: dict[str, str]) -> tuple[datetime, datetime]:
    """[since, until) from the parameters; default: today in the city's zone."""
    today = datetime.now(CITY_TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    since = when("since", p["since"]) if "since" in p else today.astimezone(UTC)
    until = when("until", p["until"]) if "until" in p else (today + timedelta(days=1)).astimezone(UTC)
    _after(since, until)
    if until - since > timedelta(days=3 * 366):
        raise ApiError(400, "until: the period is longer than three years; ask for a shorter one", "until")
    return since, until


def drills(p: dict[str, str]) -> bool:
    """``drills=1``: a replay's drill cases (演练) too; by default every list and figure leaves them out."""
    value = p.get("drills", "0").lower()
    if value not in ("0", "1", "true", "false"):
        raise ApiError(400, f"drills: {value[:20]!r} is not 0 or 1; drills=1 includes a replay's drill cases", "drills")
    return value in ("1", "true")


def _after(since: datetime, until: datetime) -> None:
    if until <= since:
        raise ApiError(400, f"until: {until.isoformat()} is not after since {since.isoformat()}; give an until later "
                            "than since", "until")


def _grades(value: str) -> set[int]:
    grades = set()
    for part in value.split(","):
        part = part.strip()
        if not (part.isascii() and part.isdigit() and 1 <= int(part) <= 4):
            raise ApiError(400, f"grade: {part[:20]!r} is not a grade; use 1..4 (several: comma-separated)", "grade")
        grades.add(int(part))
    return grades


def _sources(value: str) -> set[str]:
    sources = {x.strip() for x in value.split(",") if x.strip()}
    bad = [x for x in sources if len(x) > 32 or not set(x) <= SOURCE_CHARS]
    if bad or not sources:
        raise ApiError(400, f"source: {(bad or [''])[0][:32]!r} is not a source name; use letters, digits, "
                            "- _ . (several: comma-separated)", "source")
    return sources


def _department(value: str) -> str:
    if value not in context.city().departments:
        raise ApiError(400, f"dept: unknown department {value[:32]!r}; use a code from "
                            "config/city/departments.yaml", "dept")
    return value


def _title_search(text: str) -> str:
    if len(text) > MAX_TEXT_CHARS or not text.isprintable():
        raise ApiError(400, f"q: a title search of at most {MAX_TEXT_CHARS} printable characters, e.g. 井盖", "q")
    if not viewers.personal() and SEARCH_DIGITS.search(text):
        # the title is matched unmasked: a run of digits would tell which cases hold a phone or ID number
        raise ApiError(403, f"q: searching for {SEARCH_DIGITS_MIN} or more digits in a row looks for personal "
                            "data (phone, ID numbers), which your role does not see; search for words", "q")
    return text


def case_filter(p: dict[str, str]) -> queries.CaseFilter:
    """The case filter from the parameters (FILTER_PARAMS); a 400 naming the first bad one."""
    since = when("since", p["since"]) if "since" in p else None
    until = when("until", p["until"]) if "until" in p else None
    if since is not None and until is not None:
        _after(since, until)
    grades = _grades(p["grade"]) if "grade" in p else None
    sources = _sources(p["source"]) if "source" in p else None
    dept = _department(p["dept"]) if "dept" in p else None
    text = _title_search(p["q"]) if "q" in p else None
    return queries.CaseFilter(
        text=text,
        area=area(p["area"]).code if "area" in p else home_code(), since=since, until=until,
        category=category(p["category"]) if "category" in p else None, grades=grades, sources=sources,
        statuses=statuses(p["status"]) if "status" in p else None, department=dept, drills=drills(p),
    )


def limit(value: str | None) -> int:
    if value is None:
        return queries.DEFAULT_LIMIT
    try:
        n = int(value)
    except ValueError:
        raise ApiError(400, f"limit: {value!r} is not a whole number; use 1..{queries.MAX_LIMIT}", "limit") from None
    if not 1 <= n <= queries.MAX_LIMIT:
        raise ApiError(400, f"limit: {n} is out of range; use 1..{queries.MAX_LIMIT}", "limit")
    return n


def cursor(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return queries.decode_cursor(value)
    except queries.CursorError:
        raise ApiError(
            400, "cursor: not a cursor of this API; pass next_cursor from the previous page unchanged, or leave it out",
            "cursor",
        ) from None


def code(value: str, parameter: str):
    """``area`` for a code from the path or a parameter, refusing an overlong string without repeating it."""
    if len(value) > MAX_CODE_CHARS:
        raise ApiError(400, f"{parameter}: {len(value)} characters is not an area code; an area code has 6, 9, 12 or "
                            "15 digits", parameter)
    return area(value, parameter)
