"""The risk model (蓝/黄/橙/红): hand-worked scores, the hotspot finder against a brute-force pairwise computation, and
the whole path — streams, worker, SLA and risk sweeps, API — against an independent recomputation from SQL."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import numpy as np
import orjson
import pandas as pd
import pytest
from sqlalchemy import select

from config.risk import RiskConfigError, load_risk_model
from core import risk
from core.lifecycle import OPEN_STATUSES
from core.risk import HotspotRule, Report, RiskModel, find_hotspots
from ingest.scheduler import device_watch, risk_sweep, sla_sweep
from ingest.worker import Worker
from store.schema import Case, SensorAlarm
from store.streams import Producer
from tests import accounts

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime.now(UTC).replace(microsecond=0)
H = timedelta(hours=1)
OPEN = {s.value for s in OPEN_STATUSES}


# --------------------------------------------------------------------------- an independent brute force


def haversine_matrix(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Every pairwise great-circle distance in metres (written here, not taken from core.risk)."""
    lo, la = np.radians(lon), np.radians(lat)
    dlat = la[:, None] - la[None, :]
    dlon = lo[:, None] - lo[None, :]
    h = np.sin(dlat / 2) ** 2 + np.cos(la)[:, None] * np.cos(la)[None, :] * np.sin(dlon / 2) ** 2
    return 2 * 6_371_008.8 * np.arcsin(np.sqrt(np.minimum(h, 1.0)))


def brute_hotspots(df: pd.DataFrame, rule: HotspotRule, now: float) -> tuple[dict[int, frozenset], dict[str, float]]:
    """(case id → the set of case ids of its hotspot, grid → hotspot part) by the rule's words, pair by pair.

    ``df``: case_id, category, grid, lon, lat, reported (Unix seconds).
    """
    df = df[df.reported >= now - rule.window_hours * 3600]
    member_of: dict[int, frozenset] = {}
    parts: dict[str, float] = {}
    for _, part in df.groupby("category"):
        ids = part.case_id.to_numpy()
        near = haversine_matrix(part.lon.to_numpy(), part.lat.to_numpy()) <= rule.radius_m
        core = near.sum(axis=1) >= rule.min_cases
        label = -np.ones(len(ids), dtype=int)
        for start in np.flatnonzero(core):  # connected components of cores, by search
            if label[start] >= 0:
                continue
            label[start] = start
            todo = [start]
            while todo:
                k = todo.pop()
                for m in np.flatnonzero(near[k] & core & (label < 0)):
                    label[m] = start
                    todo.append(m)
        dist = haversine_matrix(part.lon.to_numpy(), part.lat.to_numpy())
        for k in np.flatnonzero(~core):
            cores = np.flatnonzero(near[k] & core)
            if len(cores):
                label[k] = label[min(cores, key=lambda c: (dist[k, c], c))]
        for lab in set(label[label >= 0]):
            members = frozenset(int(x) for x in ids[label == lab])
            for x in members:
                member_of[x] = members
        for row, lab in zip(part.itertuples(), label, strict=True):
            if lab >= 0:
                age = max(now - row.reported, 0.0) / 3600
                parts[row.grid] = parts.get(row.grid, 0.0) + rule.weight * 0.5 ** (age / rule.half_life_hours)
    return member_of, parts


def finder_groups(reports, rule, now) -> tuple[dict[int, frozenset], dict[str, float]]:
    found = find_hotspots(reports, rule, now)
    member_of = {}
    for h in found.hotspots:
        members = frozenset(h.cases)
        assert len(members) == h.count
        for x in members:
            member_of[x] = members
    return member_of, found.grid_parts


# --------------------------------------------------------------------------- the model by hand


