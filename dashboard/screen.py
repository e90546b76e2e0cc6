"""The big screen's data (/screen): a small snapshot per refresh, never the map geometry.

``fast`` runs on every poll, ``slow`` at most every SLOW_SECONDS per process (SlowCache). Both return plain JSON-able
dicts, times as epoch milliseconds (the browser counts from them). The wall is public: case titles are masked for
everyone (core.access.free_text).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import false, func, select

from config.rankings import get_rules
from config.risk import get_risk_model
from core import rankings as rk
from core.access import free_text, mask_text
from core.lifecycle import OPEN_STATUSES
from core.livestate import LiveKeys
from core.records import CITY_TZ
from dashboard import context, live
from dashboard.i18n import INTERNAL_SOURCES
from store import queries
from store.schema import Case, Device, SensorAlarm

log = logging.getLogger(__name__)

SLOW_SECONDS = 30.0
TICKER_SIZE = 12
PULSE_SECONDS = 8  # a new case pulses on the map this long after it is stored
SLA_AHEAD = 6  # rows of the SLA board due next …
SLA_BEHIND = 2  # … and the most recently overdue
FEED_LATE_SECONDS = 300  # a feed with nothing new for this long shows amber
_OPEN = sorted(s.value for s in OPEN_STATUSES)
_C = Case.__table__


def _ms(t: datetime | None) -> int | None:
    return None if t is None else int(t.timestamp() * 1000)


# --------------------------------------------------------------------------- fast part

APPLYING_SECONDS = 2.0  # how often a process asks whether applying works (a dozen Redis reads), not every poll
_applying: dict[str, Any] = {"at": -1e9, "key": None, "value": (None, [])}
_applying_lock = threading.Lock()


def applying_state(r, settings) -> tuple[datetime | None, list[str]]:
    """(time of the newest applied data, why applying is not working) — shared by the wall's polls in one process."""
    key = settings.stream_prefix
    with _applying_lock:
        if _applying["key"] == key and time.monotonic() - _applying["at"] < APPLYING_SECONDS:
            return _applying["value"]
    facts, reasons = live.applying_reasons(r, settings)
    value = (facts["last_applied"], reasons)
    with _applying_lock:
        _applying.update(at=time.monotonic(), key=key, value=value)
    return value


_positions: dict[str, Any] = {"at": 0.0, "db": None, "map": {}}
_positions_lock = threading.Lock()


def device_positions(engine) -> dict[str, tuple[float, float]]:
    """Device id → (lon, lat), re-read every minute (devices rarely move)."""
    key = engine.url.render_as_string(hide_password=True)
    with _positions_lock:
        if _positions["db"] == key and time.monotonic() - _positions["at"] < 60:
            return _positions["map"]
    with engine.connect() as conn:
        found = {d: (lon, lat) for d, lon, lat in conn.execute(select(Device.id, Device.lon, Device.lat))
                 if lon is not None and lat is not None}
    with _positions_lock:
        _positions.update(at=time.monotonic(), db=key, map=found)
    return found


def _area_names(city, grid: str | None) -> list[str]:
    geo = city.geography
    if not grid or grid not in geo:
        return []
    return [geo.area(c).name for c in (grid[:9], grid[:12], grid) if c in geo]


def drill_running(r, settings) -> dict[str, Any] | None:
    """{run_id, since (ms)} while a drill replay runs (ingest/feeds/replay.py DrillMark), else None."""
    raw = r.get(LiveKeys(settings.stream_prefix).drill)
    if not raw:
        return None
    try:
        mark = orjson.loads(raw)
        return {"run_id": str(mark.get("run_id", ""))[:40], "since": _ms(datetime.fromisoformat(mark["since"]))}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {"run_id": "", "since": None}


