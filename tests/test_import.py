"""CSV/XLSX import (ingest/feeds/spreadsheet/) through the real streams and the worker.

Expected figures are computed here with pandas over the files and the mapping YAML read as plain data,
never with the importer's own code.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import orjson
import pandas as pd
import pytest
import yaml
from sqlalchemy import text

from config.settings import ROOT
from ingest.feeds.spreadsheet import ImportFileError, MappingError, import_file, iter_records, load_mapping
from store.streams import StreamNames
from tests.mappings import mini_mapping, write_csv

DATA = Path(__file__).parent / "data" / "import"
LA = DATA / "la311_2018_sample.csv"
NYC = DATA / "nyc311_2018_sample.csv"
LA_MAP = ROOT / "config" / "mappings" / "la311.yaml"
NYC_MAP = ROOT / "config" / "mappings" / "nyc311.yaml"
FMT = "%m/%d/%Y %I:%M:%S %p"
TERMINAL = {"resolved", "closed", "cancelled", "referred"}


def drain(city, settings, engine, r):
    from ingest.worker import Worker

    w = Worker(city, settings, engine, r, name="t")
    while w.run_once(50):
        pass
    return w


def sql_rows(engine, q: str, **params):
    with engine.connect() as conn:
        return conn.execute(text(q), params).all()


def expected(csv: Path, mapping_file: Path, city) -> dict:
    """What the import should report, from pandas and the mapping YAML alone."""
    m = yaml.safe_load(mapping_file.read_text(encoding="utf-8"))
    d = pd.read_csv(csv, dtype=str, keep_default_na=False)
    st = d[m["status"]["column"]].map(m["status"]["map"])
    if "fallback" in m["status"]:
        st = st.fillna(m["status"]["fallback"])
    cat = d[m["category"]["column"]].map(m["category"]["map"]).fillna(m["category"]["fallback"])
    cat_fell = ~d[m["category"]["column"]].isin(m["category"]["map"].keys())
    dep = d[m["department"]["column"]].map(m["department"]["map"])
    dep = dep.fillna(cat.map({code: c.department for code, c in city.categories.items()}))
    created = pd.to_datetime(d[m["created_at"]["column"]], format=FMT, errors="coerce")
    closed = pd.to_datetime(d[m["closed_at"]["column"]], format=FMT, errors="coerce")
    dead = created.isna() | (d[m["external_id"]["column"]].str.strip() == "") | st.isna()
    ok = ~dead
    lat = d[m["location"]["lat"]]
    terminal = st.isin(TERMINAL)
    return {
        "rows": len(d), "dead": int(dead.sum()), "published": int(ok.sum()),
        "no_coordinates": int(((lat == "") & ok).sum()),
        "closed_before_created": int((terminal & (closed < created) & ok).sum()),
        "cancelled": int(((st == "cancelled") & ok).sum()), "referred": int(((st == "referred") & ok).sum()),
        "category_fallback": int((cat_fell & ok).sum()),
        "by_status": Counter(st[ok].value_counts().to_dict()),
        "by_department": Counter(dep[ok].value_counts().to_dict()),
        "status": st, "dep": dep, "ids": d[m["external_id"]["column"]],
    }


def test_la_sample_through_streams_and_worker(settings, r, engine, city):
    exp = expected(LA, LA_MAP, city)
    assert exp["closed_before_created"] == 23
    rep = import_file(LA, LA_MAP, settings, r, city=city)
    assert rep.rows_read == exp["rows"] == 10_000
    assert rep.rows_dead == exp["dead"] == 0
    assert rep.rows_published == exp["published"]
    # Los Angeles is not Guangming: every row is kept, unlocated.
    assert rep.located == 0
    assert rep.rows_unlocated == exp["published"]
    assert rep.unlocated["no coordinates"] == exp["no_coordinates"] == 5
    assert rep.unlocated["outside the district"] == exp["published"] - 5
    assert rep.flagged["closed_before_created"] == 23
    assert rep.flagged["cancelled_at_source"] == exp["cancelled"]
    assert rep.flagged["referred_out"] == exp["referred"]
    assert rep.flagged["category_fallback"] == exp["category_fallback"]
    assert rep.by_status == exp["by_status"]
    assert rep.by_department == exp["by_department"]
    assert "closed_before_created" in str(rep) and "outside the district" in str(rep)

    w = drain(city, settings, engine, r)
    assert w.totals.dead == 0
    assert r.xlen(StreamNames.of(settings).dead) == 0
    rows = sql_rows(engine, "SELECT external_id, status, departments, flags, located FROM cases WHERE source = 'la311'")
    assert len(rows) == exp["published"]
    assert not any(row.located for row in rows)
    by_status = Counter(row.status for row in rows)
    want = Counter()
    for s, n in exp["by_status"].items():
        want[{"open": "dispatched", "cancelled": "closed", "referred": "closed"}.get(s, s)] += n
    assert by_status == want
    deps = Counter()
    flags = Counter()
    for row in rows:
        dl = row.departments if isinstance(row.departments, list) else json.loads(row.departments or "[]")
        deps.update(dl)
        fl = row.flags if isinstance(row.flags, list) or row.flags is None else json.loads(row.flags)
        flags.update(fl or [])
    assert deps == exp["by_department"]
    assert flags["closed_before_created"] == 23
    # No negative durations: nothing closes before it was reported.
    assert sql_rows(engine, "SELECT count(*) FROM cases WHERE closed_at < reported_at")[0][0] == 0
    n_events = sql_rows(engine, "SELECT count(*) FROM case_events")[0][0]
    assert n_events == rep.events_published
    inferred = sql_rows(engine, "SELECT count(*) FROM case_events WHERE actor = 'import (inferred)'")[0][0]
    assert inferred > 0

    # Re-import: the same event ids, nothing changes.
    snapshot = sql_rows(engine, "SELECT external_id, status, closed_at, updated_at FROM cases ORDER BY external_id")
    rep2 = import_file(LA, LA_MAP, settings, r, city=city)
    assert rep2.as_dict() | {"seconds": 0} == rep.as_dict() | {"seconds": 0}
    w2 = drain(city, settings, engine, r)
    assert w2.totals.applied == 0 and w2.totals.duplicates == rep.events_published and w2.totals.dead == 0
    assert sql_rows(engine, "SELECT count(*) FROM cases")[0][0] == exp["published"]
    assert sql_rows(engine, "SELECT count(*) FROM case_events")[0][0] == n_events
    assert [tuple(x)[:3] for x in sql_rows(engine, "SELECT external_id, status, closed_at, updated_at FROM cases ORDER BY external_id")] \
        == [tuple(x)[:3] for x in snapshot]
    assert r.xlen(StreamNames.of(settings).dead) == 0


def test_nyc_sample(settings, r, engine, city):
    exp = expected(NYC, NYC_MAP, city)
    rep = import_file(NYC, NYC_MAP, settings, r, city=city)
    assert rep.rows_read == 1000
    assert rep.rows_published == exp["published"] and rep.rows_dead == exp["dead"] == 0
    assert rep.unlocated["no coordinates"] == exp["no_coordinates"]
    assert 90 <= exp["no_coordinates"] <= 130  # ~11% of the sample
    assert rep.rows_unlocated == exp["published"]
    assert rep.by_status == exp["by_status"]
    assert rep.by_department == exp["by_department"]
    assert rep.flagged["category_fallback"] == exp["category_fallback"]
    assert rep.flagged.get("closed_before_created", 0) == exp["closed_before_created"]
    w = drain(city, settings, engine, r)
    assert w.totals.dead == 0
    assert sql_rows(engine, "SELECT count(*) FROM cases WHERE source = 'nyc311'")[0][0] == exp["published"]
    # The file's due time wins over the category limits.
    d = pd.read_csv(NYC, dtype=str, keep_default_na=False)
    row = d[d["Due Date"] != ""].iloc[0]
    due = pd.Timestamp(row["Due Date"]).tz_localize("America/New_York").tz_convert("UTC")
    got = sql_rows(engine, "SELECT due_at FROM cases WHERE external_id = :e", e=row["Unique Key"])[0][0]
    got = pd.Timestamp(got)
    got = got.tz_localize("UTC") if got.tzinfo is None else got.tz_convert("UTC")
    assert got == due


def test_xlsx_imports_like_the_csv_slice(tmp_path, settings, city):
    import openpyxl

    d = pd.read_csv(LA, dtype=str, keep_default_na=False).iloc[2150:2450]
    csv = tmp_path / "slice.csv"
    d.to_csv(csv, index=False)
    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet("requests")
    ws.append(list(d.columns))
    for rec in d.itertuples(index=False):
        vals = list(rec)
        # Times as real Excel date cells, coordinates as numbers: what an export from Excel holds.
        vals[1] = pd.to_datetime(vals[1], format=FMT).to_pydatetime()
        lat_i, lon_i = list(d.columns).index("Latitude"), list(d.columns).index("Longitude")
        vals[lat_i] = float(vals[lat_i]) if vals[lat_i] else None
        vals[lon_i] = float(vals[lon_i]) if vals[lon_i] else None
        ws.append(vals)
    xlsx = tmp_path / "slice.xlsx"
    wb.save(xlsx)
    a = import_file(csv, LA_MAP, settings, None, dry_run=True, city=city).as_dict()
    b = import_file(xlsx, LA_MAP, settings, None, dry_run=True, city=city).as_dict()
    for k in ("file", "seconds"):
        a.pop(k), b.pop(k)
    assert a == b
    assert a["rows_published"] == 300 and a["flagged"].get("closed_before_created", 0) > 0


def _edge_grid(city):
    """A grid near the district edge whose GCJ-02 numbers, read as WGS84, fall in another grid or outside."""
    from core.coords import from_wgs84

    geo = city.geography
    outline = geo.geometry(geo.district.code).boundary
    import shapely

    grids = sorted(geo.areas("grid"), key=lambda g: outline.distance(shapely.Point(*g.centroid)))
    for g in grids:
        gx, gy = from_wgs84(*g.centroid, "gcj02")
        if geo.locate(gx, gy) != g.code:
            return g, (gx, gy)
    raise AssertionError("no grid moves under the GCJ-02 offset")


def test_gcj02_points_land_in_the_right_grid(tmp_path, settings, r, engine, city):
    grid, (gx, gy) = _edge_grid(city)
    row = {"id": "g-1", "created": "2024-05-06 09:00:00", "closed": "", "status": "new", "kind": "litter",
           "dept": "", "place": "光明大道", "x": f"{gx:.8f}", "y": f"{gy:.8f}"}
    csv = write_csv(tmp_path / "gcj.csv", [row])
    rep = import_file(csv, mini_mapping(tmp_path, "gcj", "gcjfeed", "gcj02"), settings, r, city=city)
    assert rep.located == 1
    rep_w = import_file(csv, mini_mapping(tmp_path, "wgs", "wgsfeed", "wgs84"), settings, r, city=city)
    drain(city, settings, engine, r)
    got = dict(sql_rows(engine, "SELECT source, grid_code FROM cases"))
    assert got["gcjfeed"] == grid.code
    assert got["wgsfeed"] != grid.code  # the same numbers taken as WGS84: another grid or outside
    assert rep_w.located + rep_w.rows_unlocated == 1


def test_broken_rows_are_dead_lettered_with_reasons(tmp_path, settings, r, engine, city):
    rows = [
        {"id": "ok-1", "created": "2024-05-06 09:00:00", "closed": "2024-05-06 12:00:00", "status": "done", "kind": "litter",
         "dept": "city", "place": "A", "x": "", "y": ""},
        {"id": "bad-date", "created": "2024-13-45 99:00:00", "closed": "", "status": "new", "kind": "litter",
         "dept": "", "place": "B", "x": "", "y": ""},
        {"id": "", "created": "2024-05-06 09:00:00", "closed": "", "status": "new", "kind": "litter",
         "dept": "", "place": "C", "x": "", "y": ""},
        {"id": "bad-kind", "created": "2024-05-06 09:00:00", "closed": "", "status": "new", "kind": "meteor",
         "dept": "", "place": "D", "x": "", "y": ""},
        {"id": "bad-status", "created": "2024-05-06 09:00:00", "closed": "", "status": "lost", "kind": "litter",
         "dept": "", "place": "E", "x": "", "y": ""},
        {"id": "placeholder", "created": "2024-05-06 09:00:00", "closed": "2024-05-05 09:00:00", "status": "done",
         "kind": "parking", "dept": "police", "place": "F", "x": "113.90001", "y": "22.70001"},
    ]
    csv = write_csv(tmp_path / "broken.csv", rows)
    mapping = mini_mapping(tmp_path, "m", "broken")
    rep = import_file(csv, mapping, settings, r, city=city)
    assert rep.rows_read == 6 and rep.rows_published == 2 and rep.rows_dead == 4
    assert rep.dead == Counter({"created: unreadable time": 1, "id: the id is empty": 1,
                                "kind: unknown category": 1, "status: unknown status": 1})
    assert rep.unlocated["placeholder or unusable point"] == 1
    assert rep.flagged["closed_before_created"] == 1
    dead = r.xrange(StreamNames.of(settings).dead)
    assert len(dead) == 4
    reasons = sorted(f[b"reason"].decode() for _, f in dead)
    assert any("created: cannot read '2024-13-45 99:00:00'" in x and "row 2 of broken.csv" in x for x in reasons)
    assert any("kind: unknown category 'meteor'" in x for x in reasons)
    raw = orjson.loads(dead[0][1][b"raw"])
    assert raw["_row"] >= 1 and "created" in raw
    w = drain(city, settings, engine, r)
    assert w.totals.dead == 0
    assert sql_rows(engine, "SELECT status FROM cases WHERE external_id = 'placeholder'")[0][0] == "closed"
    # A re-import dead-letters the same bad rows again (and says so); the good ones change nothing.
    rep2 = import_file(csv, mapping, settings, r, city=city)
    assert rep2.rows_dead == 4 and "dead-lettered again" in str(rep2)
    w2 = drain(city, settings, engine, r)
    assert w2.totals.applied == 0


def test_unusable_files_and_mappings(tmp_path, settings, city):
    mapping = mini_mapping(tmp_path, "m", "feed")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(ImportFileError, match="empty"):
        import_file(empty, mapping, settings, None, dry_run=True, city=city)
    header_only = tmp_path / "header.csv"
    header_only.write_text("id,created,closed,status,kind,dept,place,x,y\n")
    assert import_file(header_only, mapping, settings, None, dry_run=True, city=city).rows_read == 0

    # A mapping naming a column the file lacks: the key and the column are named.
    other = write_csv(tmp_path / "other.csv", [{"id": "1", "created": "2024-05-06 09:00:00", "closed": "", "status": "new",
                                             "kind": "litter", "dept": "", "place": "A", "x": "", "yy": ""}])
    with pytest.raises(MappingError) as exc:
        import_file(other, mapping, settings, None, dry_run=True, city=city)
    assert "location.lat" in str(exc.value) and "'y'" in str(exc.value) and "other.csv" in str(exc.value)

    # A typo in a key: the file, the key and the fix.
    typo = tmp_path / "typo.yaml"
    typo.write_text(mapping.read_text().replace("status:", "stauts:"))
    with pytest.raises(MappingError) as exc:
        load_mapping(typo, city)
    msg = str(exc.value)
    assert "typo.yaml" in msg and "stauts" in msg and "did you mean 'status'" in msg

    bad_code = tmp_path / "code.yaml"
    bad_code.write_text(mapping.read_text().replace('"0202"', "9999").replace("cg", "nosuch"))
    with pytest.raises(MappingError) as exc:
        load_mapping(bad_code, city)
    assert "category" in str(exc.value) and "nosuch" in str(exc.value)
    with pytest.raises(MappingError, match="not valid YAML"):
        (tmp_path / "y.yaml").write_text("source: [unclosed\n")
        load_mapping(tmp_path / "y.yaml", city)


def test_encodings_and_cli(tmp_path, settings, city, capsys):
    from ingest.__main__ import main

    mapping = mini_mapping(tmp_path, "m", "feed")
    row = {"id": "zh-1", "created": "2024-05-06 09:00:00", "closed": "", "status": "new", "kind": "litter",
           "dept": "", "place": "光明区光明大道88号", "x": "", "y": ""}
    gb = write_csv(tmp_path / "gb.csv", [row], encoding="gb18030")
    bom = write_csv(tmp_path / "bom.csv", [row], encoding="utf-8-sig")
    for f, enc in ((gb, "gb18030"), (bom, "utf-8-sig")):
        rep = import_file(f, mapping, settings, None, dry_run=True, city=city)
        assert rep.encoding == enc and rep.rows_published == 1

    assert main(["import", str(bom), "--mapping", str(mapping), "--dry-run"]) == 0
    assert "dry run" in capsys.readouterr().out
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert main(["import", str(empty), "--mapping", str(mapping), "--dry-run"]) == 2
    assert "empty" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["import", "--help"])
    assert exc.value.code == 0
    assert "--encoding" in capsys.readouterr().out


def test_iso_times_with_offsets_import_as_the_instants_they_name(tmp_path, city):
    # ISO 8601 without a format: an offset or Z names the instant; a time without one is in the mapping's zone
    mapping = mini_mapping(tmp_path, "iso", "isofeed")
    text = mapping.read_text(encoding="utf-8").replace(
        'created_at: {column: created, format: "%Y-%m-%d %H:%M:%S", tz: Asia/Shanghai}', "created_at: {column: created}")
    mapping.write_text(text, encoding="utf-8")
    written = {"o-1": "2024-05-06T09:00:00+08:00", "o-2": "2024-05-06T01:30:00Z", "o-3": "2024-05-06 09:00:00",
               "o-4": "2024-05-06T03:00:00-02:00", "o-5": "2024-05-06T09:00+0800", "o-6": "2024-05-06"}
    rows = [{"id": k, "created": v, "closed": "", "status": "new", "kind": "litter", "dept": "", "place": "A",
             "x": "", "y": ""} for k, v in written.items()]
    csv = write_csv(tmp_path / "iso.csv", rows)
    reports = {r["external_id"]: r["occurred_at"] for r in iter_records(csv, mapping, city=city)
               if r["event"] == "report"}
    expected = {k: pd.Timestamp(v).tz_localize("Asia/Shanghai") if pd.Timestamp(v).tzinfo is None
                else pd.Timestamp(v) for k, v in written.items()}
    assert {k: pd.Timestamp(v) for k, v in reports.items()} == expected