def test_score_parts_and_levels_worked_by_hand():
    model = RiskModel(thresholds={"grid": (10, 20, 40), "community": (30, 60, 120), "street": (100, 200, 400),
                                  "district": (500, 1000, 2000)})
    counters = {"g1": 3, "g2": 2, "g3": 1, "g4": 0, "o2": 1, "o3": 1, "alarms": 2, "offline": 4}
    parts = model.parts(counters, hotspots=7.5)
    # cases 3·1 + 2·3 + 1·6 = 15; overdue (2 − 1)·(3 + 6) = 9; alarms 2·5 = 10; offline weighs 0 by default
    assert parts == {"cases": 15, "overdue": 9, "alarms": 10, "offline": 0, "hotspots": 7.5}
    assert model.score(parts) == 41.5
    assert model.level(41.5, "grid").name == "红" and model.level(41.5, "grid").roman == "I"
    assert model.level(41.5, "community").name == "黄" and model.level(41.5, "community").roman == "III"
    assert model.level(41.5, "street").name == "蓝" and model.level(41.5, "street").roman == "IV"
    # a threshold is where its level begins
    assert [model.level(x, "grid").level for x in (0, 9.999, 10, 19.9, 20, 39.9, 40)] == [1, 1, 2, 2, 3, 3, 4]
    assessed = model.assess(counters, "street", 7.5)
    assert assessed["score"] == 41.5 and assessed["risk_level"] == 1 and assessed["color_name"] == "蓝"
    tripled = RiskModel(overdue_multiplier=3, offline_weight=0.5)
    assert tripled.parts(counters)["overdue"] == 18 and tripled.parts(counters)["offline"] == 2
    assert model.case_weight(3, overdue=True) == 12 and model.case_weight(1, overdue=False) == 1
    assert model.parts({}) == {"cases": 0, "overdue": 0, "alarms": 0, "offline": 0, "hotspots": 0}
    assert risk.rollup({"440311001001001": 1.5, "440311001001002": 2, "440311002001001": 4}) == {
        "440311": 7.5, "440311001": 3.5, "440311001001": 3.5, "440311001001001": 1.5, "440311001001002": 2,
        "440311002": 4, "440311002001": 4, "440311002001001": 4}


def test_the_shipped_configuration_is_the_documented_default():
    assert load_risk_model(ROOT / "config" / "risk.yaml") == RiskModel()
    assert RiskModel().grade_weights == {1: 1, 2: 3, 3: 6, 4: 10}


def test_configuration_errors_name_the_file_the_key_and_the_fix(tmp_path):
    bad = tmp_path / "risk.yaml"
    bad.write_text(
        "grade_weights: {1: 1, 2: -3, 3: 6, 5: 2}\n"
        "overdue_multiplier: 0.5\n"
        "alarm_weigth: 5\n"
        "hotspot: {radius_m: 0, window_hours: 500, min_cases: 1, colour: red}\n"
        "thresholds: {grid: [50, 20, 10], street: [1, 2], community: [1, 2, 3], district: [1, 2, 3], city: [1, 2, 3]}\n",
        encoding="utf-8")
    with pytest.raises(RiskConfigError) as err:
        load_risk_model(bad)
    problems = err.value.problems
    text = "\n".join(problems)
    assert all(p.startswith("risk.yaml: ") for p in problems), problems
    for key in ("grade_weights.2", "grade_weights.5", "grade_weights: no weight for grade(s) 4", "overdue_multiplier",
                "alarm_weigth: unknown key", "hotspot.radius_m", "hotspot.window_hours", "hotspot.min_cases",
                "hotspot.colour", "thresholds.grid", "thresholds.street", "thresholds.city"):
        assert key in text, key
    assert "write e.g." in text  # and how to fix it
    (tmp_path / "broken.yaml").write_text("thresholds: [", encoding="utf-8")
    with pytest.raises(RiskConfigError, match="not valid YAML"):
        load_risk_model(tmp_path / "broken.yaml")
    with pytest.raises(RiskConfigError, match="file not found"):
        load_risk_model(tmp_path / "missing.yaml")
    partial = tmp_path / "partial.yaml"
    partial.write_text("alarm_weight: 20\nhotspot: {min_cases: 4}\n", encoding="utf-8")
    model = load_risk_model(partial)
    assert model.alarm_weight == 20 and model.hotspot.min_cases == 4 and model.hotspot.radius_m == 100
    assert model.thresholds == RiskModel().thresholds


