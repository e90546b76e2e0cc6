"""The simulator: legal, parseable, believable and deterministic output; and a short real-time run on Redis."""

from __future__ import annotations

import statistics
import threading
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pandas as pd
import pytest

from config.city import catalog_of
from core import lifecycle
from core.records import parse_case_event, parse_sensor_reading
from ingest.feeds.simulator import Simulator
from store.streams import Producer

TZ = ZoneInfo("Asia/Shanghai")
# A Tuesday, a working day. The run covers 03:00–11:00 so that night and morning peak are both in it.
START = datetime(2025, 3, 4, 3, 0, tzinfo=TZ)
HOURS = 8
SLICE = timedelta(seconds=10)


def simulate(city, seed: int, hours: float, rate: float = 0.5, start: datetime = START):
    sim = Simulator(city, seed=seed, rate=rate, start=start)
    cases, readings = [], []
    now = start
    end = start + timedelta(hours=hours)
    while now < end:
        now += SLICE
        c, r = sim.step(now, SLICE)
        for rec in c:
            assert datetime.fromisoformat(rec["occurred_at"]) <= now, "an event from the future"
        for rec in r:
            assert datetime.fromisoformat(rec["ts"]) <= now, "a reading from the future"
        cases += c
        readings += r
    return sim, cases, readings


@pytest.fixture(scope="module")
def run(city):
    return simulate(city, seed=7, hours=HOURS)


@pytest.fixture(scope="module")
def reports(run):
    _, cases, _ = run
    df = pd.DataFrame([c for c in cases if c["event"] == "report"])
    df["at"] = pd.to_datetime(df["occurred_at"], utc=True).dt.tz_convert(TZ)
    return df


def test_every_record_parses(run, city):
    _, cases, readings = run
    catalog = catalog_of(city)
    assert len(cases) > 1000 and len(readings) > 1000
    for rec in cases:
        parse_case_event(rec, catalog)
    for rec in readings:
        parse_sensor_reading(rec, catalog)


def test_case_sequences_are_legal_ordered_and_unique(run):
    sim, cases, _ = run
    assert sim.illegal == 0
    keys = [(c["source"], c["external_id"], c["event_id"]) for c in cases]
    assert len(keys) == len(set(keys))
    by_case = defaultdict(list)
    for c in cases:
        by_case[(c["source"], c["external_id"])].append(c)
    for events in by_case.values():
        assert events[0]["event"] == "report"
        status = None
        for ev in events:
            status = lifecycle.apply(status, ev["event"]).status  # raises on an illegal move
        times = [datetime.fromisoformat(e["occurred_at"]) for e in events]
        assert times == sorted(times)
    actions = {c["event"] for c in cases}
    assert {"report", "onsite", "register", "dispatch", "accept", "handle", "resolve", "close", "evaluate"} <= actions
    assert "return" in actions and "whistle" in actions


def test_most_resolved_cases_are_handled_on_the_spot(run):
    _, cases, _ = run
    onsite = sum(c["event"] == "onsite" for c in cases)
    resolved = sum(c["event"] == "resolve" for c in cases)
    share = onsite / (onsite + resolved)
    assert 0.8 <= share <= 0.97, share


def test_sources_are_mixed(reports):
    shares = reports["source"].value_counts(normalize=True)
    assert set(shares.index) == {"hotline12345", "patrol", "citizen", "citymgmt"}
    assert shares["patrol"] > 0.5
    people = reports[reports["source"].isin(["hotline12345", "citizen"])]
    assert people["reporter_phone"].str.fullmatch(r"1[3-9][0-9]{9}").all()
    assert people["reporter_name"].str.endswith(("先生", "女士")).all()


def test_diurnal_rhythm(reports):
    hour = reports["at"].dt.hour
    morning = int((hour == 10).sum())
    night = int((hour == 3).sum())
    assert morning > 5 * night, (morning, night)


