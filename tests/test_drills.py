"""Drills (演练): a replay's cases, alarms and devices stay out of every figure unless a view asks for them, and the
wall says a drill is running.

The originals are a simulated stretch of the last hours; the drill is their export replayed into the same store. What
a figure should be is counted with pandas from the raw tables, drills told apart by their external ids (the run id
prefix), not by the mark under test.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pandas as pd
import pytest

from core.livestate import LiveKeys, drill_prefix
from dashboard import live
from ingest.feeds.export import export_period
from ingest.feeds.replay import DrillMark, drill_device_id, replay_records
from ingest.feeds.simulator import profile
from store.streams import Producer, StreamNames
from tests import accounts
from tests.simulated import apply_all, simulate

TZ = ZoneInfo("Asia/Shanghai")


def _area_hashes(r, settings, city, prefix=None) -> dict[str, dict]:
    keys = LiveKeys(prefix or settings.stream_prefix)
    codes = [city.geography.district.code, *(a.code for a in city.geography.areas("street"))]
    return {c: r.hgetall(keys.area(c)) for c in codes}


@pytest.fixture
def drilled(city, settings, engine, r):
    """Originals of the last hours plus a smoke alarm of a real device; then the same period replayed as a drill,
    with a drill device's smoke alarm. Returns (figures before the drill, the replay's report, now, the grid)."""
    now = datetime.now(UTC).replace(microsecond=0)
    start = (now - timedelta(hours=3)).astimezone(TZ)
    # the simulator follows the time of day: scale its rate so the stretch holds ~190 cases at any hour
    originals = simulate(city, hours=2, rate=0.01 / profile(start + timedelta(hours=1)), start=start, seed=11)
    assert len(originals) > 100
    Producer(r, settings, source="simulator").cases(originals)
    grid = city.geography.areas("grid")[2]
    smoke = city.sensor_types["smoke"]
    real_reading = {"device_id": "smoke-real-1", "type": "smoke", "value": smoke.threshold + 1,
                    "ts": (now - timedelta(minutes=30)).isoformat(), "lon": grid.centroid[0], "lat": grid.centroid[1]}
    Producer(r, settings, source="iot").sensors([real_reading])
    w = apply_all(city, settings, engine, r)
    assert w.totals.dead == 0
    before = {"hashes": _area_hashes(r, settings, city), "alarms": live.active_alarms(r, settings)}

    records = list(export_period(engine, start.astimezone(UTC), now))
    drill_reading = {**real_reading, "kind": "sensor", "device_id": "smoke-9", "ts": (now - timedelta(minutes=1)).isoformat()}
    rep = replay_records([*records, drill_reading], Producer(r, settings, source="drill"), 0, progress_s=0)
    assert rep.dead == 0 and rep.cases == len(records) and rep.readings == 1
    w = apply_all(city, settings, engine, r)
    assert w.totals.dead == 0 and w.totals.alarms_opened == 1
    return before, rep, now, grid


def _cases(engine, run_id: str) -> pd.DataFrame:
    df = pd.read_sql("SELECT id, source, external_id, reported_at, status, drill FROM cases", engine)
    df["reported_at"] = pd.to_datetime(df["reported_at"], utc=True, format="ISO8601")
    df["is_drill"] = df["external_id"].str.startswith(f"{run_id}-")  # told apart by the replay's ids, not the mark
    return df


def test_the_drill_is_stored_whole_and_marked(drilled, engine):
    _, rep, _, _ = drilled
    df = _cases(engine, rep.run_id)
    drills = df[df["is_drill"]]
    alarm_case = df[df["external_id"].str.startswith(drill_device_id(rep.run_id, "smoke-9"))]
    assert len(drills) > 30 and len(alarm_case) == 1  # the drill device's alarm opened a case: a drill too
    assert df["drill"].astype(bool).tolist() == (df["is_drill"] | df["id"].isin(alarm_case["id"])).tolist()
    assert len(df[~df["drill"].astype(bool)]) == len(drills) - 1  # a replayed case per original (the alarm's too)
    a = pd.read_sql("SELECT a.drill, c.drill AS case_drill FROM case_assignments a JOIN cases c ON c.id = a.case_id",
                    engine)
    assert len(a) > 5 and (a["drill"].astype(bool) == a["case_drill"].astype(bool)).all()
    devices = pd.read_sql("SELECT id, drill FROM devices ORDER BY id", engine)
    assert {d: bool(x) for d, x in zip(devices["id"], devices["drill"], strict=True)} == {
        drill_device_id(rep.run_id, "smoke-9"): True, "smoke-real-1": False}


def test_live_counters_risk_and_alarms_leave_the_drill_out(drilled, settings, r, city, engine):
    before, rep, _, _ = drilled
    assert _area_hashes(r, settings, city) == before["hashes"]  # the city's counters did not move
    assert live.active_alarms(r, settings) == before["alarms"]  # the drill device's alarm is not the city's
    df = _cases(engine, rep.run_id)
    district = city.geography.district.code
    counted = live.summary(r, settings, district)
    assert counted["cases_total"] == int((~df["drill"].astype(bool)).sum())
    # the drill has its own live state: its cases and its alarm
    drill_live = r.hgetall(LiveKeys(drill_prefix(settings.stream_prefix)).area(district))
    assert int(drill_live[b"total"]) == int(df["drill"].astype(bool).sum())
    assert int(drill_live[b"alarms"]) == 1
    # risk levels come from the city's counters alone: every level as before the drill
    from config.risk import get_risk_model

    model = get_risk_model(settings.risk_file)
    areas = [*city.geography.areas("street"), city.geography.district]
    now_levels, _ = live.risk_of(r, settings, city, model, areas)
    r_drill_free = {c: a["risk_level"] for c, a in now_levels.items()}
    for key in list(r.scan_iter(f"{drill_prefix(settings.stream_prefix)}:*")):
        r.delete(key)  # without the drill's own state the levels are the same
    again, _ = live.risk_of(r, settings, city, model, areas)
    assert {c: a["risk_level"] for c, a in again.items()} == r_drill_free


def test_a_rebuild_from_sql_keeps_the_drill_apart(drilled, settings, r, city, engine):
    from ingest.rebuild import rebuild_live

    before, rep, _, _ = drilled
    report = rebuild_live(engine, r, settings.stream_prefix, city.county_code)
    df = _cases(engine, rep.run_id)
    assert report["cases"] == int((~df["drill"].astype(bool)).sum())
    assert report["drill_cases"] == int(df["drill"].astype(bool).sum())
    assert report["alarms"] == 1  # the real device's alarm only
    assert _area_hashes(r, settings, city) == before["hashes"]
    # and the worker's check finds nothing to rebuild: the city's count equals SQL's count without drills
    from ingest.rebuild import Watch

    w = Watch(engine, r, settings.stream_prefix, city.county_code)
    assert w.why() is None and w.why() is None


def test_the_api_leaves_the_drill_out_unless_asked(drilled, settings, engine, city):
    _, rep, now, _ = drilled
    df = _cases(engine, rep.run_id)
    client = accounts.client(settings)
    since = (now - timedelta(hours=4)).astimezone(TZ).isoformat(timespec="seconds")
    until = (now + timedelta(minutes=1)).astimezone(TZ).isoformat(timespec="seconds")
    q = {"since": since, "until": until}
    in_window = df[(df["reported_at"] >= pd.Timestamp(since)) & (df["reported_at"] < pd.Timestamp(until))]
    real = in_window[~in_window["is_drill"] & ~in_window["external_id"].str.contains("smoke-9")]
    got = orjson.loads(client.get("/api/v1/kpis", query_string=q).data)
    assert got["kpis"]["cases_total"] == len(real)
    assert orjson.loads(client.get("/api/v1/kpis", query_string={**q, "drills": "1"}).data)["kpis"][
        "cases_total"] == len(in_window)
    # the case list and the CSV export
    resp = client.get("/api/v1/cases", query_string={**q, "limit": 500})
    assert resp.status_code == 200, resp.data
    listed = orjson.loads(resp.data)["items"]
    assert {c["id"] for c in listed} == set(real["id"])
    listed = orjson.loads(client.get("/api/v1/cases", query_string={**q, "limit": 500, "drills": "1"}).data)["items"]
    assert {c["id"] for c in listed} == set(in_window["id"])
    csv = client.get("/api/v1/cases.csv", query_string=q).data.decode("utf-8-sig").splitlines()
    assert len(csv) - 1 == len(real)
    bad = client.get("/api/v1/kpis", query_string={**q, "drills": "maybe"})
    assert bad.status_code == 400 and "drills" in orjson.loads(bad.data)["error"]


def test_rankings_and_the_briefing_leave_the_drill_out(drilled, settings, r, engine, city):
    from core import rankings as rk
    from dashboard import briefing
    from store import queries

    _, rep, now, _ = drilled
    week = rk.period("week", now.astimezone(TZ).date(), TZ)

    def ranked():
        return queries.department_metrics(engine, city.departments, since=week.since, until=week.until, as_of=now)

    with_drill = ranked()
    # the same figures from the store without the drill: delete the drill's rows and ask again
    df = _cases(engine, rep.run_id)
    b = briefing.build(engine, r, settings, city, "day", now.astimezone(TZ).date(), None, now=now)
    headline = {h["key"]: h for h in b.headline}
    today0 = datetime.combine(now.astimezone(TZ).date(), datetime.min.time(), tzinfo=TZ)
    today = df[(df["reported_at"] >= pd.Timestamp(today0)) & (df["reported_at"] < pd.Timestamp(today0 + timedelta(days=1)))]
    assert headline["cases_total"]["value"] == int((~today["drill"].astype(bool)).sum())
    with engine.begin() as conn:
        from sqlalchemy import text

        ids = ",".join(str(i) for i in df[df["drill"].astype(bool)]["id"])
        conn.execute(text(f"DELETE FROM case_assignments WHERE case_id IN ({ids})"))
    assert ranked() == with_drill  # the drill's rows changed no department's figure


def test_the_wall_shows_a_running_drill_and_none_of_its_cases(drilled, settings, r, engine, city):
    from config.risk import get_risk_model
    from dashboard import screen

    _, rep, _, _ = drilled
    model = get_risk_model(settings.risk_file)
    df = _cases(engine, rep.run_id)
    snap = screen.fast(r, settings, engine, city, model)
    assert snap["drill"] is None
    drills = set(df[df["drill"].astype(bool)]["id"])
    shown = {c["id"] for c in snap["ticker"]} | {c["id"] for c in snap["sla"]}
    assert shown and not shown & drills
    assert all(a["device"] != drill_device_id(rep.run_id, "smoke-9") for a in snap["alarms"])
    assert snap["alarms_active"] == 1
    slow = screen.slow(engine, city, settings)
    today0 = datetime.combine(datetime.now(TZ).date(), datetime.min.time(), tzinfo=TZ)
    today = df[df["reported_at"] >= pd.Timestamp(today0)]
    assert slow["kpis"]["cases_total"] == int((~today["drill"].astype(bool)).sum())

    producer = Producer(r, settings, source="drill")
    with DrillMark(producer, "run-x", "drill"):
        mark = r.get(LiveKeys(settings.stream_prefix).drill)
        for _ in range(50):
            if mark:
                break
            import time

            time.sleep(0.05)
            mark = r.get(LiveKeys(settings.stream_prefix).drill)
        assert 0 < r.ttl(LiveKeys(settings.stream_prefix).drill) <= DrillMark.TTL_S  # a killed replay's mark expires
        assert screen.fast(r, settings, engine, city, model)["drill"]["run_id"] == "run-x"
    assert screen.fast(r, settings, engine, city, model)["drill"] is None


def test_a_pushed_record_cannot_mark_itself_a_drill(settings, r, city, push_headers):
    from tests.accounts import client as make_client

    c = make_client(settings)
    grid = city.geography.areas("grid")[0]
    rec = {"source": "citizen", "external_id": "hide-1", "event": "report", "occurred_at": datetime.now(UTC).isoformat(),
           "category": next(x.code for x in city.categories.values() if not x.sensor_only), "title": "t",
           "grid_code": grid.code, "drill": True}
    resp = c.post("/api/v1/ingest/cases", data=orjson.dumps([rec]), content_type="application/json",
                  headers=push_headers("citizen"))
    body = orjson.loads(resp.data)
    assert resp.status_code == 422 and body["rejected"] == 1 and "drill" in body["items"][0]["errors"][0]
    dead = r.xrange(StreamNames.of(settings).dead)
    assert len(dead) == 1 and b"drill" in dead[0][1][b"reason"]
