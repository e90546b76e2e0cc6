"""The simulator's sensors: a device registry derived from the grids (stable for a city, whatever the seed) and
their readings. Each device reports every ``heartbeat_s`` a value well under its threshold; now and then an alarm
(over the threshold for a while, then back under ``clear_below``), a silent spell, and a slowly draining battery.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from core.records import CITY_TZ

SENSOR_SOURCE = "iot"

# Sensor behaviour by type, relative to the configured threshold (so a changed sensors.yaml still works):
# normal    (lo, hi) base value as a share of threshold (of clear_below for water_level)
# noise     standard deviation as a share of threshold
# alarm     (lo, hi) value during an alarm as a multiple of threshold
# mtba_h    mean hours between alarms of one device; dur_min (lo, hi) minutes an alarm lasts
SENSOR_PARAMS: dict[str, dict[str, Any]] = {
    "smoke": {"normal": (0.03, 0.10), "noise": 0.015, "alarm": (1.1, 2.0), "mtba_h": 150, "dur_min": (8, 40)},
    "gas": {"normal": (0.02, 0.12), "noise": 0.01, "alarm": (1.1, 2.5), "mtba_h": 80, "dur_min": (10, 45)},
    "water_level": {"normal": (0.35, 0.75), "noise": 0.004, "alarm": (1.02, 1.2), "mtba_h": 100, "dur_min": (60, 240)},
    "manhole_tilt": {"normal": (0.0, 0.12), "noise": 0.01, "alarm": (1.2, 4.0), "mtba_h": 400, "dur_min": (90, 360)},
    "elevator_entrapment": {"normal": (0.0, 0.0), "noise": 0.0, "alarm": (1.0, 1.0), "mtba_h": 60, "dur_min": (8, 40)},
    "camera_ai": {"normal": (0.05, 0.35), "noise": 0.05, "alarm": (1.02, 1.24), "mtba_h": 10, "dur_min": (5, 20)},
}
DEFAULT_SENSOR_PARAMS = {"normal": (0.05, 0.2), "noise": 0.02, "alarm": (1.1, 1.5), "mtba_h": 200, "dur_min": (10, 60)}
SILENT_MEAN_H = 200  # mean hours between silent spells of one device
SILENT_MIN = (30, 240)
# Device types per grid kind, in the order a grid gets them (cycled to fill --devices-per-grid).
DEVICE_PLAN = {
    "村宅小区": ("manhole_tilt", "smoke", "gas", "elevator_entrapment", "smoke", "manhole_tilt", "gas"),
    "商贸": ("manhole_tilt", "smoke", "gas", "elevator_entrapment", "camera_ai", "smoke", "camera_ai"),
    "企业园区": ("manhole_tilt", "smoke", "smoke", "manhole_tilt", "smoke", "camera_ai"),
    "公共设施": ("manhole_tilt", "camera_ai", "camera_ai", "manhole_tilt", "camera_ai"),
    "山湖林田水": ("water_level", "manhole_tilt", "water_level", "manhole_tilt", "water_level"),
}
LOW_LYING_SHARE = 0.2  # share of other grids that also get a water-level gauge


@dataclass
class Device:
    id: str
    type: str
    grid: str
    lon: float
    lat: float
    heartbeat: float
    base: float
    battery0: float
    drain_per_day: float
    next_due: datetime | None = None
    alarm_until: datetime | None = None
    alarm_value: float = 0.0
    silent_until: datetime | None = None


def build_devices(grids, types, per_grid: int, point_in) -> list[Device]:
    """About ``per_grid`` devices per grid by grid kind; ``point_in(code, rng)`` places one inside its grid."""
    devices = []
    for g in grids:
        reg = random.Random(f"devices:{g.code}")
        plan = list(DEVICE_PLAN.get(g.kind or "", ("manhole_tilt",)))
        if g.kind != "山湖林田水" and reg.random() < LOW_LYING_SHARE:
            plan.insert(1, "water_level")
        plan = [t for t in plan if t in types] or [t for t in ("manhole_tilt",) if t in types]
        if not plan or per_grid <= 0:
            continue
        n = max(1, per_grid + reg.choice((-1, 0, 0, 1)))
        chosen = [plan[i % len(plan)] for i in range(n)]
        seen: Counter = Counter()
        for t in chosen:
            seen[t] += 1
            st = types[t]
            p = SENSOR_PARAMS.get(t, DEFAULT_SENSOR_PARAMS)
            lon, lat = point_in(g.code, reg)
            ref = st.clear_below if t == "water_level" else st.threshold
            low = reg.random() < 0.03
            devices.append(Device(
                id=f"{t}-{g.code}-{seen[t]:02d}", type=t, grid=g.code, lon=lon, lat=lat,
                heartbeat=float(st.heartbeat_s), base=ref * reg.uniform(*p["normal"]),
                battery0=reg.uniform(8, 20) if low else reg.uniform(60, 100),
                drain_per_day=reg.uniform(0.05, 0.3),
            ))
    return devices


def readings(devices: list[Device], heap: list[tuple[datetime, int]], rng: random.Random, types, t0: datetime,
             now: datetime, origin: datetime) -> tuple[list[dict[str, Any]], int]:
    """The readings due in (t0, now] and the number of alarms that began; ``heap`` keeps when each device is due."""
    if not heap and devices:
        for i, d in enumerate(devices):
            d.next_due = t0 + timedelta(seconds=rng.uniform(0, d.heartbeat))
            heap.append((d.next_due, i))
        heapq.heapify(heap)
    out = []
    alarms = 0
    while heap and heap[0][0] <= now:
        ts, i = heapq.heappop(heap)
        d = devices[i]
        st = types[d.type]
        p = SENSOR_PARAMS.get(d.type, DEFAULT_SENSOR_PARAMS)
        hb_h = d.heartbeat / 3600
        d.next_due = ts + timedelta(seconds=d.heartbeat * rng.uniform(0.98, 1.02))
        heapq.heappush(heap, (d.next_due, i))
        if d.silent_until is not None:
            if ts < d.silent_until:
                continue
            d.silent_until = None
        if d.alarm_until is None and rng.random() < -math.expm1(-hb_h / SILENT_MEAN_H):
            minutes = max(rng.uniform(*SILENT_MIN), 2.5 * d.heartbeat / 60)
            d.silent_until = ts + timedelta(minutes=minutes)
            continue
        if d.alarm_until is not None and ts >= d.alarm_until:
            d.alarm_until = None
        if d.alarm_until is None and rng.random() < -math.expm1(-hb_h / p["mtba_h"]):
            d.alarm_until = ts + timedelta(minutes=rng.uniform(*p["dur_min"]))
            d.alarm_value = st.threshold * rng.uniform(*p["alarm"])
            alarms += 1
        out.append(_reading(d, st, p, ts, rng, origin))
    return out, alarms


def _reading(d: Device, st, p: dict[str, Any], ts: datetime, rng: random.Random, origin: datetime) -> dict[str, Any]:
    if d.alarm_until is not None:
        value = d.alarm_value * (1 + rng.gauss(0, 0.03)) if p["noise"] else d.alarm_value
        value = max(value, st.threshold)
    else:
        value = d.base + rng.gauss(0, p["noise"] * st.threshold) if p["noise"] else d.base
        value = min(max(value, 0.0), 0.9 * st.clear_below)
    days = (ts - origin).total_seconds() / 86400
    battery = round(min(100.0, max(0.0, d.battery0 - d.drain_per_day * max(days, 0.0))), 1)
    return {
        "source": SENSOR_SOURCE, "device_id": d.id, "type": d.type, "value": round(value, 3),
        "ts": ts.astimezone(CITY_TZ).isoformat(timespec="seconds"), "lon": d.lon, "lat": d.lat, "grid_code": d.grid,
        "battery": battery,
    }
