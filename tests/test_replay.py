"""Export and replay: a stored period exported as canonical records, and played back as a drill at N× speed."""

from __future__ import annotations

import argparse
import gzip
import threading
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pandas as pd
import pytest

from core import lifecycle
from ingest.feeds.export import export_period, write_export
from ingest.feeds.replay import (
    ReplayError,
    add_replay_arguments,
    drill_device_id,
    drill_external_id,
    main_replay,
    read_export,
    replay_records,
)
from ingest.worker import Worker
from store.streams import Producer, StreamNames, read_dead
from tests.simulated import START, apply_all, simulate

TZ = ZoneInfo("Asia/Shanghai")


def load(city, settings, engine, r, hours: float, **kw) -> list[dict]:
    """Simulate, publish and apply a slice; returns the published case events."""
    records = simulate(city, hours, **kw)
    Producer(r, settings, source="simulator").cases(records)
    w = apply_all(city, settings, engine, r)
    assert w.totals.dead == 0
    return records


def sql_events(engine) -> pd.DataFrame:
    return pd.read_sql(
        "SELECT c.source, c.external_id, c.status AS case_status, e.id, e.action, e.event_key, e.status_after "
        "FROM case_events e JOIN cases c ON c.id = e.case_id ORDER BY e.id", engine)


def sql_cases(engine) -> pd.DataFrame:
    return pd.read_sql("SELECT * FROM cases ORDER BY id", engine)


def dead_count(r, settings) -> int:
    return r.xlen(StreamNames.of(settings).dead)


# ------------------------------------------------------------------------------------------------ export


def test_export_matches_what_sql_holds(city, settings, engine, r, tmp_path):
    published = load(city, settings, engine, r, hours=3)
    since, until = START, START + timedelta(hours=3, seconds=1)
    out = tmp_path / "day.jsonl.gz"
    n = write_export(engine, out, since, until)
    lines = [orjson.loads(x) for x in gzip.decompress(out.read_bytes()).splitlines()]
    header, records = lines[0], lines[1:]
    assert header["gridwatch_export"] == 1 and header["area"] is None
    assert datetime.fromisoformat(header["since"]) == since
    assert n == len(records) == len(published) > 300
    assert records == list(export_period(engine, since, until))

    # In time order, and every case starts with its report, which carries the case's fields.
    times = [datetime.fromisoformat(x["occurred_at"]) for x in records]
    assert times == sorted(times)
    exported = pd.DataFrame(records)
    firsts = exported.groupby(["source", "external_id"]).head(1)
    assert (firsts["event"] == "report").all()
    assert firsts["title"].notna().all() and firsts["category"].notna().all()

    # Independently of the exporter: events per case and the status sequence equal what SQL holds.
    sql = sql_events(engine)
    want_counts = sql.groupby(["source", "external_id"]).size().sort_index()
    got_counts = exported.groupby(["source", "external_id"]).size().sort_index()
    pd.testing.assert_series_equal(got_counts, want_counts, check_names=False)
    want_seq = sql.groupby(["source", "external_id"])["status_after"].agg(list).to_dict()
    got_seq: dict[tuple[str, str], list[str]] = defaultdict(list)
    status: dict[tuple[str, str], lifecycle.Status | None] = defaultdict(lambda: None)
    for rec in records:
        k = (rec["source"], rec["external_id"])
        status[k] = lifecycle.apply(status[k], rec["event"]).status
        got_seq[k].append(status[k].value)
    assert dict(got_seq) == want_seq
    final = sql.groupby(["source", "external_id"])["case_status"].first().to_dict()
    assert {k: v[-1] for k, v in got_seq.items()} == final
    # Event identities are kept.
    assert sorted(exported["event_id"]) == sorted(sql["event_key"])
    # A rating rides on its evaluate event.
    cases = sql_cases(engine).set_index(["source", "external_id"])
    for rec in records:
        if rec["event"] == "evaluate":
            assert rec["rating"] == cases.loc[(rec["source"], rec["external_id"]), "rating"]