def fast(r, settings, engine, city, model, now: datetime | None = None) -> dict[str, Any]:
    """Every poll (layouts/screen.py POLL_MS): the risk level of every grid and street (core.risk), the district's
    live counters, active alarms with their positions, the newest cases (the ticker, and the pulses on the map), the
    SLA board (open cases nearest their deadlines) and each feed's freshness. Redis plus three indexed SQL reads."""
    now = now or datetime.now(UTC)
    geo = city.geography
    grids = [a.code for a in geo.areas("grid")]
    streets = [a.code for a in geo.areas("street")]
    district = geo.district.code
    assessed, _ = live.risk_of(r, settings, city, model, [*geo.areas("grid"), *geo.areas("street"), geo.district])
    levels = {code: a["risk_level"] for code, a in assessed.items()}
    summary = live.summary(r, settings, district)
    alarms = _alarms(r, settings, engine, city)
    ticker, pulses, sla = _cases(engine, city, now)
    feeds = _feeds(r, settings, now)
    data_at, reasons = applying_state(r, settings)
    return {
        "drill": drill_running(r, settings),
        "as_of": _ms(now),
        "last_event": summary.get("last_event_at"),
        "data_at": _ms(data_at),  # the newest applied data: the header shows it, not the server's clock
        "stopped": bool(reasons),  # applying has stopped although the server answers: "数据停止更新"
        "levels": {c: levels[c] for c in grids},
        "street_levels": {c: levels[c] for c in streets},
        "district_level": levels[district],
        "open": summary["cases_open"], "overdue": summary["overdue_open"], "warning": summary["warning_open"],
        "alarms_active": summary["sensor_alarms_active"], "offline": summary["devices_offline"],
        "alarms": alarms[:200], "ticker": ticker, "pulses": pulses, "sla": sla, "feeds": feeds,
    }


def _alarms(r, settings, engine, city) -> list[dict[str, Any]]:
    """The active alarms at their device's position (else their grid's centre), with the sensor type's name."""
    geo = city.geography
    positions = device_positions(engine)
    alarms = []
    for a in live.active_alarms(r, settings):
        pos = positions.get(a.get("device"))
        if pos is None and a.get("grid") in geo:
            c = geo.area(a["grid"]).centroid
            pos = (c[0], c[1])
        alarms.append({"device": a.get("device"), "type": a.get("type"), "grid": a.get("grid") or None,
                       "lon": pos[0] if pos else None, "lat": pos[1] if pos else None})
    for a in alarms:
        a["label"] = getattr(city.sensor_types.get(a["type"]), "name", a["type"])
    return alarms


_CASE_COLUMNS = (_C.c.id, _C.c.source, _C.c.category, _C.c.grade, _C.c.title, _C.c.status, _C.c.grid_code, _C.c.lon,
                 _C.c.lat, _C.c.departments, _C.c.reported_at, _C.c.created_at, _C.c.due_at, _C.c.supervised_at,
                 _C.c.supervise_note)
SUP_NOTE_CHARS = 24  # the 批示 as the wall shows it: shortened


def _cases(engine, city, now: datetime) -> tuple[list, list, list]:
    """(the ticker's newest cases, the map's pulses of those just stored, the SLA board) in three indexed reads."""
    with engine.connect() as conn:
        real = _C.c.drill == false()  # a replay's drill cases are not the city's
        newest = conn.execute(select(*_CASE_COLUMNS).where(real).order_by(_C.c.id.desc()).limit(TICKER_SIZE)).all()
        ahead = conn.execute(select(*_CASE_COLUMNS).where(_C.c.status.in_(_OPEN), _C.c.due_at >= now, real)
                             .order_by(_C.c.due_at).limit(SLA_AHEAD)).all()
        behind = conn.execute(select(*_CASE_COLUMNS).where(_C.c.status.in_(_OPEN), _C.c.due_at < now, real)
                              .order_by(_C.c.due_at.desc()).limit(SLA_BEHIND)).all()
    ticker = [_case_row(city, c) for c in newest]
    pulses = [{"id": c.id, "lon": c.lon, "lat": c.lat, "grade": c.grade} for c in newest
              if c.lon is not None and c.lat is not None and c.created_at is not None
              and (now - c.created_at).total_seconds() <= PULSE_SECONDS and c.grid_code]
    sla = [_case_row(city, c) for c in behind[::-1]] + [_case_row(city, c) for c in ahead]
    return ticker, pulses, sla


