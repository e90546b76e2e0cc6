"""Screen benchmark: prints how fast the big screen follows the city, with a same-run baseline.

    python -m bench.screen [--stored 1000000] [--open 20000] [--events 60] [--against REF] [--quick]

- server time per update: the /screen poll callback's work (the snapshot: live state, ticker, SLA board; the slow
  part cached as in production), over a store of ``--stored`` cases with ``--open`` of them open; baseline: the
  district's live summary alone (one Redis pipeline); with ``--against REF`` the same timed by the whole tree of
  commit REF on the same store, each side in a process of its own, in alternating rounds;
- bytes per update: the poll responses as the browser received them (Chromium's network log);
- event-to-screen latency: a case pushed through the HTTP push API until it is in the ticker of /screen in a real
  headless Chromium, p50/p95 over ``--events`` events.

Targets: p95 ≤ 1 s event-to-screen; ≤ 50 ms server time per update; ≤ 20 KB per update at 126 grids.
Uses an embedded Redis and a SQLite file in a temporary folder (or REDIS_URL / DATABASE_URL). Not a test.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from werkzeug.serving import make_server

from app import create_app
from bench.common import bench_env, line, pct
from bench.ingest import ROOT, child_env, tree_at
from bench.rankings_data import generate
from dashboard import auth
from ingest.worker import Worker, tune_gc
from store.streams import Producer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.screen", description=__doc__.split("\n\n")[0])
    ap.add_argument("--stored", type=int, default=1_000_000, help="stored cases (default 1,000,000)")
    ap.add_argument("--open", type=int, default=20_000, help="open cases among them (default 20,000)")
    ap.add_argument("--events", type=int, default=60, help="pushed cases timed to the screen (default 60, ≥ 50)")
    ap.add_argument("--against", metavar="REF", help="also time the snapshot of the whole tree of this git commit "
                                                      "on the same store, side by side (alternating rounds)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of the --against comparison")
    ap.add_argument("--quick", action="store_true", help="small sizes: a check that the benchmark runs")
    args = ap.parse_args(argv)
    if args.quick:
        args.stored, args.open, args.events, args.rounds = 2_000, 200, 5, 1
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        ap.error("needs chromium and chromedriver (Debian packages; `make test` installs them)")

    env = bench_env("screen", feed_tokens={"citizen": secrets.token_urlsafe(32)})  # the pushes' source
    settings, r, engine, city = env.settings, env.r, env.engine, env.city
    print(f"Gridwatch screen benchmark — {os.cpu_count()} cores, {engine.dialect.name}, "
          f"{len(city.geography.areas('grid'))} grids", flush=True)
    t = time.perf_counter()
    fill(settings, r, engine, city, args.stored, args.open)
    line("set-up (stored cases written, open cases applied)", f"{time.perf_counter() - t:8.1f} s")

    print("Server time per update (the poll callback's work, each tree in a process of its own)", flush=True)
    trees = [("this", ROOT)]
    with tempfile.TemporaryDirectory(prefix="gridwatch-against-") as there:
        if args.against:
            trees.insert(0, (args.against[:12], tree_at(args.against, Path(there))))
        figures: dict[str, list[dict]] = {name: [] for name, _ in trees}
        for _ in range(args.rounds if args.against else 1):  # alternating: other load falls on both alike
            for name, tree in trees:
                figures[name].append(server_time_in(tree, settings))
    best_of = {name: {k: min(run[k] for run in runs) for k in runs[0]} for name, runs in figures.items()}
    for name, best in best_of.items():
        line(f"{name}: baseline, the district's live summary (one pipeline)",
             f"p50 {best['base_p50']:6.1f} ms   p95 {best['base_p95']:6.1f} ms")
        line(f"{name}: slow part, once per 30 s per process", f"{best['slow']:8.1f} ms")
        line(f"{name}: snapshot per update (slow part cached)",
             f"p50 {best['p50']:6.1f} ms   p95 {best['p95']:6.1f} ms   max {best['max']:6.1f} ms")
        line(f"{name}: snapshot JSON (fast part)", f"{best['kb']:6.1f} KB")
    if args.against:
        old, new = best_of.values()
        line(f"this / {args.against[:12]}: snapshot p50, p95",
             f"{new['p50'] / old['p50']:.0%}   {new['p95'] / old['p95']:.0%}   (each figure the best of {args.rounds} rounds)")
    browser_figures(settings, engine, r, city, args.events)
    env.close()
    return 0


def fill(settings, r, engine, city, stored: int, n_open: int) -> None:
    """``stored - n_open`` closed cases straight to SQL, ``n_open`` open ones through the streams and a worker."""
    now = datetime.now(UTC).replace(microsecond=0)
    generate(engine, city, max(0, stored - n_open), now)
    rnd = random.Random(3)
    grids = city.geography.areas("grid")
    cats = [c for c in city.categories.values() if not c.sensor_only]
    recs = []
    for i in range(n_open):
        g = rnd.choice(grids)
        rep = now - timedelta(minutes=rnd.randint(5, 3 * 24 * 60))
        recs.append({"source": "bench", "external_id": f"open{i}", "event": "report", "occurred_at": rep.isoformat(),
                     "category": rnd.choice(cats).code, "title": f"在办案件 {i}", "grid_code": g.code,
                     "lon": g.centroid[0], "lat": g.centroid[1], "grade": rnd.choice((1, 1, 1, 2, 2, 3, 4)),
                     "due_at": (rep + timedelta(minutes=rnd.randint(60, 5 * 24 * 60))).isoformat()})
    Producer(r, settings, source="bench").cases(recs)
    worker = Worker(city, settings, engine, r, name="bench-screen")
    tune_gc()
    while worker.run_once(20):
        pass


# Runs in the tree being measured (this one, or --against's), on the store set up above: only names both trees have.
SERVER_SCRIPT = r"""
import statistics, sys, time
import orjson
from dash import no_update
from flask import g
from app import create_app
from config.settings import get_settings
from dashboard import auth, context, live
from dashboard import screen as data
from layouts.screen import snapshot

