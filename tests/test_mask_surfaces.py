"""Personal data typed into free text, as each role reads it: masked for a leader, whole for a dispatcher, in the
case JSON, the case list and the CSV; masked for everyone on the wall, in briefings and in the dead-letter listing
(unless --show-personal). The stored text stays whole."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from sqlalchemy import select

from core.records import CITY_TZ
from ingest.worker import Worker
from store.schema import Case
from store.streams import Producer, StreamNames, dead_letter, iter_dead
from tests import accounts
from tests.checks import needs_poppler, pdf_text

PHONE, ID = "13812345678", "11010519491231002X"
TITLE = f"噪音扰民 联系 {PHONE}"
DESC = f"身份证 {ID}，网格 440311001001001，2026-11-22 09:31 罚款1200元"


def _store(settings, r, engine, city):
    g = city.geography.areas("grid")[0]
    lon, lat = g.centroid
    Producer(r, settings, source="test").cases([{
        "source": "test", "external_id": "pii-1", "event": "report", "occurred_at": "2026-11-22T09:31:00+08:00",
        "category": next(c.code for c in city.categories.values() if not c.sensor_only), "title": TITLE,
        "description": DESC, "lon": lon, "lat": lat}])
    w = Worker(city, settings, engine, r, name="w")
    while w.run_once(50):
        pass
    with engine.connect() as conn:
        return conn.scalar(select(Case.id).where(Case.external_id == "pii-1"))


def test_free_text_is_masked_for_a_leader_and_whole_for_a_dispatcher(settings, r, engine, city):
    from app import create_app

    case_id = _store(settings, r, engine, city)
    app = create_app(settings)
    for role, whole in (("leader", False), ("dispatcher", True)):
        c = accounts.client(settings, role, app=app)
        one = orjson.loads(c.get(f"/api/v1/cases/{case_id}").data)
        listed = orjson.loads(c.get("/api/v1/cases").data)["items"][0]
        rows = list(csv.DictReader(io.StringIO(c.get("/api/v1/cases.csv").get_data(as_text=True))))
        for text in (one["title"], listed["title"], rows[0]["title"]):
            assert (PHONE in text) is whole, (role, text)
            assert ("138****5678" in text) is not whole, (role, text)
        assert (ID in one["description"]) is whole
        # what is not personal stays as it is for everyone: the grid code, the date, the amount
        assert "440311001001001" in one["description"] and "2026-11-22 09:31" in one["description"]
        assert "1200元" in one["description"]
    with engine.connect() as conn:  # stored whole
        assert conn.scalar(select(Case.title).where(Case.id == case_id)) == TITLE


# --------------------------------------------------------------------------- the wall, briefings, dead letters: masked for all

ID18, OLD_ID, GRID = "440311199001011237", "110105900101123", "440311001002003"
EXPOSED = f"占道经营 联系{PHONE} 身份证{ID18} 旧证{OLD_ID} 网格{GRID}"
# what every reader of the wall, a briefing or a dead letter sees: the district's own 15-digit code stays
EXPOSED_SEEN = f"占道经营 联系138****5678 身份证440311********1237 旧证110105******123 网格{GRID}"
CLEAR = (PHONE, ID18, OLD_ID)


def _store_exposed(settings, r, engine, city, ext, reported, due) -> int:
    g = city.geography.areas("grid")[0]
    lon, lat = g.centroid
    Producer(r, settings, source="test").cases([{
        "source": "test", "external_id": ext, "event": "report", "occurred_at": reported.isoformat(),
        "category": next(c.code for c in city.categories.values() if not c.sensor_only), "title": EXPOSED,
        "grade": 4, "grid_code": g.code, "lon": lon, "lat": lat, "due_at": due.isoformat()}])
    w = Worker(city, settings, engine, r, name="w")
    while w.run_once(50):
        pass
    assert w.totals.dead == 0
    with engine.connect() as conn:
        case_id, title = conn.execute(select(Case.id, Case.title).where(Case.external_id == ext)).one()
    assert title == EXPOSED  # stored whole
    return case_id


def test_the_wall_masks_titles_for_everyone(settings, r, engine, city):
    from config.risk import get_risk_model
    from dashboard import screen

    now = datetime.now(UTC).replace(microsecond=0)
    case_id = _store_exposed(settings, r, engine, city, "wall-1", now - timedelta(minutes=5), now + timedelta(hours=2))
    fast = screen.fast(r, settings, engine, city, get_risk_model(settings.risk_file))
    shown = [c["title"] for c in fast["ticker"] + fast["sla"] if c["id"] == case_id]
    assert shown == [EXPOSED_SEEN, EXPOSED_SEEN]  # in the ticker and on the SLA board
    snapshot = orjson.dumps(fast).decode()
    assert not [d for d in CLEAR if d in snapshot]
    with engine.connect() as conn:
        assert conn.scalar(select(Case.title).where(Case.id == case_id)) == EXPOSED


def test_the_sla_list_and_the_drill_down_mask_titles_for_a_leader(settings, r, engine, city):
    """/api/v1/sla, the drill-down's overdue panel and its map pins: masked for a leader (the city's own 15-digit
    codes kept), whole for a dispatcher."""
    from app import create_app
    from dashboard import drill

    now = datetime.now(UTC).replace(microsecond=0)
    case_id = _store_exposed(settings, r, engine, city, "sla-1", now - timedelta(hours=3), now - timedelta(minutes=5))
    app = create_app(settings)
    for role, want in (("leader", EXPOSED_SEEN), ("dispatcher", EXPOSED)):
        c = accounts.client(settings, role, app=app)
        items = orjson.loads(c.get("/api/v1/sla?state=overdue").data)["items"]
        assert [i["title"] for i in items if i["id"] == case_id] == [want], role
        with accounts.request(app, role):
            view = drill.parse(f"/area/{city.geography.district.code}", "?range=7d")
            assert [x["title"] for x in drill.overdue(view) if x["id"] == case_id] == [want], role
            assert [x["title"] for x in drill.pins(view) if x["id"] == case_id] == [want], role


def _briefing_day(settings, r, engine, city):
    """A case overdue and graded 特别重大 (so in both case lists) an hour ago: (now, its city day)."""
    now = datetime.now(UTC).replace(microsecond=0)
    at = now - timedelta(hours=1)
    _store_exposed(settings, r, engine, city, "brief-1", at, at + timedelta(minutes=1))
    return now, at.astimezone(CITY_TZ).date()


def test_the_briefing_spreadsheet_masks_case_titles_for_everyone(settings, r, engine, city, tmp_path):
    from openpyxl import load_workbook

    from dashboard import briefing

    now, day = _briefing_day(settings, r, engine, city)
    (xlsx,) = briefing.produce(engine, r, settings, city, "day", day, None, tmp_path, now=now, formats=("xlsx",))
    wb = load_workbook(xlsx)
    for name in ("超期未办结", "重点案件"):
        rows = list(wb[name].iter_rows(values_only=True))
        assert rows[0][1] == "标题" and [row[1] for row in rows[1:]] == [EXPOSED_SEEN], name
    cells = " ".join(str(v) for ws in wb.worksheets for row in ws.iter_rows(values_only=True) for v in row)
    assert not [d for d in CLEAR if d in cells]


@needs_poppler
def test_the_briefing_pdf_masks_case_titles_for_everyone(settings, r, engine, city, tmp_path):
    from dashboard import briefing

    now, day = _briefing_day(settings, r, engine, city)
    (pdf,) = briefing.produce(engine, r, settings, city, "day", day, None, tmp_path, now=now, formats=("pdf",))
    flat = re.sub(r"\s+", "", pdf_text(pdf, mode="-raw"))
    assert flat.count(re.sub(r"\s+", "", EXPOSED_SEEN)) == 2  # the overdue list and the key cases
    assert not [d for d in CLEAR if d in flat]


# --------------------------------------------------------------------------- dead letters as a reader sees them


def test_the_dead_letter_listing_masks_by_default_and_shows_whole_on_request(settings, r, city, monkeypatch, capsys):
    from config.settings import get_settings
    from ingest.__main__ import main

    # an event for a category the city does not have: dead-lettered at the edge with its payload, as JSON with
    # escapes (the way many clients write it) and as plain UTF-8
    record = {"source": "test", "external_id": "dl-1", "event": "report", "occurred_at": "2026-11-22T09:31:00+08:00",
              "category": "0199", "title": EXPOSED}
    names = StreamNames.of(settings)
    dead_letter(r, names, settings, json.dumps(record), f"category: unknown category, title {EXPOSED}",
                stream=names.cases, source="test")
    dead_letter(r, names, settings, orjson.dumps(record), "category: unknown category", stream=names.cases,
                source="test")
    for k, v in {"REDIS_URL": settings.redis_url, "DATABASE_URL": settings.database_url,
                 "STREAM_PREFIX": settings.stream_prefix, "VAR_DIR": str(settings.var_dir)}.items():
        monkeypatch.setenv(k, str(v))
    get_settings.cache_clear()  # the command reads its settings from the environment
    try:
        assert main(["dead"]) == 0
        masked = capsys.readouterr().out
        assert main(["dead", "--reason", "unknown category"]) == 0
        filtered = capsys.readouterr().out
        assert main(["dead", "--show-personal"]) == 0
        whole = capsys.readouterr().out
        with pytest.raises(SystemExit) as exc:
            main(["dead", "--help"])
        assert exc.value.code == 0 and "--show-personal" in capsys.readouterr().out
    finally:
        get_settings.cache_clear()
    for out in (masked, filtered):
        assert out.count(EXPOSED_SEEN) == 3, out  # both payloads and the reason quoting the title
        assert not [d for d in CLEAR if d in out]
    assert whole.count(EXPOSED) == 2 and PHONE in whole and "138****5678" not in whole
    stored = [row for _, row in iter_dead(r, settings)]  # the letters themselves stay whole, to be re-driven
    assert [orjson.loads(row["raw"])["title"] for row in stored] == [EXPOSED, EXPOSED]
    assert EXPOSED in stored[0]["reason"]


def test_a_leader_cannot_find_cases_by_the_numbers_masked_for_them(settings, r, engine, city):
    """The title search reads the stored (whole) title: for a role without personal data a run of digits is refused,
    else searching 1381… would tell which cases hold a phone number the leader only sees masked."""
    from app import create_app

    case_id = _store(settings, r, engine, city)
    app = create_app(settings)
    leader, dispatcher = (accounts.client(settings, role, app=app) for role in ("leader", "dispatcher"))
    for q in (PHONE, PHONE[:4], PHONE[-6:]):
        resp = leader.get(f"/api/v1/cases?q={q}")
        assert resp.status_code == 403 and "personal" in orjson.loads(resp.data)["error"], q
        assert leader.get(f"/api/v1/cases.csv?q={q}").status_code == 403
        assert [c["id"] for c in orjson.loads(dispatcher.get(f"/api/v1/cases?q={q}").data)["items"]] == [case_id]
    # words (and a short number such as a building's) stay searchable for everyone
    assert [c["id"] for c in orjson.loads(leader.get("/api/v1/cases?q=噪音").data)["items"]] == [case_id]
    assert leader.get("/api/v1/cases?q=3号楼").status_code == 200