# --------------------------------------------------------------------------- hotspots


def test_three_reports_in_a_line_are_a_hotspot_only_when_the_middle_one_reaches_both():
    step = 250 / 111_195  # 250 m of latitude in degrees (haversine, mean Earth radius)
    now = 1_800_000_000.0
    reps = [Report(i + 1, "0101", "g", 113.9, 22.7 + i * step, now - 3600) for i in range(3)]
    reps.append(Report(9, "0102", "g", 113.9, 22.7, now - 3600))  # another category does not count
    found = find_hotspots(reps, HotspotRule(radius_m=300, min_cases=3, window_hours=24, weight=2, half_life_hours=1),
                          now)
    assert [(h.category, sorted(h.cases)) for h in found.hotspots] == [("0101", [1, 2, 3])]
    assert found.grid_parts["g"] == pytest.approx(3 * 2 * 0.5)  # one hour old, one-hour half-life
    assert find_hotspots(reps, HotspotRule(radius_m=200, min_cases=3), now).hotspots == []
    assert find_hotspots(reps, HotspotRule(radius_m=300, min_cases=3, window_hours=0.5), now).hotspots == []


@pytest.mark.parametrize("seed", range(8))
def test_hotspot_finder_equals_a_brute_force_pairwise_computation(seed):
    rng = np.random.default_rng(seed)
    now = 1_800_000_000.0
    n = int(rng.integers(50, 600))
    # a loose background and a few tight clusters, three categories, times over two days
    centres = rng.normal([113.92, 22.76], 0.02, size=(4, 2))
    pick = rng.integers(0, 5, n)
    spread = np.where(pick == 4, 0.03, rng.choice([0.0005, 0.001, 0.003], n))
    base = np.where(pick[:, None] == 4, [113.92, 22.76], centres[np.minimum(pick, 3)])
    pts = base + rng.normal(0, 1, (n, 2)) * spread[:, None]
    df = pd.DataFrame({"case_id": np.arange(1, n + 1), "category": rng.choice(["0101", "0301", "0702"], n),
                       "grid": rng.choice(["g1", "g2", "g3"], n), "lon": pts[:, 0], "lat": pts[:, 1],
                       "reported": now - rng.uniform(-600, 48 * 3600, n)})
    rule = HotspotRule(radius_m=float(rng.choice([80, 150, 300])), window_hours=float(rng.choice([12, 24, 72])),
                       min_cases=int(rng.integers(2, 6)), weight=float(rng.choice([1, 2])),
                       half_life_hours=float(rng.choice([3, 24])))
    reports = [Report(int(r.case_id), r.category, r.grid, float(r.lon), float(r.lat), float(r.reported))
               for r in df.itertuples()]
    want_members, want_parts = brute_hotspots(df, rule, now)
    got_members, got_parts = finder_groups(reports, rule, now)
    assert want_members, "the data should hold hotspots"
    assert got_members == want_members
    assert got_parts.keys() == want_parts.keys()
    for grid, value in want_parts.items():
        assert got_parts[grid] == pytest.approx(value, abs=2e-3)


# --------------------------------------------------------------------------- the whole path


def drain(w: Worker) -> None:
    while w.run_once(50):
        pass


def write_rule(tmp_path: Path) -> Path:
    """A small-city rule: three reports in 100 m in 24 h make a hotspot; thresholds a handful of cases can reach."""
    path = tmp_path / "risk.yaml"
    path.write_text(
        "offline_weight: 1\n"
        "hotspot: {radius_m: 100, window_hours: 24, min_cases: 3, weight: 2, half_life_hours: 6}\n"
        "thresholds: {grid: [5, 12, 20], community: [8, 16, 30], street: [10, 20, 40], district: [20, 40, 80]}\n",
        encoding="utf-8")
    return path


