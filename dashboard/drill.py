"""The leaders' drill-down (``/`` and ``/area/<code>``): the view a URL names, and the data it shows.

A view is an area, a period and the case filters, all held in its URL (``?range=7d&category=…``, or ``since`` and
``until`` for a custom period), checked by the API's rules (dashboard.params): a bad one is a ViewError naming it,
never all data instead. Every function returns plain JSON-able data, no personal data; layouts/drill.py draws it.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

from flask import current_app
from sqlalchemy import false, func, select

from config.risk import get_risk_model
from core import access
from core import kpis as core_kpis
from core.geography import ancestors
from core.records import CITY_TZ
from dashboard import auth, context, live
from dashboard import params as api_params
from dashboard.i18n import lang_of, source_label
from store import queries
from store.schema import Case, Device

RANGES = ("today", "7d", "30d", "custom")
DEFAULT_RANGE = "7d"
PAGE_PARAMS = ("range", "since", "until", "category", "grade", "source", "status", "dept", "q", "lang")
AREA_PREFIX = "/area/"
LIST_SIZE = 10  # rows of the overdue, hotspot, sensor and department lists


class ViewError(ValueError):
    """A URL that names no view: ``parameter`` is what is wrong, ``value`` what was given (cut short)."""

    def __init__(self, message: str, parameter: str, value: str = "", status: int = 400):
        super().__init__(message)
        self.message, self.parameter, self.value, self.status = message, parameter, value[:40], status


@dataclass(frozen=True)
class View:
    area: Any  # core.geography.Area
    range: str
    since: datetime  # UTC
    until: datetime  # UTC, exclusive
    where: queries.CaseFilter  # the area, the period and every filter
    params: dict[str, str]  # the query as it belongs in the URL (no defaults, no lang)
    lang: str = "zh"

    @property
    def previous(self) -> tuple[datetime, datetime]:
        """The period of the same length just before this one (for the changes)."""
        return self.since - (self.until - self.since), self.since

    def url(self, code: str | None = None, **changes: str | None) -> str:
        """This view's URL, or another area's, with parameters changed (None drops one)."""
        return view_url(code or self.area.code, {**self.params, **changes}, self.lang)


def view_url(code: str, params: dict[str, str | None], lang: str = "zh") -> str:
    path = "/" if code == context.city().geography.district.code else f"{AREA_PREFIX}{code}"
    query = {k: v for k, v in params.items() if v not in (None, "") and k != "lang"}
    if lang != "zh":
        query["lang"] = lang
    return path + (f"?{urlencode(query)}" if query else "")


def _midnight(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=CITY_TZ)


def period_of(range_: str, today: date) -> tuple[datetime, datetime]:
    """[since, until) of a named range ending with today (local days)."""
    days = {"today": 1, "7d": 7, "30d": 30}[range_]
    end = _midnight(today + timedelta(days=1))
    return (end - timedelta(days=days)).astimezone(UTC), end.astimezone(UTC)


def parse(pathname: str | None, search: str | None, now: datetime | None = None) -> View:
    """The view a URL names; ViewError if it names none (unknown area, bad or repeated parameter, bad range).

    ``/area/<code>?range=7d&category=&grade=&source=&status=&dept=``, or ``since`` and ``until`` for a custom
    period: [since, until), dates meaning midnights in the city's zone."""
    now = now or datetime.now(UTC)
    code = _area_code(pathname)
    raw = _query(search)
    lang = lang_of(raw.pop("lang", None))
    raw = {k: v for k, v in raw.items() if v != ""}
    try:
        area = api_params.code(code, "area")
    except api_params.ApiError as exc:
        raise ViewError(exc.message, "area", code, exc.status) from None
    range_ = _range(raw)
    try:
        where = api_params.case_filter({**raw, "area": area.code})
    except api_params.ApiError as exc:
        raise ViewError(exc.message, exc.parameter or "", raw.get(exc.parameter or "", "")) from None
    if range_ == "custom":
        since, until = where.since, where.until
        if until - since > timedelta(days=3 * 366):
            raise ViewError("until: the period is longer than three years; ask for a shorter one", "until", raw["until"])
    else:
        since, until = period_of(range_, now.astimezone(CITY_TZ).date())
        where = dataclasses.replace(where, since=since, until=until)
    params = dict(raw)
    if range_ != DEFAULT_RANGE and range_ != "custom":
        params = {"range": range_, **params}
    return View(area=area, range=range_, since=since, until=until, where=where, params=params, lang=lang)