settings = get_settings()
app = create_app(settings)
with app.server.test_request_context("/screen"):
    city = context.city()
    g.gw_viewer, g.gw_csrf = auth.Viewer("bench-screen", "screen", city.geography.district.code, None), "bench"
    r, engine = context.redis_client(), context.engine()
    base = []
    for _ in range(50):
        t = time.perf_counter()
        live.summary(r, settings, city.geography.district.code)
        base.append(time.perf_counter() - t)
    t = time.perf_counter()
    data.SLOW.get(engine, city, settings)
    slow = time.perf_counter() - t
    took, sizes, slow_version = [], [], None
    for _ in range(200):
        t = time.perf_counter()
        fast, _slow, slow_out, _digest, _beat = snapshot(None, slow_version)  # the whole fast part, every time
        took.append(time.perf_counter() - t)
        sizes.append(len(orjson.dumps(fast)))
        if slow_out is not no_update:
            slow_version = slow_out
q = lambda v, p: sorted(v)[min(len(v) - 1, round(p * (len(v) - 1)))] * 1000
print("FIGURES", orjson.dumps({"base_p50": statistics.median(base) * 1000, "base_p95": q(base, 0.95),
      "slow": slow * 1000, "p50": statistics.median(took) * 1000, "p95": q(took, 0.95), "max": max(took) * 1000,
      "kb": statistics.median(sizes) / 1024}).decode(), flush=True)
"""


def server_time_in(tree: Path, settings) -> dict:
    """The poll callback's server time, measured by the code of ``tree`` in a process of its own."""
    out = subprocess.run([sys.executable, "-c", SERVER_SCRIPT], cwd=tree, capture_output=True, text=True,
                         env={**child_env(settings), "PYTHONPATH": str(tree)})
    found = [x for x in out.stdout.splitlines() if x.startswith("FIGURES ")]
    if out.returncode or not found:
        raise SystemExit(f"the snapshot of {tree} did not run ({out.returncode}): "
                         f"{(out.stderr or out.stdout).strip()[-800:]}")
    return orjson.loads(found[-1].split(" ", 1)[1])