@pytest.fixture
def scene(tmp_path, settings, r, engine, city):
    """Cases, sensors and a cluster of repeat reports published through the streams, applied by the worker."""
    settings = settings.model_copy(update={"risk_file": write_rule(tmp_path)})
    geo = city.geography
    streets = geo.areas("street")
    comms = geo.children(streets[0].code)
    ga = geo.children(comms[0].code)[0]
    gb = geo.children(comms[1].code)[0]
    gc = geo.grids_within(streets[1].code)[0]
    cat = next(c for c in city.categories.values() if not c.sensor_only).code
    other = next(c for c in city.categories.values() if not c.sensor_only and c.code != cat).code

    spread = [0]

    def report(ext, grid, grade, at, due=None, category=cat, where=None, **extra):
        rec = {"source": "r", "external_id": ext, "event": "report", "event_id": "report",
               "occurred_at": at.isoformat(), "category": category, "grade": grade, "title": ext, **extra}
        if grid is not None:
            rec["grid_code"] = grid.code  # the grid counts; the point only places the report for hotspots
            spread[0] += 1  # reports not placed on purpose lie 200 m apart: no hotspot by chance
            lon, lat = where or (grid.centroid[0] + spread[0] * 200 / 102_600, grid.centroid[1])
            rec.update(lon=lon, lat=lat)
        if due is not None:
            rec["due_at"] = due.isoformat()
        return rec

    def event(ext, action, at, **extra):
        return {"source": "r", "external_id": ext, "event": action, "event_id": action, "occurred_at": at.isoformat(),
                **extra}

    m = 40 / 111_195  # 40 m in degrees of latitude
    lon, lat = gc.centroid
    recs = [
        report("a1", ga, 1, NOW - 5 * H), report("a2", ga, 2, NOW - 5 * H, due=NOW - H),
        report("a3", ga, 3, NOW - 4 * H), report("a4", ga, 4, NOW - 4 * H), event("a4", "onsite", NOW - 3 * H),
        report("b1", gb, 4, NOW - 3 * H), report("b2", gb, 2, NOW - 6 * H, due=NOW - 2 * H),
        report("c1", gc, 3, NOW - 2 * H, category=other),
        report("u1", None, 2, NOW - 2 * H),  # unlocated: the district only
        # repeat reports at one spot of gc: three within 100 m in the window, one too old to count
        report("h1", gc, 1, NOW - 1 * H, where=(lon, lat)), report("h2", gc, 1, NOW - 2 * H, where=(lon, lat + m)),
        report("h3", gc, 1, NOW - 3 * H, where=(lon, lat - m)), report("h4", gc, 1, NOW - 30 * H, where=(lon, lat)),
        event("h2", "onsite", NOW - H),  # a resolved repeat report still counts as a report
    ]
    p = Producer(r, settings, source="r")
    p.cases(recs)
    p.sensors([
        {"device_id": "smk-b", "type": "smoke", "value": 5.0, "ts": datetime.now(UTC).isoformat(),  # heard just now
         "grid_code": gb.code, "lon": gb.centroid[0], "lat": gb.centroid[1]},
        {"device_id": "gas-a", "type": "gas", "value": 1.0, "ts": (NOW - 3 * H).isoformat(), "grid_code": ga.code},
    ])
    w = Worker(city, settings, engine, r, name="risk")
    drain(w)
    sla_sweep(settings, now=NOW)
    device_watch(settings, city=city)  # gas-a has been silent for 3 hours: offline
    drain(w)

    client = accounts.client(settings)
    return {"settings": settings, "client": client, "worker": w, "producer": p, "grids": (ga, gb, gc), "cat": cat,
            "comms": comms, "streets": streets}


def get(client, url, status=200):
    resp = client.get(url)
    assert resp.status_code == status, (url, resp.status_code, resp.data[:300])
    return orjson.loads(resp.data)


