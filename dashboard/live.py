"""Reads of the live state in Redis (see core.livestate): "now", in O(areas), never SQL.

Every function takes the Redis client and the settings; the area codes are the viewer's scope.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
import redis

from config.settings import Settings
from core import health
from core.lifecycle import Status
from core.livestate import LiveKeys, with_refusals
from core.risk import COUNTER_FIELDS
from core.streams import DEAD, KINDS, StreamNames

GRADES = (1, 2, 3, 4)
LAG_CAP = 100_000  # the fallback lag count (Redis < 7) stops here: "at least this many"


def _s(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def parse_area_hash(raw: dict) -> dict[str, Any]:
    """One ``P:live:area:CODE`` hash as counts (missing fields are 0)."""
    h = {_s(k): _int(v) for k, v in (raw or {}).items()}
    return {
        "total": h.get("total", 0),
        "open": h.get("open", 0),
        "overdue": h.get("overdue", 0),
        "warning": h.get("warning", 0),
        "alarms": h.get("alarms", 0),
        "offline": h.get("offline", 0),
        "by_grade": {g: h.get(f"g{g}", 0) for g in GRADES},
        "overdue_by_grade": {g: h.get(f"o{g}", 0) for g in GRADES},
        "by_status": {s.value: h.get(f"s:{s.value}", 0) for s in Status},
    }


def area_counts(r: redis.Redis, settings: Settings, codes: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Counts per area code, read with one pipeline of HGETALL."""
    codes = list(dict.fromkeys(codes))
    keys = LiveKeys(settings.stream_prefix)
    pipe = r.pipeline(transaction=False)
    for code in codes:
        pipe.hgetall(keys.area(code))
    return {code: parse_area_hash(raw) for code, raw in zip(codes, pipe.execute(), strict=True)}


def last_event_at(r: redis.Redis, settings: Settings) -> str | None:
    return _s(r.get(LiveKeys(settings.stream_prefix).last_event_at))


def feeds(r: redis.Redis, settings: Settings) -> dict[str, str]:
    """Source → ISO time its last record was applied."""
    return {_s(k): _s(v) for k, v in r.hgetall(LiveKeys(settings.stream_prefix).feeds).items()}


def feed_status(r: redis.Redis, settings: Settings) -> dict[str, dict]:
    """Feed → its reported health (see ingest/feedhealth.py), with what it refused for a missing or wrong token or
    credentials as ``refused: {source: {reason: n}}`` (ingest/feedauth.py)."""
    keys = LiveKeys(settings.stream_prefix)
    pipe = r.pipeline(transaction=False)
    pipe.hgetall(keys.feed_status)
    pipe.hgetall(keys.feed_refused)
    states, refused = pipe.execute()
    return with_refusals({_s(k): orjson.loads(v) for k, v in states.items()},
                         {_s(k): _int(v) for k, v in refused.items()})


def dead_letters(r: redis.Redis, settings: Settings) -> dict[str, int]:
    """How many records were dead-lettered (ever, by the counter) and how many the dead stream holds now."""
    names = StreamNames.of(settings)
    pipe = r.pipeline(transaction=False)
    pipe.get(names.dead_count)
    pipe.xlen(names.dead)
    count, length = pipe.execute()
    return {"count": _int(count), "length": _int(length)}


def _fallback_lag(r: redis.Redis, stream: str, group: str) -> int | None:
    """Entries after the group's last-delivered id (what XINFO's ``lag`` says on Redis 7+), capped at LAG_CAP."""
    try:
        groups = r.xinfo_groups(stream)
    except redis.ResponseError:
        return None
    for g in groups:
        if _s(g.get("name")) == group:
            last = _s(g.get("last-delivered-id")) or "0-0"
            return len(r.xrange(stream, min=f"({last}", max="+", count=LAG_CAP))
    return None


