"""The scheduler process (APScheduler): periodic jobs that publish, never write the store. The risk sweep writes
derived live state only (scores, levels, hotspots), never SQL and nothing the worker owns.

Run it as its own process (``python -m ingest scheduler``), never inside the web workers: each would run every job.
Jobs are idempotent, so a second scheduler during a restart does no harm.
"""

from __future__ import annotations

import logging
import signal
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import redis
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy import select

from config.city import get_city, load_city
from config.risk import get_risk_model
from config.settings import Settings, get_settings
from core import risk
from core.geography import LEVELS
from core.lifecycle import OPEN_STATUSES, Action
from core.livestate import LiveKeys, decode_recent
from core.records import CITY_TZ
from core.sla import state
from dashboard import briefing  # the job list is a composition root (the import contract names this exception)
from ingest.feeds.open311 import scheduled_polls
from store.schema import Case
from store.services import get_engine, get_redis
from store.streams import Producer

log = logging.getLogger(__name__)

SWEEP_BATCH = 5000


def _due_key(due: datetime) -> str:
    return due.strftime("%Y%m%dT%H%M%S")


def sla_sweep(settings: Settings | None = None, now: datetime | None = None) -> dict[str, int]:
    """Turn SLA state changes into timeline events (the worker applies them; running twice publishes nothing new).

    - overdue: open, running cases past their deadline → ``overdue`` and a reminder (催办) ``remind``;
    - escalate: overdue for longer than ``SLA_ESCALATE_AFTER_HOURS`` → ``escalate`` (升级督办);
    - warning: open, running cases with at most ``SLA_WARN_SHARE`` of their window left → ``warning`` (临期).

    Event ids carry the deadline, so an extended (延期) or resumed case is marked again for its new deadline.
    Suspended (挂起) cases are skipped: their clock stands still. Returns counts per kind.
    """
    settings = settings or get_settings()
    now = now or datetime.now(UTC)
    engine = get_engine(settings)
    producer = Producer(get_redis(settings), settings, source="scheduler")
    open_ = [s.value for s in OPEN_STATUSES]
    running = (Case.status.in_(open_), Case.suspended_at.is_(None), Case.due_at.is_not(None))
    escalate_before = now - timedelta(hours=settings.sla_escalate_after_hours)
    counts = {"overdue": 0, "escalate": 0, "warning": 0}

    def mark(kind: str, actions: tuple[Action, ...], where, keep=None) -> None:
        last_id = 0
        while True:
            with engine.connect() as conn:
                rows = conn.execute(
                    select(Case.id, Case.source, Case.external_id, Case.due_at, Case.reported_at)
                    .where(*running, *where, Case.id > last_id).order_by(Case.id).limit(SWEEP_BATCH)
                ).all()
            if not rows:
                return
            last_id = rows[-1].id
            rows = [r for r in rows if keep is None or keep(r)]
            producer.cases(
                {"source": r.source, "external_id": r.external_id, "event": action.value,
                 "event_id": f"{action.value}@{_due_key(r.due_at)}",
                 "occurred_at": (r.due_at if kind == "overdue" else now).isoformat(), "actor": "system"}
                for r in rows for action in actions
            )
            counts[kind] += len(rows)

    mark("overdue", (Action.OVERDUE, Action.REMIND), (Case.overdue.is_(False), Case.due_at <= now))
    mark("escalate", (Action.ESCALATE,), (Case.overdue.is_(True), Case.escalated.is_(False),
                                          Case.due_at <= escalate_before))
    mark("warning", (Action.WARNING,), (Case.overdue.is_(False), Case.warned.is_(False), Case.due_at > now),
         keep=lambda r: state(now, r.reported_at, r.due_at, settings.sla_warn_share) == "warning")
    if any(counts.values()):
        log.info("SLA sweep: %d newly overdue, %d escalated, %d near their deadline",
                 counts["overdue"], counts["escalate"], counts["warning"])
    return counts