def test_export_area_and_period_filters(city, settings, engine, r):
    load(city, settings, engine, r, hours=2)
    everything = list(export_period(engine, START, START + timedelta(hours=3)))
    cases = sql_cases(engine)
    street = cases["street_code"].dropna().value_counts().index[0]
    in_street = list(export_period(engine, START, START + timedelta(hours=3), area=street))
    ids = set(cases.loc[cases["street_code"] == street, "external_id"])
    assert in_street and {x["external_id"] for x in in_street} == ids
    assert len(in_street) < len(everything)
    # Only cases reported in the period, and only their events before its end.
    cut = START + timedelta(hours=1)
    first_hour = list(export_period(engine, START, cut))
    reported = set(cases.loc[pd.to_datetime(cases["reported_at"], utc=True) < cut, "external_id"])
    assert {x["external_id"] for x in first_hour} == reported
    assert all(datetime.fromisoformat(x["occurred_at"]) < cut for x in first_hour)
    redacted = list(export_period(engine, START, cut, redact=True))
    assert len(redacted) == len(first_hour) and any("reporter_phone" in x for x in first_hour)
    assert not any("reporter_phone" in x or "reporter_name" in x for x in redacted)
    with pytest.raises(ValueError, match="area"):
        list(export_period(engine, START, cut, area="12345"))


# ------------------------------------------------------------------------------------------------ replay


