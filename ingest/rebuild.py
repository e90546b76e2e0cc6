"""Rebuild the live state (core/livestate.py) from SQL, and notice when it must be rebuilt.

SQL is the store of record; the live state in Redis is what the wall and the API read for "now". When Redis lost it
(a server without persistence restarted, a flush) or it drifted, the counters are rebuilt from the cases, the recent
reports and the open alarms. Only a worker rebuilds, between two batches, so no batch is applied while the counters
are rebuilt (docs/decisions/0002-rebuilding-the-live-state.md):

- at start and every ``CHECK_EVERY_S`` the worker checks the marker ``P:live:marker`` (written with every rebuild) and
  compares the district's case counter with SQL; a missing marker, or a count that differs twice in a row, rebuilds;
- ``python -m ingest rebuild-live`` asks the running worker to rebuild (``P:live:rebuild``) and shows its progress;
  with ``--here`` it rebuilds in its own process, for when no worker runs.

What SQL does not hold is left alone: the devices' last readings and the feeds' times come back with the next
readings, the risk levels with the next risk sweep (30 s).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
import redis
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from core.livestate import LiveKeys, drill_prefix, encode_case_state
from store.live import LiveWriter
from store.schema import Case, Device, SensorAlarm

log = logging.getLogger(__name__)

CHECK_EVERY_S = 60.0
REQUEST_EVERY_S = 1.0  # how often the worker looks for a rebuild-live request
CHUNK = 5000


def marker_key(prefix: str) -> str:
    return f"{prefix}:live:marker"


def request_key(prefix: str) -> str:
    return f"{prefix}:live:rebuild"


def progress_key(prefix: str) -> str:
    return f"{prefix}:live:rebuild_progress"


def _live_keys(r: redis.Redis, keys: LiveKeys) -> list[bytes]:
    out = list(r.scan_iter(f"{keys.area_prefix}*", count=1000))
    return out + [k.encode() for k in (keys.cases, keys.alarms, keys.offline, keys.recent, keys.recent_info)]


def rebuild_live(engine: Engine, r: redis.Redis, prefix: str, district: str,
                 progress: Callable[[int, int], None] | None = None) -> dict:
    """Rebuild the counted cases, area counters, recent reports and open alarms from SQL. Returns what it did.

    The city's live state holds no drill; a replay's drill cases and devices get their own (core.livestate
    ``drill_prefix``), rebuilt the same way after the city's.
    """
    t0 = time.monotonic()
    with engine.connect() as conn:
        total = conn.scalar(select(func.count()).select_from(Case)) or 0
    report = _rebuild(engine, r, prefix, district, False, total, 0, progress)
    drills = _rebuild(engine, r, drill_prefix(prefix), district, True, total, report["cases"], progress)
    report.update(drill_cases=drills["cases"], seconds=round(time.monotonic() - t0, 2))
    r.set(marker_key(prefix), orjson.dumps(report))
    log.info("live state rebuilt from SQL: %d cases, %d alarms, %d offline devices (and %d drill cases) in %.1f s",
             report["cases"], report["alarms"], report["offline"], drills["cases"], report["seconds"])
    return report


def _rebuild(engine: Engine, r: redis.Redis, prefix: str, district: str, drill: bool, total: int, before: int,
             progress: Callable[[int, int], None] | None) -> dict:
    keys = LiveKeys(prefix)
    live = LiveWriter(r, prefix, district)
    old = _live_keys(r, keys)
    for i in range(0, len(old), 500):
        r.delete(*old[i : i + 500])
    cols = (Case.id, Case.grid_code, Case.grade, Case.status, Case.overdue, Case.warned, Case.suspended_at,
            Case.reported_at, Case.category, Case.lon, Case.lat)
    mine = Case.drill.is_(True) if drill else Case.drill.is_(False)
    with engine.connect() as conn:
        done, last = 0, 0
        while True:
            rows = conn.execute(select(*cols).where(Case.id > last, mine).order_by(Case.id).limit(CHUNK)).all()
            if not rows:
                break
            pipe = r.pipeline(transaction=False)
            live.set_case_states(((row.id, encode_case_state(row.grid_code, row.grade, row.status, row.overdue,
                                                             bool(row.warned) and row.suspended_at is None))
                                  for row in rows), pipe=pipe)
            live.note_reports(({"id": row.id, "grid_code": row.grid_code, "lon": row.lon, "lat": row.lat,
                                "reported_at": row.reported_at, "category": row.category} for row in rows), pipe=pipe)
            pipe.execute()
            done += len(rows)
            last = rows[-1].id
            if progress:
                progress(before + done, total)
        drills = select(Device.id).where(Device.drill.is_(True))
        alarms = conn.execute(select(SensorAlarm.device_id, SensorAlarm.type, SensorAlarm.kind, SensorAlarm.grid_code,
                                     SensorAlarm.opened_at, SensorAlarm.peak_value)
                              .where(SensorAlarm.cleared_at.is_(None),
                                     SensorAlarm.device_id.in_(drills) if drill else
                                     SensorAlarm.device_id.not_in(drills))).all()
    threshold, offline = [], []
    for a in alarms:
        if a.kind == "offline":
            offline.append((a.device_id, a.grid_code, {"type": a.type, "since": a.opened_at.isoformat(),
                                                       "device": a.device_id, "silent_s": a.peak_value}))
        else:
            threshold.append((a.device_id, a.grid_code, {"type": a.type, "since": a.opened_at.isoformat(),
                                                         "value": a.peak_value, "device": a.device_id}))
    if threshold:
        live.set_alarms(threshold)
    if offline:
        live.set_alarms(offline, offline=True)
    return {"cases": done, "alarms": len(threshold), "offline": len(offline), "at": datetime.now(UTC).isoformat()}


class Watch:
    """The worker's check of its live state: missing (no marker) or behind (the district's count ≠ SQL's)."""

    def __init__(self, engine: Engine, r: redis.Redis, prefix: str, district: str):
        self.engine, self.r, self.prefix, self.district = engine, r, prefix, district
        self.keys = LiveKeys(prefix)
        self._last = 0.0
        self._asked_at = 0.0
        self._mismatches = 0

    def why(self) -> str | None:
        """Why the live state needs a rebuild now, or None."""
        if self.r.getdel(request_key(self.prefix)) is not None:
            return "asked for (python -m ingest rebuild-live)"
        with self.engine.connect() as conn:
            in_sql = conn.scalar(select(func.count()).select_from(Case).where(Case.drill.is_(False))) or 0
        if not self.r.exists(marker_key(self.prefix)):
            if not in_sql and not self.r.exists(self.keys.cases):
                self.r.set(marker_key(self.prefix), orjson.dumps({"cases": 0, "at": datetime.now(UTC).isoformat()}))
                return None  # a new, empty system: nothing to rebuild
            return "the live state's marker is missing (Redis lost or flushed it)"
        counted = int(self.r.hget(self.keys.area(self.district), "total") or 0)
        if counted != in_sql:
            self._mismatches += 1
            if self._mismatches >= 2:
                return f"the live state counts {counted} cases, SQL holds {in_sql}"
        else:
            self._mismatches = 0
        return None

    def check(self, force: bool = False) -> dict | None:
        """Between two batches: rebuild when needed (checked at most every CHECK_EVERY_S unless asked)."""
        now = time.monotonic()
        asked = False
        if now - self._asked_at >= REQUEST_EVERY_S:  # the request, at most once a second: not a round trip per loop
            self._asked_at = now
            asked = bool(self.r.exists(request_key(self.prefix)))
        if not (force or asked or now - self._last >= CHECK_EVERY_S):
            return None
        self._last = now
        reason = self.why()
        if reason is None:
            return None
        log.warning("rebuilding the live state from SQL: %s", reason)
        self._mismatches = 0

        def progress(done: int, total: int) -> None:
            self.r.set(progress_key(self.prefix), orjson.dumps({"done": done, "total": total}), ex=600)

        report = rebuild_live(self.engine, self.r, self.prefix, self.district, progress)
        self.r.set(progress_key(self.prefix), orjson.dumps({**report, "finished": True}), ex=600)
        return report
