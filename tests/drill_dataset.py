"""The drill-down's dataset: about 150 cases over the last 12 days across every street, grade and source, published
through the real streams and applied by the worker, with the case table they should give (worked out here).

``store_dataset`` publishes and applies it and returns (now, the expected case table with the stored ids); the
``stored`` fixture of tests/conftest.py is that. ``OPEN`` are the statuses the table counts as open.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from ingest.worker import Worker
from store.streams import Producer

SOURCES = ("hotline12345", "patrol", "citizen", "citymgmt")
OPEN = {"reported", "registered", "dispatched", "accepted", "handling"}


def _dataset(city, now: datetime) -> tuple[list[dict], pd.DataFrame]:
    """About 150 cases over the last 12 days across every street, grade and source; the expected case table."""
    grids = city.geography.areas("grid")
    cats = [c for c in city.categories.values() if not c.sensor_only]
    depts = sorted(city.departments)
    recs, rows = [], []
    for i in range(150):
        g = grids[(i * 11) % len(grids)]
        rep = now - timedelta(hours=2 + i * 1.9)
        src = SOURCES[i % len(SOURCES)]
        ext = f"d{i}"
        cat = cats[(i * 5) % len(cats)]
        grade = 1 + (i * 7) % 4
        due = rep + timedelta(hours=6 + i % 30)
        recs.append({"source": src, "external_id": ext, "event": "report", "occurred_at": rep.isoformat(),
                     "category": cat.code, "title": f"下钻测试 {i}", "grid_code": g.code, "lon": g.centroid[0],
                     "lat": g.centroid[1], "grade": grade, "due_at": due.isoformat(),
                     "reporter_name": "张三", "reporter_phone": "13800000000"})
        dept = None
        status = "reported"
        resolved = None
        if i % 3:
            dept = depts[i % 6]
            recs.append({"source": src, "external_id": ext, "event": "register",
                         "occurred_at": (rep + timedelta(minutes=1)).isoformat()})
            recs.append({"source": src, "external_id": ext, "event": "dispatch",
                         "occurred_at": (rep + timedelta(minutes=5)).isoformat(), "departments": [dept]})
            status = "dispatched"
            if i % 3 == 2:
                resolved = rep + timedelta(hours=3)
                recs.append({"source": src, "external_id": ext, "event": "accept",
                             "occurred_at": (rep + timedelta(minutes=20)).isoformat()})
                recs.append({"source": src, "external_id": ext, "event": "resolve", "occurred_at": resolved.isoformat()})
                status = "resolved"
        rows.append({"external_id": ext, "source": src, "reported_at": rep, "title": f"下钻测试 {i}", "grid_code": g.code,
                     "street_code": g.code[:9], "community_code": g.code[:12], "category": cat.code,
                     "group": cat.code[:2], "grade": grade, "status": status, "dept": dept, "due_at": due,
                     "resolved_at": resolved})
    return recs, pd.DataFrame(rows)


def store_dataset(settings, r, engine, city) -> tuple[datetime, pd.DataFrame]:
    """_dataset published and applied by the worker; the expected table gets the stored ids."""
    now = datetime.now(UTC).replace(microsecond=0)
    recs, df = _dataset(city, now)
    Producer(r, settings, source="t").cases(recs)
    w = Worker(city, settings, engine, r, name="drill")
    while w.run_once(100):
        pass
    assert w.totals.dead == 0
    with engine.connect() as conn:
        ids = dict(conn.exec_driver_sql("SELECT external_id, id FROM cases").all())
    df["id"] = df["external_id"].map(ids)
    return now, df