def stream_stats(r: redis.Redis, settings: Settings) -> dict[str, dict[str, Any]]:
    """Length, pending and lag of each stream for the consumer group (for /healthz)."""
    names = StreamNames.of(settings)
    out: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        stream = names.for_kind(kind)
        info: dict[str, Any] = {"length": r.xlen(stream), "pending": None, "lag": None, "consumers": 0}
        try:
            for g in r.xinfo_groups(stream):
                name = g.get("name") or g.get(b"name")
                if isinstance(name, bytes):
                    name = name.decode()
                if name == settings.consumer_group:
                    info["pending"] = g.get("pending")
                    info["lag"] = g.get("lag")
                    info["consumers"] = g.get("consumers")
        except redis.ResponseError:
            pass  # stream does not exist yet
        out[kind] = info
    out[DEAD] = {"length": r.xlen(names.dead)}
    return out


def streams(r: redis.Redis, settings: Settings) -> dict[str, dict[str, Any]]:
    """Length, pending and lag per stream (``stream_stats``), with the lag counted where Redis does not report it."""
    stats = stream_stats(r, settings)
    names = StreamNames.of(settings)
    for kind in KINDS:
        info = stats.get(kind) or {}
        if info.get("lag") is None and info.get("pending") is not None:
            info["lag"] = _fallback_lag(r, names.for_kind(kind), settings.consumer_group)
    return stats


def summary(r: redis.Redis, settings: Settings, code: str) -> dict[str, Any]:
    """The figures of one area for the API and the wall."""
    counts = area_counts(r, settings, [code])[code]
    return {
        "cases_total": counts["total"],
        "cases_open": counts["open"],
        "overdue_open": counts["overdue"],
        "warning_open": counts["warning"],
        "sensor_alarms_active": counts["alarms"],
        "devices_offline": counts["offline"],
        "by_grade": counts["by_grade"],
        "by_status": counts["by_status"],
        "as_of": datetime.now(UTC),
        "last_event_at": last_event_at(r, settings),
    }


def risk_inputs(r: redis.Redis, settings: Settings, codes: Iterable[str]
                ) -> tuple[dict[str, dict[str, int]], dict[str, dict | None], str | None]:
    """For each area code its risk counters (core.risk.COUNTER_FIELDS, missing ones left out) and its entry of the
    last risk sweep (None before the first); and the time of that sweep. One pipeline, O(codes)."""
    codes = list(dict.fromkeys(codes))
    keys = LiveKeys(settings.stream_prefix)
    if not codes:
        return {}, {}, _s(r.get(keys.risk_at))
    pipe = r.pipeline(transaction=False)
    for code in codes:
        pipe.hmget(keys.area(code), COUNTER_FIELDS)
    pipe.hmget(keys.risk, codes)
    pipe.get(keys.risk_at)
    *rows, swept, at = pipe.execute()
    counters = {code: {f: _int(v) for f, v in zip(COUNTER_FIELDS, values, strict=True) if v is not None}
                for code, values in zip(codes, rows, strict=True)}
    entries = {code: (orjson.loads(raw) if raw else None) for code, raw in zip(codes, swept, strict=True)}
    return counters, entries, _s(at)


def risk_of(r: redis.Redis, settings: Settings, city, model, areas) -> tuple[dict[str, dict[str, Any]], str | None]:
    """Score, level, colour and parts of each area (core.risk): case and alarm parts from the live counters now, the
    hotspot part from the last risk sweep. Also the time of that sweep (None: it has not run, the hotspot part is 0)."""
    counters, swept, at = risk_inputs(r, settings, [a.code for a in areas])
    out = {}
    for a in areas:
        entry = swept.get(a.code) or {}
        assessed = model.assess(counters[a.code], a.level, (entry.get("parts") or {}).get("hotspots", 0.0))
        grade = city.grades.get(assessed["risk_level"])
        assessed["color"] = grade.color if grade is not None else None
        out[a.code] = assessed
    return out, at


def hotspots(r: redis.Redis, settings: Settings) -> list[dict[str, Any]]:
    """The hotspots found by the last risk sweep (core.risk.Hotspot.as_dict), heaviest first."""
    raw = r.get(LiveKeys(settings.stream_prefix).hotspots)
    return orjson.loads(raw) if raw else []