def device_watch(settings: Settings | None = None, now: datetime | None = None, city=None) -> int:
    """Publish an ``offline`` record for every device silent for longer than its type's heartbeat × factor.

    Reads the live state (the last reading of each device) in pages; the worker opens the
    device-offline alarm, and clears it when the device is heard from again. Devices already
    offline are skipped here, and the worker ignores repeats, so running twice is harmless.
    """
    settings = settings or get_settings()
    city = city or get_city()
    now = now or datetime.now(UTC)
    r = get_redis(settings)
    keys = LiveKeys(settings.stream_prefix)
    offline = {k.decode() for k in r.hkeys(keys.offline)}
    limits = {code: t.heartbeat_s * settings.device_offline_factor for code, t in city.sensor_types.items()}
    silent = []
    for device, raw in r.hscan_iter(keys.devices, count=1000):
        device = device.decode()
        if device in offline:
            continue
        last = orjson.loads(raw)
        limit = limits.get(last.get("t"))
        if limit is None:
            continue
        seen = datetime.fromisoformat(last["ts"])
        quiet = (now - seen).total_seconds()
        if quiet > limit:
            silent.append({"source": "watch", "device_id": device, "type": last["t"], "kind": "offline",
                           "value": round(quiet), "ts": now.isoformat()})
    if silent:
        Producer(r, settings, source="watch").sensors(silent)
        log.info("device watch: %d devices newly silent", len(silent))
    return len(silent)


RECENT_CHUNK = 10_000


def risk_sweep(settings: Settings | None = None, now: datetime | None = None, city=None) -> dict[str, int]:
    """Recompute the risk of every area (core.risk) from the live state alone, never from history.

    Trims the recent reports to the hotspot window, finds the hotspots among them, reads every area's counters
    (one pipeline of HMGET), and writes each area's score, level and parts to ``P:live:risk``, the hotspots to
    ``P:live:hotspots`` and the time to ``P:live:risk_at``, in one transaction. The API adds the case and alarm parts
    from the counters at request time; what it takes from here is the hotspot part. Running twice is harmless.
    Returns counts: areas, reports in the window, trimmed reports, hotspots, areas whose level changed, areas per level.
    """
    settings = settings or get_settings()
    city = city or load_city(settings.city_dir)
    model = get_risk_model(settings.risk_file)
    now = now or datetime.now(UTC)
    r = get_redis(settings)
    keys = LiveKeys(settings.stream_prefix)
    cutoff = now.timestamp() - model.hotspot.window_hours * 3600
    trimmed = _trim_recent(r, keys, cutoff)
    reports = _recent_reports(r, keys, city, cutoff)
    found = risk.find_hotspots(reports, model.hotspot, now.timestamp())
    geo = city.geography
    areas = [a for level in LEVELS for a in geo.areas(level)]  # in level order: districts, streets, …
    counters, previous = _read_counters(r, keys, areas)
    hot = risk.rollup(found.grid_parts)
    parts = model.parts_many(counters, np.array([hot.get(a.code, 0.0) for a in areas]))
    scores = risk.scores_of(parts)
    levels = _levels_of(model, geo, scores)
    now_levels = {a.code: lv for a, lv in zip(areas, levels.tolist(), strict=True)}
    changes = _level_changes(orjson.loads(previous) if previous else {}, now_levels)
    out = {a.code: orjson.dumps({"score": sc, "level": lv, "parts": dict(zip(risk.PART_NAMES, pr, strict=True))})
           for a, sc, lv, pr in zip(areas, scores.tolist(), levels.tolist(), parts.tolist(), strict=True)}
    _write_risk(r, keys, out, now_levels, found.hotspots, now)
    if changes:
        shown = ", ".join(changes[:10]) + (f" and {len(changes) - 10} more" if len(changes) > 10 else "")
        log.info("risk sweep: %d areas changed level: %s", len(changes), shown)
    counts = {"areas": len(areas), "reports": len(reports), "trimmed": trimmed, "hotspots": len(found.hotspots),
              "changed": len(changes)}
    counts.update({risk.RISK_LEVELS[lv].en: int((levels == lv).sum()) for lv in risk.RISK_LEVELS})
    return counts


def _read_counters(r: redis.Redis, keys: LiveKeys, areas) -> tuple[np.ndarray, bytes | None]:
    """Every area's risk counters (core.risk.COUNTER_FIELDS, a row per area) and the levels of the last sweep, in
    one pipeline of HMGET."""
    pipe = r.pipeline(transaction=False)
    for a in areas:
        pipe.hmget(keys.area(a.code), risk.COUNTER_FIELDS)
    pipe.get(keys.risk_levels)
    *rows, previous = pipe.execute()
    return np.array([v or b"0" for row in rows for v in row]).astype(float).reshape(len(areas), -1), previous


