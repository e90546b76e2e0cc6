"""Ingest benchmark: prints throughput and latency figures, with baselines from the same run.

    python -m bench.ingest [--readings 200000] [--events 50000] [--probes 300] [--load 5000]
                           [--stored 1000000] [--against REF] [--postgres URL] [--quick]

1. Baselines: raw Redis XADD (pipelined) and raw SQL executemany INSERT.
2. Sensor readings: publish N through the Producer, then apply them with one worker (live state).
3. Case events: publish M (report → register → dispatch → accept → resolve), apply them (SQL + live state).
4. Latency: a worker process runs while a load process publishes LOAD events/s (sensors and cases);
   probes publish one reading each and time until it shows in the live state.

5. With --against REF: the same readings and case events applied by the whole tree of git commit REF (unpacked with
   git archive: its worker, schema and core) and by this one, each in a process of its own on a fresh empty store,
   side by side (alternating rounds).
6. With --stored N: the store filled with N cases and their timelines by bulk SQL (not through the worker), then
   the same readings and case events applied on it, next to the same worker's figures on the empty store.

--postgres URL runs on that PostgreSQL database (a schema of its own, dropped at the end).
Uses REDIS_URL / DATABASE_URL when set; otherwise an embedded Redis and a SQLite file in a temporary folder.
Not a test: it asserts nothing and prints figures, which vary with the machine's other load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine

from bench.common import bench_env, line, rate
from config.settings import ROOT, Settings

PY = sys.executable




def readings(city, n: int, devices: int, t0: datetime, tag: str = "b") -> list[dict]:
    grids = city.geography.areas("grid")
    types = list(city.sensor_types.values())
    devs = []
    for i in range(devices):
        g = grids[i % len(grids)]
        st = types[i % len(types)]
        devs.append((f"{tag}-{st.code}-{i}", st, g.centroid))
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


STORED_STEPS = ("report", "register", "dispatch", "accept", "resolve")


def fill_store(engine, city, n: int, source: str = "bench", chunk: int = 20_000) -> float:
    """Store ``n`` resolved cases with their five events and their lead department's assignment, by bulk SQL
    (executemany on SQLite, COPY on PostgreSQL), showing progress. Returns the seconds it took."""
    from core import lifecycle
    from core.lifecycle import Action
    from store.schema import Case, CaseAssignment, CaseEvent, to_db_time
    from store.writes import CASE_COLUMNS, EVENT_COLUMNS

    dialect = engine.dialect.name
    grids = city.geography.areas("grid")
    cats = [c for c in city.categories.values() if not c.sensor_only]
    deps = list(city.departments)
    status, path = None, []
    for step in STORED_STEPS:
        after = lifecycle.apply(status, Action(step)).status.value
        path.append((step, status, after))
        status = after
    t0 = datetime.now(UTC) - timedelta(days=400)
    tm = (lambda v: to_db_time(v, "sqlite")) if dialect == "sqlite" else (lambda v: v)
    a_cols = ("case_id", "department", "role", "grid_code", "assigned_at", "due_at", "accepted_at",
              "accepted_on_time", "resolved_at", "resolved_on_time", "finished_at", "handling_s")
    with engine.connect() as conn:
        first = (conn.exec_driver_sql("SELECT max(id) FROM cases").scalar() or 0) + 1
    started = time.perf_counter()
    for lo in range(0, n, chunk):
        cases, events, assigned = [], [], []
        for i in range(lo, min(n, lo + chunk)):
            cid = first + i
            g = grids[i % len(grids)]
            cat = cats[i % len(cats)]
            dep = deps[i % len(deps)]
            at = t0 + timedelta(seconds=30 * i)
            times = [at + timedelta(minutes=10 * j) for j in range(len(STORED_STEPS))]
            due = at + timedelta(days=3)
            row = {"source": source, "external_id": f"stored-{i}", "category": cat.code, "grade": cat.default_grade,
                   "title": f"存量案件 {i}", "description": "路面破损，影响通行，请尽快处理。", "address": f"{g.name} {i % 97} 号",
                   "reporter_name": None, "reporter_phone": None, "lon": g.centroid[0], "lat": g.centroid[1],
                   "district_code": city.county_code, "street_code": g.code[:9], "community_code": g.code[:12],
                   "grid_code": g.code, "located": True, "status": status, "departments": f'["{dep}"]',
                   "onsite": False, "overdue": False, "due_provisional": False, "suspended_at": None, "warned": False,
                   "escalated": False, "rating": None, "flags": None, "drill": False, "reported_at": tm(at),
                   "accept_due_at": tm(at + timedelta(hours=2)), "due_at": tm(due), "accepted_at": tm(times[3]),
                   "resolved_at": tm(times[4]), "closed_at": None, "dispatched_at": tm(times[2]), "evaluated_at": None,
                   "updated_at": tm(times[4]), "created_at": tm(at)}
            cases.append((cid, *(row[c] for c in CASE_COLUMNS)))
            for (step, before, after), when in zip(path, times, strict=True):
                events.append((cid, step, step, source, tm(when), tm(when), before, after, None,
                               f'["{dep}"]' if step == "dispatch" else None, None, None,
                               tm(due) if step == "report" else None))
            assigned.append((cid, dep, "lead", g.code, tm(times[2]), tm(at + timedelta(hours=2)), tm(times[3]), True,
                             tm(times[4]), True, tm(times[4]), (times[4] - times[2]).total_seconds()))
        with engine.begin() as conn:
            _bulk(conn, Case.__table__.name, ("id", *CASE_COLUMNS), cases)
            _bulk(conn, CaseEvent.__table__.name, EVENT_COLUMNS, events)
            _bulk(conn, CaseAssignment.__table__.name, a_cols, assigned)
        done = min(n, lo + chunk)
        took = time.perf_counter() - started
        print(f"\r  filling the store: {done:,} / {n:,} cases ({done / took:,.0f}/s)", end="", flush=True)
    with engine.begin() as conn:
        if dialect == "postgresql":  # explicit ids: move the sequence past them
            conn.exec_driver_sql("SELECT setval(pg_get_serial_sequence('cases', 'id'), (SELECT max(id) FROM cases))")
    # settled as a store that has been running: statistics gathered, the bulk load written out of the WAL
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if dialect == "postgresql":
            for t in (Case.__table__.name, CaseEvent.__table__.name, CaseAssignment.__table__.name):
                conn.exec_driver_sql(f"VACUUM ANALYZE {t}")
        else:
            conn.exec_driver_sql("ANALYZE")
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    print(flush=True)
    return time.perf_counter() - started


def _bulk(conn, table: str, columns, rows) -> None:
    if conn.dialect.name == "postgresql":
        cur = conn.connection.driver_connection.cursor()
        with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    else:
        marks = ", ".join(["?"] * len(columns))
        conn.exec_driver_sql(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)


def apply_rates(env, worker_cls, n_readings: int, devices: int, n_events: int) -> tuple[float, float]:
    """(readings/s, case events/s) one worker of ``worker_cls`` applies on ``env``'s store: fresh devices and cases."""
    from store.streams import Producer

    tag = uuid.uuid4().hex[:6]
    producer = Producer(env.r, env.settings, source="bench")
    worker = worker_cls(env.city, env.settings, env.engine, env.r, name=f"bench-{tag}")
    producer.sensors(readings(env.city, n_readings, devices, datetime.now(UTC) - timedelta(hours=2), f"r{tag}"))
    took = drain(worker)
    r_rate = worker.totals.readings / took
    producer.cases(case_events(env.city, n_events, datetime.now(UTC) - timedelta(hours=3), f"c{tag}"))
    before = worker.totals.applied
    took = drain(worker)
    return r_rate, (worker.totals.applied - before) / took