def expected_scores(engine, city, model: RiskModel, now: datetime) -> dict[str, dict[str, float]]:
    """Every area's parts from SQL with pandas: open cases, open alarms, and hotspots by the brute force."""
    with engine.connect() as conn:
        cases = pd.DataFrame(conn.execute(select(Case.id, Case.category, Case.grade, Case.status, Case.overdue,
                                                 Case.grid_code, Case.lon, Case.lat, Case.reported_at)).all(),
                             columns=["id", "category", "grade", "status", "overdue", "grid", "lon", "lat", "reported"])
        alarms = pd.DataFrame(conn.execute(select(SensorAlarm.kind, SensorAlarm.grid_code)
                                           .where(SensorAlarm.cleared_at.is_(None))).all(), columns=["kind", "grid"])
    sensor_only = {c.code for c in city.categories.values() if c.sensor_only}
    located = cases[cases.grid.notna() & cases.lon.notna() & ~cases.category.isin(sensor_only)]
    recent = pd.DataFrame({"case_id": located.id, "category": located.category, "grid": located.grid,
                           "lon": located.lon, "lat": located.lat,
                           "reported": [t.timestamp() for t in located.reported]})
    _, hot = brute_hotspots(recent, model.hotspot, now.timestamp())
    open_ = cases[cases.status.isin(OPEN)]
    w = model.grade_weights
    out = {}
    geo = city.geography
    for level in ("district", "street", "community", "grid"):
        for a in geo.areas(level):
            inside = (lambda g, a=a: g.fillna("").str.startswith(a.code)) if level != "district" else (
                lambda g: pd.Series(True, index=g.index))
            o = open_[inside(open_.grid)]
            al = alarms[inside(alarms.grid)]
            parts = {
                "cases": float(sum(w[g] for g in o.grade)),
                "overdue": float(sum(w[g] * (model.overdue_multiplier - 1) for g in o[o.overdue.astype(bool)].grade)),
                "alarms": model.alarm_weight * int((al.kind == "threshold").sum()),
                "offline": model.offline_weight * int((al.kind == "offline").sum()),
                "hotspots": sum(v for g, v in hot.items() if g.startswith(a.code)),
            }
            out[a.code] = parts
    return out


