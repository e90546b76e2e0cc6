"""SQL reads for the API and the views: case lists (keyset pagination) and one case with its timeline.

Personal data (reporter name and phone) is read for one case (get_case) and the CSV export only, masked there
unless the viewer's role may see it (core.access.PERSONAL).
"""

from __future__ import annotations

import base64
import binascii
import copy
import threading
import time
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import String, and_, case, extract, false, func, literal, or_, select, tuple_
from sqlalchemy.engine import Engine

from core import kpis as core_kpis
from core import rankings, sla
from core.access import free_text, reporter
from core.geography import level_of
from core.lifecycle import OPEN_STATUSES
from core.records import CASE_ID_DIGITS, case_id_of  # noqa: F401 - CASE_ID_DIGITS: part of the cursor's rule
from store.schema import Case, CaseAssignment, CaseEvent

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
REPORTER_HIDDEN = "hidden"  # what the API shows instead of the reporter's name and phone

_CASE = Case.__table__
_EVENT = CaseEvent.__table__
_AREA_COLUMN = {
    "district": _CASE.c.district_code,
    "street": _CASE.c.street_code,
    "community": _CASE.c.community_code,
    "grid": _CASE.c.grid_code,
}
_LIST_COLUMNS = [
    c for c in _CASE.c if c.name not in ("reporter_name", "reporter_phone", "description")
]
_DETAIL_COLUMNS = [c for c in _CASE.c if c.name not in ("reporter_name", "reporter_phone")]
_EVENT_COLUMNS = [c for c in _EVENT.c if c.name not in ("case_id", "event_key")]

_CURSOR_PREFIX = "c1:"


class CursorError(ValueError):
    pass


def encode_cursor(last_id: int) -> str:
    """An opaque cursor for the page after the case ``last_id``."""
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The last id of the previous page; CursorError if the cursor was not made by encode_cursor."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise CursorError("not a cursor") from None
    value = case_id_of(text[len(_CURSOR_PREFIX):]) if text.startswith(_CURSOR_PREFIX) else None
    if value is None:  # a case id by the same rule as the API's (a too large one overflowed the SQL integer)
        raise CursorError("not a cursor")
    return value


def _case_row(row: Any) -> dict[str, Any]:
    out = dict(row._mapping)
    out["departments"] = list(out.get("departments") or [])
    out["reporter"] = REPORTER_HIDDEN
    return out


@dataclass(frozen=True)
class CaseFilter:
    """What a case list, a table page and an export are narrowed by — one rule for all of them.

    ``area`` any area code (a district sees its unlocated cases too); ``since``/``until`` bound the report time
    [since, until); ``category`` a 小类 (4 digits) or 大类 (2 digits) code; ``grades``, ``sources``, ``statuses`` sets;
    ``department`` a department that has had a part in the case (assigned as lead or summoned by a whistle);
    ``text`` words the title contains (any case; % and _ match themselves); ``drills`` also a replay's drill cases
    (演练), which every figure leaves out otherwise.
    """

    area: str | None = None
    since: Any = None
    until: Any = None
    category: str | None = None
    grades: Collection[int] | None = None
    sources: Collection[str] | None = None
    statuses: Collection[str] | None = None
    department: str | None = None
    text: str | None = None
    drills: bool = False

    def apply(self, q):
        if not self.drills:
            q = q.where(_CASE.c.drill == false())
        if self.area:
            q = q.where(_AREA_COLUMN[level_of(self.area)] == self.area)
        if self.since is not None:
            q = q.where(_CASE.c.reported_at >= self.since)
        if self.until is not None:
            q = q.where(_CASE.c.reported_at < self.until)
        if self.category:
            c = self.category
            q = q.where(_CASE.c.category.startswith(c) if len(c) == 2 else _CASE.c.category == c)
        if self.grades:
            q = q.where(_CASE.c.grade.in_(sorted(self.grades)))
        if self.sources:
            q = q.where(_CASE.c.source.in_(sorted(self.sources)))
        if self.statuses:
            q = q.where(_CASE.c.status.in_(sorted(self.statuses)))
        if self.text:
            q = q.where(_CASE.c.title.icontains(self.text, autoescape=True))
        if self.department:
            a = CaseAssignment.__table__
            q = q.where(select(a.c.id).where(a.c.case_id == _CASE.c.id, a.c.department == self.department).exists())
        return q


