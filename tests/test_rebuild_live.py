"""The live state rebuilt from SQL: by the command, and by the worker when it finds the state missing or behind.
The counters then equal an SQL recount (pandas, here) and what the worker had counted itself."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import orjson

from config.settings import ROOT
from ingest import rebuild
from ingest.worker import Worker
from store.streams import Producer
from tests.checks import assert_live_matches_sql
from tests.events import random_history


def live_snapshot(r, settings) -> dict[str, dict]:
    out = {}
    for key in r.scan_iter(f"{settings.stream_prefix}:live:area:*", count=1000):
        out[key.decode()] = {k.decode(): int(v) for k, v in r.hgetall(key).items() if int(v)}
    return {k: v for k, v in out.items() if v}


def wipe_live(r, settings) -> None:
    keys = [k for k in r.scan_iter(f"{settings.stream_prefix}:live:*", count=1000)]
    r.delete(*keys)


def _stored(settings, r, engine, city, n=400, seed=3) -> Worker:
    w = Worker(city, settings, engine, r, name="w1")
    assert w.watch.check(force=True) is None  # as run() does at start: a new, empty system, marked as such
    Producer(r, settings, source="test").cases(random_history(city, n, seed=seed))
    while w.run_once(50):
        pass
    return w


def test_rebuild_live_gives_the_counters_sql_and_the_worker_agree_on(settings, r, engine, city):
    _stored(settings, r, engine, city)
    counted = live_snapshot(r, settings)
    assert counted
    wipe_live(r, settings)
    assert live_snapshot(r, settings) == {}
    seen = []
    report = rebuild.rebuild_live(engine, r, settings.stream_prefix, city.county_code, lambda d, t: seen.append((d, t)))
    assert report["cases"] == 400 and seen[-1] == (400, 400)
    assert live_snapshot(r, settings) == counted
    assert_live_matches_sql(r, settings, engine, city)
    assert orjson.loads(r.get(rebuild.marker_key(settings.stream_prefix)))["cases"] == 400


def test_the_worker_rebuilds_a_lost_live_state_by_itself(settings, r, engine, city):
    _stored(settings, r, engine, city, n=150, seed=5)
    counted = live_snapshot(r, settings)
    wipe_live(r, settings)  # as a Redis without persistence would after a restart
    w = Worker(city, settings, engine, r, name="w2")
    assert w.watch.check(force=True)["cases"] == 150  # what run() does at start
    assert live_snapshot(r, settings) == counted
    assert w.watch.check(force=True) is None  # nothing to do now


def test_the_worker_rebuilds_a_drifted_count_after_two_checks(settings, r, engine, city):
    _stored(settings, r, engine, city, n=120, seed=6)
    counted = live_snapshot(r, settings)
    r.hincrby(f"{settings.stream_prefix}:live:area:{city.county_code}", "total", -7)  # drift
    w = Worker(city, settings, engine, r, name="w3")
    assert w.watch.check(force=True) is None  # once may be a batch in flight elsewhere
    assert w.watch.check(force=True)["cases"] == 120
    assert live_snapshot(r, settings) == counted


def test_the_command_asks_the_running_worker_and_shows_its_progress(settings, r, engine, city):
    _stored(settings, r, engine, city, n=80, seed=8)
    counted = live_snapshot(r, settings)
    wipe_live(r, settings)
    r.set(rebuild.marker_key(settings.stream_prefix), b"{}")  # present: only the request makes it rebuild now
    env = {**os.environ, "REDIS_URL": settings.redis_url, "DATABASE_URL": settings.database_url,
           "STREAM_PREFIX": settings.stream_prefix, "VAR_DIR": str(settings.var_dir), "PYTHONPATH": str(ROOT)}
    cli = subprocess.Popen([sys.executable, "-m", "ingest", "rebuild-live", "--timeout", "60"], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    w = Worker(city, settings, engine, r, name="w4")
    deadline = time.monotonic() + 30
    while not r.exists(rebuild.request_key(settings.stream_prefix)) and time.monotonic() < deadline:
        time.sleep(0.05)
    w.run_once(10)  # the worker notices the request between two batches
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 0, err
    assert orjson.loads(out)["cases"] == 80 and "asked the worker" in err
    assert live_snapshot(r, settings) == counted


def test_the_command_here_rebuilds_without_a_worker(settings, r, engine, city):
    _stored(settings, r, engine, city, n=60, seed=9)
    counted = live_snapshot(r, settings)
    wipe_live(r, settings)
    env = {**os.environ, "REDIS_URL": settings.redis_url, "DATABASE_URL": settings.database_url,
           "STREAM_PREFIX": settings.stream_prefix, "VAR_DIR": str(settings.var_dir), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "ingest", "rebuild-live", "--here"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["cases"] == 60
    assert live_snapshot(r, settings) == counted
