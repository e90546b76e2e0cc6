"""Mapping a chunk of rows to canonical case events: each row becomes the legal event sequence of one case, or is
dead-lettered with the column and the problem."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import numpy as np
import orjson
import pandas as pd

from core import lifecycle
from core.coords import to_wgs84
from core.lifecycle import Action, Status
from core.records import LIMITS
from ingest.feeds.spreadsheet.columns import (
    Columns,
    clean_texts,
    is_empty,
    mapped_values,
    parse_times,
    text_values,
    to_iso,
    usable_points,
)
from ingest.feeds.spreadsheet.mapping import ID_RE, STATUSES, LocationField, Mapping, TimeField
from ingest.feeds.spreadsheet.report import ImportReport

TERMINAL = frozenset({"resolved", "closed", "cancelled", "referred"})
EVENT_ID_PREFIX = "imp-"  # event_id = "imp-<step>": the same row and step always get the same id
INFERRED_ACTOR = "import (inferred)"  # actor of a step the source does not record but the lifecycle needs

# Flags the importer raises (kept on the case by the worker, counted in the report).
FLAG_BITS = (
    "closed_before_created",  # the source's close time is before its creation time
    "close_time_missing",  # a closed status without a close time: closed at the creation time
    "close_time_invalid",  # a close time more than 24 h in the future: closed at the creation time
    "cancelled_at_source",
    "referred_out",
    "category_fallback",  # the source category is not in category.map: filed under category.fallback
    "department_missing",  # the status needs a department and the row has none: published up to register
    "due_ignored",  # the due time is more than 24 h in the future (the store refuses those): computed limits apply
    "text_truncated",  # a title, description or address longer than the canonical limit was shortened
)
_BIT = {name: 1 << i for i, name in enumerate(FLAG_BITS)}
_ONE_LINE_RE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")  # replaced by a space in one-line texts
_MULTI_LINE_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u2028\u2029]")  # in a description (tabs, line breaks stay)
_PHONE_RE = re.compile(r"[^0-9+\-() ]")  # removed from a phone number
_ID_FULL = re.compile(ID_RE)


@dataclass
class Context:
    """What mapping a chunk needs besides its rows (see context_for)."""

    mapping: Mapping
    city: Any
    source: str
    file_label: str
    now_limit: np.datetime64
    district_bounds: tuple[float, float, float, float]
    category_department: dict[str, str | None]
    category_name: dict[str, str]


def _plan(status: str, has_dept: bool) -> list[tuple[str, bool]]:
    """The steps after ``report`` for a row: (action, is it the source's own step). The others are inferred: the
    lifecycle's path (core.lifecycle.path_to) from 立案 to the row's status, through a department when the row names
    one, else by 现场处置 (onsite); without a department nothing past 立案 is inferred unless the row is done."""
    if status == "reported":
        return []
    stage_unknown = status == "open"
    target = {"cancelled": "closed", "referred": "closed", "open": "dispatched"}.get(status, status)
    if not has_dept and (stage_unknown or status not in TERMINAL):
        target = "registered"
    through = lifecycle.FORWARD if has_dept else (Action.ONSITE, Action.CLOSE)
    steps = [Action.REGISTER, *lifecycle.path_to(Status.REGISTERED, Status(target), through)]
    return [(a.value, i == len(steps) - 1 and a is not Action.REGISTER and not stage_unknown)
            for i, a in enumerate(steps)]


_PLANS = {(s, d): _plan(s, d) for s in STATUSES for d in (True, False)}


def _step_template(action: str, own: bool) -> str:
    """A step after the report as a %-template over (source JSON, external id, time[, department], more fields): the
    actor marks a step the source does not record (inferred), a dispatch names its department."""
    return ('{"source":%s,"external_id":"%s","event":"' + action + '","event_id":"' + EVENT_ID_PREFIX + action
            + '","occurred_at":"%s"' + ("" if own else ',"actor":"' + INFERRED_ACTOR + '"')
            + (',"departments":["%s"]' if action == "dispatch" else "") + "%s}")


_STEP_TEMPLATES = {key: [(action, _step_template(action, own)) for action, own in plan] for key, plan in _PLANS.items()}
_FLAG_LISTS: dict[int, list[str]] = {}


def _flags_of(bits: int) -> list[str]:
    """The flag names of ``bits``, one list per combination seen."""
    got = _FLAG_LISTS.get(bits)
    if got is None:
        got = _FLAG_LISTS[bits] = [name for name, b in _BIT.items() if bits & b]
    return got


class _Failures:
    """The first problem of each row that cannot be mapped (a row is dead-lettered for one reason)."""

    def __init__(self, n: int, report: ImportReport):
        self.reasons: list[str | None] = [None] * n
        self.report = report

    def add(self, mask: np.ndarray, kind: str, reason: Callable[[int], str]) -> None:
        for i in np.flatnonzero(mask):
            if self.reasons[i] is None:
                self.reasons[i] = reason(int(i))
                self.report.dead[kind] += 1

    def ok(self) -> np.ndarray:
        return np.equal(np.array(self.reasons, dtype=object), None)


class _Times(NamedTuple):
    """A chunk's times in UTC (NaT where empty or unreadable)."""

    created: np.ndarray
    closed: np.ndarray | None
    closed_empty: np.ndarray | None
    due: np.ndarray | None


@dataclass
class _Codes:
    """A chunk's status, category, department and grade, translated through the mapping."""

    status: list[str]  # the import status, "" where unknown
    status_raw: list[str]
    category: list[str | None]
    category_raw: list[str]
    category_fell: np.ndarray  # filed under category.fallback
    department: list[str | None]
    grade: list[str | None] | None


@dataclass
class _Rows:
    """A chunk mapped column by column: what each good row's events are built from."""

    ids: list[str]
    created: list[str]  # ISO 8601, UTC
    end: list[str]  # when a done case ended (ISO 8601, UTC)
    codes: _Codes
    flags: list[int]
    notes: dict[int, str]  # row -> the note on its last step
    title: list[str]
    texts: list[tuple[str, list[str]]]  # (field, values) of the other texts
    due: list[str | None] | None
    lons: list[float] | None  # WGS84, NaN where unusable
    lats: list[float] | None


def map_chunk(df: pd.DataFrame, ctx: Context, first_row: int, report: ImportReport,
              seen_ids: set[str] | None) -> tuple[list[bytes], list[tuple[dict, str]]]:
    """Map one chunk: (canonical events as JSON, in row order; [(raw row, reason)] for the rows that cannot be mapped)."""
    m = ctx.mapping
    cols = Columns(df)
    fails = _Failures(len(df), report)
    ids = _ids(cols, m, fails)
    times = _times(cols, m, ctx, fails)
    codes = _codes(cols, m, ctx, fails)
    ok = fails.ok()
    end, flags, notes = _case_end(cols, m, ctx, times, codes)
    flags |= _outcome_flags(m, codes, notes)
    due, due_flags = _due(times.due, ctx)
    title, texts, text_flags = _texts(cols, m, ctx, codes)
    flags |= due_flags | text_flags
    lons, lats = _locate(cols, m, ctx, ok, report)
    _count(report, ok, ids, codes, flags, seen_ids)
    rows = _Rows(ids=ids, created=to_iso(times.created), end=to_iso(end), codes=codes, flags=flags.tolist(), notes=notes,
                 title=title, texts=texts, due=due, lons=lons, lats=lats)
    return _events(df, ctx, first_row, fails.reasons, rows)


# ---- per-column parsing: every problem dead-letters the row, the first one found names why


def _ids(cols: Columns, m: Mapping, fails: _Failures) -> list[str]:
    idcol = m.external_id.column
    ids = cols(idcol)
    fails.add(is_empty(ids), f"{idcol}: the id is empty",
              lambda i: f"{idcol}: the id is empty")
    badid = np.fromiter((bool(v) and (len(v) > LIMITS["external_id"] or not _ID_FULL.match(v)) for v in ids),
                        dtype=bool, count=cols.n)
    fails.add(badid, f"{idcol}: unusable id", lambda i: f"{idcol}: the id {ids[i]!r} cannot be used (letters, digits and "
              f"_ . : / # @ + - only, starting with a letter or digit; at most {LIMITS['external_id']} characters)")
    return ids


def _time_column(cols: Columns, fails: _Failures, spec: TimeField, required: bool) -> tuple[np.ndarray, np.ndarray]:
    raw = cols(spec.column)
    t, empty, bad = parse_times(raw, spec)
    c = spec.column
    how = f"format {spec.format!r}" if spec.format else "ISO 8601"
    fails.add(bad, f"{c}: unreadable time", lambda i: f"{c}: cannot read {raw[i]!r} as a time ({how})")
    if required:
        fails.add(empty, f"{c}: empty time", lambda i: f"{c}: the time is empty")
    fails.add(t < np.datetime64("2000-01-01T00:00:00", "s"), f"{c}: before 2000",
              lambda i: f"{c}: {raw[i]!r} is before 2000-01-01")
    return t, empty


def _times(cols: Columns, m: Mapping, ctx: Context, fails: _Failures) -> _Times:
    created, _ = _time_column(cols, fails, m.created_at, True)
    ccol = m.created_at.column
    fails.add(created > ctx.now_limit, f"{ccol}: in the future",
              lambda i: f"{ccol}: {cols(ccol)[i]!r} is more than 24 hours in the future")
    closed = closed_empty = due = None
    if m.closed_at is not None:
        closed, closed_empty = _time_column(cols, fails, m.closed_at, False)
    if m.due_at is not None:
        due, _ = _time_column(cols, fails, m.due_at, False)
    return _Times(created, closed, closed_empty, due)


def _codes(cols: Columns, m: Mapping, ctx: Context, fails: _Failures) -> _Codes:
    status, status_raw = _status(cols, m, fails)
    category, category_raw, category_fell = _category(cols, m, fails)
    department = _department(cols, m, ctx, fails, category)
    grade = _grade(cols, m, fails)
    return _Codes(status=[s or "" for s in status], status_raw=status_raw, category=category, category_raw=category_raw,
                  category_fell=category_fell, department=department, grade=grade)


def _status(cols: Columns, m: Mapping, fails: _Failures) -> tuple[list[str | None], list[str]]:
    if m.status is None:
        status = ["registered"] * cols.n
        return status, status
    status, raw, _ = mapped_values(cols, m.status)
    if m.status.column is not None:
        scol = m.status.column
        fails.add(np.equal(np.array(status, dtype=object), None), f"{scol}: unknown status",
                  lambda i: f"{scol}: unknown status {raw[i]!r} (add it to status.map or set status.fallback)")
    return status, raw


def _category(cols: Columns, m: Mapping, fails: _Failures) -> tuple[list[str | None], list[str], np.ndarray]:
    category, raw, fell = mapped_values(cols, m.category)
    if m.category.column is not None:
        kcol = m.category.column
        fails.add(np.equal(np.array(category, dtype=object), None), f"{kcol}: unknown category",
                  lambda i: f"{kcol}: unknown category {raw[i]!r} (add it to category.map or set category.fallback)")
    return category, raw, fell


def _department(cols: Columns, m: Mapping, ctx: Context, fails: _Failures, category: list[str | None]) -> list[str | None]:
    """The row's department; without one in the mapping (or with ``fallback: category``), its category's."""
    cat_dep = ctx.category_department
    if m.department is None:
        return [cat_dep.get(c) for c in category]
    dep, raw, fell = mapped_values(cols, m.department)
    if m.department.fallback == "category":
        dep = [cat_dep.get(category[i]) if f else d for i, (d, f) in enumerate(zip(dep, fell, strict=True))]
    if m.department.column is not None:
        dcol = m.department.column
        unknown = np.fromiter((d is None and bool(r) for d, r in zip(dep, raw, strict=True)), dtype=bool, count=cols.n)
        fails.add(unknown, f"{dcol}: unknown department",
                  lambda i: f"{dcol}: unknown department {raw[i]!r} (add it to department.map or set department.fallback)")
    return dep


def _grade(cols: Columns, m: Mapping, fails: _Failures) -> list[str | None] | None:
    if m.grade is None:
        return None
    grade, raw, _ = mapped_values(cols, m.grade)
    grade = [g if g in ("1", "2", "3", "4") else None for g in grade]
    if m.grade.column is not None:
        gcol = m.grade.column
        fails.add(np.fromiter((g is None and bool(r) for g, r in zip(grade, raw, strict=True)), dtype=bool, count=cols.n),
                  f"{gcol}: unknown grade",
                  lambda i: f"{gcol}: {raw[i]!r} is not a grade (add it to grade.map or set grade.fallback)")
    return grade


# ---- status → events: when a case ended, and the flags and notes its events carry


def _case_end(cols: Columns, m: Mapping, ctx: Context, times: _Times,
              codes: _Codes) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """(end times, flags, notes by row) of the done rows: the source's close time, but never before the creation
    and never in the future; missing, earlier or later, the case ends at its creation time, flagged and noted."""
    created, closed = times.created, times.closed
    terminal = np.isin(np.array(codes.status, dtype=object), list(TERMINAL))
    flags = np.zeros(len(created), dtype=np.int64)
    end = created.copy()
    notes: dict[int, str] = {}
    if closed is not None:
        craw = cols(m.closed_at.column)
        before = terminal & (closed < created)
        invalid = terminal & (closed > ctx.now_limit)
        usable = terminal & ~np.isnat(closed) & ~before & ~invalid
        end = np.where(usable, closed, created)
        flags |= np.where(before, _BIT["closed_before_created"], 0)
        flags |= np.where(invalid, _BIT["close_time_invalid"], 0)
        for i in np.flatnonzero(before):
            notes[i] = f"closed at the source at {craw[i]} (before it was created); recorded at the creation time"
        for i in np.flatnonzero(invalid):
            notes[i] = f"closed at the source at {craw[i]} (in the future); recorded at the creation time"
        missing_close = terminal & times.closed_empty
    else:
        missing_close = terminal
    flags |= np.where(missing_close, _BIT["close_time_missing"], 0)
    for i in np.flatnonzero(missing_close):
        notes[i] = "no close time at the source; recorded at the creation time"
    return end, flags, notes


def _outcome_flags(m: Mapping, codes: _Codes, notes: dict[int, str]) -> np.ndarray:
    """Flags for cancelled and referred rows (noted in ``notes``), a category fallback and a missing department."""
    st = np.array(codes.status, dtype=object)
    flags = np.zeros(len(st), dtype=np.int64)
    scol_label = f"{m.status.column} " if m.status is not None and m.status.column is not None else ""
    for value, flag, words in (("cancelled", "cancelled_at_source", "cancelled"), ("referred", "referred_out", "referred out")):
        mask = st == value
        flags |= np.where(mask, _BIT[flag], 0)
        for i in np.flatnonzero(mask):
            txt = f"{words} at the source ({scol_label}{codes.status_raw[i]!r})"
            notes[i] = f"{notes[i]}; {txt}" if i in notes else txt
    flags |= np.where(codes.category_fell, _BIT["category_fallback"], 0)
    has_dep = np.not_equal(np.array(codes.department, dtype=object), None)
    flags |= np.where(np.isin(st, ["dispatched", "accepted", "handling"]) & ~has_dep, _BIT["department_missing"], 0)
    return flags


def _due(due: np.ndarray | None, ctx: Context) -> tuple[list[str | None] | None, np.ndarray | int]:
    """(due times as ISO 8601, None where empty or ignored; flags): a due time in the future is ignored."""
    if due is None:
        return None, 0
    due_future = due > ctx.now_limit
    due_ok = ~np.isnat(due) & ~due_future
    return [s if g else None for s, g in zip(to_iso(due), due_ok, strict=True)], np.where(due_future, _BIT["due_ignored"], 0)


# ---- text and location


def _texts(cols: Columns, m: Mapping, ctx: Context,
           codes: _Codes) -> tuple[list[str], list[tuple[str, list[str]]], np.ndarray]:
    """(titles, [(field, values)] of the other texts, flags): control characters out, long texts shortened."""
    n = cols.n
    category = codes.category
    title = text_values(cols, m.title)
    if not all(title):
        title = [t or ctx.category_name.get(category[i] or "", "") for i, t in enumerate(title)]
    title, long_any = clean_texts(title, LIMITS["title"], _ONE_LINE_RE, " ")
    desc = text_values(cols, m.description)
    if codes.category_fell.any():  # say what the source called it
        label, fell, raw = m.category.column or "category", codes.category_fell, codes.category_raw
        base = desc or [""] * n
        desc = [f"[{label}: {raw[i]} — not in the category map, filed under {category[i]}]" + ("\n" + base[i] if base[i] else "")
                if fell[i] else base[i] for i in range(n)]
    texts: list[tuple[str, list[str]]] = []
    for key, vals, limit, bad, sep in (("description", desc, LIMITS["description"], _MULTI_LINE_RE, "\n"),
                                       ("address", text_values(cols, m.address), LIMITS["address"], _ONE_LINE_RE, " "),
                                       ("reporter_name", text_values(cols, m.reporter_name), LIMITS["reporter_name"], _ONE_LINE_RE, " ")):
        if vals is not None:
            vals, long = clean_texts(vals, limit, bad, sep)
            long_any = long_any | long
            texts.append((key, vals))
    phone = text_values(cols, m.reporter_phone)
    if phone is not None:
        texts.append(("reporter_phone", [_PHONE_RE.sub("", p)[: LIMITS["reporter_phone"]] for p in phone]))
    return title, texts, np.where(long_any, _BIT["text_truncated"], 0)


def _points(cols: Columns, loc: LocationField) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(lon, lat in WGS84 where usable, {why unusable or "usable": mask})."""
    rlon, rlat = cols(loc.lon), cols(loc.lat)
    x = pd.to_numeric(pd.Series(rlon, dtype=object), errors="coerce").to_numpy(dtype=float, copy=True)
    y = pd.to_numeric(pd.Series(rlat, dtype=object), errors="coerce").to_numpy(dtype=float, copy=True)
    blank = is_empty(rlon) | is_empty(rlat)
    unreadable = ~blank & (np.isnan(x) | np.isnan(y))
    placeholder = np.zeros(cols.n, dtype=bool)
    for px, py in loc.placeholders:
        placeholder |= (np.abs(x - px) <= loc.tolerance) & (np.abs(y - py) <= loc.tolerance)
    finite = ~blank & ~unreadable & ~placeholder
    usable = usable_points(x, y) & finite
    placeholder |= finite & ~usable
    if loc.crs != "wgs84":
        for i in np.flatnonzero(usable):
            x[i], y[i] = to_wgs84(float(x[i]), float(y[i]), loc.crs)
    masks = {"no coordinates": blank, "unreadable coordinates": unreadable,
             "placeholder or unusable point": placeholder, "usable": usable}
    return x, y, masks


def _locate(cols: Columns, m: Mapping, ctx: Context, ok: np.ndarray,
            report: ImportReport) -> tuple[list[float] | None, list[float] | None]:
    """(lons, lats: WGS84, NaN where unusable); counts the good rows located in the district and why the others are not."""
    if m.location is None:
        if ok.any():
            report.unlocated["no coordinates"] += int(ok.sum())
        return None, None
    x, y, masks = _points(cols, m.location)
    usable = masks.pop("usable")
    x0, y0, x1, y1 = ctx.district_bounds
    located = np.zeros(cols.n, dtype=bool)
    idx = np.flatnonzero(usable & ok & (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1))
    if len(idx):
        grids = ctx.city.geography.locate_many(x[idx].tolist(), y[idx].tolist())
        located[idx] = [g is not None for g in grids]
    report.located += int((located & ok).sum())
    for why, mask in (*masks.items(), ("outside the district", usable & ~located)):
        c = int((mask & ok).sum())
        if c:
            report.unlocated[why] += c
    return np.where(usable, x, np.nan).tolist(), np.where(usable, y, np.nan).tolist()


def _count(report: ImportReport, ok: np.ndarray, ids: list[str], codes: _Codes, flags: np.ndarray,
           seen_ids: set[str] | None) -> None:
    """The good rows in the report: by status, source status, department and flag, and the ids seen before."""
    good = np.flatnonzero(ok)
    report.rows_published += len(good)
    if not len(good):
        return
    report.by_status.update(codes.status[i] for i in good)
    report.by_source_status.update(codes.status_raw[i] for i in good)
    report.by_department.update(codes.department[i] or "(none)" for i in good)
    fl = flags[good]
    for name, b in _BIT.items():
        c = int(((fl & b) != 0).sum())
        if c:
            report.flagged[name] += c
    if seen_ids is not None:
        before_n = len(seen_ids)
        seen_ids.update(ids[i] for i in good)
        report.duplicate_ids += len(good) - (len(seen_ids) - before_n)


# ---- the events, in row order, and the dead-lettered rows


def _events(df: pd.DataFrame, ctx: Context, first_row: int, reasons: list[str | None],
            rows: _Rows) -> tuple[list[bytes], list[tuple[dict, str]]]:
    """(events as JSON in row order, [(raw row, reason)] for the rows that cannot be mapped). The report goes through
    orjson; the steps after it (the row's plan, at its end time if it is done, else at its creation time) fill fixed
    templates, since ids, times and department codes never need JSON escaping (ids are checked against ID_RE).
    This loop is the only per-row work of an import, so it reads the columns through local names."""
    src, src_json, dumps = ctx.source, orjson.dumps(ctx.source).decode(), orjson.dumps
    ids, created, end, title, texts, notes, flags = rows.ids, rows.created, rows.end, rows.title, rows.texts, rows.notes, rows.flags
    category, dep, st, grade = rows.codes.category, rows.codes.department, rows.codes.status, rows.codes.grade
    lons, lats, due = rows.lons, rows.lats, rows.due
    events: list[bytes] = []
    dead: list[tuple[dict, str]] = []
    append = events.append
    for i, reason in enumerate(reasons):
        if reason is not None:
            dead.append(_dead_row(df, i, first_row, reason, ctx.file_label))
            continue
        ext = ids[i]
        t0 = created[i]
        rep = {"source": src, "external_id": ext, "event": "report", "event_id": "imp-report", "occurred_at": t0,
               "category": category[i], "title": title[i]}
        for k, vals in texts:
            v = vals[i]
            if v:
                rep[k] = v
        if lons is not None:
            lo = lons[i]
            if lo == lo:  # not NaN
                rep["lon"] = lo
                rep["lat"] = lats[i]
        if grade is not None and grade[i] is not None:
            rep["grade"] = int(grade[i])
        if due is not None and due[i] is not None:
            rep["due_at"] = due[i]
        if flags[i]:
            rep["flags"] = _flags_of(flags[i])
        append(dumps(rep))
        d = dep[i]
        s = st[i]
        plan = _STEP_TEMPLATES[(s, d is not None)]
        if not plan:
            continue
        t_end = end[i] if s in TERMINAL else t0
        note = notes.get(i)
        for action, tpl in plan:
            if action == "dispatch":
                append((tpl % (src_json, ext, t_end, d, "")).encode())
            elif note is not None and (action == "close" or (s == "resolved" and action in ("resolve", "onsite"))):
                append((tpl % (src_json, ext, t_end, ',"note":' + dumps(note).decode())).encode())
            else:
                append((tpl % (src_json, ext, t_end, "")).encode())
    return events, dead


def _dead_row(df: pd.DataFrame, i: int, first_row: int, reason: str, file_label: str) -> tuple[dict, str]:
    """The row as the file has it (``_row``: its number in the file) and the reason with where it is."""
    row = {"_row": first_row + i, **{k: ("" if v != v else v) for k, v in df.iloc[i].to_dict().items()}}
    return row, f"{reason} (row {first_row + i} of {file_label})"


def context_for(mapping: Mapping, city, source: str, file_label: str) -> Context:
    """What mapping a chunk needs besides its rows: the city's catalogue, the district and the latest time allowed."""
    return Context(
        mapping=mapping, city=city, source=source, file_label=file_label,
        now_limit=np.datetime64((datetime.now(UTC) + timedelta(hours=23)).replace(tzinfo=None), "s"),
        district_bounds=city.geography.bounds,
        category_department={c: getattr(cat, "department", None) for c, cat in city.categories.items()},
        category_name={c: cat.name for c, cat in city.categories.items()},
    )