def browser_figures(settings, engine, r, city, events: int) -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = create_app(settings)
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    port = server.server_port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stop = threading.Event()

    def work():
        w = Worker(city, settings, engine, r, name="bench-screen-live")
        while not stop.is_set():
            w.run_once(50)

    threading.Thread(target=work, daemon=True).start()
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--disable-dev-shm-usage"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 1920, "height": 1080, "deviceScaleFactor": 1, "mobile": False})
    try:
        token = auth.create_screen_link(engine, city, "bench-wall", city.geography.district.code)
        driver.get(f"http://127.0.0.1:{port}/s/{token}")  # a wall's link logs it in and opens /screen
        end = time.time() + 30
        while time.time() < end and "/screen" not in driver.current_url:
            time.sleep(0.2)
        end = time.time() + 60
        while time.time() < end and not driver.execute_script(
                "return document.querySelectorAll('#scr-ticker .scr-tk').length"):
            time.sleep(0.2)
        # the browser notes when each title first shows in the ticker (its clock and ours are the machine's)
        driver.execute_script("""
            window.__seen = {};
            new MutationObserver(() => {
              document.querySelectorAll('#scr-ticker .scr-tx').forEach(e => {
                const m = e.textContent.match(/BENCH-(\\d+)/);
                if (m && !(m[1] in window.__seen)) window.__seen[m[1]] = Date.now();
              });
            }).observe(document.getElementById('scr-ticker'), {childList: true, subtree: true, characterData: true});
        """)
        driver.get_log("performance")  # drop the page load
        grids = city.geography.areas("grid")
        cat = next(c.code for c in city.categories.values() if not c.sensor_only)
        sent: dict[str, float] = {}
        rnd = random.Random(9)
        print(f"Event-to-screen: {events} cases pushed one by one, 0.3–0.9 s apart", flush=True)
        for i in range(events):
            g = rnd.choice(grids)
            rec = {"source": "citizen", "external_id": f"bench-push-{i}-{time.time_ns()}", "event": "report",
                   "occurred_at": datetime.now(UTC).isoformat(), "category": cat, "title": f"BENCH-{i}",
                   "grid_code": g.code, "lon": g.centroid[0], "lat": g.centroid[1], "grade": 4}
            sent[str(i)] = time.time() * 1000
            requests.post(f"http://127.0.0.1:{port}/api/v1/ingest/cases", data=orjson.dumps([rec]),
                          headers={"Content-Type": "application/json", "X-Gridwatch-Source": "citizen",
                                   "Authorization": f"Bearer {settings.feed_token('citizen')}"},
                          timeout=10).raise_for_status()
            time.sleep(rnd.uniform(0.3, 0.9))
        time.sleep(3)
        seen = driver.execute_script("return window.__seen")
        lat = [(seen[k] - sent[k]) / 1000 for k in sent if k in seen]
        missed = len(sent) - len(lat)
        sizes = []
        pending: dict[str, str] = {}
        for entry in driver.get_log("performance"):
            msg = orjson.loads(entry["message"])["message"]
            if msg["method"] == "Network.responseReceived" and "_dash-update-component" in msg["params"]["response"]["url"]:
                pending[msg["params"]["requestId"]] = msg["params"]["response"]["url"]
            elif msg["method"] == "Network.loadingFinished" and msg["params"]["requestId"] in pending:
                sizes.append(msg["params"]["encodedDataLength"])
        line("event → visible in the ticker",
             f"p50 {statistics.median(lat):5.2f} s   p95 {pct(lat, 0.95):5.2f} s   max {max(lat):5.2f} s   "
             f"({len(lat)} seen, {missed} not seen)")
        if sizes:
            changed = [s for s in sizes if s > 1024]
            line("bytes per update (poll responses, as received)",
                 f"median {statistics.median(sizes) / 1024:5.1f} KB   max {max(sizes) / 1024:5.1f} KB   "
                 f"({len(sizes)} responses; {len(changed)} carried data, median "
                 f"{(statistics.median(changed) if changed else 0) / 1024:.1f} KB; the rest said 'nothing new')")
        print("Targets: p95 ≤ 1 s event-to-screen; ≤ 50 ms server time per update; ≤ 20 KB per update.")
    finally:
        driver.quit()
        stop.set()
        server.shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