def _area_code(pathname: str | None) -> str:
    """The area code a path names: ``/`` is the viewer's jurisdiction (a system job: the district)."""
    path = (pathname or "/").rstrip("/") or "/"
    if path == "/":
        return auth.scope() or context.city().geography.district.code
    if path.startswith(AREA_PREFIX):
        return path[len(AREA_PREFIX):]
    raise ViewError(f"no page at {path[:40]!r}", "path", path, 404)


def _query(search: str | None) -> dict[str, str]:
    """The query's parameters, stripped; ViewError for one the page does not take or one given twice."""
    raw: dict[str, str] = {}
    for name, value in parse_qsl((search or "").lstrip("?"), keep_blank_values=True):
        if name not in PAGE_PARAMS:
            raise ViewError(f"unknown parameter {name[:40]!r}; the page takes: {', '.join(PAGE_PARAMS)}", name, value)
        if name in raw:
            raise ViewError(f"{name}: given twice; give it once", name, value)
        raw[name] = value.strip()
    return raw


def _range(raw: dict[str, str]) -> str:
    """The view's range, taken out of ``raw``: "custom" when since and until are given (both, and no other range),
    else the named one or DEFAULT_RANGE."""
    range_ = raw.pop("range", None)
    if range_ is not None and range_ not in RANGES:
        raise ViewError(f"range: unknown range {range_!r}; use one of: {', '.join(RANGES)}", "range", range_)
    if "since" in raw or "until" in raw:
        if range_ not in (None, "custom"):
            raise ViewError(f"range: {range_} with since/until; give one or the other", "range", range_)
        for name in ("since", "until"):
            if name not in raw:
                raise ViewError(f"{name}: a custom period needs both since and until", name)
        return "custom"
    if range_ == "custom":
        raise ViewError("range: custom needs since and until", "range", range_)
    return range_ or DEFAULT_RANGE


# --------------------------------------------------------------------------- what the view shows


def side_by_side(*calls):
    """Run the calls at once (each read on its own connection; the database works on several cores) and return their
    results in order. They run in the current app's context, so they find its settings and stores."""

    try:
        app = current_app._get_current_object()
    except RuntimeError:  # no app: run them in turn
        return [fn() for fn in calls]

    def within(fn):
        with app.app_context():
            return fn()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(within, calls))


def trail(view: View) -> list[dict[str, str]]:
    """The breadcrumb: the district (or the viewer's jurisdiction) down to the view's area, each with its URL."""

    geo = context.city().geography
    return [{"code": c, "name": geo.area(c).name, "level": geo.area(c).level, "url": view.url(c)}
            for c in ancestors(view.area.code) if auth.in_scope(c)]  # from the viewer's jurisdiction down


def children(view: View) -> tuple[list[dict[str, Any]], int | None]:
    """The areas one level down (none for a grid) with their live risk and the view's case counts; and the view's
    case count (None for a grid: nothing was counted)."""

    geo = context.city().geography
    kids = geo.children(view.area.code)
    if not kids:
        return [], None
    counts = queries.counts_below(context.engine(), view.where, kids[0].level)
    total = sum(n for n, _ in counts.values())  # the unlocated too (no area code)
    settings = context.settings()
    risk, _ = live.risk_of(context.redis_client(), settings, context.city(), get_risk_model(settings.risk_file), kids)
    return [{"code": a.code, "name": a.name, "level": a.level, "url": view.url(a.code),
             "cases": counts.get(a.code, (0, 0))[0], "open": counts.get(a.code, (0, 0))[1],
             "risk_level": risk[a.code]["risk_level"], "risk_score": risk[a.code]["score"],
             "color": risk[a.code]["color"]} for a in kids], total


def kpis(view: View, now: datetime | None = None, detail: bool = True) -> dict[str, Any]:
    """core.kpis for the view and for the period before it, with the change (``detail``: see queries.kpi_sums)."""

    now = now or datetime.now(UTC)
    eng = context.engine()
    p0, p1 = view.previous
    before = dataclasses.replace(view.where, since=p0, until=p1)
    current, previous = side_by_side(lambda: queries.kpis(eng, view.where, min(view.until, now), detail),
                                     lambda: queries.kpis(eng, before, min(p1, now), detail))
    return _with_change(current, previous, p0, p1)


def _with_change(current: dict[str, Any], previous: dict[str, Any], p0: datetime, p1: datetime) -> dict[str, Any]:
    return {"kpis": current, "previous": previous, "change": core_kpis.change(current, previous),
            "previous_since": p0, "previous_until": p1}


BREAKDOWN_BY = ("category", "source", "grade")