def test_hotspots_run_above_the_median_grid(run, reports, city):
    sim, _, _ = run
    grids = [g.code for g in city.geography.areas("grid")]
    end = START + timedelta(hours=HOURS)
    hot_total = median_total = 0.0
    for h in sim.hotspot_log:
        lo, hi = h.since, min(h.until, end)
        if hi - lo < timedelta(minutes=30):
            continue
        window = reports[(reports["at"] >= lo) & (reports["at"] < hi)]
        # Reports without grid_code are located by their point; the simulator put them in a grid.
        located = window.apply(lambda r: city.geography.locate(r["lon"], r["lat"]), axis=1) if len(window) else []
        counts = pd.Series(list(located)).value_counts().reindex(grids, fill_value=0)
        hot_total += counts[h.grid]
        median_total += statistics.median(counts.tolist())
    assert hot_total > 2 * max(median_total, 1), (hot_total, median_total)


def test_locations_fall_inside_their_grid(run, reports, city):
    _, _, readings = run
    geo = city.geography
    for r in reports.itertuples():
        grid = geo.locate(r.lon, r.lat)
        assert grid is not None
        if isinstance(r.grid_code, str):
            assert grid == r.grid_code
    devices = {(r["device_id"], r["lon"], r["lat"], r["grid_code"]) for r in readings}
    assert len(devices) == len({d[0] for d in devices})  # a device never moves
    for _, lon, lat, grid in devices:
        assert geo.locate(lon, lat) == grid


def test_sensors_alarm_sometimes_but_read_normal_mostly(run, city):
    sim, _, readings = run
    df = pd.DataFrame(readings)
    thresholds = {code: t.threshold for code, t in city.sensor_types.items()}
    alarm = df["value"] >= df["type"].map(thresholds)
    assert alarm.any()
    assert alarm.mean() < 0.05
    assert set(df["type"]) == set(city.sensor_types)
    per_grid = df.groupby("grid_code")["device_id"].nunique()
    assert 3 <= per_grid.median() <= 6
    assert df["device_id"].str.fullmatch(r"[a-z_]+-[0-9]{15}-[0-9]{2}").all()
    # Batteries only drain.
    first = df.groupby("device_id")["battery"].first()
    last = df.groupby("device_id")["battery"].last()
    assert (last <= first).all()
    # A few devices went silent for a while (a gap of more than twice their heartbeat).
    df["t"] = pd.to_datetime(df["ts"], utc=True)
    gap = df.sort_values("t").groupby("device_id")["t"].apply(lambda s: s.diff().max().total_seconds())
    heartbeat = df.groupby("device_id")["type"].first().map({c: t.heartbeat_s for c, t in city.sensor_types.items()})
    silent = (gap > 2 * heartbeat).sum()
    assert 0 < silent < 0.2 * len(gap)
    assert sim.stats.readings == len(readings)


def test_deterministic(city):
    _, c1, r1 = simulate(city, seed=3, hours=1, start=START.replace(hour=9))
    _, c2, r2 = simulate(city, seed=3, hours=1, start=START.replace(hour=9))
    _, c3, r3 = simulate(city, seed=4, hours=1, start=START.replace(hour=9))
    assert c1 == c2 and r1 == r2
    assert c1 != c3 and r1 != r3


def count_records(r, key) -> int:
    """Records in a stream: an entry holds one record (an object) or a batch (an array)."""
    n = 0
    for _, fields in r.xrange(key):
        data = orjson.loads(fields[b"d"])
        n += len(data) if isinstance(data, list) else 1
    return n


def test_run_publishes_to_redis(city, settings, r):
    producer = Producer(r, settings, source="simulator")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    sim = Simulator(city, seed=1, rate=2.0, start=start)
    cases_key = settings.key("stream", "cases")
    sensors_key = settings.key("stream", "sensors")
    before = (count_records(r, cases_key), count_records(r, sensors_key))
    stats = sim.run(producer, speed=600, tick=0.2, duration=2.0, stop_event=threading.Event())
    after = (count_records(r, cases_key), count_records(r, sensors_key))
    assert after[0] > before[0] and after[1] > before[1]
    assert after[0] - before[0] == stats.events
    assert after[1] - before[1] == stats.readings
    assert sim.clock <= datetime.now(UTC) + timedelta(hours=1)
