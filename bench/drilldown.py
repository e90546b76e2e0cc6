"""Drill-down benchmark: server time of the case-table reads a leader's drill-down makes, over 1,000,000 stored cases.

    python -m bench.drilldown [--cases 1000000] [--postgres URL]

Measures ``dashboard.queries.list_cases`` (one table page of 50, newest first, keyset-paged) for the interactions
of the drill-down — the district, a street, a community, a grid, a filter added (grade, source, department, a time
range), the next page, the tenth page — on SQLite and, with ``--postgres``, on PostgreSQL (a throwaway schema).
Baseline: the same page with no filter at all. The drill-down page itself (issue 6) will add its panel reads here.
Target: p95 ≤ 300 ms per interaction. Not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import UTC, datetime, timedelta

from bench.common import bench_env, line, pct


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.drilldown", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=1_000_000, help="stored cases (default 1,000,000)")
    ap.add_argument("--postgres", metavar="URL", help="also on this PostgreSQL database (in a throwaway schema)")
    ap.add_argument("--repeat", type=int, default=9, help="timed runs per interaction (default 9)")
    args = ap.parse_args(argv)
    print(f"Gridwatch drill-down benchmark — {os.cpu_count()} cores", flush=True)
    run(args.cases, None, args.repeat)
    if args.postgres:
        run(args.cases, args.postgres, args.repeat)
    return 0


def run(n: int, postgres: str | None, repeat: int) -> None:
    from bench.rankings_data import generate
    from dashboard.queries import CaseFilter, decode_cursor, list_cases

    env = bench_env("drill", **({"database_url": postgres} if postgres else {}))
    engine, city = env.engine, env.city
    print(f"{n:,} stored cases — {engine.dialect.name}", flush=True)
    now = datetime.now(UTC).replace(microsecond=0)
    t = time.perf_counter()
    generate(engine, city, n, now)
    line("written straight to SQL (set-up, not measured)", f"{time.perf_counter() - t:8.1f} s")
    geo = city.geography
    street = geo.areas("street")[1]
    community = geo.children(street.code)[0]
    grid = geo.children(community.code)[0]
    dept = sorted(city.departments)[5]
    week = now - timedelta(days=7)

    def page(where, pages=1):
        cursor = None
        for _ in range(pages):
            _, nxt = list_cases(engine, limit=50, after_id=cursor, where=where)
            cursor = decode_cursor(nxt) if nxt else None

    interactions = [
        ("baseline: first page, no filter", lambda: page(CaseFilter())),
        ("area: a street", lambda: page(CaseFilter(area=street.code))),
        ("area: a community", lambda: page(CaseFilter(area=community.code))),
        ("area: a grid", lambda: page(CaseFilter(area=grid.code))),
        ("filter: street + grade 1", lambda: page(CaseFilter(area=street.code, grades={1}))),
        ("filter: street + source", lambda: page(CaseFilter(area=street.code, sources={"bench"}))),
        (f"filter: street + department {dept}", lambda: page(CaseFilter(area=street.code, department=dept))),
        ("filter: street + last 7 days", lambda: page(CaseFilter(area=street.code, since=week, until=now))),
        ("filter: street + open cases", lambda: page(CaseFilter(area=street.code, statuses={"handling"}))),
        ("table: next page (street)", lambda: page(CaseFilter(area=street.code), pages=2)),
        ("table: tenth page (street, pages 1–10 in turn)", lambda: page(CaseFilter(area=street.code), pages=10)),
    ]
    for label, fn in interactions:
        fn()  # warm
        took = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            took.append(time.perf_counter() - t)
        line(label, f"p50 {statistics.median(took) * 1000:7.1f} ms   p95 {pct(took, 0.95) * 1000:7.1f} ms")
    print("Target: p95 ≤ 300 ms per interaction.")
    env.close()


if __name__ == "__main__":
    raise SystemExit(main())