def active_alarms(r: redis.Redis, settings: Settings, offline: bool = False) -> list[dict[str, Any]]:
    """The active sensor threshold alarms (``offline``: the devices silent now), each with its ``device``."""
    keys = LiveKeys(settings.stream_prefix)
    out = []
    for device, raw in r.hgetall(keys.offline if offline else keys.alarms).items():
        alarm = orjson.loads(raw)
        alarm["device"] = _s(device)
        out.append(alarm)
    return sorted(out, key=lambda a: a["device"])


def in_area(area, grid: str | None) -> bool:
    """Whether something located in ``grid`` lies in ``area`` (the district holds everything, unlocated too)."""
    return area.level == "district" or bool(grid and grid.startswith(area.code))


def alarms_in(r: redis.Redis, settings: Settings, area, offline: bool = False) -> list[dict[str, Any]]:
    """The active alarms (or silent devices) located in ``area``, newest first; ``since`` as an aware time."""
    found = []
    for a in active_alarms(r, settings, offline=offline):
        if in_area(area, a.get("grid")):
            since = a.get("since")
            try:
                t = datetime.fromisoformat(since) if since else None
                t = t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t
            except ValueError:
                t = since
            found.append({**a, "since": t, "grid": a.get("grid") or None})
    return sorted(found, key=lambda a: (str(a["since"]), a["device"]), reverse=True)


def hotspots_in(r: redis.Redis, settings: Settings, area) -> list[dict[str, Any]]:
    """The last sweep's hotspots touching ``area``, each with ``contribution``: the weight it adds to this area's
    score; heaviest first. ``first``/``last`` as aware times."""
    out = []
    for h in hotspots(r, settings):
        if any(in_area(area, g) for g in h.get("by_grid", {})):
            share = sum(w for g, w in h["by_grid"].items() if in_area(area, g))
            out.append({**h, "first": _unix(h.get("first")), "last": _unix(h.get("last")),
                        "contribution": round(share, 3)})
    out.sort(key=lambda h: -h["contribution"])
    return out


def _unix(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _entry_time(entry_id) -> datetime | None:
    if not entry_id:
        return None
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    ms = int(text.split("-")[0])
    return datetime.fromtimestamp(ms / 1000, UTC) if ms else None


def applying(r: redis.Redis, settings: Settings) -> dict[str, Any]:
    """The facts core.health judges: live workers (heartbeat keys), their last states, each stream's oldest pending
    entry and newest entry (entry ids are times), and the time of the newest applied data."""
    keys = LiveKeys(settings.stream_prefix)
    names = StreamNames.of(settings)
    alive = {k.decode()[len(keys.worker_prefix):] for k in r.scan_iter(f"{keys.worker_prefix}*", count=1000)}
    workers = {_s(k): orjson.loads(v) for k, v in r.hgetall(keys.workers).items()}
    oldest, newest = {}, {}
    for kind in KINDS:
        stream = names.for_kind(kind)
        try:
            summary = r.xpending(stream, settings.consumer_group)
        except redis.ResponseError:
            summary = {}
        oldest[kind] = _entry_time(summary.get("min")) if summary.get("pending") else None
        last = r.xrevrange(stream, count=1)
        newest[kind] = _entry_time(last[0][0]) if last else None
    at = last_event_at(r, settings)
    return {"alive": alive, "workers": workers, "oldest_pending": oldest, "newest_entry": newest,
            "last_applied": datetime.fromisoformat(at) if at else None}


def applying_reasons(r: redis.Redis, settings: Settings, now: datetime | None = None) -> tuple[dict[str, Any], list[str]]:
    """The facts of :func:`applying` and core.health's reasons why applying is not working (empty: it works).

    A bulk import's backlog is work in progress, not a fault (it yields to the live streams), so the bulk stream is
    left out. /healthz and the wall's "数据停止更新" banner both ask here.
    """
    facts = applying(r, settings)
    reasons = health.reasons(
        alive=facts["alive"], workers=facts["workers"],
        oldest_pending={k: v for k, v in facts["oldest_pending"].items() if k != "bulk"},
        newest_entry={k: v for k, v in facts["newest_entry"].items() if k != "bulk"},
        last_applied=facts["last_applied"], now=now or datetime.now(UTC),
        pending_max_s=settings.health_pending_max_s, stale_s=settings.health_stale_s)
    return facts, reasons
