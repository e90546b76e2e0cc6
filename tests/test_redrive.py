"""Re-driving dead letters (ingest/redrive.py) against a real Redis and a real SQL database, with a real Worker."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import orjson
import pytest
from sqlalchemy import func, select

from core.livestate import LiveKeys
from ingest.feeds.mqtt import MqttFeed
from ingest.feeds.mqtt_readings import RegisteredDevice
from ingest.redrive import FAILING, REDRIVEN, SKIPPED, WHY_TOKEN, Busy, Selection, parse_since, redrive
from ingest.worker import Worker
from store.schema import Case, CaseEvent
from store.streams import Producer, StreamNames, dead_letter, iter_dead

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
NEW_CATEGORY = "9999"


def drain(worker: Worker) -> None:
    while worker.run_once(50):
        pass
    if worker.settings.hold_seconds < 1:  # events held for a case that never came: dead-lettered once their time is up
        time.sleep(worker.settings.hold_seconds + 0.05)
        while worker.run_once(50):
            pass


def quick_hold(settings):
    """Settings under which an event whose case never comes is dead-lettered after a moment (HOLD_SECONDS)."""
    return settings.model_copy(update={"hold_seconds": 0.1})


def city_with_new_category(city):
    """The city after a category was added to its catalog (categories.yaml)."""
    assert NEW_CATEGORY not in city.categories
    base = next(c for c in city.categories.values() if not c.sensor_only)
    added = base.model_copy(update={"code": NEW_CATEGORY, "name": "新增类别", "en": "Added category"})
    return dataclasses.replace(city, categories={**city.categories, NEW_CATEGORY: added})


def report(ext: str, category: str, source: str = "test") -> dict:
    return {"source": source, "external_id": ext, "event": "report", "event_id": "report",
            "occurred_at": NOW.isoformat(), "category": category, "title": f"案件 {ext}", "grid_code": None}


def event(ext: str, action: str, minutes: int, source: str = "test") -> dict:
    return {"source": source, "external_id": ext, "event": action, "event_id": f"{action}-{minutes}",
            "occurred_at": (NOW + timedelta(minutes=minutes)).isoformat()}


def dead_rows(r, settings) -> list[tuple[str, dict]]:
    return list(iter_dead(r, settings))


def stored(engine, ext: str) -> tuple[int, int, str | None]:
    """(case rows, event rows, status) of a case, counted in SQL."""
    with engine.connect() as conn:
        cases = conn.execute(select(Case.id, Case.status).where(Case.external_id == ext)).all()
        events = conn.execute(select(func.count()).select_from(CaseEvent).join(Case, Case.id == CaseEvent.case_id)
                              .where(Case.external_id == ext)).scalar_one()
    return len(cases), events, cases[0].status if cases else None


@pytest.fixture
def public_category(city) -> str:
    return next(c.code for c in city.categories.values() if not c.sensor_only)


def test_unknown_category_redriven_after_it_was_added_and_stored_once(settings, r, engine, city, public_category):
    names = StreamNames.of(settings)
    producer = Producer(r, settings, source="feed-a")
    producer.cases([report("ok-1", public_category), report("new-1", NEW_CATEGORY), report("new-2", NEW_CATEGORY)])
    drain(Worker(city, settings, engine, r, name="before"))
    letters = dead_rows(r, settings)
    assert len(letters) == 2 and all(f"unknown category '{NEW_CATEGORY}'" in row["reason"] for _, row in letters)
    assert stored(engine, "new-1") == (0, 0, None)

    # Before the category exists, nothing is re-published and the letters stay.
    before = r.xlen(names.cases)
    rep = redrive(r, settings, city, Selection())
    assert (rep.counts[REDRIVEN], rep.counts[FAILING]) == (0, 2)
    assert r.xlen(names.cases) == before and len(dead_rows(r, settings)) == 2

    fixed = city_with_new_category(city)
    rep = redrive(r, settings, fixed, Selection(reason="unknown category"))
    assert (rep.counts[REDRIVEN], rep.counts[SKIPPED], rep.counts[FAILING]) == (2, 0, 0)
    assert rep.streams == {names.cases: 2}
    assert dead_rows(r, settings) == []  # removed with the re-publish
    assert r.xlen(names.cases) == before + 2
    entries = r.xrange(names.cases)[-2:]
    assert [orjson.loads(f[b"d"])["external_id"] for _, f in entries] == ["new-1", "new-2"]
    assert {f[b"s"] for _, f in entries} == {b"feed-a"}  # still the feed's

    again = redrive(r, settings, fixed, Selection())
    assert again.examined == 0 and r.xlen(names.cases) == before + 2  # twice re-publishes nothing twice

    w = Worker(fixed, settings, engine, r, name="after")  # restarted with the new configuration
    drain(w)
    assert stored(engine, "new-1") == (1, 1, "reported")
    assert stored(engine, "new-2") == (1, 1, "reported")
    assert stored(engine, "ok-1") == (1, 1, "reported")
    assert dead_rows(r, settings) == []
    # The events are idempotent anyway: the same event published once more is stored once.
    producer.cases([report("new-1", NEW_CATEGORY)])
    drain(w)
    assert stored(engine, "new-1") == (1, 1, "reported") and w.totals.duplicates == 1


def test_lifecycle_letter_redriven_after_the_report_arrived_is_applied(settings, r, engine, city, public_category):
    producer = Producer(r, settings, source="feed-b")
    w = Worker(city, quick_hold(settings), engine, r, name="w")
    producer.cases([event("late-1", "register", 5)])  # the register overtook its report, which never came
    drain(w)
    [(_, letter)] = dead_rows(r, settings)
    assert letter["reason"].startswith("lifecycle:") and letter["stream"] == StreamNames.of(settings).cases
    producer.cases([report("late-1", public_category)])
    drain(w)
    assert stored(engine, "late-1") == (1, 1, "reported")

    rep = redrive(r, settings, city, Selection(reason="^lifecycle"))
    assert rep.counts[REDRIVEN] == 1
    [(kind, counts)] = rep.as_dict()["by_reason"].items()
    assert kind.startswith("lifecycle: cannot register") and "late-1" not in kind  # grouped without the case id
    assert counts == {REDRIVEN: 1, SKIPPED: 0, FAILING: 0}
    drain(w)
    assert stored(engine, "late-1") == (1, 2, "registered")
    assert dead_rows(r, settings) == []


def test_still_invalid_record_stays_with_its_reason_today(settings, r, engine, city):
    Producer(r, settings, source="feed-a").cases([report("bad-1", "8888"), report("new-3", NEW_CATEGORY)])
    drain(Worker(city, settings, engine, r, name="w"))
    ids = {row["raw"] and orjson.loads(row["raw"])["external_id"]: i for i, row in dead_rows(r, settings)}
    assert set(ids) == {"bad-1", "new-3"}

    rep = redrive(r, settings, city_with_new_category(city), Selection())
    assert (rep.counts[REDRIVEN], rep.counts[FAILING]) == (1, 1)
    [example] = rep.as_dict()["still_failing_examples"]
    assert example["id"] == ids["bad-1"] and "unknown category '8888'" in example["reason"]
    assert [i for i, _ in dead_rows(r, settings)] == [ids["bad-1"]]  # left in place, the same letter


def test_filters_select_by_reason_since_stream_source_and_limit(settings, r, engine, city, public_category):
    names = StreamNames.of(settings)
    old_ms = int((datetime.now(UTC) - timedelta(days=3)).timestamp() * 1000)
    # A letter of three days ago (ids are times): written the way dead_letter writes, with an old id.
    r.xadd(names.dead, {b"reason": f"category: unknown category '{NEW_CATEGORY}'".encode(), b"stream": names.cases.encode(),
                        b"source": b"feed-a", b"at": b"x", b"size": b"1", b"entry": b"1-0",
                        b"raw": orjson.dumps(report("old-1", NEW_CATEGORY))}, id=f"{old_ms}-0")
    w = Worker(city, quick_hold(settings), engine, r, name="w")
    Producer(r, settings, source="feed-a").cases([report("new-4", NEW_CATEGORY)])
    drain(w)
    Producer(r, settings, source="feed-b").cases([event("early-1", "register", 3)])
    drain(w)
    Producer(r, settings, source="sim").sensors([{"source": "sensor", "device_id": "d-1", "type": "no_such_type",
                                                  "value": 1.0, "ts": NOW.isoformat()}])
    drain(w)
    assert len(dead_rows(r, settings)) == 4

    def ext(sel: Selection) -> list[str]:
        from ingest.redrive import select as chosen

        return [orjson.loads(row["raw"]).get("external_id") or orjson.loads(row["raw"]).get("device_id")
                for _, row in chosen(r, settings, sel)]

    assert ext(Selection(reason="unknown category")) == ["old-1", "new-4"]
    assert ext(Selection(reason="UNKNOWN CAT")) == ["old-1", "new-4"]  # case-insensitive substring
    assert ext(Selection(reason=r"^lifecycle: .*(case feed-b|case test)")) == ["early-1"]  # a regular expression
    assert ext(Selection(since=parse_since("1d"))) == ["new-4", "early-1", "d-1"]
    assert ext(Selection(since=parse_since((datetime.now(UTC) - timedelta(days=4)).isoformat()))) == [
        "old-1", "new-4", "early-1", "d-1"]
    assert ext(Selection(stream="sensors")) == ["d-1"]
    assert ext(Selection(stream=names.cases)) == ["old-1", "new-4", "early-1"]
    assert ext(Selection(source="feed-a")) == ["old-1", "new-4"]
    assert ext(Selection(source="sim")) == ["d-1"]
    assert ext(Selection(limit=2)) == ["old-1", "new-4"]
    assert ext(Selection(reason="category", since=parse_since("1d"), source="feed-a")) == ["new-4"]
    with pytest.raises(ValueError, match="--reason"):
        Selection(reason="(")
    with pytest.raises(ValueError, match="--since"):
        parse_since("yesterday")

    # A dry run over a filtered set says what would happen and changes nothing.
    before = (r.xlen(names.cases), r.xlen(names.dead))
    rep = redrive(r, settings, city_with_new_category(city), Selection(reason="category", since=parse_since("1d")),
                  dry_run=True)
    assert (rep.examined, rep.counts[REDRIVEN], rep.dry_run) == (1, 1, True)
    assert (r.xlen(names.cases), r.xlen(names.dead)) == before
    # The real run touches only the selection.
    rep = redrive(r, settings, city_with_new_category(city), Selection(reason="category", since=parse_since("1d")))
    assert rep.counts[REDRIVEN] == 1 and ext(Selection()) == ["old-1", "early-1", "d-1"]


def test_a_second_redrive_waits_for_the_first(settings, r, city):
    lock = r.lock(settings.key("dead", "redrive", "lock"), timeout=30, blocking=False)
    assert lock.acquire()
    try:
        with pytest.raises(Busy):
            redrive(r, settings, city, Selection())
        assert redrive(r, settings, city, Selection(), dry_run=True).examined == 0  # a dry run needs no lock
    finally:
        lock.release()


def _mqtt_feed(settings, r, city, registry):
    s = settings.model_copy(update={"mqtt_url": "mqtt://127.0.0.1:1"})  # never connected: handle() is called directly
    return MqttFeed(s, r, city=city, registry=registry)


def _message(settings, city, dtype: str, device: str, payload: dict) -> SimpleNamespace:
    topic = f"{settings.mqtt_topic_root}/{city.county_code}/{dtype}/{device}"
    return SimpleNamespace(topic=topic, payload=orjson.dumps(payload), retain=False)


def test_mqtt_token_refused_is_skipped_and_a_fixed_registry_reading_is_redriven(settings, r, engine, city):
    names = StreamNames.of(settings)
    token = settings.feed_token("mqtt")
    registry = {"dev-9": RegisteredDevice(id="dev-9", type="gas")}
    feed = _mqtt_feed(settings, r, city, registry)
    when = datetime.now(UTC)
    feed.handle([
        (_message(settings, city, "smoke", "dev-1", {"value": 0.2, "ts": NOW.isoformat(), "token": "wrong"}), when),
        (_message(settings, city, "smoke", "dev-9", {"value": 0.2, "ts": NOW.isoformat(), "token": token}), when),
        (_message(settings, city, "no_such_type", "dev-2", {"value": 0.2, "token": token}), when),
    ])
    reasons = [row["reason"] for _, row in dead_rows(r, settings)]
    assert len(reasons) == 3 and "token refused" in reasons[0] and "registered as 'gas'" in reasons[1]
    assert r.xlen(names.sensors) == 0

    # The registry is fixed (the device is no longer listed as gas); the refused token stays refused.
    fixed = _mqtt_feed(settings, r, city, {}).decoder
    rep = redrive(r, settings, city, Selection(source="mqtt"), mqtt_decoder=fixed)
    assert (rep.counts[REDRIVEN], rep.counts[SKIPPED], rep.counts[FAILING]) == (1, 2, 0)
    assert rep.skipped_why[WHY_TOKEN] == 1
    left = [row["reason"] for _, row in dead_rows(r, settings)]
    assert left == [reasons[0], reasons[2]]
    [(_, fields)] = r.xrange(names.sensors)
    reading = orjson.loads(fields[b"d"])
    assert (reading["device_id"], reading["type"], reading["value"]) == ("dev-9", "smoke", 0.2)
    assert "token" not in reading
    drain(Worker(city, settings, engine, r, name="w"))
    devices = r.hgetall(LiveKeys(settings.stream_prefix).devices)
    assert set(devices) == {b"dev-9"} and orjson.loads(devices[b"dev-9"])["t"] == "smoke"

    assert redrive(r, settings, city, Selection(), mqtt_decoder=fixed).counts[REDRIVEN] == 0  # nothing twice


def test_letters_that_must_never_be_redriven_are_skipped(settings, r, city, public_category):
    names = StreamNames.of(settings)
    good = orjson.dumps(report("x-1", public_category))
    for raw, reason, stream, source in [
        (good, "apply failed: boom", "", "feed-a"),  # no stream
        (good, "category: unknown", f"import:{'file.csv'}", "import"),  # a spreadsheet row
        (orjson.dumps({**report("x-2", public_category), "source": "other"}), "source: the record says 'other'",
         names.cases, "push-test"),  # another source than the token's
        (b"[" + good, "body is not valid JSON: unexpected end", names.cases, "push-test"),  # a whole body
    ]:
        dead_letter(r, names, settings, raw, reason, stream=stream, source=source)
    dead_letter(r, names, settings, good + b" " * (2 * 1024 * 1024), "apply failed: too big", stream=names.cases,
                source="feed-a", entry_id="1-0")  # cut short
    rep = redrive(r, settings, city, Selection())
    assert (rep.counts[SKIPPED], rep.counts[REDRIVEN]) == (5, 0)
    assert len(rep.skipped_why) == 5 and r.xlen(names.cases) == 0 and len(dead_rows(r, settings)) == 5


def test_the_command_line_redrives_after_categories_yaml_gained_the_category(settings, r, engine, city, tmp_path,
                                                                             monkeypatch, capsys):
    import shutil

    from config.settings import get_settings
    from ingest.__main__ import main

    added = "0199"
    assert added not in city.categories
    Producer(r, settings, source="feed-a").cases([report("cli-1", added), report("cli-2", added)])
    drain(Worker(city, settings, engine, r, name="w"))
    assert len(dead_rows(r, settings)) == 2

    city_dir = tmp_path / "city"
    shutil.copytree(city.city_dir, city_dir)
    yaml_file = city_dir / "categories.yaml"
    text = yaml_file.read_text(encoding="utf-8")
    line = (f'      - {{code: "{added}", name: 新增类别, en: Added category, default_grade: 1, department: cg, '
            'accept_limit: 2wh, complete_limit: 1wd, onsite: true}\n')
    yaml_file.write_text(text.replace('  - code: "02"\n', line + '  - code: "02"\n', 1), encoding="utf-8")
    for k, v in {"REDIS_URL": settings.redis_url, "DATABASE_URL": settings.database_url, "CITY_DIR": str(city_dir),
                 "STREAM_PREFIX": settings.stream_prefix, "VAR_DIR": str(settings.var_dir)}.items():
        monkeypatch.setenv(k, str(v))
    get_settings.cache_clear()  # the command reads its settings from the environment
    try:
        assert main(["dead", "--reason", "unknown category", "--since", "1h"]) == 0
        listed = capsys.readouterr().out
        assert listed.count('"reason":') == 2 and "cli-1" in listed
        assert main(["dead", "--redrive", "--dry-run", "--json"]) == 0
        dry = orjson.loads(capsys.readouterr().out)
        assert (dry["dry_run"], dry[REDRIVEN], len(dead_rows(r, settings))) == (True, 2, 2)
        assert main(["dead", "--redrive", "--json", "--reason", "unknown category"]) == 0
        done = orjson.loads(capsys.readouterr().out)
        assert (done[REDRIVEN], done[FAILING], done["redriven_to"]) == (2, 0, {StreamNames.of(settings).cases: 2})
        assert main(["dead", "--redrive"]) == 0
        assert "re-driven: 0" in capsys.readouterr().out
        assert main(["dead", "--redrive", "--since", "soon"]) == 2
        assert "--since" in capsys.readouterr().err
        with pytest.raises(SystemExit) as exc:
            main(["dead", "--help"])
        assert exc.value.code == 0 and "--redrive" in capsys.readouterr().out
    finally:
        get_settings.cache_clear()
    from config.city import load_city

    drain(Worker(load_city(city_dir), settings, engine, r, name="restarted"))
    assert stored(engine, "cli-1") == (1, 1, "reported") and stored(engine, "cli-2") == (1, 1, "reported")


def test_spreadsheet_rows_are_mapped_again_with_the_fixed_mapping(settings, r, engine, city, tmp_path):
    from ingest.feeds.spreadsheet import import_file, load_mapping
    from tests.mappings import mini_mapping, write_csv

    rows = [{"id": f"sp-{i}", "created": "2024-05-06 09:00:00", "closed": "", "status": "new", "kind": kind,
             "dept": "city", "place": "光明大道", "x": "", "y": ""} for i, kind in enumerate(["litter", "pothole", "pothole"])]
    csv = write_csv(tmp_path / "export.csv", rows)
    broken = mini_mapping(tmp_path, "m", "sheet")
    rep = import_file(csv, broken, settings, r, city=city)
    assert rep.rows_dead == 2
    w = Worker(city, settings, engine, r, name="w")
    drain(w)
    letters = dead_rows(r, settings)
    assert [row["stream"] for _, row in letters] == ["import:export.csv"] * 2
    assert "pothole" in letters[0][1]["reason"] and stored(engine, "sp-1") == (0, 0, None)

    assert redrive(r, settings, city, Selection()).skipped_why  # without a mapping: skipped, with why
    fixed_file = tmp_path / "fixed.yaml"
    fixed_file.write_text(broken.read_text(encoding="utf-8").replace('parking: "0202"', 'parking: "0202", pothole: "0202"'),
                          encoding="utf-8")
    same = redrive(r, settings, city, Selection(), mapping=load_mapping(broken, city))
    assert (same.counts[FAILING], same.counts[REDRIVEN]) == (2, 0)  # the old mapping still fails them
    done = redrive(r, settings, city, Selection(stream="import:export.csv"), mapping=load_mapping(fixed_file, city))
    assert (done.counts[REDRIVEN], done.streams) == (2, {StreamNames.of(settings).bulk: 2})
    assert dead_rows(r, settings) == []
    assert redrive(r, settings, city, Selection(), mapping=load_mapping(fixed_file, city)).examined == 0
    drain(w)
    for ext in ("sp-1", "sp-2"):
        assert stored(engine, ext) == (1, 2, "registered")  # report → register, once
    # Importing the file again with the fixed mapping stores nothing twice.
    import_file(csv, fixed_file, settings, r, city=city)
    drain(w)
    assert stored(engine, "sp-1") == (1, 2, "registered") and stored(engine, "sp-0") == (1, 2, "registered")


def test_progress_is_reported_while_going(settings, r, city, public_category):
    names = StreamNames.of(settings)
    for i in range(5):
        dead_letter(r, names, settings, orjson.dumps(report(f"p-{i}", "8888")), "category: unknown category '8888'",
                    stream=names.cases, source="feed-a", entry_id=f"{i + 1}-0")
    seen = []
    rep = redrive(r, settings, city, Selection(), progress=lambda rp: seen.append(rp.examined), progress_every=2)
    assert rep.counts[FAILING] == 5 and seen[:2] == [2, 4]
