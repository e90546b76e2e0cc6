"""Drill-down benchmark: server time of each interaction of the leaders' drill-down page over 1,000,000 stored cases.

    python -m bench.drilldown [--cases 1000000] [--postgres URL] [--quick]

An interaction is what the browser asks the server for when the URL changes — the callbacks of layouts/drill.py:
the frame (breadcrumb, map, areas below, count), the figures (KPIs with the previous period, daily trend,
breakdowns), the lists (overdue cases, hotspots, sensors, departments) and the case table's first block — or, for
a table page, that one block. The browser sends the callbacks at once, so the page is ready after the slowest
("slowest"); "all" is their sum, the work one server process does. Measured for the district, a street, a
community and a grid; filters added (grade, category, department, 30 days); the next page, the tenth page and a sort.
Baseline: the API's first page of cases with no filter. On SQLite and, with ``--postgres``, PostgreSQL (a
throwaway schema). Target: p95 ≤ 300 ms per interaction. Not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import UTC, datetime

from bench.common import bench_env, line, pct, viewing


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.drilldown", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=1_000_000, help="stored cases (default 1,000,000)")
    ap.add_argument("--postgres", metavar="URL", help="also on this PostgreSQL database (in a throwaway schema)")
    ap.add_argument("--repeat", type=int, default=9, help="timed runs per interaction (default 9)")
    ap.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only (with --postgres)")
    ap.add_argument("--quick", action="store_true", help="small sizes: a check that the benchmark runs")
    args = ap.parse_args(argv)
    if args.quick:
        args.cases, args.repeat = min(args.cases, 3_000), min(args.repeat, 2)
    print(f"Gridwatch drill-down benchmark — {os.cpu_count()} cores", flush=True)
    if not args.no_sqlite:
        run(args.cases, None, args.repeat)
    if args.postgres:
        run(args.cases, args.postgres, args.repeat)
    return 0


def run(n: int, postgres: str | None, repeat: int) -> None:
    from app import create_app
    from bench.rankings_data import generate
    from layouts import drill
    from store.queries import CaseFilter, list_cases

    env = bench_env("drill", **({"database_url": postgres} if postgres else {}))
    engine, city = env.engine, env.city
    print(f"{n:,} stored cases — {engine.dialect.name}", flush=True)
    now = datetime.now(UTC).replace(microsecond=0)
    t = time.perf_counter()
    generate(engine, city, n, now)
    line("written straight to SQL (set-up, not measured)", f"{time.perf_counter() - t:8.1f} s")
    app = create_app(env.settings)
    geo = city.geography
    street = geo.areas("street")[1]
    community = geo.children(street.code)[0]
    grid = geo.children(community.code)[0]
    dept = sorted(city.departments)[5]
    group = city.groups[0].code
    first = {"startRow": 0, "endRow": drill.PAGE_SIZE, "sortModel": []}

    def view(path, search=""):
        parts = {"frame": lambda: drill.frame_of(path, search), "figures": lambda: drill.figures_of(path, search),
                 "lists": lambda: drill.lists_of(path, search), "table": lambda: drill.rows_of(first, path, search)}
        return parts

    empty: set[int] = set()  # table pages that held no rows (a store too small for the page asked)

    def pages(path, k, sort=None):
        def go():
            for i in range(k):
                req = {"startRow": i * drill.PAGE_SIZE, "endRow": (i + 1) * drill.PAGE_SIZE, "sortModel": sort or []}
                if not drill.rows_of(req, path, "")["rowData"]:
                    empty.add(i + 1)
        return {"table": go}

    s_path = f"/area/{street.code}"
    interactions = [
        ("baseline: API first page of cases, no filter", {"api": lambda: list_cases(engine, limit=50, where=CaseFilter())}),
        ("open: the district, last 7 days", view("/")),
        ("area: a street", view(s_path)),
        ("area: a community", view(f"/area/{community.code}")),
        ("area: a grid", view(f"/area/{grid.code}")),
        ("filter: street + grade 1", view(s_path, "?grade=1")),
        (f"filter: street + category {group}", view(s_path, f"?category={group}")),
        (f"filter: street + department {dept}", view(s_path, f"?dept={dept}")),
        ("filter: street, last 30 days", view(s_path, "?range=30d")),
        ("filter: the district, last 30 days", view("/", "?range=30d")),
        ("table: next page (street)", pages(s_path, 2)),
        ("table: pages 1–10 in turn (street)", pages(s_path, 10)),
        ("table: sorted by grade, first page (street)", pages(s_path, 1, [{"colId": "grade", "sort": "desc"}])),
    ]
    with viewing(app, "leader"):  # as a district leader after the login gate
        for label, parts in interactions:
            for fn in parts.values():
                fn()  # warm
            total, slowest, each = [], [], {name: [] for name in parts}
            for _ in range(repeat):
                took = {}
                for name, fn in parts.items():
                    t = time.perf_counter()
                    fn()
                    took[name] = time.perf_counter() - t
                    each[name].append(took[name])
                total.append(sum(took.values()))
                slowest.append(max(took.values()))
            detail = "  ".join(f"{name} {pct(v, 0.95) * 1000:.0f}" for name, v in each.items()) if len(parts) > 1 else ""
            line(label, f"all p50 {statistics.median(total) * 1000:6.1f} p95 {pct(total, 0.95) * 1000:6.1f} ms  "
                        f"slowest p95 {pct(slowest, 0.95) * 1000:6.1f} ms  {detail}")
    if empty:
        print(f"  (table pages {sorted(empty)} held no rows: too few stored cases for them)")
    print("Target: p95 ≤ 300 ms per interaction.")
    env.close()


if __name__ == "__main__":
    raise SystemExit(main())
