"""Rules benchmark: prints how long the governance rules take, with a same-run baseline.

    python -m bench.rules [--open 20000]

- the SLA sweep over N open cases (target ≤ 1 s for 20,000), against a plain SELECT of the same cases;
- a quarter's department rankings over 1,000,000 stored cases (target ≤ 1 s), on SQLite and — with ``--postgres URL``
  — on PostgreSQL, against a plain count of the same quarter's assignment rows.

``--parts`` picks some of them (default: all).

Uses REDIS_URL / DATABASE_URL when set; otherwise an embedded Redis and a SQLite file in a temporary folder.
Not a test: it asserts nothing and prints figures.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from bench.common import bench_env, line

PARTS = ("sweep", "rankings")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.rules", description=__doc__.split("\n\n")[0])
    ap.add_argument("--open", type=int, default=20_000, help="open cases for the SLA sweep (default 20,000)")
    ap.add_argument("--cases", type=int, default=1_000_000, help="stored cases for the rankings (default 1,000,000)")
    ap.add_argument("--postgres", metavar="URL", help="also run the rankings on this PostgreSQL database (in a "
                                                      "throwaway schema), e.g. postgresql://postgres@127.0.0.1/postgres")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of: {', '.join(PARTS)} (default all)")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"--parts: unknown part(s) {', '.join(unknown)}; use {', '.join(PARTS)}")
    print(f"Gridwatch rules benchmark — {os.cpu_count()} cores", flush=True)
    if "sweep" in parts:
        bench_sweep(args.open)
    if "rankings" in parts:
        bench_rankings(args.cases, None)
        if args.postgres:
            bench_rankings(args.cases, args.postgres)
    return 0


def bench_sweep(n_open: int) -> None:

    from core.lifecycle import OPEN_STATUSES
    from core.models import Case
    from ingest.scheduler import sla_sweep
    from ingest.streams import Producer
    from ingest.worker import Worker, tune_gc

    env = bench_env("rules")
    settings, r, engine, city = env.settings, env.r, env.engine, env.city

    # N open cases: reported over the last 3 days, deadlines spread so some are overdue, some near, most on track.
    rnd = random.Random(5)
    now = datetime.now(UTC).replace(microsecond=0)
    grids = city.geography.areas("grid")
    cats = [c for c in city.categories.values() if not c.sensor_only]
    recs = []
    for i in range(n_open):
        rep = now - timedelta(minutes=rnd.randint(10, 3 * 24 * 60))
        due = rep + timedelta(minutes=rnd.randint(60, 5 * 24 * 60))
        recs.append({"source": "bench", "external_id": f"o{i}", "event": "report", "occurred_at": rep.isoformat(),
                     "category": rnd.choice(cats).code, "title": f"在办案件 {i}", "grid_code": rnd.choice(grids).code,
                     "due_at": due.isoformat()})
    Producer(r, settings, source="bench").cases(recs)
    worker = Worker(city, settings, engine, r, name="bench-rules")
    tune_gc()
    while worker.run_once(20):
        pass
    print(f"SLA sweep over {n_open:,} open cases")
    t = time.perf_counter()
    with engine.connect() as conn:
        n = len(conn.execute(select(Case.id, Case.source, Case.external_id, Case.due_at, Case.reported_at)
                             .where(Case.status.in_([s.value for s in OPEN_STATUSES]))).all())
    base = time.perf_counter() - t
    line("baseline: SELECT the open cases' deadlines", f"{base * 1000:8.1f} ms   ({n:,} rows)")
    for round_ in range(1, 5):  # marks build on each other: overdue first, escalation on the next sweep
        t = time.perf_counter()
        counts = sla_sweep(settings, now=now)
        took = time.perf_counter() - t
        label = "nothing new: the steady state" if not any(counts.values()) else "publishes what changed"
        line(f"sweep {round_} ({label})", f"{took * 1000:8.1f} ms   {counts}")
        while worker.run_once(20):
            pass
        if not any(counts.values()):
            break
    print("Target: sweep ≤ 1 s over 20,000 open cases.")
    env.close()


def bench_rankings(n_cases: int, postgres: str | None) -> None:
    from sqlalchemy import func

    from bench.rankings_data import generate
    from config.rankings import get_rules
    from core import rankings as rk
    from core.models import CaseAssignment
    from core.records import CITY_TZ
    from dashboard import queries

    env = bench_env("rank", **({"database_url": postgres} if postgres else {}))
    engine, city = env.engine, env.city
    print(f"Quarter rankings over {n_cases:,} stored cases — {engine.dialect.name}", flush=True)
    now = datetime.now(UTC).replace(microsecond=0)
    t = time.perf_counter()
    cases, rows = generate(engine, city, n_cases, now)
    line("written straight to SQL (set-up, not measured)", f"{time.perf_counter() - t:8.1f} s   "
                                                            f"({cases:,} cases, {rows:,} assignment rows)")
    rules = get_rules()
    this_quarter = rk.period("quarter", now.astimezone(CITY_TZ).date(), CITY_TZ)
    last_quarter = this_quarter.previous(CITY_TZ)
    a = CaseAssignment.__table__
    for label, p in (("this quarter (in progress)", this_quarter), ("last quarter (whole)", last_quarter)):
        t = time.perf_counter()
        with engine.connect() as conn:
            n = conn.execute(select(func.count()).select_from(a).where(
                a.c.assigned_at >= p.since, a.c.assigned_at < p.until)).scalar()
        base = time.perf_counter() - t
        line(f"baseline: count {p.label}'s assignment rows", f"{base * 1000:8.1f} ms   ({n:,} rows)")
        for cache, label2 in ((False, "cold"), (True, "previous quarter cached")):
            times = []
            for _ in range(5):
                if not cache:
                    queries._complete.clear()
                t = time.perf_counter()
                result = queries.ranking(engine, departments=city.departments, rules=rules, current=p,
                                         previous=p.previous(CITY_TZ), now=now)
                times.append(time.perf_counter() - t)
            ranked = sum(1 for d in result["departments"] if d["ranked"])
            line(f"rankings, {label} {p.label}, {label2}",
                 f"{statistics.median(times) * 1000:8.1f} ms median, {max(times) * 1000:.1f} ms max of 5   "
                 f"({ranked} ranked)")
    print("Target: rankings ≤ 1 s.")
    env.close()


if __name__ == "__main__":
    raise SystemExit(main())
