"""Import benchmark: a large CSV shaped like the LA 311 sample, imported end to end, with a read baseline.

    python -m bench.import [--rows 1000000] [--apply-seconds 150] [--quick]

1. Generate ROWS rows into a temporary folder by cycling the real rows of the LA sample
   (tests/data/import/la311_2018_sample.csv) with unique SRNumbers, shifted times and jittered points.
2. Baseline: pandas read_csv of the same file (in the same chunks as the import, so memory stays bounded).
3. Import it (config/mappings/la311.yaml) through the Producer to the case stream: rows/s and events/s.
4. Apply the streams with one in-process worker (ingest.worker.Worker after tune_gc(), as bench/ingest.py does)
   until they are drained or --apply-seconds have passed, and print rows/s and events/s applied to the store.
   Applying a million rows (about six million events) takes longer than the time budget on a small machine,
   so by default the worker's rate is measured on the part it applies within the budget; the output says so.

Uses REDIS_URL / DATABASE_URL when set; otherwise an embedded Redis and a SQLite file in a temporary folder.
Not a test: it asserts nothing and prints figures, which vary with the machine's other load.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import bench_env, line, rate
from config.settings import ROOT

SAMPLE = ROOT / "tests" / "data" / "import" / "la311_2018_sample.csv"
MAPPING = ROOT / "config" / "mappings" / "la311.yaml"
FMT = "%m/%d/%Y %I:%M:%S %p"




def _pending_bulk(r, names, settings) -> bool:
    """Entries of the bulk stream not yet delivered to the group."""
    groups = {g["name"].decode() if isinstance(g["name"], bytes) else g["name"]: g for g in r.xinfo_groups(names.bulk)}
    last = groups[settings.consumer_group]["last-delivered-id"]
    last = last.decode() if isinstance(last, bytes) else last
    newest = r.xinfo_stream(names.bulk)["last-generated-id"]
    newest = newest.decode() if isinstance(newest, bytes) else newest
    return last != newest


def generate(path: Path, rows: int, seed: int = 7) -> None:
    """ROWS rows with the sample's 39 columns: the real rows cycled, ids made unique, times and points perturbed."""
    base = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False)
    created = pd.to_datetime(base["CreatedDate"], format=FMT)
    closed = pd.to_datetime(base["ClosedDate"], format=FMT, errors="coerce")
    lat = pd.to_numeric(base["Latitude"], errors="coerce")
    lon = pd.to_numeric(base["Longitude"], errors="coerce")
    rng = np.random.default_rng(seed)
    written = 0
    cycle = 0
    while written < rows:
        n = min(len(base), rows - written)
        block = base.iloc[:n].copy()
        # Earlier cycles move back in time by whole days (so nothing lands in the future), minutes jittered.
        shift = pd.to_timedelta(-cycle * 3, unit="D") + pd.to_timedelta(rng.integers(-600, 600, n), unit="s")
        block["SRNumber"] = base["SRNumber"].iloc[:n] + f"-{cycle}"
        block["CreatedDate"] = (created.iloc[:n] + shift).dt.strftime(FMT).to_numpy()
        block["ClosedDate"] = (closed.iloc[:n] + shift).dt.strftime(FMT).fillna("").to_numpy()
        block["Latitude"] = (lat.iloc[:n] + rng.normal(0, 0.001, n)).map("{:.10f}".format).replace("nan", "").to_numpy()
        block["Longitude"] = (lon.iloc[:n] + rng.normal(0, 0.001, n)).map("{:.9f}".format).replace("nan", "").to_numpy()
        block.to_csv(path, mode="w" if cycle == 0 else "a", header=cycle == 0, index=False)
        written += n
        cycle += 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.import", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows to generate and import (default 1,000,000)")
    ap.add_argument("--apply-seconds", type=float, default=150.0,
                    help="longest time the worker applies the streams before its rate is printed (default 150)")
    ap.add_argument("--chunk-rows", type=int, default=50_000, help="rows per import chunk (default 50,000)")
    ap.add_argument("--quick", action="store_true", help="small sizes: a check that the benchmark runs")
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.apply_seconds, args.chunk_rows = 2_000, 5.0, 1_000

    from ingest.feeds.spreadsheet import import_file, load_mapping
    from ingest.worker import Worker, tune_gc
    from store.services import get_redis
    from store.streams import StreamNames

    env = bench_env("bimp", stream_maxlen=5_000_000)
    try:
        tmp, settings, r, engine, city = env.tmp, env.settings, env.r, env.engine, env.city
        names = StreamNames.of(settings)
        print(f"Gridwatch import benchmark — {os.cpu_count()} cores, Redis {r.info()['redis_version']}"
              f" ({env.redis_label}), {engine.dialect.name}", flush=True)

        csv = tmp / "la311_big.csv"
        t = time.perf_counter()
        generate(csv, args.rows)
        line("generated CSV (LA 311 shape, 39 columns)", f"{args.rows:>12,} rows, {csv.stat().st_size / 1e6:,.0f} MB in "
             f"{time.perf_counter() - t:.1f} s")

        print("Baseline (same run)")
        t = time.perf_counter()
        n = 0
        for chunk in pd.read_csv(csv, dtype=str, keep_default_na=False, chunksize=args.chunk_rows):
            n += len(chunk)
        base = time.perf_counter() - t
        line("pandas read_csv (all columns as text, chunked)", rate(n, base, "rows/s"))

        print("Import → bulk case stream")
        mapping = load_mapping(MAPPING, city)
        t = time.perf_counter()
        rep = import_file(csv, mapping, settings, r, city=city, chunk_rows=args.chunk_rows,
                          progress=lambda rp: print(f"    … {rp.rows_read:,} rows", flush=True), progress_rows=250_000)
        took = time.perf_counter() - t
        line("import (read + map + publish)", rate(rep.rows_published, took, "rows/s") +
             f"  = {base / took:.2f}× the read baseline")
        line("  events published", rate(rep.events_published, took, "events/s"))
        line("  dead-lettered / unlocated / closed_before_created",
             f"{rep.rows_dead:,} / {rep.rows_unlocated:,} / {rep.flagged.get('closed_before_created', 0):,}")
        mem = r.info("memory").get("used_memory_human")
        line("  Redis memory after publishing", f"{mem}")

        print(f"Worker: streams → {engine.dialect.name} + live state (one in-process consumer)")
        worker = Worker(city, settings, engine, r, name="bench-import")
        tune_gc()
        # Meanwhile the city goes on: a live reading every 200 ms, timed until it shows in the live state.
        import threading

        from store.streams import Producer

        live_lat: list[float] = []
        stop_probe = threading.Event()
        st = next(iter(city.sensor_types.values()))
        g = city.geography.areas("grid")[0]

        def probe() -> None:
            p = Producer(get_redis(settings), settings, source="probe")
            dev_key = f"{settings.stream_prefix}:live:device"
            k = 0
            while not stop_probe.wait(0.2):
                dev = f"probe-{k}"
                k += 1
                t0 = time.perf_counter()
                p.sensors([{"device_id": dev, "type": st.code, "value": 0.0, "ts": pd.Timestamp.now(tz="UTC").isoformat(),
                            "lon": g.centroid[0], "lat": g.centroid[1]}])
                while not r.hexists(dev_key, dev) and not stop_probe.is_set():
                    time.sleep(0.002)
                if not stop_probe.is_set():
                    live_lat.append(time.perf_counter() - t0)

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        t = time.perf_counter()
        drained = False
        while time.perf_counter() - t < args.apply_seconds:
            worker.run_once(20)
            if not _pending_bulk(r, names, settings) and not r.xpending(names.bulk, settings.consumer_group)["pending"]:
                drained = True
                break
        took = time.perf_counter() - t
        stop_probe.set()
        prober.join(5)
        applied = worker.totals.applied + worker.totals.duplicates
        with engine.connect() as conn:
            from sqlalchemy import text

            cases = conn.execute(text("SELECT count(*) FROM cases")).scalar_one()
        per_row = rep.events_published / max(1, rep.rows_published)
        line("cases created (rows applied)", rate(cases, took, "rows/s"))
        line("events applied", rate(applied, took, "events/s"))
        line("  dead letters from the worker", f"{worker.totals.dead:>12,}")
        if drained:
            line("  scope", "all published events applied (streams drained)")
        else:
            line("  scope", f"time budget of {args.apply_seconds:.0f} s reached: {applied:,} of {rep.events_published:,} "
                            f"events ({applied / per_row:,.0f} rows' worth) applied; rate measured on that part")
        if drained and rep.rows_published:
            line("  end to end (import + apply), rows/s", f"{rep.rows_published / (rep.seconds + took):>12,.0f}")
        if live_lat:
            q = np.percentile(np.array(live_lat) * 1000, [50, 95, 99])
            line("live readings during the import: p50 / p95 / p99 (ms)",
                 f"{q[0]:8.1f} / {q[1]:.1f} / {q[2]:.1f}   ({len(live_lat)} probes)")
        print("Target: ≥ 20,000 rows/s to the streams; live data keeps flowing while the import is applied.")
    finally:
        env.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