def test_risk_api_equals_an_independent_recomputation_from_sql(scene, engine, city, r):
    client, settings = scene["client"], scene["settings"]
    ga, gb, gc = scene["grids"]
    model = load_risk_model(settings.risk_file)
    before = get(client, "/api/v1/risk")
    assert before["hotspots_as_of"] is None and "has not run" in before["notes"][0]
    counts = risk_sweep(settings, now=NOW, city=city)
    assert counts["hotspots"] == 1 and counts["areas"] == len(city.geography)
    want = expected_scores(engine, city, model, NOW)
    # the hand-worked view of the same scene, so the recomputation itself is checked too
    assert want[ga.code] == {"cases": 1 + 3 + 6, "overdue": 3, "alarms": 0, "offline": 1, "hotspots": 0}
    assert want[gb.code]["cases"] == 10 + 3 + 6 and want[gb.code]["alarms"] == 5  # b1, b2, the smoke alarm's case
    assert want[gc.code]["hotspots"] == pytest.approx(2 * (0.5 ** (1 / 6) + 0.5 ** (2 / 6) + 0.5 ** (3 / 6)), abs=1e-3)
    assert want[city.county_code]["cases"] - sum(want[s.code]["cases"] for s in scene["streets"]) == 3  # u1
    seen = {}
    for url in ("/api/v1/risk?level=grid", "/api/v1/risk?level=community", "/api/v1/risk", "/api/v1/risk?level=district"):
        body = get(client, url)
        assert body["hotspots_as_of"] == NOW.isoformat().replace("+00:00", "Z") and body["notes"] == []
        for item in body["items"]:
            seen[item["code"]] = item
    assert seen.keys() == {a.code for lv in ("district", "street", "community", "grid") for a in city.geography.areas(lv)}
    for code, parts in want.items():
        item = seen[code]
        assert item["parts"] == pytest.approx(parts, abs=2e-3), code
        level = model.level(sum(parts.values()), item["level"])
        assert (item["risk_level"], item["color_name"]) == (level.level, level.name), code
        assert item["color"] == city.grades[level.level].color
    assert seen[ga.code]["risk_level"] == 3 and seen[gb.code]["risk_level"] == 4  # 14 → 橙, 27 → 红
    scoped = get(client, f"/api/v1/risk?parent={scene['comms'][0].code}")
    assert [i["code"] for i in scoped["items"]] == [a.code for a in city.geography.children(scene["comms"][0].code)]

    # explain: the top cases by contribution, computed here from SQL
    body = get(client, f"/api/v1/risk/{ga.code[:9]}/explain")
    with engine.connect() as conn:
        df = pd.DataFrame(conn.execute(select(Case.id, Case.grade, Case.overdue, Case.status, Case.reported_at)
                                       .where(Case.street_code == ga.code[:9])).all(),
                          columns=["id", "grade", "overdue", "status", "reported_at"])
    df = df[df.status.isin(OPEN)].copy()
    df["c"] = [model.grade_weights[g] * (model.overdue_multiplier if o else 1) for g, o in zip(df.grade, df.overdue,
                                                                                             strict=True)]
    df = df.sort_values(["c", "reported_at", "id"], ascending=[False, True, True])
    assert [(c["id"], c["contribution"]) for c in body["top_cases"]] == list(zip(df.id, df.c, strict=True))
    assert body["open_cases"] == len(df) and body["score"] == seen[ga.code[:9]]["score"]
    assert body["thresholds"] == {"黄": 10, "橙": 20, "红": 40} and body["level"] == "street"
    assert [a["device"] for a in body["alarms"]] == ["smk-b"] and body["alarms"][0]["contribution"] == 5
    assert body["alarms_total"] == 1 and body["alarms"][0]["since"].endswith("Z")
    assert [a["device"] for a in body["offline"]] == ["gas-a"]
    assert body["hotspots"] == []
    hot = get(client, f"/api/v1/risk/{gc.code}/explain")
    assert len(hot["hotspots"]) == 1
    h = hot["hotspots"][0]
    assert h["count"] == 3 and h["grid"] == gc.code and h["contribution"] == pytest.approx(want[gc.code]["hotspots"],
                                                                                            abs=2e-3)
    assert h["last"] == (NOW - H).isoformat().replace("+00:00", "Z")
    assert get(client, f"/api/v1/risk/{gc.code}/explain?limit=1")["top_cases"][0]["contribution"] == 6  # c1
    district = get(client, f"/api/v1/risk/{city.county_code}/explain")
    assert district["parts"] == pytest.approx(want[city.county_code], abs=2e-3)
    assert len(district["hotspots"]) == 1 and {a["device"] for a in district["alarms"]} == {"smk-b"}
    assert district["offline_total"] == 1 and district["hotspots_total"] == 1
    defs = get(client, "/api/v1/definitions")
    assert defs["risk"]["hotspots"]["zh"] == "重复投诉热点" and "kpis" in defs


