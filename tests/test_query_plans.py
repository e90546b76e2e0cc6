"""The worker's per-batch lookups search the indexes, whatever the store's size (real SQLite / PostgreSQL).

Every SELECT the worker sends while it applies a batch of case events is captured at the driver and
explained with its own parameters on a populated, analysed store: none may read the whole of cases,
case_events or case_assignments (SQLite ``SCAN <table>``, even over an index; PostgreSQL ``Seq Scan``).
PostgreSQL rightly prefers a sequential scan of a table as small as a test's, so there the plan is asked
for with ``enable_seqscan`` off: a statement no index can serve still shows its ``Seq Scan``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from sqlalchemy import event

from ingest.worker import Worker
from store.streams import Producer

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
TABLES = ("cases", "case_events", "case_assignments")


def history(city, prefix: str, n: int, steps: list[str]) -> list[dict]:
    grids = city.geography.areas("grid")
    cats = [c for c in city.categories.values() if not c.sensor_only]
    deps = list(city.departments)
    out = []
    for i in range(n):
        g = grids[i % len(grids)]
        for j, action in enumerate(steps):
            rec = {"source": "plan" if i % 3 else "plan-b", "external_id": f"{prefix}{i}", "event": action,
                   "event_id": f"{action}-{j}", "occurred_at": (T0 + timedelta(seconds=i, minutes=j)).isoformat()}
            if action == "report":
                rec.update(category=cats[i % len(cats)].code, title=f"案件 {i}", lon=g.centroid[0], lat=g.centroid[1])
            elif action == "dispatch":
                rec["departments"] = [deps[i % len(deps)]]
            out.append(rec)
    return out


def drain(worker: Worker) -> None:
    while worker.run_once(50):
        pass


def plan_lines(conn, dialect: str, sql: str, params) -> list[str]:
    if dialect == "sqlite":
        return [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)]
    return [row[0] for row in conn.exec_driver_sql(f"EXPLAIN {sql}", params)]


def full_reads(dialect: str, lines: list[str]) -> list[str]:
    names = "|".join(TABLES)
    pattern = re.compile(rf"\bSCAN ({names})\b" if dialect == "sqlite" else rf"Seq Scan on ({names})\b")
    return [x for x in lines if pattern.search(x)]


def test_worker_lookups_use_the_indexes(city, settings, engine, r):
    producer = Producer(r, settings, source="plan")
    worker = Worker(city, settings, engine, r, name="plan-1")
    # a store of some thousands of cases with their events and assignments
    producer.cases(history(city, "old-", 6000, ["report", "register", "dispatch"]))
    drain(worker)
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")

    captured: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if not executemany and statement.lstrip().upper().startswith("SELECT"):
            captured.append((statement, parameters))

    # one batch: events on stored cases (the lookups, the assignments) and new cases (the insert)
    batch = history(city, "old-", 150, ["accept"]) + history(city, "new-", 150, ["report", "register"])
    for rec in batch:
        if rec["event"] == "accept":
            rec["event_id"] = "accept-3"
            rec["occurred_at"] = (T0 + timedelta(hours=1)).isoformat()
    producer.cases(batch)
    event.listen(engine, "before_cursor_execute", capture)
    try:
        drain(worker)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert worker.totals.applied == 6000 * 3 + 150 + 300
    assert worker.totals.dead == 0

    dialect = engine.dialect.name
    checked = set()
    with engine.begin() as conn:
        if dialect == "postgresql":
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        for sql, params in captured:
            froms = set(re.findall(r"\bFROM\s+(\w+)", sql)) & set(TABLES)
            if not froms:
                continue
            checked |= froms
            lines = plan_lines(conn, dialect, sql, params)
            assert not full_reads(dialect, lines), f"{sql[:120]}…\n" + "\n".join(lines)
    assert {"cases", "case_events", "case_assignments"} <= checked, checked
