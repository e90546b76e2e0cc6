"""A year of department work, written straight to SQL for the rankings benchmark (not through the worker, whose
speed bench.ingest measures): N cases, each dispatched to a lead department, with returns and re-dispatch, whistles
and check-ins, late and on-time acceptance and resolution, evaluations and reopens, a few still open.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import numpy as np

from store.schema import to_db_time

CASE_COLS = ("id", "source", "external_id", "category", "grade", "title", "district_code", "street_code",
             "community_code", "grid_code", "located", "status", "departments", "onsite", "overdue",
             "due_provisional", "warned", "escalated", "rating", "reported_at", "accept_due_at", "due_at",
             "accepted_at", "resolved_at", "dispatched_at", "evaluated_at", "updated_at", "created_at")
ASSIGN_COLS = ("case_id", "department", "role", "grid_code", "assigned_at", "due_at", "accepted_at",
               "accepted_on_time", "resolved_at", "resolved_on_time", "returned_at", "reopened_at", "ended_at",
               "finished_at", "checked_in_at", "rating", "evaluated_at", "handling_s")


def generate(engine, city, n: int, now: datetime, seed: int = 7, chunk: int = 100_000,
             days: float = 365) -> tuple[int, int]:
    """Write ``n`` cases over the ``days`` days before ``now`` and their assignment rows. Returns (cases, rows)."""
    rng = np.random.default_rng(seed)
    depts = sorted(city.departments)
    weights = 1 / np.arange(1, len(depts) + 1) ** 0.8
    weights /= weights.sum()
    grids = [g.code for g in city.geography.areas("grid")]
    cats = [c.code for c in city.categories.values() if not c.sensor_only]
    dialect = engine.dialect.name
    rows_total = 0
    started = time.monotonic()
    for lo in range(0, n, chunk):
        m = min(chunk, n - lo)
        ids = np.arange(lo + 1, lo + m + 1)
        # ids rise with the report time, as in a store the worker filled over the year
        frac = (lo + np.sort(rng.random(m)) * m) / n
        rep = now - timedelta(days=days) + (frac * days * 86400).astype("timedelta64[s]").astype(object)
        dept = rng.choice(len(depts), m, p=weights)
        grid = rng.integers(0, len(grids), m)
        cat = rng.integers(0, len(cats), m)
        to_dispatch = rng.exponential(600, m)
        to_accept = rng.exponential(3600, m)
        to_resolve = rng.exponential(20 * 3600, m)
        returned = rng.random(m) < 0.06
        whistled = rng.random(m) < 0.05
        evaluated = rng.random(m) < 0.4
        reopened = rng.random(m) < 0.01
        rating = rng.choice([1, 2, 3, 4, 5], m, p=[0.04, 0.06, 0.15, 0.3, 0.45])
        cases, rows = [], []
        def t(v, dialect=dialect):
            return to_db_time(v, dialect)

        for i in range(m):
            cid = int(ids[i])
            r0 = rep[i]
            disp = r0 + timedelta(seconds=float(to_dispatch[i]))
            accept_due, due = r0 + timedelta(hours=2), r0 + timedelta(hours=48)
            g = grids[grid[i]]
            lead = depts[dept[i]]
            first_dispatch = disp
            if returned[i]:
                back = disp + timedelta(minutes=20)
                rows.append((cid, lead, "lead", g, t(disp), t(accept_due), None, None, None, None, t(back), None,
                             t(back), t(back), None, None, None, None))
                lead = depts[(dept[i] + 1) % len(depts)]
                disp = back + timedelta(minutes=10)
            acc = disp + timedelta(seconds=float(to_accept[i]))
            res = acc + timedelta(seconds=float(to_resolve[i]))
            if whistled[i]:
                for k in (3, 5):
                    ci = disp + timedelta(minutes=float(rng.exponential(20)))
                    rows.append((cid, depts[(dept[i] + k) % len(depts)], "whistle", g, t(disp),
                                 t(disp + timedelta(minutes=30)), None, None, None, None, None, None, None, None, t(ci),
                                 None, None, None))
            open_ = res > now
            ev_at = res + timedelta(hours=2)
            rt = int(rating[i]) if evaluated[i] and not open_ and ev_at < now else None
            reo = res + timedelta(hours=3) if reopened[i] and not open_ and res + timedelta(hours=3) < now else None
            rows.append((cid, lead, "lead", g, t(disp), t(accept_due), t(acc) if acc < now else None,
                         (acc <= accept_due) if acc < now else None, None if open_ else t(res),
                         None if open_ else res <= due, None, t(reo), t(reo), None if open_ else t(res), None, rt,
                         t(ev_at) if rt else None, None if open_ else (res - disp).total_seconds()))
            status = "handling" if open_ else ("evaluated" if rt else "closed")
            cases.append((cid, "bench", f"b{cid}", cats[cat[i]], 1, "排名基准案件", g[:6], g[:9], g[:12], g, True,
                          status, f'["{lead}"]', False, open_ and due < now, False, False, False, rt, t(r0),
                          t(accept_due), t(due), t(acc) if acc < now else None, None if open_ else t(res),
                          t(first_dispatch), t(ev_at) if rt else None, t(now), t(now)))
        _write(engine, "cases", CASE_COLS, cases)
        _write(engine, "case_assignments", ASSIGN_COLS, rows)
        rows_total += len(rows)
        print(f"    generated {lo + m:,} cases, {rows_total:,} assignment rows ({time.monotonic() - started:.0f} s)",
              flush=True)
    if dialect == "postgresql":
        with engine.begin() as conn:
            conn.exec_driver_sql("SELECT setval(pg_get_serial_sequence('cases', 'id'), (SELECT max(id) FROM cases))")
        # what autovacuum does to a table filled over a year (statistics, the visibility map for index-only scans)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE cases")
            conn.exec_driver_sql("VACUUM ANALYZE case_assignments")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    return n, rows_total


def _write(engine, table: str, cols: tuple[str, ...], rows: list[tuple]) -> None:
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        if engine.dialect.name == "postgresql":
            with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as cp:
                for row in rows:
                    cp.write_row(row)
        else:
            cur.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows)
        raw.commit()
    finally:
        raw.close()

