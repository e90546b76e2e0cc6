"""Briefings (每日简报 · 周通报 · 月评估): what goes in them, their files, and the archive the scheduler and the
/briefings page write into. The PDF and the spreadsheet are laid out by briefing_pdf.py and briefing_xlsx.py.

    python -m dashboard.briefing --date 2026-11-21 [--period day|week|month] [--area CODE] --out DIR

Every figure comes from store.queries, dashboard.live and core: a briefing has no figures of its own. It is forwarded
as is, so the free text of its case lists is masked for everyone.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select

from config.city import load_city
from config.rankings import get_rules
from config.risk import get_risk_model
from config.settings import get_settings
from core import access
from core import rankings as rk
from core.kpis import DEFINITIONS as KPI_DEFINITIONS
from core.lifecycle import STATUS_LABELS, Status
from core.records import CITY_TZ
from dashboard import briefing_pdf, briefing_xlsx, live
from dashboard.briefing_model import Briefing
from dashboard.briefing_pdf import FontMissing  # also the briefing's own error (briefing.FontMissing)
from dashboard.drill import buckets
from dashboard.i18n import source_label
from store import queries
from store.schema import Case
from store.services import get_engine, get_redis, migrate

log = logging.getLogger(__name__)

KINDS = ("day", "week", "month")
HEADLINE = ("cases_total", "resolved", "resolution_rate", "on_time_rate", "overdue_open", "onsite_rate",
            "grassroots_rate", "satisfaction", "handling_mean_s")
MOMENTS = ("moment_report_to_dispatch_s", "moment_dispatch_to_resolve_s", "moment_resolve_to_feedback_s",
           "moment_feedback_to_evaluate_s")
LIST_SIZE = 50  # overdue and notable cases listed at most
HOTTEST = 10
HISTORY = 6  # weeks and months: the trend charts cover this many periods, the current one last
SCORE_LINES = 3  # the score trend follows this many departments from the top and from the bottom of the ranking


class BriefingError(ValueError):
    """A request that names no briefing (bad date, period or area): the message says which and how to fix it."""


def period_of(kind: str, day: date):
    """The core.rankings period of that kind holding ``day`` (city days; weeks Monday–Sunday)."""
    if kind not in KINDS:
        raise BriefingError(f"period: unknown period {kind!r}; use one of: {', '.join(KINDS)}")
    return rk.period(kind, day, CITY_TZ)


def requested(city, kind: str, day: date, area_code: str | None, now: datetime):
    """(the area, the period) a request names; BriefingError for an unknown area or period or a future date."""
    geo = city.geography
    area = geo.district if area_code is None else geo.get(area_code)
    if area is None:
        raise BriefingError(f"area: no area with code {str(area_code)[:32]!r}; list the codes with /api/v1/areas")
    p = period_of(kind, day)
    if p.since.astimezone(UTC) > now:
        raise BriefingError(f"date: {day.isoformat()} is in the future; a briefing covers a period that has begun")
    return area, p


def build(engine, r, settings, city, kind: str, day: date, area_code: str | None = None,
          now: datetime | None = None) -> Briefing:
    """The briefing of ``kind`` for the period holding ``day`` in ``area_code`` (default: the district)."""
    now = now or datetime.now(UTC)
    area, p = requested(city, kind, day, area_code, now)
    since, until = p.since.astimezone(UTC), p.until.astimezone(UTC)
    as_of = min(until, now)
    where = queries.CaseFilter(area=area.code, since=since, until=until)
    prev = p.previous(CITY_TZ)
    b = Briefing(kind=kind, label=p.label, area={"code": area.code, "name": area.name, "level": area.level},
                 since=since, until=until, generated_at=now, as_of=as_of)
    current, before = _headline(engine, b, where, prev)
    _counts(engine, city, b, where)
    b.overdue = _overdue(engine, settings, city, where, as_of)
    rules = get_rules(settings.rankings_file)
    ranked = queries.ranking(engine, departments=city.departments, rules=rules, current=p, previous=prev, now=now,
                             area=None if area.level == "district" else area.code)
    b.ranking = {"rows": ranked["departments"], "red": ranked["red_list"], "black": ranked["black_list"],
                 "min_volume": rules.min_volume, "weights": dict(rules.weights)}
    b.trend = _trend(engine, where, p, prev)
    if kind != "day":
        b.history, b.score_history = _history(engine, city, rules, where, p, now, ranked, area,
                                              known={p.label: current, prev.label: before})
    _risk(r, settings, city, b, area)
    b.notable = [_masked(city, n) for n in _notable(engine, city, where)]
    return b


def _masked(city, row: dict[str, Any]) -> dict[str, Any]:
    """A case row with its free text masked for everyone: a briefing is forwarded as is."""
    return access.free_text(row, False, (city.county_code,))


def _headline(engine, b: Briefing, where, prev) -> tuple[dict[str, Any], dict[str, Any]]:
    """The headline figures against the period before (and, for a day or a week, the same period a week before) and
    the first moments; returns the KPIs of the period and of the one before."""
    week_ago = (b.since - timedelta(days=7), b.until - timedelta(days=7))  # the same day (or week) a week before
    current = queries.kpis(engine, where, b.as_of)
    before = queries.kpis(engine, dataclasses.replace(where, since=prev.since.astimezone(UTC),
                                                      until=prev.until.astimezone(UTC)), prev.until.astimezone(UTC))
    last_week = queries.kpis(engine, dataclasses.replace(where, since=week_ago[0], until=week_ago[1]), week_ago[1])
    for key in HEADLINE:
        row = {"key": key, "figure": KPI_DEFINITIONS[key]["zh"], "unit": KPI_DEFINITIONS[key]["unit"],
               "value": current.get(key), "previous": before.get(key)}
        if b.kind == "day" or b.until - b.since <= timedelta(days=7):
            row["week_before"] = last_week.get(key)
        b.headline.append(row)
    b.moments = [{"key": k, "figure": KPI_DEFINITIONS[k]["zh"], "value": current.get(k)} for k in MOMENTS]
    return current, before


def _counts(engine, city, b: Briefing, where) -> None:
    """The period's cases by the area's parts (none for a grid), by category group and by source."""
    kids = city.geography.children(b.area["code"])
    if kids:
        counts = queries.counts_below(engine, where, kids[0].level)
        b.by_area = [{"code": a.code, "name": a.name, "cases": counts.get(a.code, (0, 0))[0],
                      "open": counts.get(a.code, (0, 0))[1]} for a in kids]
    by_cat = queries.counts_by(engine, where, "category")
    names = {g.code: g.name for g in city.groups}
    b.by_category = sorted(({"code": g, "name": names.get(g, g), "cases": n} for g, n in city.by_group(by_cat).items()),
                           key=lambda x: (-x["cases"], x["code"]))
    b.by_source = sorted(({"code": s, "name": source_label(s, "zh"), "cases": n}
                          for s, n in queries.counts_by(engine, where, "source").items()),
                         key=lambda x: (-x["cases"], x["code"]))


def _overdue(engine, settings, city, where, as_of: datetime) -> list[dict[str, Any]]:
    """The area's open cases past their deadline at ``as_of`` (reported in the period or before), the most recently
    due first, masked."""
    geo = city.geography
    out = []
    for row in queries.sla_cases(engine, now=as_of, states={"overdue"}, where=dataclasses.replace(where, since=None),
                                 warn_share=settings.sla_warn_share, limit=LIST_SIZE, latest_first=True):
        depts = [city.departments[d].name for d in row["departments"] if d in city.departments]
        out.append(_masked(city, {"id": row["id"], "title": row["title"], "grade": row["grade"],
                                  "grade_name": _grade_name(city, row["grade"]),
                                  "grid": geo.area(row["grid_code"]).name if row.get("grid_code") in geo else "",
                                  "departments": "、".join(depts), "reported_at": row["reported_at"],
                                  "due_at": row["due_at"],
                                  "late_h": round((as_of - row["due_at"]).total_seconds() / 3600, 1)}))
    return out


def _risk(r, settings, city, b: Briefing, area) -> None:
    """The area's grids by their live risk (dashboard.live): the HOTTEST, and every grid's shape for the map."""
    geo = city.geography
    model = get_risk_model(settings.risk_file)
    grids = [g for g in geo.areas("grid") if area.level == "district" or g.code.startswith(area.code)]
    risk, _ = live.risk_of(r, settings, city, model, grids)
    top = sorted(grids, key=lambda g: (-risk[g.code]["score"], g.code))[:HOTTEST]
    b.hottest = [{"code": g.code, "name": g.name, "street": geo.area(g.code[:9]).name, "score": risk[g.code]["score"],
                  "level": risk[g.code]["risk_level"]} for g in top]
    b.shapes = [{"code": g.code, "level": risk[g.code]["risk_level"], "rings": _rings(geo.geometry(g.code))}
                for g in grids]


def _trend(engine, where, p, prev) -> dict[str, Any]:
    """Cases per hour (a day) or per day of the period, and of the period before, bucket by bucket."""
    cur = buckets(p.since, p.until, queries.hourly_counts(engine, where))
    before = buckets(prev.since, prev.until, queries.hourly_counts(
        engine, dataclasses.replace(where, since=prev.since.astimezone(UTC), until=prev.until.astimezone(UTC))))
    return {"labels": [c["day"] for c in cur], "current": [c["cases"] for c in cur],
            "previous": [c["cases"] for c in before[:len(cur)]] + [None] * max(0, len(cur) - len(before))}


def _history(engine, city, rules, where, p, now, ranked, area, known: dict[str, dict[str, Any]]):
    """The last HISTORY periods (the current one last): the area's headline KPIs, and the composite score of the
    SCORE_LINES best and worst ranked departments of the current period. ``known``: KPIs already read, by period
    label (the current period and the one before), not read again."""
    periods = [p]
    while len(periods) < HISTORY:
        periods.insert(0, periods[0].previous(CITY_TZ))
    history, scores = [], {}
    ranked_now = [d for d in ranked["departments"] if d["rank"] is not None]
    follow = [d["department"] for d in ranked_now[:SCORE_LINES]]
    follow += [d["department"] for d in ranked_now[SCORE_LINES:][-SCORE_LINES:]]
    for q in periods:
        since, until = q.since.astimezone(UTC), q.until.astimezone(UTC)
        k = known.get(q.label) or queries.kpis(engine, dataclasses.replace(where, since=since, until=until),
                                               min(until, now), detail=False)
        history.append({"label": q.label, **{key: k.get(key) for key in ("cases_total", "resolved", "resolution_rate",
                                                                          "on_time_rate", "satisfaction")}})
        if q is p:
            rows = ranked["departments"]
        else:
            rows = queries.ranking(engine, departments=city.departments, rules=rules, current=q,
                                   previous=q.previous(CITY_TZ), now=now,
                                   area=None if area.level == "district" else area.code)["departments"]
        by_code = {d["department"]: d for d in rows}
        for code in follow:
            d = by_code.get(code)
            scores.setdefault(code, []).append(d["score"] if d and d["rank"] is not None else None)
    names = {code: getattr(city.departments.get(code), "name", code) for code in follow}
    return history, {"labels": [q.label for q in periods],
                     "series": {names[code]: scores.get(code, []) for code in follow}}


def _rings(geom) -> list[list[tuple[float, float]]]:
    """The outer rings of an area's polygons, rounded to about a metre, for the static risk map."""
    parts = getattr(geom, "geoms", [geom])
    return [[(round(x, 5), round(y, 5)) for x, y in part.exterior.coords] for part in parts if hasattr(part, "exterior")]