def test_scores_follow_new_cases_overdue_and_closing_at_once(scene, city, r):
    client, settings, w, p = scene["client"], scene["settings"], scene["worker"], scene["producer"]
    ga, gb, gc = scene["grids"]
    risk_sweep(settings, now=NOW, city=city)

    def grid_item():
        items = get(client, f"/api/v1/risk?level=grid&parent={ga.code[:12]}")["items"]
        return next(i for i in items if i["code"] == ga.code)

    start = grid_item()
    assert start["parts"]["cases"] == 10 and start["parts"]["overdue"] == 3
    # a new 红 case counts before any sweep runs
    p.cases([{"source": "r", "external_id": "a5", "event": "report", "event_id": "report",
              "occurred_at": (NOW - H).isoformat(), "category": scene["cat"], "grade": 4, "title": "a5",
              "grid_code": ga.code, "due_at": (NOW - timedelta(minutes=10)).isoformat()}])
    drain(w)
    after = grid_item()
    assert after["parts"]["cases"] == 20 and after["score"] == start["score"] + 10
    # the SLA sweep marks it overdue: its weight doubles
    sla_sweep(settings, now=NOW)
    drain(w)
    assert grid_item()["parts"]["overdue"] == 3 + 10
    assert int(r.hget(f"{settings.stream_prefix}:live:area:{ga.code}", "o4")) == 1
    # closing every open case of the grid takes all of it back
    done = [{"source": "r", "external_id": ext, "event": "onsite", "event_id": "onsite-2", "occurred_at": NOW.isoformat()}
            for ext in ("a1", "a2", "a3", "a5")]
    p.cases(done)
    drain(w)
    counters = {k.decode(): int(v) for k, v in r.hgetall(f"{settings.stream_prefix}:live:area:{ga.code}").items()}
    assert all(counters.get(f, 0) == 0 for f in ("g1", "g2", "g3", "g4", "o1", "o2", "o3", "o4", "open", "overdue"))
    final = grid_item()
    assert final["parts"]["cases"] == 0 and final["parts"]["overdue"] == 0 and final["risk_level"] == 1


def test_a_state_counted_before_the_overdue_by_grade_counters_never_drives_them_negative(scene, r, engine):
    """Live state written by the previous layout (no o1..o4) is taken back without touching them, then re-counted."""
    settings, w, p = scene["settings"], scene["worker"], scene["producer"]
    ga = scene["grids"][0]
    with engine.connect() as conn:
        case_id = conn.execute(select(Case.id).where(Case.external_id == "a2")).scalar_one()
    key = f"{settings.stream_prefix}:live:case"
    state = r.hget(key, case_id).decode()
    assert state.endswith("|2") and state.split("|")[3] == "1"  # overdue, counted with its grade's counter
    legacy = state.rsplit("|", 1)[0]
    area = f"{settings.stream_prefix}:live:area:{ga.code}"

    def as_before():  # the previous layout's state and counters: overdue counted, o2 never
        r.hset(key, case_id, legacy)
        for n in (6, 9, 12, 15):
            r.hincrby(f"{settings.stream_prefix}:live:area:{ga.code[:n]}", "o2", -1)

    as_before()
    p.cases([{"source": "r", "external_id": "a2", "event": "note", "event_id": "n1", "occurred_at": NOW.isoformat(),
              "note": "回访"}])
    drain(w)  # re-asserting the case counts it in the new layout
    assert int(r.hget(area, "o2")) == 1 and r.hget(key, case_id).decode() == state
    as_before()
    p.cases([{"source": "r", "external_id": "a2", "event": "onsite", "event_id": "done", "occurred_at": NOW.isoformat()}])
    drain(w)
    assert int(r.hget(area, "o2")) == 0 and int(r.hget(area, "overdue")) == 0


def test_the_sweep_trims_old_reports_and_reports_level_changes(scene, city, r, caplog):
    settings = scene["settings"]
    keys = f"{settings.stream_prefix}:live"
    assert r.zcard(f"{keys}:recent") == r.hlen(f"{keys}:recent_info") == 12  # located reports, sensor case included
    first = risk_sweep(settings, now=NOW, city=city)
    assert first["trimmed"] == 1 and first["reports"] == 10  # h4 too old; the smoke alarm's case is no complaint
    assert r.zcard(f"{keys}:recent") == r.hlen(f"{keys}:recent_info") == 11
    assert first["changed"] == 0 and first["red"] >= 1
    later = NOW + 30 * H  # everything has left the window: the hotspot is gone, gc's level falls
    with caplog.at_level("INFO", logger="ingest.scheduler"):
        second = risk_sweep(settings, now=later, city=city)
    assert second["hotspots"] == 0 and second["reports"] == 0 and second["trimmed"] == 11
    assert r.zcard(f"{keys}:recent") == 0 and r.hlen(f"{keys}:recent_info") == 0
    gc = scene["grids"][2]
    assert second["changed"] >= 1 and gc.code in caplog.text and "changed level" in caplog.text
    assert orjson.loads(r.get(f"{keys}:hotspots")) == []
    assert risk_sweep(settings, now=later, city=city)["changed"] == 0  # the same state twice: nothing new


