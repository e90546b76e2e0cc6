"""Briefing benchmark: the time to produce a day's briefing (PDF and XLSX) for the district when that day holds
100,000 cases.

    python -m bench.briefing [--cases 100000] [--postgres URL] [--keep DIR] [--quick]

The cases (with their department assignments) are written straight to SQL over the day before today (city time),
then the daily briefing of that day is produced as the archive does (dashboard.briefing.produce), step by step:
the reads (every figure, through the API's own functions), the PDF (charts and layout) and the XLSX. The weekly
and monthly briefings holding that day are timed too. Baseline from the same run: one figure the API serves, the
day's KPIs (GET /api/v1/kpis). Target: PDF + XLSX for the day ≤ 10 s. Not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import bench_env, line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.briefing", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=100_000, help="cases reported on the day (default 100,000)")
    ap.add_argument("--postgres", metavar="URL", help="on this PostgreSQL database (a throwaway schema) instead of "
                                                      "SQLite")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each briefing (default 3)")
    ap.add_argument("--keep", metavar="DIR", help="copy the briefings produced into DIR, to look at them")
    ap.add_argument("--quick", action="store_true", help="small sizes: a check that the benchmark runs")
    args = ap.parse_args(argv)
    kinds = ("day", "week", "month")
    if args.quick:
        args.cases, args.repeat, kinds = min(args.cases, 500), 1, ("day",)
    print(f"Gridwatch briefing benchmark — {os.cpu_count()} cores", flush=True)
    run(args.cases, args.postgres, args.repeat, Path(args.keep) if args.keep else None, kinds)
    return 0


def run(n: int, postgres: str | None, repeat: int, keep: Path | None,
        kinds: tuple[str, ...] = ("day", "week", "month")) -> None:
    from bench.rankings_data import generate
    from core.records import CITY_TZ
    from dashboard import briefing
    from store import queries

    env = bench_env("brief", **({"database_url": postgres} if postgres else {}))
    try:
        engine, city, settings = env.engine, env.city, env.settings
        now = datetime.now(UTC).replace(microsecond=0)
        today = now.astimezone(CITY_TZ).replace(hour=0, minute=0, second=0, microsecond=0)
        day = (today - timedelta(days=1)).date()
        print(f"{n:,} cases on {day} — {engine.dialect.name}", flush=True)
        t = time.perf_counter()
        generate(engine, city, n, today.astimezone(UTC), days=1)
        line("written straight to SQL (set-up, not measured)", f"{time.perf_counter() - t:8.1f} s")
        where = queries.CaseFilter(since=(today - timedelta(days=1)).astimezone(UTC), until=today.astimezone(UTC))
        base = []
        for _ in range(repeat):
            t = time.perf_counter()
            k = queries.kpis(engine, where, where.until)
            base.append(time.perf_counter() - t)
        assert k["cases_total"] == n, k["cases_total"]
        line("baseline: the day's KPIs (GET /api/v1/kpis)", f"{statistics.median(base) * 1000:8.0f} ms")
        out = env.tmp / "briefings"
        for kind in kinds:
            steps: dict[str, list[float]] = {}
            for _ in range(repeat):
                marks = []

                def progress(step, share, marks=marks):
                    marks.append((step, time.perf_counter()))

                t0 = time.perf_counter()
                files = briefing.produce(engine, env.r, settings, city, kind, day, None, out, progress=progress)
                total = time.perf_counter() - t0
                for (step, at), (_, nxt) in zip(marks, marks[1:], strict=False):
                    steps.setdefault(step, []).append(nxt - at)
                steps.setdefault("total", []).append(total)
            label = {"day": "the day", "week": "its week", "month": "its month"}[kind]
            parts = "  ".join(f"{s} {statistics.median(v):.2f} s" for s, v in steps.items() if s != "total")
            line(f"{label}: PDF + XLSX (median of {repeat}; max)",
                 f"{statistics.median(steps['total']):8.2f} s  ({max(steps['total']):.2f} s)   {parts}")
            if keep:
                keep.mkdir(parents=True, exist_ok=True)
                for f in files:
                    shutil.copy(f, keep / f.name)
        if keep:
            line("kept", str(keep))
    finally:
        env.close()


if __name__ == "__main__":
    raise SystemExit(main())