def list_cases(
    engine: Engine,
    *,
    area: str | None = None,
    statuses: Collection[str] | None = None,
    category: str | None = None,
    limit: int = DEFAULT_LIMIT,
    after_id: int | None = None,
    where: CaseFilter | None = None,
    personal: bool = False,
    own: tuple[str, ...] | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Cases newest first (by id), filtered; returns (items, next cursor or None). Free text is masked unless
    ``personal`` (free_text).

    ``where`` narrows the list (CaseFilter); ``area``, ``statuses`` and ``category`` are shorthands for it.
    ``after_id`` is the decoded cursor: only cases with a smaller id.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be 1..{MAX_LIMIT}")
    where = where or CaseFilter(area=area, statuses=statuses, category=category)
    q = where.apply(select(*_LIST_COLUMNS))
    if after_id is not None:
        q = q.where(_CASE.c.id < after_id)
    q = q.order_by(_CASE.c.id.desc()).limit(limit + 1)
    with engine.connect() as conn:
        rows = [free_text(_case_row(r), personal, own) for r in conn.execute(q)]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (encode_cursor(rows[-1]["id"]) if more and rows else None)


EXPORT_COLUMNS = ("id", "source", "external_id", "category", "grade", "title", "status", "district_code",
                  "street_code", "community_code", "grid_code", "departments", "onsite", "overdue", "rating",
                  "reported_at", "accept_due_at", "due_at", "accepted_at", "resolved_at", "closed_at", "reporter_name",
                  "reporter_phone")


def export_cases(engine: Engine, where: CaseFilter, chunk: int = 5000, *, personal: bool = False,
                 own: tuple[str, ...] | None = None):
    """Rows of the filtered cases for a CSV export, newest first, read in chunks (never all in memory).

    Yields tuples in EXPORT_COLUMNS order, the reporter's name and phone (the last two) masked unless ``personal``.
    """
    q = where.apply(select(*(_CASE.c[c] for c in EXPORT_COLUMNS))).order_by(_CASE.c.id.desc())
    with engine.connect() as conn:
        for row in conn.execution_options(stream_results=True, yield_per=chunk).execute(q):
            cells = tuple(free_text(dict(zip(EXPORT_COLUMNS[:-2], row[:-2], strict=True)), personal, own).values())
            yield (*cells, *reporter(row[-2], row[-1], personal))


def case_assignments(engine: Engine, case_id: int) -> list[dict[str, Any]]:
    """The departments' parts in one case (core/assignments.py rows), in the order they were assigned."""
    a = CaseAssignment.__table__
    cols = [c for c in a.c if c.name != "case_id"]
    with engine.connect() as conn:
        rows = conn.execute(select(*cols).where(a.c.case_id == case_id).order_by(a.c.assigned_at, a.c.id))
        return [dict(r._mapping) for r in rows]


def get_case(engine: Engine, case_id: int, *, personal: bool = False,
             own: tuple[str, ...] | None = None) -> dict[str, Any] | None:
    """One case with its timeline (events by occurred_at, then id), or None. ``reporter``: the name and phone,
    masked unless ``personal``."""
    with engine.connect() as conn:
        row = conn.execute(select(*_DETAIL_COLUMNS, _CASE.c.reporter_name, _CASE.c.reporter_phone)
                           .where(_CASE.c.id == case_id)).first()
        if row is None:
            return None
        events = conn.execute(
            select(*_EVENT_COLUMNS).where(_EVENT.c.case_id == case_id).order_by(_EVENT.c.occurred_at, _EVENT.c.id)
        )
        case = free_text(_case_row(row), personal, own)
        name, phone = reporter(case.pop("reporter_name"), case.pop("reporter_phone"), personal)
        case["reporter"] = {"name": name, "phone": phone, "masked": not personal}
        case["timeline"] = [free_text(dict(e._mapping), personal, own) for e in events]
    return case


SLA_COLUMNS = [_CASE.c[n] for n in ("id", "source", "external_id", "category", "grade", "title", "status", "grid_code",
                                    "street_code", "departments", "reported_at", "due_at", "due_provisional", "overdue")]


def sla_cases(engine: Engine, *, now, states: Collection[str], area: str | None = None,
              warn_share: float = 0.2, limit: int = DEFAULT_LIMIT, where: CaseFilter | None = None,
              latest_first: bool = False, personal: bool = False,
              own: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Open cases whose SLA state (core.sla.state) is in ``states``, nearest deadline first (``latest_first``: the
    most recently due first). ``where`` narrows them further (its statuses are met with the open ones).

    Overdue cases are found by the database (due_at < now); "warning" depends on each case's own window, so the
    open cases due after now are read in deadline order and judged by the same rule the wall and briefings use.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be 1..{MAX_LIMIT}")
    open_ = {s.value for s in OPEN_STATUSES}
    where = where or CaseFilter(area=area)
    where = replace(where, statuses=sorted(open_ & set(where.statuses)) if where.statuses else sorted(open_))
    if not where.statuses:
        return []
    q = where.apply(select(*SLA_COLUMNS).where(_CASE.c.due_at.is_not(None)))
    if "warning" not in states:
        q = q.where(_CASE.c.due_at <= now)
    elif "overdue" not in states:
        q = q.where(_CASE.c.due_at >= now)
    q = q.order_by(_CASE.c.due_at.desc(), _CASE.c.id.desc()) if latest_first else q.order_by(_CASE.c.due_at, _CASE.c.id)
    out: list[dict[str, Any]] = []
    with engine.connect() as conn:
        for row in conn.execution_options(stream_results=True, yield_per=2000).execute(q):
            case = dict(row._mapping)
            case["sla_state"] = sla.state(now, case["reported_at"], case["due_at"], warn_share)
            if case["sla_state"] not in states:
                continue
            case["departments"] = list(case.get("departments") or [])
            case["seconds_left"] = round((case["due_at"] - now).total_seconds())
            out.append(free_text(case, personal, own))
            if len(out) >= limit:
                break
    return out


def _seconds_between(dialect: str, later, earlier):
    """later − earlier in seconds, in SQL."""
    if dialect == "postgresql":
        return extract("epoch", later) - extract("epoch", earlier)
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


def kpi_sums(engine: Engine, where: CaseFilter, as_of, *, detail: bool = True) -> dict[str, Any]:
    """The sums behind the KPIs (core.kpis.SUMS) of the cases matching ``where`` (its since/until: the period),
    judged at ``as_of``, in one statement over the cases' own columns.

    ``detail``: also the "first moments" spans and every handling time (one text per group, for numpy's median);
    without it only their sum and count — about half the work per row.
    """
    c = _CASE.c
    dialect = engine.dialect.name

    def count_if(cond):  # FILTER: both SQLite (3.30+) and PostgreSQL; cheaper than a CASE per row
        return func.count().filter(cond)

    def sum_if(cond, value):
        return func.sum(value).filter(cond)

    resolved = and_(c.resolved_at.is_not(None), c.resolved_at <= as_of)
    handling = _seconds_between(dialect, c.resolved_at, c.reported_at)
    measures = {
        "cases_total": func.count(), "resolved": count_if(resolved),
        "on_time": count_if(and_(resolved, or_(c.due_at.is_(None), c.resolved_at <= c.due_at))),
        "overdue_open": count_if(and_(~resolved, c.status.in_(sorted(s.value for s in OPEN_STATUSES)),
                                      c.due_at.is_not(None), c.due_at < as_of)),
        "onsite": count_if(and_(resolved, c.onsite.is_(True))), "grassroots": count_if(and_(resolved, c.escalated.is_(False))),
        "evaluations": count_if(c.rating.is_not(None)), "satisfied": count_if(c.rating >= core_kpis.SATISFIED),
        "rating_sum": func.sum(c.rating),
    }
    if detail:
        dispatched = c.dispatched_at.is_not(None)
        fed_back = and_(c.resolved_at.is_not(None), c.closed_at.is_not(None))
        evaluated = and_(c.closed_at.is_not(None), c.evaluated_at.is_not(None))
        as_text = func.cast(case((resolved, handling), else_=None), String)
        measures.update({
            "dispatched": count_if(dispatched),
            "dispatch_s": sum_if(dispatched, _seconds_between(dialect, c.dispatched_at, c.reported_at)),
            "dispatch_resolved": count_if(and_(resolved, dispatched)),
            "dispatch_resolve_s": sum_if(and_(resolved, dispatched),
                                         _seconds_between(dialect, c.resolved_at, c.dispatched_at)),
            "fed_back": count_if(fed_back), "feedback_s": sum_if(fed_back, _seconds_between(dialect, c.closed_at, c.resolved_at)),
            "evaluated_after": count_if(evaluated),
            "evaluate_s": sum_if(evaluated, _seconds_between(dialect, c.evaluated_at, c.closed_at)),
            "handling_s": func.string_agg(as_text, literal(",")) if dialect == "postgresql"
            else func.group_concat(as_text, ","),
        })
    else:
        measures["handling_sum_s"] = sum_if(resolved, handling)
    q = where.apply(select(*(m.label(f"m_{name}") for name, m in measures.items())).select_from(_CASE))
    with engine.connect() as conn:
        values = dict(zip(measures, conn.execute(q).one(), strict=True))
    sums: dict[str, Any] = {name: float(v or 0) for name, v in values.items() if name != "handling_s"}
    if detail:
        text = values["handling_s"]
        sums["handling_s"] = [round(float(x), 3) for x in text.split(",")] if text else []
    return sums


def kpis(engine: Engine, where: CaseFilter, as_of, detail: bool = True) -> dict[str, Any]:
    """The KPIs (core.kpis.figures) of the cases matching ``where``, judged at ``as_of`` (see kpi_sums)."""
    return core_kpis.figures(kpi_sums(engine, where, as_of, detail=detail))


_RANK_COUNTS = ("received", "accept_decided", "accepted_on_time", "returned", "resolved", "resolved_on_time",
                "reopened", "whistles", "whistle_decided", "whistle_on_time", "evaluations", "satisfied", "rating_sum",
                "open_at_end", "overdue_open")
_RANK_RATES = ("accepted_on_time_rate", "resolved_on_time_rate", "overdue_share", "returned_rate", "reopened_rate",
               "whistle_on_time_rate", "satisfaction", "rating_mean", "handling_median_s", "handling_p90_s")


def _metric_statements(dialect: str, departments: Collection[str], *, since, until, as_of, area: str | None,
                       percentiles: bool) -> list[tuple]:
    """The grouped statements behind core.rankings.DEFINITIONS for one period: (statement, names of its sums).

    Each names every department, so it reads one time range per department of one covering index (store/schema.py)
    — never one row per case into Python.
    """
    a = CaseAssignment.__table__
    names = sorted(departments)
    lead = and_(a.c.role == "lead", a.c.department.in_(names))
    scope = [a.c.grid_code.like(f"{area}%")] if area and level_of(area) != "district" else []
    scope.append(a.c.drill == false())  # a replay's drill never counts for a department
    end = min(until, as_of)

    def count_if(cond):
        return func.sum(case((cond, 1), else_=0))

    accepted = and_(a.c.accepted_at.is_not(None), a.c.accepted_at < as_of)
    unaccepted_past_due = and_(
        a.c.due_at.is_not(None), a.c.due_at < as_of, or_(a.c.accepted_at.is_(None), a.c.accepted_at >= as_of),
        or_(a.c.ended_at.is_(None), a.c.ended_at > a.c.due_at),
    )
    checked = and_(a.c.checked_in_at.is_not(None), a.c.checked_in_at < as_of)
    in_end = (a.c.resolved_at >= since, a.c.resolved_at < end)
    out = [
        (select(a.c.department, func.count(), count_if(or_(accepted, unaccepted_past_due)),
                count_if(and_(accepted, a.c.accepted_on_time.is_(True))),
                count_if(and_(a.c.returned_at.is_not(None), a.c.returned_at < as_of)))
         .where(lead, a.c.assigned_at >= since, a.c.assigned_at < until, *scope).group_by(a.c.department),
         ("received", "accept_decided", "accepted_on_time", "returned")),
        (select(a.c.department, func.count(), count_if(a.c.resolved_on_time.is_(True)),
                count_if(and_(a.c.reopened_at.is_not(None), a.c.reopened_at < as_of)))
         .where(lead, *in_end, *scope).group_by(a.c.department),
         ("resolved", "resolved_on_time", "reopened")),
        (select(a.c.department, func.count(), count_if(or_(checked, a.c.due_at < as_of)),
                count_if(and_(checked, a.c.checked_in_at <= a.c.due_at)))
         .where(a.c.role == "whistle", a.c.department.in_(names), a.c.assigned_at >= since, a.c.assigned_at < until,
                *scope)
         .group_by(a.c.department),
         ("whistles", "whistle_decided", "whistle_on_time")),
        (select(a.c.department, func.count(), count_if(a.c.rating >= rankings.SATISFIED), func.sum(a.c.rating))
         .where(lead, a.c.evaluated_at >= since, a.c.evaluated_at < end, a.c.rating.is_not(None), *scope)
         .group_by(a.c.department),
         ("evaluations", "satisfied", "rating_sum")),
    ]
    # Open at the period's end: still working then (unfinished, or finished later). Two statements, each one range of
    # the covering index ix_case_assignments_open, so the database never looks at rows that were done by then.
    # The case's deadline is looked up per open row (by primary key): few rows, and no join for a planner to misjudge.
    overdue = select(_CASE.c.id).where(_CASE.c.id == a.c.case_id, _CASE.c.due_at < as_of).exists()
    for unfinished in (a.c.finished_at.is_(None), a.c.finished_at >= as_of):
        out.append((
            select(a.c.department, func.count(), count_if(overdue))
            .where(lead, unfinished, a.c.assigned_at < as_of, *scope).group_by(a.c.department),
            ("open_at_end", "overdue_open")))
    if percentiles:  # every duration as one text per department, parsed by numpy (far fewer Python objects)
        joined = (func.string_agg(func.cast(a.c.handling_s, String), ",") if dialect == "postgresql"
                  else func.group_concat(a.c.handling_s, ","))
        out.append((select(a.c.department, joined).where(lead, *in_end, *scope).group_by(a.c.department),
                    ("handling",)))
    return out


def _assemble(results: list[tuple[tuple, list]]) -> dict[str, dict[str, Any]]:
    """Figures per department from the statements' rows (see _metric_statements)."""
    out: dict[str, dict[str, Any]] = {}
    for names, rows in results:
        for row in rows:
            d = out.setdefault(row[0], {})
            if names == ("handling",):
                values = np.array(row[1].split(","), dtype=float) if row[1] else np.array([])
                if values.size:  # linear interpolation, as pandas takes quantiles
                    q50, q90 = np.quantile(values, (0.5, 0.9))
                    d["handling_median_s"], d["handling_p90_s"] = float(q50), float(q90)
                continue
            for name, value in zip(names, row[1:], strict=True):
                d[name] = d.get(name, 0) + int(value or 0)
    for code in list(out):
        m = out[code] = {**department_metrics_empty(), "rating_sum": 0, **out[code]}
        m["accepted_on_time_rate"] = rankings.ratio(m["accepted_on_time"], m["accept_decided"])
        m["resolved_on_time_rate"] = rankings.ratio(m["resolved_on_time"], m["resolved"])
        m["overdue_share"] = rankings.ratio(m["overdue_open"], m["open_at_end"])
        m["returned_rate"] = rankings.ratio(m["returned"], m["received"])
        m["reopened_rate"] = rankings.ratio(m["reopened"], m["resolved"])
        m["whistle_on_time_rate"] = rankings.ratio(m["whistle_on_time"], m["whistle_decided"])
        m["satisfaction"] = rankings.ratio(m["satisfied"], m["evaluations"])
        m["rating_mean"] = rankings.ratio(m.pop("rating_sum"), m["evaluations"])
    return out


def _run_statements(engine: Engine, statements: list[tuple]) -> list[tuple[tuple, list]]:
    """Run the statements side by side, each on its own connection (the database works on several cores)."""
    def one(stmt):
        with engine.connect() as conn:
            return conn.execute(stmt).all()

    workers = max(1, min(len(statements), RANK_PARALLEL))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        rows = list(pool.map(one, [stmt for stmt, _ in statements]))
    return [(names, r) for (_, names), r in zip(statements, rows, strict=True)]


RANK_PARALLEL = 4  # statements of one ranking run at once


def department_metrics(engine: Engine, departments: Collection[str], *, since, until, as_of, area: str | None = None,
                       percentiles: bool = True) -> dict[str, dict[str, Any]]:
    """Each department's ranking figures for [since, until), judged at ``as_of`` (≤ until): core.rankings.DEFINITIONS.

    ``departments``: the codes to count (the city's: records naming others never reach the store). ``area`` limits
    the figures to cases located in that area (the district: all, unlocated included).
    """
    statements = _metric_statements(engine.dialect.name, departments, since=since, until=until, as_of=as_of, area=area,
                                    percentiles=percentiles)
    return _assemble(_run_statements(engine, statements))


# Figures of periods that have ended, for COMPLETE_TTL seconds: they change only by late events, and the previous
# period (for rank changes) is asked for with every ranking. Key: (database, area, since, until, percentiles).
COMPLETE_TTL = 300.0
_complete: dict[tuple, tuple[float, dict[str, dict[str, Any]]]] = {}
_complete_lock = threading.Lock()


def _cache_key(engine: Engine, p, area, percentiles, departments) -> tuple:
    return (engine.url.render_as_string(hide_password=True), area, p.since, p.until, percentiles,
            tuple(sorted(departments)))


def _cached(key) -> dict[str, dict[str, Any]] | None:
    with _complete_lock:
        hit = _complete.get(key)
    return copy.deepcopy(hit[1]) if hit is not None and hit[0] > time.monotonic() else None


def _remember(key, found) -> None:
    with _complete_lock:
        if len(_complete) > 256:
            _complete.clear()
        _complete[key] = (time.monotonic() + COMPLETE_TTL, copy.deepcopy(found))


def ranking(engine: Engine, *, departments: dict[str, Any], rules, current, previous, now,
            area: str | None = None) -> dict[str, Any]:
    """The department ranking for a period (core.rankings.Period) with rank changes against ``previous``.

    ``departments``: code → the city's Department (names); every one is listed, those below the minimum volume as
    not ranked.
    The statements of both periods run side by side; an ended period's figures are kept for COMPLETE_TTL.
    """
    wanted = []  # (period, percentiles, cache key or None)
    for p, percentiles in ((current, True), (previous, False)):
        wanted.append((p, percentiles, _cache_key(engine, p, area, percentiles, departments) if p.until <= now else None))
    found: list[dict[str, dict[str, Any]] | None] = [_cached(k) if k else None for _, _, k in wanted]
    statements, spans = [], []
    for (p, percentiles, _), hit in zip(wanted, found, strict=True):
        start = len(statements)
        if hit is None:
            statements += _metric_statements(engine.dialect.name, departments, since=p.since, until=p.until, as_of=min(p.until, now),
                                             area=area, percentiles=percentiles)
        spans.append((start, len(statements)))
    results = _run_statements(engine, statements) if statements else []
    for i, (_p, _, key) in enumerate(wanted):
        if found[i] is None:
            found[i] = _assemble(results[spans[i][0]:spans[i][1]])
            if key:
                _remember(key, found[i])

    def rows_for(figures):
        rows = []
        for code in departments:
            m = figures.get(code) or department_metrics_empty()
            dept = departments.get(code)
            rows.append({"department": code, "name": getattr(dept, "name", code), "short": getattr(dept, "short", None),
                         **m})
        return rows

    prev = rankings.rank(rows_for(found[1]), rules)
    prev_ranks = {r["department"]: r["rank"] for r in prev["departments"] if r["rank"] is not None}
    cur = rankings.rank(rows_for(found[0]), rules, prev_ranks)
    for r in cur["departments"]:
        r["previous_rank"] = prev_ranks.get(r["department"])
    return cur


def department_metrics_empty() -> dict[str, Any]:
    """The figures of a department with nothing in the period."""
    return {**dict.fromkeys((c for c in _RANK_COUNTS if c != "rating_sum"), 0), **dict.fromkeys(_RANK_RATES)}


RISK_CASE_COLUMNS = [_CASE.c[n] for n in ("id", "source", "external_id", "category", "grade", "title", "status", "overdue",
                                          "grid_code", "reported_at", "due_at")]


def risk_top_cases(engine: Engine, *, area: str, grade_weights, overdue_multiplier: float,
                   limit: int = 10) -> tuple[list[dict[str, Any]], int]:
    """The open cases of ``area`` that add most to its risk score (core.risk: grade weight × the overdue multiplier
    when overdue), heaviest first, then oldest; and how many open cases the area has.

    Reads only open cases, through the (area, status) indexes (the district, which holds every case, through
    (status, due_at)); the weight is computed by the database with a CASE expression.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be 1..{MAX_LIMIT}")
    weight = case(*((_CASE.c.grade == g, literal(float(w))) for g, w in sorted(grade_weights.items())),
                  else_=literal(0.0))
    contribution = (weight * case((_CASE.c.overdue.is_(True), literal(float(overdue_multiplier))),
                                  else_=literal(1.0))).label("contribution")
    where = CaseFilter(area=area, statuses=[s.value for s in OPEN_STATUSES])
    q = (where.apply(select(*RISK_CASE_COLUMNS, contribution))
         .order_by(contribution.desc(), _CASE.c.reported_at, _CASE.c.id).limit(limit))
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
        total = conn.execute(where.apply(select(func.count()).select_from(_CASE))).scalar_one()
    for row in rows:
        row["contribution"] = round(float(row["contribution"]), 3)
    return rows, int(total)


def hourly_counts(engine: Engine, where: CaseFilter) -> dict[datetime, int]:
    """Cases matching ``where`` per UTC hour of their report time (hour start → count); any zone's days and hours
    are sums of these."""
    if engine.dialect.name == "postgresql":
        hour = func.date_trunc("hour", _CASE.c.reported_at)
    else:  # fixed-width UTC text: the first 13 characters are the hour
        hour = func.substr(_CASE.c.reported_at, 1, 13)
    with engine.connect() as conn:
        rows = conn.execute(where.apply(select(hour, func.count())).group_by(hour)).all()
    out: dict[datetime, int] = {}
    for h, n in rows:
        t = h if isinstance(h, datetime) else datetime.fromisoformat(f"{h}:00:00")
        t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
        out[t] = out.get(t, 0) + int(n)
    return out


def counts_by(engine: Engine, where: CaseFilter, column: str) -> dict[Any, int]:
    """Cases matching ``where`` counted by one column of the case table (category, source, grade, status, an area
    column); None keys left out."""
    return {k[0]: n for k, n in counts_by_columns(engine, where, (column,)).items() if k[0] is not None}


def counts_by_columns(engine: Engine, where: CaseFilter, columns: Collection[str],
                      open_too: bool = False) -> dict[tuple, Any]:
    """Cases matching ``where`` counted by several columns at once (one pass): (values) → count, or with
    ``open_too`` → (count, of those open now)."""
    cols = [_CASE.c[c] for c in columns]
    measures = [func.count()]
    if open_too:
        measures.append(func.sum(case((_CASE.c.status.in_(sorted(s.value for s in OPEN_STATUSES)), 1), else_=0)))
    with engine.connect() as conn:
        rows = conn.execute(where.apply(select(*cols, *measures)).group_by(*cols)).all()
    n = len(cols)
    return {tuple(r[:n]): (int(r[n]), int(r[n + 1] or 0)) if open_too else int(r[n]) for r in rows}


def counts_below(engine: Engine, where: CaseFilter, level: str) -> dict[str, tuple[int, int]]:
    """Cases matching ``where`` per area of ``level`` (street, community or grid) in one pass: code → (cases, of
    those open now); the unlocated under None."""
    column = _AREA_COLUMN[level].name
    return {k[0]: v for k, v in counts_by_columns(engine, where, (column,), open_too=True).items()}


def count_cases(engine: Engine, where: CaseFilter) -> int:
    """How many cases match ``where``."""
    with engine.connect() as conn:
        return int(conn.execute(where.apply(select(func.count()).select_from(_CASE))).scalar_one())


TABLE_COLUMNS = ("id", "source", "external_id", "category", "grade", "title", "status", "street_code", "grid_code",
                 "departments", "overdue", "reported_at", "due_at", "resolved_at")
TABLE_SORTS = ("id", "reported_at", "grade", "status", "due_at", "category", "source")
TABLE_MAX_ROWS = 500
_after: dict[tuple[str, int], tuple] = {}  # (filter, first row) → (reported_at, id) of the row before it
_after_lock = threading.Lock()


def table_rows(engine: Engine, where: CaseFilter, start: int, end: int, sort: list[dict[str, str]],
               personal: bool = False, own: tuple[str, ...] | None = None) -> tuple[list[dict[str, Any]], int | None]:
    """Rows [start, end) of the cases matching ``where`` for a table, in ``sort`` order (ag-grid's sort model:
    ``[{"colId": ..., "sort": "asc"|"desc"}]``, columns TABLE_SORTS); and the row count when the last row is in this
    block (None otherwise).

    The default order is the newest report first (ties: the higher id), which the report-time index gives without a
    sort. It pages by key: the row that ended the previous block is remembered, so the tenth block reads 50 rows, not
    500. Other orders page by offset, with the higher id first among equals. ValueError for a bad range or sort.
    """
    if not (0 <= start < end and end - start <= TABLE_MAX_ROWS):
        raise ValueError(f"rows {start}..{end}: ask for at most {TABLE_MAX_ROWS} rows from 0 on")
    order, by_key = _table_order(sort)
    q = where.apply(select(*(_CASE.c[c] for c in TABLE_COLUMNS)))
    after = _row_before(where, start) if by_key and start else None
    if after is not None:
        q = (q.where(tuple_(_CASE.c.reported_at, _CASE.c.id) < tuple_(*after))
             .order_by(*order, _CASE.c.id.desc()).limit(end - start))
    else:
        q = q.order_by(*order, _CASE.c.id.desc()).limit(end - start).offset(start)
    with engine.connect() as conn:
        rows = [free_text(dict(r._mapping), personal, own) for r in conn.execute(q)]
    for row in rows:
        row["departments"] = [d for d in (row.get("departments") or []) if isinstance(d, str)]
    if by_key and len(rows) == end - start:
        _remember_row_before(where, end, rows[-1])
    return rows, (start + len(rows) if len(rows) < end - start else None)


def _table_order(sort: list[dict[str, str]]) -> tuple[list, bool]:
    """The ORDER BY of a table's sort model (its first two entries), and whether it is the default order (the newest
    report first), which pages by key. ValueError for a column outside TABLE_SORTS or a direction but asc/desc."""
    for s in sort[:2]:
        if s.get("colId") not in TABLE_SORTS or s.get("sort") not in ("asc", "desc"):
            raise ValueError(f"sort: {str(s.get('colId'))[:32]!r} {str(s.get('sort'))[:8]!r}; sort by one of "
                             f"{', '.join(TABLE_SORTS)}")
    if not sort or sort == [{"colId": "reported_at", "sort": "desc"}]:
        return [_CASE.c.reported_at.desc()], True
    return [_CASE.c[s["colId"]].asc() if s["sort"] == "asc" else _CASE.c[s["colId"]].desc() for s in sort[:2]], False


def _row_before(where: CaseFilter, start: int) -> tuple | None:
    """(reported_at, id) of the row before row ``start`` of the filter's default order, if a block ended there."""
    with _after_lock:
        return _after.get((repr(where), start))


def _remember_row_before(where: CaseFilter, end: int, last: dict[str, Any]) -> None:
    with _after_lock:
        if len(_after) > 10_000:
            _after.clear()
        _after[(repr(where), end)] = (last["reported_at"], last["id"])