RATES_SCRIPT = """
import sys
from bench.ingest import apply_rates, bench_env
from ingest.worker import Worker
n, d, m, url = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] or None
e = bench_env("bench", stream_maxlen=2_000_000, database_url=url)
try:
    print("RATES", *apply_rates(e, Worker, n, d, m), flush=True)
finally:
    e.close()
"""


def tree_at(ref: str, into: Path) -> Path:
    """The whole tree of git commit ``ref`` (its worker, schema, migrations and core alike), unpacked into ``into``."""
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def rates_in(tree: Path, args) -> tuple[float, float]:
    """(readings/s, case events/s) of the worker of ``tree`` on a fresh store, measured in a process of its own
    started in that tree: each side runs its own code through and through."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "STREAM_PREFIX", "VAR_DIR")}
    out = subprocess.run([PY, "-c", RATES_SCRIPT, str(args.readings), str(args.devices), str(args.events),
                          args.postgres or ""], cwd=tree, env={**env, "PYTHONPATH": str(tree)}, capture_output=True,
                         text=True)
    found = [x for x in out.stdout.splitlines() if x.startswith("RATES ")]
    if out.returncode or not found:
        raise SystemExit(f"--against: the worker of {tree} did not run ({out.returncode}): "
                         f"{(out.stderr or out.stdout).strip()[-800:]}")
    _, readings_s, events_s = found[-1].split()
    return float(readings_s), float(events_s)


def table(title: str, cols: list[str], rows: list[tuple[str, list[str]]]) -> None:
    print(title)
    print(f"  {'':<30}" + "".join(f"{c:>20}" for c in cols))
    for label, values in rows:
        print(f"  {label:<30}" + "".join(f"{v:>20}" for v in values), flush=True)


def per_s(x: float) -> str:
    return f"{x:,.0f}/s"


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
    from config.settings import get_settings
    from store.services import get_redis
    from store.streams import Producer

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
    ap.add_argument("--stored", type=int, default=0, help="also measure on a store filled with this many cases")
    ap.add_argument("--against", metavar="REF", help="also measure the whole tree of this git commit (its worker, "
                                                     "schema and core), side by side, each in a process of its own")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of the --against comparison")
    ap.add_argument("--postgres", metavar="URL", help="run on this PostgreSQL database instead of SQLite")
    ap.add_argument("--quick", action="store_true", help="small sizes: a check that the benchmark runs")
    ap.add_argument("--role", default="main", help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=float, default=5000, help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=20, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.role == "load":
        return load_process(args)
    if args.quick:
        args.readings, args.devices, args.events = 4_000, 500, 2_500
        args.probes, args.load, args.rounds = 20, 500, 1
        args.stored = min(args.stored, 5_000)

    from ingest.worker import Worker, tune_gc
    from store.streams import Producer, StreamNames

    env = bench_env("bench", stream_maxlen=2_000_000, database_url=args.postgres)
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
    seconds = 4.0 if args.quick else max(10.0, args.probes / 20 + 5)
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

    def fresh():
        return bench_env("bench", stream_maxlen=2_000_000, database_url=args.postgres)

    # 5. Against another commit's worker ----------------------------------------------------------------
    if args.against:
        figures = {"old": [], "new": []}
        with tempfile.TemporaryDirectory(prefix="gridwatch-against-") as there:
            old_tree = tree_at(args.against, Path(there))
            for _ in range(args.rounds):  # alternating: the machine's other load falls on both alike
                for which, tree in (("old", old_tree), ("new", ROOT)):
                    figures[which].append(rates_in(tree, args))
        best = {k: (max(x[0] for x in v), max(x[1] for x in v)) for k, v in figures.items()}
        table(f"This worker against {args.against}'s, empty {db_kind} store (best of {args.rounds} alternating rounds)",
              [args.against[:12], "this", "this / that"],
              [(label, [per_s(best["old"][i]), per_s(best["new"][i]), f"{best['new'][i] / best['old'][i]:.0%}"])
               for i, label in enumerate(("readings → live state", "case events → SQL + live"))])

    # 6. On a store of N cases ---------------------------------------------------------------------------
    if args.stored:
        stored = fresh()
        try:
            took = fill_store(stored.engine, stored.city, args.stored)
            line(f"filled with {args.stored:,} cases (bulk SQL)", rate(args.stored, took))
            from ingest.rebuild import rebuild_live

            t = time.perf_counter()
            rebuild_live(stored.engine, stored.r, stored.settings.stream_prefix, stored.city.county_code)
            line("its live state rebuilt from SQL (rebuild-live)", rate(args.stored, time.perf_counter() - t))
            empty, full = [], []
            for _ in range(args.rounds):  # alternating: the machine's other load falls on both alike
                e = fresh()
                try:
                    empty.append(apply_rates(e, Worker, args.readings, args.devices, args.events))
                finally:
                    e.close()
                full.append(apply_rates(stored, Worker, args.readings, args.devices, args.events))
        finally:
            stored.close()
        best_empty = [max(x[i] for x in empty) for i in (0, 1)]
        best_full = [max(x[i] for x in full) for i in (0, 1)]
        table(f"This worker on an empty {db_kind} store and on {args.stored:,} stored cases"
              f" (best of {args.rounds} alternating rounds)",
              ["empty", f"{args.stored:,} stored", "stored / empty"],
              [(label, [per_s(best_empty[i]), per_s(best_full[i]), f"{best_full[i] / best_empty[i]:.0%}"])
               for i, label in enumerate(("readings → live state", "case events → SQL + live"))])
    print("Targets: readings ≥ 50,000/s to live state; case events ≥ 10,000/s to SQLite; p99 ≤ 1000 ms under 5,000/s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