@pytest.mark.parametrize(
    ("url", "status", "parameter"),
    [
        ("/api/v1/risk?level=city", 400, "level"),
        ("/api/v1/risk?level=street&level=grid", 400, "level"),
        ("/api/v1/risk?parent=12", 400, "parent"),
        ("/api/v1/risk?parent=440311999", 404, "parent"),
        ("/api/v1/risk?parent=440311001&level=street", 400, "level"),
        ("/api/v1/risk?area=440311", 400, "area"),
        ("/api/v1/risk?parent=" + quote("'; DROP TABLE cases; --"), 400, "parent"),
        ("/api/v1/risk/abc/explain", 400, "code"),
        ("/api/v1/risk/440311999/explain", 404, "code"),
        ("/api/v1/risk/4403110/explain", 400, "code"),
        ("/api/v1/risk/" + quote("'; DROP TABLE cases; --", safe="") + "/explain", 400, "code"),
        ("/api/v1/risk/440311/explain?limit=0", 400, "limit"),
        ("/api/v1/risk/440311/explain?limit=many", 400, "limit"),
        ("/api/v1/risk/440311/explain?limit=51", 400, "limit"),
        ("/api/v1/risk/440311/explain?level=grid", 400, "level"),
    ],
)
def test_bad_risk_parameters_name_the_parameter(settings, r, engine, url, status, parameter):

    client = accounts.client(settings)
    body = get(client, url, status)
    assert body["parameter"] == parameter and parameter in body["error"]


def test_hostile_codes_are_refused_harmlessly(settings, r, engine):

    client = accounts.client(settings)
    huge = "4" * 100_000
    for url in (f"/api/v1/risk/{huge}/explain", f"/api/v1/risk?parent={huge}", f"/api/v1/risk?level={'x' * 100_000}",
                "/api/v1/risk/" + quote("1 OR 1=1", safe="") + "/explain", "/api/v1/risk/%00/explain",
                "/api/v1/risk/../../etc/passwd/explain"):
        resp = client.get(url)
        assert 400 <= resp.status_code < 500, url
        assert len(resp.data) < 1000, url  # the error does not echo the input whole
        assert "error" in orjson.loads(resp.data)
    with engine.connect() as conn:  # the store is untouched
        assert conn.execute(select(Case.id).limit(1)).all() == []
    assert get(client, "/api/v1/risk")["items"]
    assert "/api/v1/risk" in get(client, "/api/v1/riskk", 404)["error"]


def test_distances_in_the_brute_force_are_metres():
    d = haversine_matrix(np.array([113.9, 113.9]), np.array([22.7, 22.7 + 1 / 111.195]))
    assert d[0, 1] == pytest.approx(1000, rel=1e-4) and math.isclose(d[0, 0], 0.0)


def test_one_table_of_risk_colours():
    """The four risk colours are written once, in core/risk.py; pages and stylesheets take them from there."""
    import re
    from pathlib import Path

    from core.risk import RISK_LEVELS

    root = Path(__file__).resolve().parent.parent
    colours = [r.color.lower() for r in RISK_LEVELS.values()]
    found = sorted({str(p.relative_to(root)) for folder in ("core", "config", "dashboard", "ingest", "layouts", "assets")
                    for p in (root / folder).rglob("*") if p.suffix in (".py", ".js", ".css", ".html")
                    and any(c in p.read_text(encoding="utf-8").lower() for c in colours)})
    assert found == ["core/risk.py"], found
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colours)