def _case_row(city, c) -> dict[str, Any]:
    cat = city.categories.get(c.category)
    depts = [d for d in (c.departments or []) if isinstance(d, str)]
    dept = city.departments.get(depts[0]) if depts else None
    row = {"id": c.id, "title": c.title, "grade": c.grade, "category": getattr(cat, "name", c.category),
           "source": c.source, "status": c.status, "grid": c.grid_code, "areas": _area_names(city, c.grid_code),
           "dept": (dept.short or dept.name) if dept is not None else None, "reported": _ms(c.reported_at),
           "due": _ms(c.due_at)}
    if c.supervised_at is not None:  # 督办: the mark and its 批示, masked whole, then shortened (absent otherwise)
        row.update(sup=True, note=_short(mask_text(c.supervise_note, (city.county_code,))))
    return free_text(row, False, (city.county_code,))  # a public screen: masked for every viewer (the 批示 too)


def _short(note: str | None) -> str | None:
    """A 督办's 批示 as the wall shows it: one line, at most SUP_NOTE_CHARS characters."""
    if not note:
        return None
    line = " ".join(note.split())
    return line if len(line) <= SUP_NOTE_CHARS else line[:SUP_NOTE_CHARS - 1] + "…"


def _feeds(r, settings, now: datetime) -> list[dict[str, Any]]:
    """Each feed's freshness (seconds since it last published; amber past FEED_LATE_SECONDS), and the feeds whose
    own status says they are not working."""
    feeds = []
    for name, at in sorted(live.feeds(r, settings).items()):
        if name in INTERNAL_SOURCES:
            continue
        try:
            t = datetime.fromisoformat(at)
            t = t.replace(tzinfo=UTC) if t.tzinfo is None else t
            age = max(0, int((now - t).total_seconds()))
        except (TypeError, ValueError):
            age = None
        feeds.append({"name": name, "age_s": age, "ok": age is not None and age <= FEED_LATE_SECONDS})
    for name, state in sorted(live.feed_status(r, settings).items()):
        if not state.get("ok", True):
            feeds.append({"name": name, "age_s": None, "ok": False})
    return feeds


# --------------------------------------------------------------------------- slow part


def _day_bounds(now: datetime, days_back: int = 0) -> tuple[datetime, datetime]:
    local = now.astimezone(CITY_TZ).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days_back)
    return local.astimezone(UTC), (local + timedelta(days=1)).astimezone(UTC)


def _hourly(engine, since: datetime, until: datetime) -> list[int]:
    """Cases reported per hour in [since, until) (24 values)."""
    out = [0] * 24
    for t, n in queries.hourly_counts(engine, queries.CaseFilter(since=since, until=until)).items():
        idx = int((t - since).total_seconds() // 3600)
        if 0 <= idx < 24:
            out[idx] += n
    return out


def _breakdown(engine, column: str, since: datetime, until: datetime) -> dict[str, int]:
    return queries.counts_by(engine, queries.CaseFilter(since=since, until=until), column)


def _alarms_opened(engine, since: datetime, until: datetime) -> int:
    """Sensor threshold alarms opened in [since, until)."""
    a = SensorAlarm.__table__
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(a).where(
            a.c.kind == "threshold", a.c.opened_at >= since, a.c.opened_at < until,
            a.c.device_id.not_in(select(Device.id).where(Device.drill)))).scalar() or 0)