def test_replay_is_a_drill_that_reproduces_the_originals(city, settings, engine, r):
    load(city, settings, engine, r, hours=2)
    since, until = START, START + timedelta(hours=2, seconds=1)
    records = list(export_period(engine, since, until))
    cases_before, events_before = sql_cases(engine), sql_events(engine)
    speed = 3600.0
    now = datetime.now(UTC)
    rep = replay_records(records, Producer(r, settings, source="drill"), speed, now=now, progress_s=0)
    assert not rep.stopped and rep.dead == 0
    assert rep.published == rep.cases == len(records)
    w = apply_all(city, settings, engine, r)
    assert w.totals.dead == 0 and dead_count(r, settings) == 0
    assert w.totals.applied == len(records)

    after = sql_cases(engine)
    # The originals are unchanged, column by column (updated_at included: nothing touched them).
    originals = after[after["source"] != "drill"].reset_index(drop=True)
    pd.testing.assert_frame_equal(originals, cases_before.reset_index(drop=True))
    ev_after = sql_events(engine)
    pd.testing.assert_frame_equal(ev_after[ev_after["source"] != "drill"].reset_index(drop=True),
                                  events_before.reset_index(drop=True))
    # The drill cases are new cases, one per original, with the originals' statuses.
    drills = after[after["source"] == "drill"].set_index("external_id")
    assert len(drills) == len(cases_before)
    for row in cases_before.itertuples():
        twin = drills.loc[drill_external_id(rep.run_id, row.source, row.external_id)]
        assert twin["status"] == row.status
        assert twin["category"] == row.category and twin["grid_code"] == row.grid_code

    # Re-timed: the first record happens at the start, the spacing is the original spacing / speed.
    drill_events = pd.read_sql(
        "SELECT c.external_id, e.event_key, e.occurred_at FROM case_events e JOIN cases c ON c.id = e.case_id "
        "WHERE c.source = 'drill'", engine)
    new_time = {(x.external_id, x.event_key): pd.Timestamp(x.occurred_at).to_pydatetime() for x in drill_events.itertuples()}
    new = [new_time[(drill_external_id(rep.run_id, x["source"], x["external_id"]), x["event_id"])] for x in records]
    old = [datetime.fromisoformat(x["occurred_at"]) for x in records]
    if new[0].tzinfo is None:
        new = [t.replace(tzinfo=UTC) for t in new]
    assert abs((new[0] - now).total_seconds()) < 2
    assert abs((min(new) - now).total_seconds()) < 2
    for i in (1, len(records) // 3, len(records) // 2, len(records) - 1):
        want = (old[i] - old[i - 1]).total_seconds() / speed
        got = (new[i] - new[i - 1]).total_seconds()
        assert got == pytest.approx(want, abs=0.002)
    span_new = (new[-1] - new[0]).total_seconds()
    assert span_new == pytest.approx((old[-1] - old[0]).total_seconds() / speed, abs=0.002)


def test_replay_of_an_hour_at_3600x(city, settings, engine, r):
    records = simulate(city, hours=1, rate=0.1)
    assert len(records) > 100
    rep = replay_records(records, Producer(r, settings, source="drill"), 3600, progress_s=0)
    assert not rep.stopped and rep.published == len(records) and rep.dead == 0
    assert rep.batches > 1  # spread over time, not one burst
    w = apply_all(city, settings, engine, r)
    assert w.totals.dead == 0 and w.totals.applied == len(records)


def test_speed_zero_and_a_second_run_do_not_collide(city, settings, engine, r):
    records = simulate(city, hours=0.5, rate=0.1)
    producer = Producer(r, settings, source="drill")
    a = replay_records(records, producer, 0, progress_s=0)
    b = replay_records(records, producer, 0, progress_s=0)
    assert a.run_id != b.run_id and a.published == b.published == len(records)
    assert a.batches == 1 or len(records) > 5000
    w = apply_all(city, settings, engine, r)
    assert w.totals.dead == 0 and w.totals.duplicates == 0
    n_cases = sum(1 for x in records if x["event"] == "report")
    assert pd.read_sql("SELECT COUNT(*) AS n FROM cases WHERE source = 'drill'", engine)["n"][0] == 2 * n_cases


def test_stop_event_stops_cleanly(city, settings, r):
    records = simulate(city, hours=1, rate=0.1)
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    try:
        rep = replay_records(records, Producer(r, settings, source="drill"), 60, stop_event=stop, progress_s=0)
    finally:
        timer.cancel()
    assert rep.stopped and 0 < rep.published < len(records)


# ------------------------------------------------------------------------------------------------ input files


def _write(path, lines: list[bytes], gz: bool = False) -> None:
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(gzip.compress(data) if gz else data)


def test_bad_lines_are_dead_lettered_and_the_replay_carries_on(city, settings, engine, r, tmp_path):
    good = simulate(city, hours=0.5, rate=0.1)[:20]
    no_title = {k: v for k, v in good[0].items() if k != "title"} | {"external_id": "X-1"}
    no_time = {k: v for k, v in good[1].items() if k != "occurred_at"} | {"external_id": "X-2"}
    lines = [orjson.dumps({"gridwatch_export": 1, "since": None, "until": None, "area": None})]
    lines += [orjson.dumps(x) for x in good[:10]]
    lines += [b'{"source": "citizen", "external_id": broken', orjson.dumps(no_title), orjson.dumps(no_time),
              orjson.dumps({"hello": "world"}), b"[1, 2]", b""]
    lines += [orjson.dumps(x) for x in good[10:]]
    path = tmp_path / "bad.jsonl"
    _write(path, lines)
    rep = replay_records(read_export(path), Producer(r, settings, source="drill"), 0, progress_s=0, label=path.name)
    assert rep.headers == 1
    assert rep.published == len(good) and rep.dead == 5
    dead = read_dead(r, settings, count=10)
    assert len(dead) == 5
    reasons = " | ".join(d["reason"] for d in dead)
    assert "bad.jsonl:12: not valid JSON" in reasons
    assert "title: required for a report" in reasons
    assert "occurred_at: required field is missing" in reasons
    assert "neither a case event" in reasons and "expected a JSON object" in reasons
    assert all(d["source"] == "drill" for d in dead)
    w = apply_all(city, settings, engine, r)
    assert w.totals.dead == 0 and w.totals.applied == len(good)


def test_sensor_readings_kind_marker_and_gzip(city, settings, engine, r, tmp_path):
    grid = city.geography.areas("grid")[0]
    lon, lat = grid.centroid
    t = datetime(2025, 3, 4, 9, 0, tzinfo=TZ)
    readings = [{"device_id": "smoke-test-01", "type": "smoke", "value": 0.2, "ts": (t + timedelta(seconds=i * 60)).isoformat(),
                 "lon": lon, "lat": lat, "source": "iot"} for i in range(3)]
    case = {"kind": "case", "source": "citizen", "external_id": "C-1", "event": "report",
            "occurred_at": t.isoformat(), "category": "0101", "title": "暴露垃圾", "lon": lon, "lat": lat}
    note = {"kind": "case", "source": "citizen", "external_id": "C-1", "event": "note",
            "occurred_at": (t + timedelta(seconds=30)).isoformat(), "note": "复核"}
    path = tmp_path / "mixed.jsonl.gz"
    _write(path, [orjson.dumps(x) for x in (case, readings[0], note, readings[1], readings[2])], gz=True)
    rep = replay_records(read_export(path), Producer(r, settings, source="drill"), 0, progress_s=0)
    assert rep.cases == 2 and rep.readings == 3 and rep.dead == 0
    w = apply_all(city, settings, engine, r)
    assert w.totals.dead == 0 and w.totals.readings == 3 and w.totals.applied == 2
    devices = pd.read_sql("SELECT id, source FROM devices", engine)
    assert devices.to_dict("records") == [{"id": drill_device_id(rep.run_id, "smoke-test-01"), "source": "drill"}]
    events = pd.read_sql("SELECT event_key FROM case_events ORDER BY id", engine)["event_key"].tolist()
    assert events[0] == f"report@{t.astimezone(UTC).isoformat()}"  # the original identity, not the new time


def _args(path, **kw) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_replay_arguments(p)
    argv = [str(path), "--progress", "0"] + [x for k, v in kw.items() for x in ([f"--{k.replace('_', '-')}"] +
                                                                         ([] if v is True else [str(v)]))]
    return p.parse_args(argv)


def test_missing_and_empty_files_give_clear_messages(tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(ReplayError, match="no such file"):
        list(read_export(missing))
    assert main_replay(_args(missing)) == 2
    assert "no such file" in capsys.readouterr().out

    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert main_replay(_args(empty, dry_run=True)) == 1
    assert "nothing to replay" in capsys.readouterr().out
    header_only = tmp_path / "header.jsonl"
    _write(header_only, [orjson.dumps({"gridwatch_export": 1, "since": None, "until": None, "area": None})])
    assert main_replay(_args(header_only, dry_run=True)) == 1
    assert "only an export header" in capsys.readouterr().out


def test_dry_run_publishes_nothing(city, settings, r, tmp_path, capsys):
    records = simulate(city, hours=0.5, rate=0.1)
    path = tmp_path / "x.jsonl"
    _write(path, [orjson.dumps(x) for x in records])
    assert main_replay(_args(path, dry_run=True, speed=60)) == 0
    out = capsys.readouterr().out
    assert f"{len(records)} case events" in out and "would be published" in out
    assert r.xlen(StreamNames.of(settings).cases) == 0


def test_a_spreadsheet_export_replays_through_its_mapping(city, settings, engine, r):
    """The LA 311 export replayed as a drill: every row's events arrive, in a legal order, with no dead letters."""
    from pathlib import Path

    from config.city import catalog_of
    from ingest.feeds.spreadsheet import iter_records

    data = Path(__file__).parent / "data" / "import" / "la311_2018_sample.csv"
    rows = pd.read_csv(data, dtype=str).head(300)
    part = Path(settings.var_dir) / "la_part.csv"
    part.parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(part, index=False)
    records = list(iter_records(part, Path(__file__).parent.parent / "config" / "mappings" / "la311.yaml", city=city))
    assert {rec["external_id"] for rec in records} == set(rows["SRNumber"])  # every row, by the export's own ids
    producer = Producer(r, settings, source="replay-test")
    rep = replay_records(records, producer, speed=0, catalog=catalog_of(city))
    assert rep.dead == 0 and rep.cases == len(records)
    w = Worker(city, settings, engine, r, name="t")
    while w.run_once(50):
        pass
    assert read_dead(r, settings) == []
    with engine.connect() as conn:
        n = conn.exec_driver_sql("SELECT count(*) FROM cases WHERE source = 'drill'").scalar()
    assert n == rows["SRNumber"].nunique()