def figures(view: View, now: datetime | None = None) -> dict[str, Any]:
    """What the panel's figures callback shows — kpis (without the detail), daily and breakdowns — in four
    statements side by side: the KPIs of the view and of the period before, and the cases per hour and per
    (category, source, grade), both counted from the report-time covering index alone."""

    now = now or datetime.now(UTC)
    eng = context.engine()
    p0, p1 = view.previous
    before = dataclasses.replace(view.where, since=p0, until=p1)
    current, previous, hours, by = side_by_side(
        lambda: queries.kpis(eng, view.where, min(view.until, now), False),
        lambda: queries.kpis(eng, before, min(p1, now), False),
        lambda: queries.hourly_counts(eng, view.where),
        lambda: queries.counts_by_columns(eng, view.where, BREAKDOWN_BY))
    return {"kpis": _with_change(current, previous, p0, p1), "daily": _daily(view, hours),
            "breakdowns": _breakdowns(view, by)}


def daily(view: View) -> list[dict[str, Any]]:
    """Cases per local day of the period (every day, zeros included); hours for a one-day period."""

    return _daily(view, queries.hourly_counts(context.engine(), view.where))


def _daily(view: View, hours: dict[datetime, int]) -> list[dict[str, Any]]:
    return buckets(view.since, view.until, hours)


def buckets(since: datetime, until: datetime, hours: dict[datetime, int]) -> list[dict[str, Any]]:
    """Per-hour counts (queries.hourly_counts) summed per local day of [since, until), every day (zeros included);
    per local hour ("HH:00") for a period of one day."""
    one_day = until - since <= timedelta(days=1)
    out: dict[str, int] = {}
    t = since
    while t < until:  # every bucket, so a quiet day shows as 0
        local = t.astimezone(CITY_TZ)
        out.setdefault(local.strftime("%H:00" if one_day else "%Y-%m-%d"), 0)
        t += timedelta(hours=1)
    for h, n in hours.items():
        key = h.astimezone(CITY_TZ).strftime("%H:00" if one_day else "%Y-%m-%d")
        if key in out:
            out[key] += n
    return [{"day": k, "cases": n} for k, n in out.items()]


def breakdowns(view: View) -> dict[str, list[dict[str, Any]]]:
    """Cases by 大类 (category group), by 小类 (top), by source and by grade."""

    return _breakdowns(view, queries.counts_by_columns(context.engine(), view.where, BREAKDOWN_BY))  # one pass for all


def _breakdowns(view: View, by: dict[tuple, int]) -> dict[str, list[dict[str, Any]]]:
    c = context.city()
    by_cat: dict[str, int] = {}
    sources: dict[str, int] = {}
    grades: dict[int, int] = {}
    for (cat_code, source, grade), n in by.items():
        by_cat[cat_code] = by_cat.get(cat_code, 0) + n
        sources[source] = sources.get(source, 0) + n
        grades[grade] = grades.get(grade, 0) + n
    groups = c.by_group(by_cat)
    names = {g.code: g.name for g in c.groups}
    return {
        "groups": sorted(({"code": g, "name": names.get(g, g), "cases": n} for g, n in groups.items()),
                         key=lambda x: (-x["cases"], x["code"])),
        "categories": sorted(({"code": k, "name": getattr(c.categories.get(k), "name", k), "cases": n}
                              for k, n in by_cat.items()), key=lambda x: (-x["cases"], x["code"]))[:LIST_SIZE],
        "sources": sorted(({"code": s, "name": source_label(s, view.lang), "cases": n} for s, n in sources.items()),
                          key=lambda x: (-x["cases"], x["code"])),
        "grades": [{"grade": g, "name": c.grades[g].name if g in c.grades else str(g),
                    "color": c.grades[g].color if g in c.grades else None, "cases": grades.get(g, 0)}
                   for g in sorted(c.grades)],
    }


def overdue(view: View, now: datetime | None = None) -> list[dict[str, Any]]:
    """Open cases of the view past their deadline now, the most recently due first."""

    now = now or datetime.now(UTC)
    c = context.city()
    rows = queries.sla_cases(context.engine(), now=now, states={"overdue"}, where=view.where, personal=auth.personal(),
                             own=context.own_prefixes(), warn_share=context.settings().sla_warn_share, limit=LIST_SIZE,
                             latest_first=True)
    for row in rows:
        depts = [c.departments[d] for d in row["departments"] if d in c.departments]
        row["department_names"] = [d.short or d.name for d in depts]
        row["grid_name"] = c.geography.area(row["grid_code"]).name if row.get("grid_code") in c.geography else None
    return rows


