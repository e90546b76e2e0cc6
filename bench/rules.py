"""Rules benchmark: prints how long the governance rules take, with a same-run baseline.

    python -m bench.rules [--open 20000]

So far: the SLA sweep over N open cases (target ≤ 1 s for 20,000), against a plain SELECT of the same cases.
(Rankings over 1,000,000 cases and the risk recompute over 10,000 grids join this bench as they are built.)

Uses REDIS_URL / DATABASE_URL when set; otherwise an embedded Redis and a SQLite file in a temporary folder.
Not a test: it asserts nothing and prints figures.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from bench.common import bench_env, line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.rules", description=__doc__.split("\n\n")[0])
    ap.add_argument("--open", type=int, default=20_000, help="open cases for the SLA sweep (default 20,000)")
    args = ap.parse_args(argv)

    from core.lifecycle import OPEN_STATUSES
    from core.models import Case
    from ingest.scheduler import sla_sweep
    from ingest.streams import Producer
    from ingest.worker import Worker, tune_gc

    env = bench_env("rules")
    settings, r, engine, city = env.settings, env.r, env.engine, env.city
    print(f"Gridwatch rules benchmark — {os.cpu_count()} cores, {engine.dialect.name}", flush=True)

    # N open cases: reported over the last 3 days, deadlines spread so some are overdue, some near, most on track.
    rnd = random.Random(5)
    now = datetime.now(UTC).replace(microsecond=0)
    grids = city.geography.areas("grid")
    cats = [c for c in city.categories.values() if not c.sensor_only]
    recs = []
    for i in range(args.open):
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
    print(f"SLA sweep over {args.open:,} open cases")
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
