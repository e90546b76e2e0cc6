"""The API tests' dataset: a known set of cases (every status, overdue notices, one case nobody could place) and
sensor readings (an alarm that stays, one that clears, a reading below threshold), with the expected cases table.

``build_dataset`` gives (case events, sensor readings, expected cases table, expected active alarms); ``apply``
publishes events and readings through the real streams and lets a worker apply them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from core.lifecycle import OPEN_STATUSES
from ingest.worker import Worker
from store.streams import Producer, ensure_groups

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)
OPEN = {s.value for s in OPEN_STATUSES}

# status reached → the events that lead there after the report
PATHS = {
    "reported": [],
    "registered": ["register"],
    "dispatched": ["register", "dispatch"],
    "accepted": ["register", "dispatch", "accept"],
    "handling": ["register", "dispatch", "accept", "handle"],
    "resolved": ["register", "dispatch", "accept", "handle", "resolve"],
    "onsite": ["onsite"],
    "closed": ["register", "dispatch", "accept", "resolve", "close"],
    "evaluated": ["onsite", "close", "evaluate"],
}


def drain(worker: Worker) -> None:
    while worker.run_once(50):
        pass


def apply(city, settings, engine, r, cases=(), sensors=()) -> None:
    ensure_groups(r, settings)
    producer = Producer(r, settings, source="test")
    if cases:
        producer.cases(cases)
    if sensors:
        producer.sensors(sensors)
    drain(Worker(city, settings, engine, r, name="t"))


def t(minutes: int) -> str:
    return (NOW + timedelta(minutes=minutes)).isoformat()


def build_dataset(city) -> tuple[list[dict], list[dict], pd.DataFrame, int]:
    """(case events, sensor readings, expected cases table, expected active alarms)."""
    geo = city.geography
    streets = geo.children(geo.district.code)
    # Two grids in different communities of each of the first three streets, one grid of a fourth.
    grids = []
    for s in streets[:3]:
        comms = geo.children(s.code)
        grids += [geo.children(comms[0].code)[0], geo.children(comms[1].code)[0]]
    grids.append(geo.grids_within(streets[3].code)[-1])
    cats = [c for c in city.categories.values() if not c.sensor_only]
    statuses = list(PATHS)
    events: list[dict] = []
    rows: list[dict] = []
    n = 0
    for gi, grid in enumerate(grids):
        for k in range(3):
            n += 1
            ext = f"c{n:03d}"
            cat = cats[(n * 7) % len(cats)]
            grade = (n % 4) + 1
            path = statuses[(gi * 3 + k) % len(statuses)]
            minute = n * 10
            rec = {"source": "test", "external_id": ext, "event": "report", "occurred_at": t(minute),
                   "category": cat.code, "grade": grade, "title": f"案件 {ext}", "grid_code": grid.code,
                   "reporter_name": "张三丰", "reporter_phone": "13800138000"}
            events.append(rec)
            for step, action in enumerate(PATHS[path], start=1):
                e = {"source": "test", "external_id": ext, "event": action, "occurred_at": t(minute + step)}
                if action == "dispatch":
                    e["departments"] = [cat.department]
                if action == "evaluate":
                    e["rating"] = 5
                events.append(e)
            status = "resolved" if path == "onsite" else path
            overdue = False
            if n % 5 == 0:  # an overdue notice: counts only while the case is open
                events.append({"source": "test", "external_id": ext, "event": "overdue", "occurred_at": t(minute + 9)})
                overdue = status in OPEN
            rows.append({"ext": ext, "source": "test", "grid": grid.code, "street": grid.code[:9],
                         "community": grid.code[:12], "grade": grade, "category": cat.code, "status": status,
                         "overdue": overdue, "reported": NOW + timedelta(minutes=minute),
                         "dept": cat.department if "dispatch" in PATHS[path] else None})
    # One case nobody could place: no grid, no coordinates.
    events.append({"source": "test", "external_id": "lost", "event": "report", "occurred_at": t(900),
                   "category": cats[0].code, "grade": 2, "title": "位置不明"})
    rows.append({"ext": "lost", "source": "test", "grid": None, "street": None, "community": None, "grade": 2,
                 "category": cats[0].code, "status": "reported", "overdue": False,
                 "reported": NOW + timedelta(minutes=900), "dept": None})

    # Sensors: a smoke alarm that stays, a gas alarm that clears, a water sensor below threshold.
    smoke, gas, water = city.sensor_types["smoke"], city.sensor_types["gas"], city.sensor_types["water_level"]
    g_smoke, g_gas = grids[0], grids[4]
    ts = (NOW + timedelta(minutes=500)).replace(microsecond=0)
    readings = [
        {"device_id": "smoke-1", "type": "smoke", "value": smoke.threshold + 1, "ts": ts.isoformat(), "grid_code": g_smoke.code},
        {"device_id": "gas-1", "type": "gas", "value": gas.threshold + 5, "ts": ts.isoformat(), "grid_code": g_gas.code},
        {"device_id": "gas-1", "type": "gas", "value": gas.clear_below - 1, "ts": (ts + timedelta(minutes=5)).isoformat(),
         "grid_code": g_gas.code},
        {"device_id": "water-1", "type": "water_level", "value": water.threshold - 1, "ts": ts.isoformat(),
         "grid_code": grids[2].code},
    ]
    for device, stype, grid in (("smoke-1", smoke, g_smoke), ("gas-1", gas, g_gas)):
        rows.append({"ext": f"{device}@{ts.strftime('%Y%m%dT%H%M%S')}", "source": "sensor", "grid": grid.code,
                     "street": grid.code[:9], "community": grid.code[:12], "grade": stype.grade,
                     "category": stype.category, "status": "reported", "overdue": False, "reported": ts, "dept": None})
    alarms = pd.DataFrame([{"grid": g_smoke.code, "street": g_smoke.code[:9], "community": g_smoke.code[:12]}])
    return events, readings, pd.DataFrame(rows), alarms