def sensors(view: View) -> dict[str, Any]:
    """The devices of the area by type, with those alarming and those silent now (live state)."""


    c = context.city()
    d = Device.__table__
    q = select(d.c.type, func.count()).where(d.c.drill == false()).group_by(d.c.type)  # a drill's devices apart
    if view.area.level != "district":
        q = q.where(d.c.grid_code.like(f"{view.area.code}%"))
    with context.engine().connect() as conn:
        devices = {t: int(n) for t, n in conn.execute(q)}
    alarms = live.alarms_in(context.redis_client(), context.settings(), view.area)
    silent = live.alarms_in(context.redis_client(), context.settings(), view.area, offline=True)
    types = sorted(set(devices) | {a.get("type") for a in alarms + silent if a.get("type")})
    by_type = [{"type": t, "name": getattr(c.sensor_types.get(t), "name", t), "devices": devices.get(t, 0),
                "alarms": sum(1 for a in alarms if a.get("type") == t),
                "offline": sum(1 for a in silent if a.get("type") == t)} for t in types]
    return {"by_type": by_type, "alarms": alarms[:LIST_SIZE], "alarms_total": len(alarms),
            "offline_total": len(silent)}


def hotspots(view: View) -> list[dict[str, Any]]:
    c = context.city()
    out = []
    for h in live.hotspots_in(context.redis_client(), context.settings(), view.area)[:LIST_SIZE]:
        cat = c.categories.get(h.get("category"))
        grids = [g for g in h.get("by_grid", {}) if g in c.geography]
        out.append({**h, "category_name": getattr(cat, "name", h.get("category")),
                    "grid_names": [c.geography.area(g).name for g in grids[:3]]})
    return out


def departments(view: View, now: datetime | None = None) -> list[dict[str, Any]]:
    """The departments with a part in the area's cases in the period (core.rankings figures), busiest first.

    Department figures follow the area and the period only: an assignment row carries no category or source.
    """

    now = now or datetime.now(UTC)
    c = context.city()
    figures = queries.department_metrics(context.engine(), c.departments, since=view.since, until=view.until,
                                         as_of=min(view.until, now),
                                         area=None if view.area.level == "district" else view.area.code,
                                         percentiles=False)
    rows = [{"department": code, "name": c.departments[code].short or c.departments[code].name, **m}
            for code, m in figures.items() if code in c.departments and (m["received"] or m["open_at_end"])]
    rows.sort(key=lambda r: (-r["received"], -r["open_at_end"], r["department"]))
    return rows[:LIST_SIZE]


def table_page(view: View, start: int, end: int, sort: list[dict[str, str]] | None = None
               ) -> tuple[list[dict[str, Any]], int | None]:
    """Rows [start, end) of the view's cases for the table, in the asked order; and the row count once the last
    row is reached (None before). No personal data."""

    rows, last = queries.table_rows(context.engine(), view.where, start, end, sort or [], personal=auth.personal(),
                                    own=context.own_prefixes())
    c = context.city()
    geo = c.geography
    for row in rows:
        cat = c.categories.get(row["category"])
        row["category_name"] = getattr(cat, "name", row["category"])
        row["street_name"] = geo.area(row["street_code"]).name if row.get("street_code") in geo else ""
        row["grid_name"] = geo.area(row["grid_code"]).name if row.get("grid_code") in geo else ""
        depts = [c.departments[d] for d in (row.get("departments") or []) if d in c.departments]
        row["department_names"] = " ".join(d.short or d.name for d in depts)
        row["departments"] = " ".join(row.get("departments") or [])
    return rows, last


def export_url(view: View) -> str:
    """The API's CSV export of exactly the view's rows."""
    q = {"area": view.area.code, "since": view.since.astimezone(CITY_TZ).isoformat(),
         "until": view.until.astimezone(CITY_TZ).isoformat()}
    for k in ("category", "grade", "source", "status", "dept", "q"):
        if k in view.params:
            q[k] = view.params[k]
    return "/api/v1/cases.csv?" + urlencode(q)


PIN_LIMIT = 300  # case pins on a grid's map, newest first


def pins(view: View) -> list[dict[str, Any]]:
    """The view's located cases to pin on a grid's map (at most PIN_LIMIT, newest first)."""


    c = Case.__table__.c
    q = view.where.apply(select(c.id, c.title, c.grade, c.status, c.overdue, c.lon, c.lat)
                         .where(c.lon.is_not(None), c.lat.is_not(None))).order_by(c.id.desc()).limit(PIN_LIMIT)
    with context.engine().connect() as conn:
        return [access.free_text(dict(r._mapping), auth.personal(), context.own_prefixes()) for r in conn.execute(q)]


def case_count(view: View) -> int:
    """How many cases the view holds (its filter, counted by the store)."""
    return queries.count_cases(context.engine(), view.where)
