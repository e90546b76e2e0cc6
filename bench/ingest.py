"""Ingest benchmark: prints throughput and latency figures, with baselines from the same run.

    python -m bench.ingest [--readings 200000] [--events 50000] [--probes 300] [--load 5000]

1. Baselines: raw Redis XADD (pipelined) and raw SQL executemany INSERT.
2. Sensor readings: publish N through the Producer, then apply them with one worker (live state).
3. Case events: publish M (report → register → dispatch → accept → resolve), apply them (SQL + live state).
4. Latency: a worker process runs while a load process publishes LOAD events/s (sensors and cases);
   probes publish one reading each and time until it shows in the live state.

Uses REDIS_URL / DATABASE_URL when set; otherwise an embedded Redis and a SQLite file in a temporary folder.
Not a test: it asserts nothing and prints figures, which vary with the machine's other load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import orjson
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine

from bench.common import bench_env, line, rate
from config.settings import ROOT, Settings

PY = sys.executable




def readings(city, n: int, devices: int, t0: datetime) -> list[dict]:
    grids = city.geography.areas("grid")
    types = list(city.sensor_types.values())
    devs = []
    for i in range(devices):
        g = grids[i % len(grids)]
        st = types[i % len(types)]
        devs.append((f"b-{st.code}-{i}", st, g.centroid))
    out = []
    for k in range(n):
        dev, st, (lon, lat) = devs[k % devices]
        value = st.threshold * (1.2 if k % 997 == 0 else 0.3)
        out.append({"source": "bench", "device_id": dev, "type": st.code, "value": value,
                    "ts": (t0 + timedelta(milliseconds=k)).isoformat(), "lon": lon, "lat": lat})
    return out


def case_events(city, n_events: int, t0: datetime, tag: str) -> list[dict]:
    grids = city.geography.areas("grid")
    cats = [c for c in city.categories.values() if not c.sensor_only]
    deps = list(city.departments)
    steps = ["report", "register", "dispatch", "accept", "resolve"]
    out = []
    n_cases = n_events // len(steps)
    for i in range(n_cases):
        g = grids[i % len(grids)]
        ext = f"{tag}-{i}"
        for j, action in enumerate(steps):
            rec = {"source": "bench", "external_id": ext, "event": action, "event_id": action,
                   "occurred_at": (t0 + timedelta(seconds=i, minutes=j)).isoformat()}
            if action == "report":
                rec.update(category=cats[i % len(cats)].code, title=f"压测案件 {i}", lon=g.centroid[0], lat=g.centroid[1])
            elif action == "dispatch":
                rec["departments"] = [deps[i % len(deps)]]
            out.append(rec)
    # Interleave cases as real feeds do, keeping each case's own order.
    out.sort(key=lambda r: (r["occurred_at"], r["external_id"]))
    return out


def drain(worker) -> float:
    t = time.perf_counter()
    while worker.run_once(20):
        pass
    return time.perf_counter() - t


def child_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": settings.redis_url, "DATABASE_URL": settings.database_url or "",
            "STREAM_PREFIX": settings.stream_prefix, "VAR_DIR": str(settings.var_dir), "LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT)}


def load_process(args) -> int:
    """Child: publish ``--rate`` records/s (80% sensor readings, 20% case events) for ``--seconds``."""
    from config.city import get_city
    from config.services import get_redis
    from config.settings import get_settings
    from ingest.streams import Producer

    settings = get_settings()
    city = get_city()
    p = Producer(get_redis(settings), settings, source="bench")
    t0 = datetime.now(UTC) - timedelta(hours=1)
    tag = uuid.uuid4().hex[:6]
    per_tick = max(1, int(args.rate / 20))
    sens = readings(city, per_tick * 20 * int(args.seconds + 1), 2000, t0)
    cases = case_events(city, per_tick * 20 * int(args.seconds + 1), t0, f"load-{tag}")
    start = time.perf_counter()
    k = 0
    while time.perf_counter() - start < args.seconds:
        n_case = per_tick // 5
        p.sensors(sens[k * (per_tick - n_case):(k + 1) * (per_tick - n_case)])
        p.cases(cases[k * n_case:(k + 1) * n_case])
        k += 1
        sleep = start + k / 20 - time.perf_counter()
        if sleep > 0:
            time.sleep(sleep)
    print(f"LOAD {k * per_tick} {time.perf_counter() - start:.3f}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.split("\n\n")[0])
    ap.add_argument("--readings", type=int, default=200_000, help="sensor readings to publish and apply")
    ap.add_argument("--devices", type=int, default=5_000, help="distinct devices in the readings")
    ap.add_argument("--events", type=int, default=50_000, help="case events to publish and apply")
    ap.add_argument("--probes", type=int, default=300, help="latency probes")
    ap.add_argument("--load", type=int, default=5_000, help="background events/s during the latency probes")
    ap.add_argument("--role", default="main", help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=float, default=5000, help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=20, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.role == "load":
        return load_process(args)

    from ingest.streams import Producer, StreamNames
    from ingest.worker import Worker, tune_gc

    env = bench_env("bench", stream_maxlen=2_000_000)
    tmp, settings, r, engine, city = env.tmp, env.settings, env.r, env.engine, env.city
    names = StreamNames.of(settings)
    db_kind = engine.dialect.name
    print(f"Gridwatch ingest benchmark — {os.cpu_count()} cores, Redis {r.info()['redis_version']}"
          f" ({env.redis_label}), {db_kind}", flush=True)

    # 1. Baselines -----------------------------------------------------------------------------
    print("Baselines (same run)")
    recs = readings(city, args.readings, args.devices, datetime.now(UTC) - timedelta(hours=2))
    payloads = [orjson.dumps(x) for x in recs]
    t = time.perf_counter()
    pipe = r.pipeline(transaction=False)
    for i, pl in enumerate(payloads, 1):
        pipe.xadd(settings.key("baseline"), {b"d": pl})
        if i % 1000 == 0:
            pipe.execute()
    pipe.execute()
    raw_xadd = args.readings / (time.perf_counter() - t)
    r.delete(settings.key("baseline"))
    line("raw Redis XADD, pipelined", rate(args.readings, args.readings / raw_xadd))
    md = MetaData()
    tbl = Table("bench_raw", md, Column("id", Integer, primary_key=True), Column("a", String(32)), Column("b", String(200)),
                Column("c", Integer))
    raw_engine = create_engine(settings.sqlalchemy_url) if db_kind != "sqlite" else create_engine(f"sqlite:///{tmp / 'raw.db'}")
    md.create_all(raw_engine)
    rows = [{"a": f"x{i}", "b": "压测" * 10, "c": i} for i in range(args.events)]
    t = time.perf_counter()
    with raw_engine.begin() as conn:
        for i in range(0, len(rows), 2000):
            conn.execute(tbl.insert(), rows[i:i + 2000])
    raw_sql = args.events / (time.perf_counter() - t)
    md.drop_all(raw_engine)
    line(f"raw SQL INSERT ({db_kind}, executemany)", rate(args.events, args.events / raw_sql))

    # 2. Sensor readings ----------------------------------------------------------------------------
    print("Sensor readings → live state")
    producer = Producer(r, settings, source="bench")
    worker = Worker(city, settings, engine, r, name="bench-1")
    tune_gc()  # as `python -m ingest worker` does at start
    t = time.perf_counter()
    producer.sensors(recs)
    pub = time.perf_counter() - t
    line("publish (Producer.sensors)", rate(args.readings, pub) + f"  = {args.readings / pub / raw_xadd:.2f}× raw XADD")
    took = drain(worker)
    line("consume + validate + apply to live state", rate(worker.totals.readings, took))
    line("  alarms opened (cases created)", f"{worker.totals.alarms_opened:>12,}")

    # 3. Case events ---------------------------------------------------------------------------------
    print(f"Case events → {db_kind} + live state")
    evs = case_events(city, args.events, datetime.now(UTC) - timedelta(hours=3), "c" + uuid.uuid4().hex[:6])
    t = time.perf_counter()
    producer.cases(evs)
    pub = time.perf_counter() - t
    line("publish (Producer.cases)", rate(len(evs), pub) + f"  = {len(evs) / pub / raw_xadd:.2f}× raw XADD")
    before = worker.totals.applied
    took = drain(worker)
    applied = worker.totals.applied - before
    line("consume + validate + lifecycle + SQL + live state", rate(applied, took) + f"  = {applied / took / raw_sql:.2f}× raw INSERT")

    # 4. Latency under load ----------------------------------------------------------------------------
    print(f"Publish → live-state latency with {args.load:,} events/s of background load")
    child = child_env(settings)
    wproc = subprocess.Popen([PY, "-m", "ingest", "worker"], cwd=ROOT, env=child)
    seconds = max(10.0, args.probes / 20 + 5)
    lproc = subprocess.Popen([PY, "-m", "bench.ingest", "--role", "load", "--rate", str(args.load),
                              "--seconds", str(seconds)], cwd=ROOT, env=child, stdout=subprocess.PIPE, text=True)
    time.sleep(3)  # let the worker start and the load settle
    lat = []
    dev_key = f"{settings.stream_prefix}:live:device"
    st = next(iter(city.sensor_types.values()))
    g = city.geography.areas("grid")[0]
    for k in range(args.probes):
        dev = f"probe-{k}"
        rec = {"source": "bench", "device_id": dev, "type": st.code, "value": 0.001 * k,
               "ts": datetime.now(UTC).isoformat(), "lon": g.centroid[0], "lat": g.centroid[1]}
        t = time.perf_counter()
        producer.sensors([rec])
        while not r.hexists(dev_key, dev):
            time.sleep(0.0005)
            if time.perf_counter() - t > 30:
                break
        lat.append(time.perf_counter() - t)
        time.sleep(max(0.0, 0.05 - (time.perf_counter() - t)))
    out, _ = lproc.communicate()
    sent, elapsed = next((int(x.split()[1]), float(x.split()[2])) for x in out.splitlines() if x.startswith("LOAD"))
    lat.sort()
    q = statistics.quantiles(lat, n=100, method="inclusive")  # never beyond the slowest probe
    line("background load actually published", rate(sent, elapsed))
    pending = sum(r.xpending(s, settings.consumer_group)["pending"] for s in (names.cases, names.sensors))
    line("latency p50 / p95 / p99 / max (ms)",
         f"{q[49] * 1000:8.1f} / {q[94] * 1000:.1f} / {q[98] * 1000:.1f} / {lat[-1] * 1000:.1f}")
    line("entries still pending at the end", f"{pending:>12,}")
    wproc.terminate()
    wproc.wait(15)
    env.close()
    print("Targets: readings ≥ 50,000/s to live state; case events ≥ 10,000/s to SQLite; p99 ≤ 1000 ms under 5,000/s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
