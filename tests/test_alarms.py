"""Unit tests for core.alarms: readings and the known state → alarms opened and cleared, cases reported. No Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from core import alarms
from core.lifecycle import Action
from core.records import SensorReading

T0 = datetime(2025, 3, 14, 2, 0, tzinfo=UTC)
GRID = "110105001001001"
WATER = SimpleNamespace(name="水位", unit="cm", threshold=50.0, clear_below=40.0, category="0901", grade=2)
TYPES = {"water": WATER}
CATEGORIES = {"0901": SimpleNamespace(name="积水")}


def reading(value: float, seconds: int = 0, device: str = "w1", type_: str = "water", **fields) -> SensorReading:
    return SensorReading(source="iot", device_id=device, type=type_, value=value, ts=T0 + timedelta(seconds=seconds),
                         **fields)


def run(values_or_readings, *, registry=None, active=(), offline=(), silent=None):
    rds = [r if isinstance(r, SensorReading) else reading(r, i) for i, r in enumerate(values_or_readings)]
    items = [(("1-0", i), rd) for i, rd in enumerate(rds)]
    if silent:
        items += [(("2-0", i), rd) for i, rd in enumerate(silent)]
    by_device, quiet, drills = alarms.split(items)
    known = alarms.Known(registry if registry is not None else {"w1": ("water", GRID)}, {}, set(active), set(offline))
    return alarms.evaluate(items, by_device, quiet, known, TYPES, CATEGORIES, drills=drills)


def test_a_reading_at_the_threshold_opens_an_alarm_and_reports_a_case():
    out = run([10.0, 50.0, 60.0])
    assert out.alarm_changes == [("w1", GRID, {"type": "water", "since": "2025-03-14T02:00:01+00:00", "value": 50.0,
                                               "device": "w1"})]
    assert out.opened == [{"device_id": "w1", "type": "water", "kind": "threshold", "grid_code": GRID,
                           "opened_at": T0 + timedelta(seconds=1), "peak_value": 50.0, "cleared_at": None}]
    (key, case), = out.alarm_cases
    assert key is None
    assert (case.source, case.external_id, case.event) == ("sensor", "w1@20250314T020001", Action.REPORT)
    assert (case.category, case.grade, case.grid_code) == ("0901", 2, GRID)
    assert case.title == "积水 · w1" and case.note == "水位 50cm ≥ 50"
    assert (out.alarms_opened, out.alarms_cleared, out.readings) == (1, 0, 3)
    assert out.last["w1"] == {"t": "water", "v": 60.0, "ts": T0 + timedelta(seconds=2), "g": GRID, "a": 1, "b": None}
    assert out.needs_sql


def test_the_alarm_clears_only_below_clear_below_and_may_open_again():
    out = run([55.0, 45.0, 40.0, 39.9, 51.0])  # 45 and 40 are in the band between clear_below and threshold
    assert [c[2] is not None for c in out.alarm_changes] == [True, False, True]
    assert out.cleared == [("w1", T0 + timedelta(seconds=3), "threshold")]
    assert [o["opened_at"] for o in out.opened] == [T0, T0 + timedelta(seconds=4)]
    assert (out.alarms_opened, out.alarms_cleared) == (2, 1)
    assert out.last["w1"]["a"] == 1


def test_a_device_in_alarm_already_opens_nothing_more_and_readings_apply_in_time_order():
    late, early = reading(30.0, 10), reading(70.0, 5)
    out = run([late, early], active={"w1"})  # 70 first (in alarm already: nothing), then 30 clears
    assert out.opened == [] and out.alarm_cases == []
    assert out.cleared == [("w1", T0 + timedelta(seconds=10), "threshold")]
    assert out.last["w1"]["v"] == 30.0 and out.last["w1"]["a"] == 0


def test_quiet_readings_change_nothing_in_sql():
    out = run([10.0, 20.0])
    assert not out.needs_sql and out.alarm_changes == [] and out.last["w1"]["a"] == 0


def test_a_reading_of_another_type_than_the_devices_is_refused_with_why():
    wrong = reading(99.0, 1, type_="smoke")
    out = run([reading(10.0, 0), wrong])
    assert out.refused == [(("1-0", 1), wrong, "type: device w1 is registered as 'water', not 'smoke'")]
    assert out.readings == 1 and out.opened == []


def test_a_silent_device_goes_offline_once_and_its_next_reading_clears_it():
    watch = SensorReading(source="watch", device_id="w1", type="water", kind="offline", value=900.0, ts=T0)
    out = run([], silent=[watch])
    assert out.offline_changes == [("w1", GRID, {"type": "water", "since": T0.isoformat(), "device": "w1",
                                                 "silent_s": 900.0})]
    assert out.offline_opened == [{"device_id": "w1", "type": "water", "kind": "offline", "grid_code": GRID,
                                   "opened_at": T0, "peak_value": 900.0, "cleared_at": None}]
    assert out.devices_offline == 1
    # offline already, unknown, or heard from in the same batch: no new alarm
    assert run([], silent=[watch], offline={"w1"}).offline_opened == []
    assert run([], silent=[watch], registry={}).offline_opened == []
    assert run([10.0], silent=[watch]).offline_opened == []
    back = run([10.0], offline={"w1"})
    assert back.offline_changes == [("w1", GRID, None)] and back.cleared == [("w1", T0, "offline")]


def test_new_devices_register_with_their_first_reading_and_drills_are_kept_apart():
    first, later = reading(10.0, 0, device="n1", drill=True), reading(20.0, 1, device="n1", drill=True)
    by_device, _silent, drills = alarms.split([(None, first), (None, later)])
    assert drills == {"n1"}
    rows, registering = alarms.register([("n1", by_device["n1"][0])], [GRID], drills)
    assert rows == [{"id": "n1", "type": "water", "source": "iot", "lon": None, "lat": None, "grid_code": GRID,
                     "first_seen": T0, "drill": True}]
    assert registering == {"n1": ("water", GRID)}
    out = alarms.evaluate([(None, first), (None, later)], by_device, {}, alarms.Known({}, registering, set(), set()),
                          TYPES, CATEGORIES, new_devices=rows, drills=drills)
    assert out.new_devices == rows and out.registering == registering and out.drills == {"n1"}
    assert out.last["n1"]["g"] == GRID and out.needs_sql