def _levels_of(model, geo, scores: np.ndarray) -> np.ndarray:
    """The risk level of each score, the areas in level order (each level has its own thresholds)."""
    levels = np.empty(len(scores), dtype=np.int64)
    start = 0
    for level in LEVELS:
        n = len(geo.areas(level))
        levels[start:start + n] = model.levels_many(scores[start:start + n], level)
        start += n
    return levels


def _level_changes(before: dict[str, int], now_levels: dict[str, int]) -> list[str]:
    """"CODE 低→高" for each area whose level differs from the last sweep's."""
    return [f"{code} {risk.RISK_LEVELS[was].name}→{risk.RISK_LEVELS[now_levels[code]].name}"
            for code, was in before.items() if code in now_levels and was != now_levels[code]]


def _trim_recent(r: redis.Redis, keys: LiveKeys, cutoff: float) -> int:
    """Drop the recent reports older than ``cutoff`` (a timestamp); returns how many."""
    trimmed = 0
    while True:  # ZREM exactly what was read: a report added meanwhile is never orphaned in recent_info
        expired = r.zrangebyscore(keys.recent, "-inf", f"({cutoff}", start=0, num=RECENT_CHUNK)
        if not expired:
            return trimmed
        pipe = r.pipeline(transaction=False)
        pipe.hdel(keys.recent_info, *expired)
        pipe.zrem(keys.recent, *expired)
        pipe.execute()
        trimmed += len(expired)


def _recent_reports(r: redis.Redis, keys: LiveKeys, city, cutoff: float) -> list[risk.Report]:
    """The recent reports since ``cutoff`` in the city's grids, but for sensor-only categories (alarms count as alarms)."""
    geo = city.geography
    sensor_only = {code for code, c in city.categories.items() if c.sensor_only}
    reports = []
    for case_id, raw in r.hgetall(keys.recent_info).items():
        try:
            at, category, grid, lon, lat = decode_recent(raw)
        except ValueError:
            continue
        if at >= cutoff and category not in sensor_only and grid in geo:
            reports.append(risk.Report(int(case_id), category, grid, lon, lat, at))
    return reports


def _write_risk(r: redis.Redis, keys: LiveKeys, out: dict[str, bytes], levels: dict[str, int], hotspots,
                now: datetime) -> None:
    """Every area's risk, the levels, the hotspots and the time, in one transaction."""
    pipe = r.pipeline(transaction=True)
    pipe.delete(keys.risk)
    pipe.hset(keys.risk, mapping=out)
    pipe.set(keys.risk_levels, orjson.dumps(levels))
    pipe.set(keys.hotspots, orjson.dumps([h.as_dict() for h in hotspots]))
    pipe.set(keys.risk_at, now.isoformat())
    pipe.execute()


def build(settings: Settings | None = None) -> BlockingScheduler:
    settings = settings or get_settings()
    get_risk_model(settings.risk_file)  # a broken config/risk.yaml stops the start, naming the key and the fix
    sched = BlockingScheduler(timezone=CITY_TZ)
    sched.add_job(sla_sweep, "interval", seconds=30, id="sla_sweep", kwargs={"settings": settings},
                  max_instances=1, coalesce=True, next_run_time=datetime.now(UTC))
    sched.add_job(risk_sweep, "interval", seconds=30, id="risk_sweep", kwargs={"settings": settings},
                  max_instances=1, coalesce=True, next_run_time=datetime.now(UTC))
    sched.add_job(device_watch, "interval", seconds=60, id="device_watch", kwargs={"settings": settings},
                  max_instances=1, coalesce=True, next_run_time=datetime.now(UTC))
    hour, minute = (int(x) for x in settings.briefing_time.split(":"))
    for kind in ("day", "week", "month"):  # each checks what is due today (dashboard.briefing.due)
        sched.add_job(briefing.archive, "cron", hour=hour, minute=minute, id=f"briefing_{kind}", args=(settings, kind),
                      max_instances=1, coalesce=True, misfire_grace_time=3600)
    for name, seconds, poll in scheduled_polls(settings):
        sched.add_job(poll, "interval", seconds=seconds, id=name, max_instances=1, coalesce=True,
                      next_run_time=datetime.now(UTC))
    return sched


def run(settings: Settings | None = None) -> None:
    sched = build(settings)

    def stop(signum, _frame) -> None:
        log.info("signal %s: stopping the scheduler", signum)
        sched.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("scheduler started: %s", ", ".join(j.id for j in sched.get_jobs()))
    sched.start()
    log.info("scheduler stopped")
