"""Import a real export into a throwaway store and print a period's department ranking beside a pandas recount.

    .venv/bin/python scripts/ranking_check.py ../shared/data/feeds/la311_2018_sample.csv \\
        --mapping config/mappings/la311.yaml --period week --date 2018-12-28

The recount works from the export's own events (what the import publishes), not from the rows the ranking reads,
following the definitions in core/rankings.py (scripts/rankings_recount.py, the same independent computation the rankings tests use).
Uses an embedded Redis and a SQLite file in a temporary folder (or REDIS_URL / DATABASE_URL).
"""

from __future__ import annotations

import argparse
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", help="CSV or XLSX export")
    ap.add_argument("--mapping", required=True, help="mapping file (config/mappings/README.md)")
    ap.add_argument("--period", default="week", choices=("day", "week", "month", "quarter"))
    ap.add_argument("--date", required=True, type=date.fromisoformat, help="a date in the period, e.g. 2018-12-28")
    args = ap.parse_args(argv)

    import pandas as pd

    from bench.common import bench_env
    from config.rankings import get_rules
    from core import rankings as rk
    from core.records import CITY_TZ
    from ingest.feeds.spreadsheet import import_file, iter_records
    from ingest.worker import Worker
    from scripts.rankings_recount import expected_figures, stored_cases
    from store import queries

    env = bench_env("rankchk")
    try:
        rep = import_file(args.file, args.mapping, env.settings, env.r, city=env.city)
        print(f"imported {rep.rows_published:,} rows of {args.file}", flush=True)
        w = Worker(env.city, env.settings, env.engine, env.r, name="rankchk")
        while w.run_once(50):
            pass
        print(f"applied {w.totals.applied:,} events, {w.totals.dead} dead-lettered", flush=True)
        p = rk.period(args.period, args.date, CITY_TZ)
        now = datetime.now(CITY_TZ)
        result = queries.ranking(env.engine, departments=env.city.departments, rules=get_rules(), current=p,
                                 previous=p.previous(CITY_TZ), now=now)
        records = list(iter_records(args.file, args.mapping, city=env.city))
        exp = expected_figures(records, stored_cases(env.engine), p.since, p.until, min(p.until, now),
                        timedelta(minutes=env.settings.whistle_report_minutes))
        cols = ["received", "resolved", "resolved_on_time", "accepted_on_time", "accept_decided", "open_at_end",
                "overdue_open", "evaluations", "handling_median_s", "handling_p90_s"]
        got = pd.DataFrame([{k: d.get(k) for k in ["department", "rank", "score", *cols]} for d in result["departments"]
                            if d["received"] or d["resolved"]]).set_index("department")
        print(f"\nDepartment ranking {p.label} ({p.since:%Y-%m-%d %H:%M} – {p.until:%Y-%m-%d %H:%M} {CITY_TZ.key}); "
              f"minimum volume {get_rules().min_volume}")
        print(got.to_string(float_format=lambda v: f"{v:,.1f}"))
        print("\npandas recount from the export's events:")
        print(exp.reindex(columns=cols).to_string(float_format=lambda v: f"{v:,.1f}"))
        diffs = []
        for d, row in exp.iterrows():
            for k in cols:
                v = row.get(k)
                if pd.isna(v):
                    v = None if k.startswith("handling") else 0
                g = got.loc[d, k] if d in got.index else 0
                if (v is None) != (g is None or pd.isna(g)) or (v is not None and abs(float(g) - float(v)) > 1e-3):
                    diffs.append((d, k, g, v))
        print(f"\n{'all figures agree' if not diffs else f'{len(diffs)} differences: {diffs[:10]}'}")
        print(f"red list {result['red_list']}, black list {result['black_list']}")
        return 1 if diffs else 0
    finally:
        env.close()


if __name__ == "__main__":
    raise SystemExit(main())