def _notable(engine, city, where) -> list[dict[str, Any]]:
    """Cases of the period graded 重大 or 特别重大 (3, 4) or opened by a sensor alarm, newest first."""
    c = Case.__table__.c
    sensor = sorted(code for code, cat in city.categories.items() if cat.sensor_only)
    q = where.apply(select(c.id, c.title, c.grade, c.category, c.status, c.grid_code, c.reported_at)
                    .where(or_(c.grade >= 3, c.category.in_(sensor)))).order_by(c.reported_at.desc()).limit(LIST_SIZE)
    geo = city.geography
    with engine.connect() as conn:
        return [{**dict(row._mapping), "category": getattr(city.categories.get(row.category), "name", row.category),
                 "grade_name": _grade_name(city, row.grade), "status_name": _status_name(row.status),
                 "grid": geo.area(row.grid_code).name if row.grid_code in geo else ""} for row in conn.execute(q)]


def _grade_name(city, grade) -> str:
    g = city.grades.get(grade)
    return g.name if g else str(grade)


def _status_name(status: str) -> str:
    try:
        return STATUS_LABELS[Status(status)][0]
    except ValueError:
        return status


# --------------------------------------------------------------------------- the files


def write_xlsx(b: Briefing, path: Path) -> Path:
    """The briefing as a spreadsheet at ``path`` (dashboard/briefing_xlsx.py), written aside and renamed, so a failure
    leaves no partial file."""
    return write_aside(path, briefing_xlsx.workbook(b).save)