def slow(engine, city, settings, now: datetime | None = None) -> dict[str, Any]:
    """Today's KPI tiles against yesterday (core.kpis), category and source breakdowns, the hourly trend against
    yesterday and this week's department ranking (core.rankings). The heavier SQL."""
    now = now or datetime.now(UTC)
    t0, t1 = _day_bounds(now)
    y0, y1 = _day_bounds(now, 1)
    district = city.geography.district.code
    today = queries.kpis(engine, queries.CaseFilter(area=district, since=t0, until=t1), now)
    # yesterday up to the same time of day: a fair comparison in the morning
    y_now = now - timedelta(days=1)
    yesterday = queries.kpis(engine, queries.CaseFilter(area=district, since=y0, until=y_now), y_now)
    groups = city.by_group(_breakdown(engine, "category", t0, t1))
    group_names = {g.code: g.name for g in city.groups}
    sources = _breakdown(engine, "source", t0, t1)
    alarms_today, alarms_yesterday = _alarms_opened(engine, t0, now), _alarms_opened(engine, y0, y_now)
    week = rk.period("week", now.astimezone(CITY_TZ).date(), CITY_TZ)
    ranking = queries.ranking(engine, departments=city.departments, rules=get_rules(settings.rankings_file),
                              current=week, previous=week.previous(CITY_TZ), now=now)
    board = [{"dept": d["department"], "name": d.get("short") or d["name"], "rank": d["rank"],
              "on_time": d["resolved_on_time_rate"], "overdue": d["overdue_open"], "change": d["rank_change"],
              "received": d["received"]}
             for d in ranking["departments"] if d["ranked"]]
    short = {c: (d.short or d.name) for c, d in city.departments.items()}
    return {
        "as_of": _ms(now),
        "kpis": {key: today.get(key) for key in ("cases_total", "resolution_rate", "on_time_rate", "onsite_rate",
                                                 "overdue_open")},
        "kpis_yesterday": {key: yesterday.get(key) for key in ("cases_total", "resolution_rate", "on_time_rate",
                                                               "onsite_rate", "overdue_open")},
        "categories": sorted(([group_names.get(g, g), n] for g, n in groups.items()), key=lambda x: -x[1])[:4],
        "sources": sorted(([s, n] for s, n in sources.items()), key=lambda x: -x[1])[:4],
        "alarms_today": alarms_today, "alarms_yesterday": alarms_yesterday,
        "hourly_today": _hourly(engine, t0, t1), "hourly_yesterday": _hourly(engine, y0, y1),
        "hour_now": int((now - t0).total_seconds() // 3600),
        "ranking": board, "ranking_label": week.label, "min_volume": get_rules(settings.rankings_file).min_volume,
        "red": [short.get(c, c) for c in ranking["red_list"]], "black": [short.get(c, c) for c in ranking["black_list"]],
        "unranked": sum(1 for d in ranking["departments"] if not d["ranked"] and d["received"]),
    }


class SlowCache:
    """The slow part per database, worked out by one thread at a time; readers get the last answer meanwhile."""

    def __init__(self, ttl: float = SLOW_SECONDS):
        self.ttl = ttl
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        self._data: dict[str, tuple[float, dict[str, Any]]] = {}

    def get(self, engine, city, settings) -> dict[str, Any] | None:
        key = engine.url.render_as_string(hide_password=True)
        with self._lock:
            hit = self._data.get(key)
            fresh = hit is not None and time.monotonic() - hit[0] < self.ttl
            if fresh or key in self._busy:
                return hit[1] if hit else None
            self._busy.add(key)
        try:
            started = time.monotonic()
            data = slow(engine, city, settings)
            log.debug("screen: slow part in %.0f ms", (time.monotonic() - started) * 1000)
            with self._lock:
                self._data[key] = (time.monotonic(), data)
            return data
        finally:
            with self._lock:
                self._busy.discard(key)


SLOW = SlowCache()


def parts(settings) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The wall's fast part (the live state) and its slow part (SQL figures, cached; None until the first is
    worked out), on the app's own connections. Raises whatever Redis or SQL raise when they are away."""
    city = context.city()
    engine = context.engine()
    fast_part = fast(context.redis_client(), settings, engine, city, get_risk_model(settings.risk_file))
    return fast_part, SLOW.get(engine, city, settings)
