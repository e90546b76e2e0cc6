"""The worker against a real Redis and a real SQL database: apply, idempotency, crash safety, hostile input."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import timedelta

import orjson
import pandas as pd
import pytest
from sqlalchemy import func, select

from config.settings import ROOT
from ingest.scheduler import sla_sweep
from ingest.worker import Worker
from store.schema import Case, CaseEvent, Device, HeldEvent, SensorAlarm
from store.streams import Producer, StreamNames, read_dead
from tests.checks import assert_live_matches_sql, live_area, sql_frame
from tests.events import NOW, ev, public_categories, random_history, report


def drain(worker: Worker) -> None:
    while worker.run_once(50):
        pass


def test_history_applies_and_live_state_matches_sql(settings, r, engine, city):
    events = random_history(city, 300, seed=1)
    Producer(r, settings, source="test").cases(events)
    w = Worker(city, settings, engine, r, name="w1")
    drain(w)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Case)) == 300
        assert conn.scalar(select(func.count()).select_from(CaseEvent)) == len(events)
    assert w.totals.dead == 0
    assert_live_matches_sql(r, settings, engine, city)


def test_same_events_twice_change_nothing(settings, r, engine, city):
    events = random_history(city, 120, seed=2)
    p = Producer(r, settings, source="test")
    w = Worker(city, settings, engine, r, name="w1")
    p.cases(events)
    drain(w)
    before = sql_frame(engine).sort_values("id").reset_index(drop=True)
    live_before = live_area(r, settings, city.county_code)
    p.cases(events)  # the same (source, external id, event) again, as a feed that re-sends would
    p.cases(random.Random(3).sample(events, len(events)))  # and again in another order
    drain(w)
    after = sql_frame(engine).sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(CaseEvent)) == len(events)
    assert live_area(r, settings, city.county_code) == live_before
    assert w.totals.duplicates >= len(events)


def test_illegal_transition_is_dead_lettered_with_reason(settings, r, engine, city):
    settings = settings.model_copy(update={"hold_seconds": 0.5})
    g = city.geography.areas("grid")[0]
    p = Producer(r, settings, source="test")
    p.cases([report(city, "x1", grid=g), ev("x1", "close", 1), ev("x2", "accept", 1), ev("x1", "register", 2)])
    w = Worker(city, settings, engine, r, name="w1")
    drain(w)
    # A move its case's status refuses, with nothing older pending, is dead at once; an event whose case is not
    # there yet waits for its report (HOLD_SECONDS) and only then is dead.
    dead = read_dead(r, settings)
    assert [d["reason"] for d in dead] == ["lifecycle: cannot close a case that is reported; allowed from: resolved "
                                           "(case test/x1)"]
    with engine.connect() as conn:
        assert conn.execute(select(HeldEvent.external_id, HeldEvent.event_key)).all() == [("x2", "accept-1")]
    time.sleep(0.6)
    drain(w)
    dead = read_dead(r, settings)
    reasons = sorted(d["reason"] for d in dead)
    assert len(dead) == 2
    assert "cannot close a case that is reported" in reasons[1] or "cannot close a case that is reported" in reasons[0]
    assert any("has not been reported" in x and "held 0 s for its predecessors" in x for x in reasons)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(HeldEvent)) == 0
    with engine.connect() as conn:
        assert conn.scalar(select(Case.status).where(Case.external_id == "x1")) == "registered"
    # The raw payload is kept as it was sent.
    raw = [orjson.loads(d["raw"]) for d in dead]
    assert {x["external_id"] for x in raw} == {"x1", "x2"}


def test_grid_assignment_and_unlocated_cases(settings, r, engine, city):
    grids = city.geography.areas("grid")
    g = grids[10]
    p = Producer(r, settings, source="test")
    p.cases([
        report(city, "in", grid=g),
        report(city, "zero", lon=0.0, lat=0.0),  # a placeholder, not a place
        report(city, "sea", lon=113.70, lat=22.40),  # a real place outside the district
        report(city, "none"),
        report(city, "given", grid_code=grids[20].code),
    ])
    drain(Worker(city, settings, engine, r, name="w1"))
    with engine.connect() as conn:
        rows = {x.external_id: x for x in conn.execute(select(Case.external_id, Case.grid_code, Case.located, Case.lon))}
    assert rows["in"].grid_code == g.code and rows["in"].located
    assert rows["given"].grid_code == grids[20].code
    for ext in ("zero", "sea", "none"):
        assert rows[ext].grid_code is None and not rows[ext].located, ext
    assert rows["sea"].lon == pytest.approx(113.70)  # kept, never dropped
    district = live_area(r, settings, city.county_code)
    streets = sum(live_area(r, settings, s.code).get("total", 0) for s in city.geography.areas("street"))
    assert district["total"] == 5 and streets == 2


HOSTILE = [
    (b"{not json", "not valid JSON"),
    (b"[1, 2, 3]", "expected a JSON object"),
    (b'"just a string"', "expected a JSON object"),
    (orjson.dumps({"source": "test", "external_id": "t1", "event": "report", "occurred_at": "yesterday",
                   "category": "0101", "title": "x"}), "occurred_at"),
    (orjson.dumps({"source": "test", "external_id": "t2", "event": "report", "occurred_at": NOW.isoformat(),
                   "category": "0101", "title": "x", "grade": "severe"}), "grade"),
    (orjson.dumps({"source": "test", "event": "report"}), "external_id: required"),
    (orjson.dumps({"source": "test", "external_id": "t3", "event": "report", "occurred_at": NOW.isoformat(),
                   "category": "0101", "title": "x", "lon": 200.0, "lat": 95.0}), "lon"),
    (orjson.dumps({"source": "test", "external_id": "t4", "event": "report", "occurred_at": NOW.isoformat(),
                   "category": "ZZ99", "title": "x"}), "unknown category"),
    (orjson.dumps({"source": "test", "external_id": "t5", "event": "report", "occurred_at": NOW.isoformat(),
                   "category": "0101", "title": "长" * 201}), "limit of 200"),
    (orjson.dumps({"source": "test", "external_id": "t6", "event": "report", "occurred_at": NOW.isoformat(),
                   "category": "0101", "title": "bad\x00null\x1bescape"}), "control characters"),
    (orjson.dumps({"source": "test", "external_id": "t7", "event": "report", "occurred_at": NOW.isoformat(),
                   "category": "0101", "title": "big", "description": "描" * (1024 * 1024)}), "description"),
    (orjson.dumps({"source": "test", "external_id": "t8", "event": "report", "occurred_at": NOW.isoformat(),
                   "category": "0101", "title": "x", "departments": "cg"}), "departments"),
]


def test_hostile_stream_entries_are_dead_lettered_and_the_rest_applied(settings, r, engine, city):
    names = StreamNames.of(settings)
    cat = public_categories(city)[0].code
    g = city.geography.areas("grid")[0]
    good = []
    for i, (payload, _) in enumerate(HOSTILE):
        payload = payload.replace(b'"0101"', f'"{cat}"'.encode())
        r.xadd(names.cases, {b"d": payload, b"s": b"hostile"})
        rec = report(city, f"good-{i}", grid=g, cat=public_categories(city)[0])
        good.append(rec)
        r.xadd(names.cases, {b"d": orjson.dumps(rec), b"s": b"test"})
    r.xadd(names.cases, {b"other": b"field"})  # not from a producer at all
    html = report(city, "html", grid=g, title="<script>alert(1)</script><img src=x onerror=alert(2)>",
                  description="<b>bold</b>\n第二行")
    r.xadd(names.cases, {b"d": orjson.dumps(html), b"s": b"test"})
    w = Worker(city, settings, engine, r, name="w1")
    drain(w)
    dead = read_dead(r, settings, count=100)
    # A JSON array is a batch: each of its three items is a record of its own, and each is refused.
    expected_dead = sum(3 if p.startswith(b"[") else 1 for p, _ in HOSTILE) + 1
    assert len(dead) == expected_dead
    by_reason = " | ".join(d["reason"] for d in dead)
    for _, expected in HOSTILE:
        assert expected in by_reason, expected
    assert "no 'd' field" in by_reason
    assert int(r.get(names.dead_count)) == expected_dead
    assert sorted(int(d["index"]) for d in dead if d.get("index") is not None) == [0, 1, 2]
    big = next(d for d in dead if int(d["size"]) > 1024 * 1024)
    assert big["source"] == "hostile" and big.get("truncated") == "1" and big.get("sha256")
    with engine.connect() as conn:
        stored = dict(conn.execute(select(Case.external_id, Case.title)).all())
    assert set(stored) == {x["external_id"] for x in good} | {"html"}
    assert stored["html"] == html["title"]  # stored as text, verbatim
    # Nothing left pending: every entry was acknowledged, applied or dead-lettered.
    assert r.xpending(names.cases, settings.consumer_group)["pending"] == 0


def test_sensor_alarms_open_cases_and_clear(settings, r, engine, city):
    st = city.sensor_types["smoke"]
    g = city.geography.areas("grid")[3]
    lon, lat = g.centroid
    t0 = NOW - timedelta(minutes=30)

    def reading(dev, minutes, value):
        return {"device_id": dev, "type": "smoke", "value": value, "ts": (t0 + timedelta(minutes=minutes)).isoformat(),
                "lon": lon, "lat": lat}

    high = st.threshold * 1.5
    low = st.clear_below / 2
    rs = [reading("s1", 0, low), reading("s1", 1, high), reading("s1", 2, high), reading("s2", 0, low),
          reading("s3", 0, high)]
    p = Producer(r, settings, source="test")
    p.sensors(rs)
    w = Worker(city, settings, engine, r, name="w1")
    drain(w)
    p.sensors(rs)  # re-sent: nothing new
    drain(w)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Device)) == 3
        alarms = conn.execute(select(SensorAlarm.device_id, SensorAlarm.cleared_at, SensorAlarm.case_id)).all()
        cases = conn.execute(select(Case.source, Case.category, Case.grid_code)).all()
    assert sorted(a.device_id for a in alarms) == ["s1", "s3"]
    assert all(a.cleared_at is None for a in alarms)
    assert all(a.case_id is not None for a in alarms)  # each alarm points at the case it opened
    assert sorted(cases) == sorted([("sensor", st.category, g.code)] * 2)
    assert live_area(r, settings, g.code)["alarms"] == 2
    assert live_area(r, settings, city.county_code)["alarms"] == 2
    p.sensors([reading("s1", 3, low)])
    drain(w)
    assert live_area(r, settings, g.code)["alarms"] == 1
    with engine.connect() as conn:
        cleared = conn.scalar(select(SensorAlarm.cleared_at).where(SensorAlarm.device_id == "s1"))
    assert cleared == t0 + timedelta(minutes=3)
    assert orjson.loads(r.hget(f"{settings.stream_prefix}:live:device", "s1"))["v"] == low


def test_sla_sweep_marks_overdue_once(settings, r, engine, city):
    g = city.geography.areas("grid")[0]
    p = Producer(r, settings, source="test")
    past = NOW - timedelta(hours=3)
    p.cases([report(city, "late", grid=g, when=past, due_at=(NOW - timedelta(hours=1)).isoformat()),
             report(city, "fine", grid=g, when=past, due_at=(NOW + timedelta(hours=5)).isoformat()),
             report(city, "done", grid=g, when=past, due_at=(NOW - timedelta(hours=1)).isoformat()),
             ev("done", "onsite", -170)])
    w = Worker(city, settings, engine, r, name="w1")
    drain(w)
    assert live_area(r, settings, g.code).get("overdue", 0) == 0
    assert sla_sweep(settings)["overdue"] == 1
    drain(w)
    assert sla_sweep(settings)["overdue"] == 0
    assert live_area(r, settings, g.code)["overdue"] == 1
    with engine.connect() as conn:
        assert conn.scalar(select(Case.overdue).where(Case.external_id == "late")) is True
        assert conn.scalar(select(CaseEvent.action).where(CaseEvent.action == "overdue")) == "overdue"


def _worker_process(settings, name: str) -> subprocess.Popen:
    env = {**os.environ, "REDIS_URL": settings.redis_url, "DATABASE_URL": settings.database_url,
           "STREAM_PREFIX": settings.stream_prefix, "VAR_DIR": str(settings.var_dir), "CLAIM_IDLE_MS": "500",
           "WORKER_BATCH": "3", "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "ingest", "worker"], cwd=ROOT, env=env)


@pytest.mark.slow
def test_sigkill_mid_batch_loses_nothing_and_duplicates_nothing(settings, r, engine, city):
    events = random_history(city, 3000, seed=7)
    Producer(r, settings, source="test").cases(events)
    names = StreamNames.of(settings)
    from store.streams import ensure_groups

    ensure_groups(r, settings)
    caught = False
    for _attempt in range(5):  # the kill can land just after an acknowledgement; then try again
        proc = _worker_process(settings, "victim")
        deadline = time.monotonic() + 120
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                # Kill it while it holds entries it has read but not acknowledged, after it has committed some.
                with engine.connect() as conn:
                    stored = conn.scalar(select(func.count()).select_from(CaseEvent))
                if stored and r.xpending(names.cases, settings.consumer_group)["pending"] > 0:
                    proc.send_signal(signal.SIGKILL)
                    break
                time.sleep(0.002)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        with engine.connect() as conn:
            stored = conn.scalar(select(func.count()).select_from(CaseEvent))
        if r.xpending(names.cases, settings.consumer_group)["pending"] > 0 and stored < len(events):
            caught = True
            break
    assert caught, "the worker was never caught holding unacknowledged entries"
    time.sleep(0.6)  # longer than CLAIM_IDLE_MS: the dead consumer's entries are now reclaimable
    rescuer = Worker(city, settings, engine, r, name="rescuer")
    drain(rescuer)
    assert r.xpending(names.cases, settings.consumer_group)["pending"] == 0
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(CaseEvent)) == len(events)
        assert conn.scalar(select(func.count()).select_from(Case)) == 3000
        dupes = conn.execute(
            select(CaseEvent.case_id, CaseEvent.event_key, func.count()).group_by(CaseEvent.case_id, CaseEvent.event_key)
            .having(func.count() > 1)
        ).all()
    assert dupes == []
    assert rescuer.totals.dead == 0
    assert_live_matches_sql(r, settings, engine, city)


def test_silent_device_raises_offline_alarm_and_clears_when_heard(settings, r, engine, city):
    from ingest.scheduler import device_watch

    st = city.sensor_types["gas"]
    g = city.geography.areas("grid")[7]
    lon, lat = g.centroid
    t0 = NOW - timedelta(hours=2)
    p = Producer(r, settings, source="test")
    p.sensors([
        {"device_id": "quiet", "type": "gas", "value": 0.0, "ts": t0.isoformat(), "lon": lon, "lat": lat},
        {"device_id": "chatty", "type": "gas", "value": 0.0, "ts": NOW.isoformat(), "lon": lon, "lat": lat},
    ])
    w = Worker(city, settings, engine, r, name="w1")
    drain(w)
    # Silent for 2 h; offline after heartbeat × factor seconds (computed here from the configuration).
    limit = st.heartbeat_s * settings.device_offline_factor
    assert limit < 2 * 3600
    assert device_watch(settings, now=NOW, city=city) == 1
    drain(w)
    assert device_watch(settings, now=NOW, city=city) == 0  # already offline: nothing new
    assert live_area(r, settings, g.code)["offline"] == 1
    assert live_area(r, settings, city.county_code)["offline"] == 1
    with engine.connect() as conn:
        rows = conn.execute(select(SensorAlarm.device_id, SensorAlarm.kind, SensorAlarm.cleared_at)).all()
    assert [(x.device_id, x.kind, x.cleared_at) for x in rows] == [("quiet", "offline", None)]
    # Heard from again: the offline alarm clears; a normal reading opens no threshold alarm.
    p.sensors([{"device_id": "quiet", "type": "gas", "value": 0.0, "ts": (NOW + timedelta(seconds=5)).isoformat()}])
    drain(w)
    assert live_area(r, settings, g.code)["offline"] == 0
    with engine.connect() as conn:
        cleared = conn.scalar(select(SensorAlarm.cleared_at).where(SensorAlarm.kind == "offline"))
    assert cleared == NOW + timedelta(seconds=5)


def test_live_events_overtake_a_bulk_import_backlog(settings, r, engine, city):
    """An import's backlog never holds up live events: they are applied in the very next loop."""
    bulk = random_history(city, 2000, seed=11)  # ~7,000 events of an import, queued first
    p = Producer(r, settings, source="test")
    p.bulk(bulk)
    g = city.geography.areas("grid")[2]
    p.cases([report(city, "live-1", grid=g)])
    w = Worker(city, settings, engine, r, name="w1")
    w.run_once(50)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Case).where(Case.external_id == "live-1")) == 1
        applied = conn.scalar(select(func.count()).select_from(CaseEvent))
    # One loop applied the live event and one bounded slice of the import (bulk_batch entries of 100 records).
    assert applied <= 1 + settings.bulk_batch * 100 < len(bulk)
    drain(w)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(CaseEvent)) == len(bulk) + 1
    assert_live_matches_sql(r, settings, engine, city)