def write_aside(path: Path, write: Callable[[str], Any]) -> Path:
    """``write(temporary name)`` beside ``path``, then rename it to ``path``: a reader (or the archive) never sees
    a partial file, and a failure leaves none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".briefing-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def stem(kind: str, label: str, area_code: str) -> str:
    """The archive's name of a briefing (without the format's extension); parse_name reads it back."""
    return f"gridwatch-{kind}-{label}-{area_code}"


def file_name(b: Briefing) -> str:
    return stem(b.kind, b.label, b.area["code"])


def write_pdf(b: Briefing, path: Path) -> Path:
    """The briefing as an A4 PDF at ``path`` (dashboard/briefing_pdf.py), written aside and renamed."""
    return write_aside(path, lambda tmp: briefing_pdf.write_pdf(b, tmp))


def writer(fmt: str) -> Callable[[Briefing, Path], Path]:
    return {"pdf": write_pdf, "xlsx": write_xlsx}[fmt]


# --------------------------------------------------------------------------- the archive

def due(kind: str, today: date) -> date | None:
    """A day of the period the scheduled run on ``today`` archives: yesterday for the daily; last week on Mondays;
    last month on the 1st; None when there is nothing to do today."""
    if kind == "day":
        return today - timedelta(days=1)
    if kind == "week":
        return today - timedelta(days=7) if today.weekday() == 0 else None
    if kind == "month":
        return today - timedelta(days=1) if today.day == 1 else None
    raise BriefingError(f"period: unknown period {kind!r}; use one of: {', '.join(KINDS)}")


FORMATS = ("pdf", "xlsx")


def archive_folder(settings, kind: str) -> Path:
    """Where briefings of ``kind`` are archived: var/briefings/<kind>/."""
    return Path(settings.var_dir) / "briefings" / kind


class Busy(RuntimeError):
    """Another process is writing the same briefing now."""


@contextlib.contextmanager
def _claim(base: Path):
    """Hold the claim on ``base`` while writing its files: an exclusive flock on ``<base>.claim``, taken without
    waiting — another process (or thread) holding it gets Busy. The kernel drops the lock when its process dies,
    however it dies, so a killed writer blocks nobody: the next request takes the claim at once. The file is removed
    while still locked; a process that opened the removed file sees it is no longer the path's and tries again."""
    claim = base.with_name(base.name + ".claim")
    while True:
        fd = os.open(claim, os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Busy(f"{base.name} is being written by another process") from None
        try:
            same = os.stat(claim).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder before us removed this file as it finished: claim the path's new file
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        claim.unlink(missing_ok=True)
        os.close(fd)


def produce(engine, r, settings, city, kind: str, day: date, area_code: str | None, folder: Path, *,
            now: datetime | None = None, formats: tuple[str, ...] = FORMATS,
            progress: Callable[[str, float], None] | None = None, skip_archived: bool = False) -> list[Path]:
    """Build the briefing and write its files into ``folder`` (each written aside, then all renamed), under a claim
    taken before any reading, so two processes never build the same briefing at once (the second gets Busy).
    ``skip_archived``: once holding the claim, write nothing (return []) if every file is already there.
    ``progress(step, share)`` is told how far it got: "read", then one step per format, then "done"; share 0..1.
    BriefingError for a bad date, period, area or format."""
    for f in formats:
        if f not in FORMATS:
            raise BriefingError(f"format: unknown format {f!r}; use one of: {', '.join(FORMATS)}")
    now = now or datetime.now(UTC)
    tell = progress or (lambda step, share: None)
    area, p = requested(city, kind, day, area_code, now)  # a checked request names the claim and the files
    folder.mkdir(parents=True, exist_ok=True)
    base = folder / stem(kind, p.label, area.code)
    with _claim(base):
        if skip_archived and all(base.with_name(f"{base.name}.{f}").exists() for f in formats):
            return []
        tell("read", 0.0)
        b = build(engine, r, settings, city, kind, day, area_code, now=now)
        with tempfile.TemporaryDirectory(prefix=".briefing-", dir=folder) as aside:
            written = []
            for i, f in enumerate(formats):  # every file aside first: a failure leaves none of them in the folder
                tell(f, 0.4 + 0.6 * i / len(formats))
                written.append(writer(f)(b, Path(aside) / f"{base.name}.{f}"))
            out = [folder / w.name for w in written]
            for w, o in zip(written, out, strict=True):
                os.replace(w, o)
    tell("done", 1.0)
    return out


def archive(settings, kind: str, now: datetime | None = None, *, engine=None, r=None, city=None) -> list[Path] | None:
    """The scheduled run: archive the ``kind`` briefing that is due (var/briefings/<kind>/), once per period.

    Several processes may run the schedule: the first to claim the period writes, the others skip; a period
    already archived is skipped. A failure is logged with its reason and leaves neither a partial file nor the
    claim, so the next run tries again. Returns the files written, or None.
    """
    now = now or datetime.now(UTC)
    day = due(kind, now.astimezone(CITY_TZ).date())
    if day is None:
        return None
    p = period_of(kind, day)
    folder = archive_folder(settings, kind)
    city = city or load_city(settings.city_dir)
    name = stem(kind, p.label, city.geography.district.code)
    try:
        out = produce(engine or get_engine(settings), r or get_redis(settings), settings, city, kind, day, None,
                      folder, now=now, skip_archived=True)
        if not out:  # every file is there already (produce looks under the claim)
            log.info("briefing %s %s: already archived (%s)", kind, p.label, name)
            return None
        log.info("briefing %s %s archived: %s", kind, p.label, ", ".join(str(o) for o in out))
        return out
    except Busy:
        log.info("briefing %s %s: another process is writing it", kind, p.label)
        return None
    except Exception as exc:  # noqa: BLE001 - logged with the reason; the next scheduled run tries again
        log.error("briefing %s %s failed: %s: %s", kind, p.label, type(exc).__name__, exc)
        return None


MIMETYPES = {"pdf": "application/pdf", "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
LISTED = 200  # the archive list shows at most this many briefings, the newest
AREA_CODE_LENGTHS = (6, 9, 12, 15)  # district, street, community, grid


@dataclass(frozen=True)
class ArchiveName:
    """What an archive file's name says: the briefing (kind, period label, area code) and the format."""

    kind: str
    label: str
    area: str
    fmt: str


def parse_name(name: str) -> ArchiveName | None:
    """The briefing an archive file is, if ``name`` is exactly what produce() calls its files — ``file_name`` of a
    real period of its kind and an area code, then ``.pdf`` or ``.xlsx`` — else None. Claims, files being written
    (``.briefing-*``) and anything else are not briefings; the download route serves only names this accepts."""
    name_stem, dot, fmt = name.rpartition(".")
    kind, _, rest = name_stem.removeprefix("gridwatch-").partition("-")
    label, _, area = rest.rpartition("-")
    if not (dot and fmt in FORMATS and kind in KINDS and area.isascii() and area.isdigit()
            and len(area) in AREA_CODE_LENGTHS) or labelled(kind, label) is None:
        return None
    if stem(kind, label, area) != name_stem:
        return None
    return ArchiveName(kind, label, area, fmt)


def labelled(kind: str, label: str):
    """The period of ``kind`` (period_of) whose label is exactly ``label`` — "2026-11-21", "2026-W47", "2026-11" —
    or None (also for "20261121", "2026-1", "2026-W60", other digits than 0–9)."""
    try:  # the period's first day, read from the label; the label must then be that period's own label
        if kind == "day":
            first = date.fromisoformat(label)
        elif kind == "week":
            year, w, week = label.partition("-W")
            first = date.fromisocalendar(int(year), int(week), 1) if w else None
        elif kind == "month":
            first = date(int(label[:4]), int(label[5:]), 1)
        else:
            return None
    except ValueError:
        return None
    p = period_of(kind, first) if first else None
    return p if p is not None and p.label == label else None


@dataclass(frozen=True)
class Archived:
    """One archived briefing: its files (format → file name and bytes) and when the newest of them was written."""

    kind: str
    label: str
    area: str
    files: dict[str, tuple[str, int]]
    generated_at: datetime


def archived(settings, limit: int = LISTED) -> list[Archived]:
    """The briefings in the archive (scheduled and on demand), newest first, at most ``limit``: in each kind's
    folder the files parse_name accepts as a briefing of that kind, one entry per briefing."""
    found: dict[tuple[str, str, str], tuple[dict[str, tuple[str, int]], float]] = {}
    for kind in KINDS:
        try:
            entries = list(os.scandir(archive_folder(settings, kind)))
        except FileNotFoundError:
            continue
        for entry in entries:
            n = parse_name(entry.name)
            if n is None or n.kind != kind:
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # replaced or removed meanwhile
                continue
            files, newest = found.get((kind, n.label, n.area), ({}, 0.0))
            files[n.fmt] = (entry.name, st.st_size)
            found[(kind, n.label, n.area)] = (files, max(newest, st.st_mtime))
    rows = [Archived(kind, label, area, {f: files[f] for f in FORMATS if f in files},
                     datetime.fromtimestamp(mtime, UTC))
            for (kind, label, area), (files, mtime) in found.items()]
    rows.sort(key=lambda a: (a.generated_at, a.kind, a.label, a.area), reverse=True)
    return rows[:limit]


def archived_file(settings, kind: str, name: str) -> Path | None:
    """The archive file ``name`` of ``kind``'s folder, if the name is a briefing of that kind (parse_name) and such
    a file is there; None for anything else, so a name can never reach another path."""
    n = parse_name(name)
    if n is None or n.kind != kind:
        return None
    path = archive_folder(settings, kind) / name
    return path if path.is_file() and not path.is_symlink() else None


def parse_day(text: str | None) -> date:
    """The day a form or a link names (YYYY-MM-DD, a day of the city); BriefingError naming the fix otherwise."""
    if not text:
        raise BriefingError("date: missing; give a day as YYYY-MM-DD, e.g. 2026-11-21")
    try:
        day = date.fromisoformat(text)
    except ValueError:
        day = None
    if day is None or day.isoformat() != text:
        raise BriefingError(f"date: {text[:40]!r} is not a date; give YYYY-MM-DD, e.g. 2026-11-21")
    return day


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dashboard.briefing",
                                 description="Write a briefing (daily, weekly or monthly) as a PDF and a spreadsheet.")
    ap.add_argument("--date", required=True, help="a day of the period, YYYY-MM-DD (city time)")
    ap.add_argument("--period", default="day", help=f"one of {', '.join(KINDS)} (default day)")
    ap.add_argument("--area", help="an area code (default: the district)")
    ap.add_argument("--out", required=True, help="the folder to write into")
    ap.add_argument("--format", default=",".join(FORMATS), help="pdf, xlsx or both (default pdf,xlsx)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    for noisy in ("alembic", "weasyprint", "fontTools", "matplotlib"):  # their steps are not what the user asked
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        day = parse_day(args.date)
    except BriefingError as exc:
        print(f"error: --{exc}", file=sys.stderr)  # each message starts with the option it is about
        return 2
    settings = get_settings()
    engine = get_engine(settings)
    migrate(engine)
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())

    def progress(step: str, share: float) -> None:
        log.info("%3.0f%% %s", 100 * share, {"read": "reading the figures", "pdf": "laying out the PDF",
                                              "xlsx": "writing the spreadsheet", "done": "done"}.get(step, step))

    try:
        out = produce(engine, get_redis(settings), settings, load_city(settings.city_dir), args.period, day,
                      args.area, Path(args.out), formats=formats, progress=progress)
    except BriefingError as exc:
        print(f"error: --{exc}", file=sys.stderr)
        return 2
    except Busy as exc:
        print(f"error: {exc}; try again when it is done", file=sys.stderr)
        return 3
    except FontMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    for path in out:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
