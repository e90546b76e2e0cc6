"""Department rankings: periods, the composite score and ranks, assignment rows, and the API against pandas.

The integration test simulates two days of a city, applies them through the real streams and worker, and checks
every department's figures from /api/v1/rankings against an independent pandas computation from the published
events (the input, not the stored rows the API reads), following the definitions in core/rankings.py.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import pandas as pd
import pytest
from sqlalchemy import text

from core import assignments, rankings
from core.rankings import RankingRules
from ingest.feeds.simulator import Simulator
from ingest.worker import Worker
from scripts.rankings_recount import expected_figures, stored_cases
from store.streams import Producer
from tests import accounts

TZ = ZoneInfo("Asia/Shanghai")
H = timedelta(hours=1)
M = timedelta(minutes=1)


# --------------------------------------------------------------------------- periods


@pytest.mark.parametrize(("kind", "day", "start", "end", "label"), [
    ("day", date(2026, 11, 22), date(2026, 11, 22), date(2026, 11, 23), "2026-11-22"),
    ("week", date(2026, 11, 22), date(2026, 11, 16), date(2026, 11, 23), "2026-W47"),  # a Sunday: its Monday
    ("week", date(2026, 1, 1), date(2025, 12, 29), date(2026, 1, 5), "2026-W01"),
    ("month", date(2026, 12, 31), date(2026, 12, 1), date(2027, 1, 1), "2026-12"),
    ("month", date(2028, 2, 29), date(2028, 2, 1), date(2028, 3, 1), "2028-02"),
    ("quarter", date(2026, 11, 22), date(2026, 10, 1), date(2027, 1, 1), "2026-Q4"),
    ("quarter", date(2026, 1, 1), date(2026, 1, 1), date(2026, 4, 1), "2026-Q1"),
])
def test_periods_are_whole_days_in_the_city_zone(kind, day, start, end, label):
    p = rankings.period(kind, day, TZ)
    assert p.since == datetime(start.year, start.month, start.day, tzinfo=TZ)
    assert p.until == datetime(end.year, end.month, end.day, tzinfo=TZ)
    assert p.label == label
    prev = p.previous(TZ)
    assert prev.until == p.since and prev.kind == kind


def test_previous_of_a_custom_period_has_the_same_length():
    since = datetime(2026, 11, 3, 8, tzinfo=TZ)
    p = rankings.period("custom", since.date(), TZ, since, since + 36 * H)
    prev = p.previous(TZ)
    assert (prev.since, prev.until) == (since - 36 * H, since)
    with pytest.raises(ValueError, match="until must be after since"):
        rankings.period("custom", since.date(), TZ, since, since)
    with pytest.raises(ValueError, match="unknown period"):
        rankings.period("fortnight", since.date(), TZ)


# --------------------------------------------------------------------------- score and rank


def test_score_leaves_out_rates_with_nothing_to_measure():
    w = {"resolved_on_time_rate": 0.5, "returned_rate": 0.25, "satisfaction": 0.25}
    # 0.8 on time, 10 % returned (counts as 0.9), no evaluations: (0.5·0.8 + 0.25·0.9) / 0.75
    assert rankings.score({"resolved_on_time_rate": 0.8, "returned_rate": 0.1, "satisfaction": None}, w) == \
        pytest.approx(100 * (0.4 + 0.225) / 0.75)
    assert rankings.score({"resolved_on_time_rate": None}, w) is None


def _row(code, received, on_time):
    return {"department": code, "received": received, "resolved_on_time_rate": on_time}


def test_rank_needs_the_minimum_volume_shares_ties_and_keeps_the_lists_apart():
    rules = RankingRules(weights={"resolved_on_time_rate": 1}, min_volume=15, list_size=2)
    rows = [_row("a", 40, 0.9), _row("b", 20, 0.7), _row("c", 16, 0.9), _row("lucky", 1, 1.0), _row("d", 15, 0.5),
            _row("e", 30, 0.6)]
    out = rankings.rank(rows, rules, previous={"a": 3, "b": 1, "zz": 1})
    ranked = [(r["department"], r["rank"]) for r in out["departments"] if r["ranked"]]
    assert ranked == [("a", 1), ("c", 1), ("b", 3), ("e", 4), ("d", 5)]
    lucky = next(r for r in out["departments"] if r["department"] == "lucky")
    assert lucky["ranked"] is False and lucky["rank"] is None and lucky["score"] == 100
    by = {r["department"]: r for r in out["departments"]}
    assert by["a"]["rank_change"] == 2 and by["b"]["rank_change"] == -2 and by["c"]["rank_change"] is None
    assert out["red_list"] == ["a", "c"] and out["black_list"] == ["d", "e"]
    # three ranked: one on each list, never the same department on both
    few = rankings.rank([_row("a", 20, 0.9), _row("b", 20, 0.8), _row("c", 20, 0.7)], rules)
    assert few["red_list"] == ["a"] and few["black_list"] == ["c"]
    assert rankings.rank([_row("a", 20, 0.9)], rules)["red_list"] == []


def test_rules_are_checked():
    with pytest.raises(ValueError, match="unknown metric"):
        RankingRules(weights={"speed": 1})
    with pytest.raises(ValueError, match="at least one weight"):
        RankingRules(weights={"satisfaction": 0})
    with pytest.raises(ValueError, match="min_volume"):
        RankingRules(min_volume=0)


def test_the_rankings_file_is_validated(tmp_path):
    from config.rankings import RankingsConfigError, load_rules

    f = tmp_path / "rankings.yaml"
    f.write_text("weights: {satisfaction: 1}\nmin_volume: 5\n", encoding="utf-8")
    assert load_rules(f).min_volume == 5 and dict(load_rules(f).weights) == {"satisfaction": 1}
    f.write_text("weights: {satisfaction: -1}\n", encoding="utf-8")
    with pytest.raises(RankingsConfigError, match=r"rankings.yaml: weights: satisfaction must be a number"):
        load_rules(f)
    f.write_text("wieghts: {}\n", encoding="utf-8")
    with pytest.raises(RankingsConfigError, match="unknown key"):
        load_rules(f)
    assert load_rules().min_volume == 15  # the shipped file


# --------------------------------------------------------------------------- assignment rows


def test_assignment_rows_follow_return_redispatch_whistle_reopen_and_evaluation():
    t0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
    accept_due, due = t0 + 2 * H, t0 + 8 * H
    events = [
        ("dispatch", t0, ["cg"], None), ("return", t0 + 10 * M, None, None),
        ("dispatch", t0 + 20 * M, ["sw"], None), ("whistle", t0 + 25 * M, ["ga", "yj"], None),
        ("checkin", t0 + 40 * M, ["ga"], None), ("accept", t0 + 3 * H, None, None),  # late: due at +2 h
        ("resolve", t0 + 5 * H, None, None), ("evaluate", t0 + 6 * H, None, 2),
        ("reopen", t0 + 7 * H, None, None), ("dispatch", t0 + 7 * H + M, ["sw"], None),
        ("accept", t0 + 7 * H + 2 * M, None, None), ("resolve", t0 + 9 * H, None, None),
    ]
    rows = assignments.project(
        [{"action": a, "occurred_at": t, "departments": d, "rating": rt} for a, t, d, rt in events],
        case_id=1, accept_due=accept_due, due=due, grid="g", whistle_limit=30 * M)
    got = [(r["department"], r["role"], r["returned_at"] is not None, r["accepted_on_time"], r["resolved_on_time"],
            r["reopened_at"] is not None, r["rating"], r["checked_in_at"]) for r in rows]
    assert got == [
        ("cg", "lead", True, None, None, False, None, None),
        ("sw", "lead", False, False, True, True, 2, None),
        ("ga", "whistle", False, None, None, False, None, t0 + 40 * M),
        ("yj", "whistle", False, None, None, False, None, None),
        ("sw", "lead", False, False, False, False, None, None),  # after the reopen: accepted and resolved late
    ]
    assert rows[2]["due_at"] == t0 + 55 * M and rows[1]["due_at"] == accept_due


# --------------------------------------------------------------------------- the API against pandas

START = datetime(2025, 3, 3, 0, 0, tzinfo=TZ)  # Monday 3 March 2025 (working days)
SLICE = timedelta(seconds=60)


@pytest.fixture
def simulated(settings, r, engine, city):
    sim = Simulator(city, seed=11, rate=0.06, start=START, sensors=False)
    records: list[dict] = []
    now = START
    while now < START + timedelta(hours=54):
        now += SLICE
        cases, _ = sim.step(now, SLICE)
        records += cases
    Producer(r, settings, source="simulator").cases(records)
    w = Worker(city, settings, engine, r, name="rk")
    while w.run_once(50):
        pass
    assert w.totals.dead == 0

    return accounts.client(settings), records


def _check(body, exp: pd.DataFrame):
    by = {r["department"]: r for r in body["departments"]}
    compared = 0
    for d, row in exp.iterrows():
        got = by[d]
        for k, v in row.items():
            if v is None or (isinstance(v, float) and np.isnan(v)):
                if k.startswith("handling"):
                    assert got[k] is None, (d, k)
                else:
                    assert got.get(k, 0) == 0, (d, k)
                continue
            assert got[k] == pytest.approx(float(v), rel=1e-6, abs=1e-3), (d, k, got[k], v)
            compared += 1
    return compared


def test_rankings_equal_an_independent_pandas_computation(simulated, engine, settings):
    client, records = simulated
    cases = stored_cases(engine)
    limit = timedelta(minutes=settings.whistle_report_minutes)
    since, until = datetime(2025, 3, 4, tzinfo=TZ), datetime(2025, 3, 5, tzinfo=TZ)
    body = orjson.loads(client.get("/api/v1/rankings?period=day&date=2025-03-04").data)
    assert body["label"] == "2025-03-04" and body["previous"]["label"] == "2025-03-03"
    exp = expected_figures(records, cases, since, until, until, limit)
    assert _check(body, exp) > 100
    assert exp["received"].max() >= 15 and (exp["whistles"].fillna(0) > 0).any()

    # score, rank and lists by the definitions, recomputed here
    weights = body["rules"]["weights"]
    ranked = []
    for r in body["departments"]:
        rates = {"accepted_on_time_rate": r["accepted_on_time"] / r["accept_decided"] if r["accept_decided"] else None,
                 "resolved_on_time_rate": r["resolved_on_time"] / r["resolved"] if r["resolved"] else None,
                 "overdue_share": r["overdue_open"] / r["open_at_end"] if r["open_at_end"] else None,
                 "returned_rate": r["returned"] / r["received"] if r["received"] else None,
                 "reopened_rate": r["reopened"] / r["resolved"] if r["resolved"] else None,
                 "whistle_on_time_rate": r["whistle_on_time"] / r["whistle_decided"] if r["whistle_decided"] else None,
                 "satisfaction": r["satisfied"] / r["evaluations"] if r["evaluations"] else None}
        lower = {"overdue_share", "returned_rate", "reopened_rate"}
        parts = [(w, (1 - rates[k]) if k in lower else rates[k]) for k, w in weights.items() if rates[k] is not None]
        expected_score = 100 * sum(w * v for w, v in parts) / sum(w for w, _ in parts) if parts else None
        assert r["score"] == pytest.approx(expected_score)
        assert r["ranked"] == (r["received"] >= 15 and expected_score is not None)
        if r["ranked"]:
            ranked.append((r["score"], r["department"], r["rank"]))
    ranked.sort(key=lambda x: (-x[0], x[1]))
    assert [x[2] for x in ranked] == sorted(x[2] for x in ranked) and ranked[0][2] == 1
    assert len(ranked) >= 4
    k = min(5, len(ranked) // 2)
    assert body["red_list"] == [x[1] for x in ranked[:k]] and body["black_list"] == [x[1] for x in ranked[::-1][:k]]
    # rank change: the previous day's ranking, asked for directly
    prev = orjson.loads(client.get("/api/v1/rankings?period=day&date=2025-03-03").data)
    prev_rank = {r["department"]: r["rank"] for r in prev["departments"] if r["rank"]}
    for r in body["departments"]:
        if r["rank"] and r["department"] in prev_rank:
            assert r["rank_change"] == prev_rank[r["department"]] - r["rank"]
        else:
            assert r["rank_change"] is None


def test_rankings_for_a_street_and_a_custom_range(simulated, engine, settings, city):
    client, records = simulated
    cases = stored_cases(engine)
    street = city.geography.areas("street")[0].code
    since, until = datetime(2025, 3, 3, 12, tzinfo=TZ), datetime(2025, 3, 4, 18, tzinfo=TZ)
    q = f"/api/v1/rankings?period=custom&since={since.isoformat()}&until={until.isoformat()}&area={street}"
    body = orjson.loads(client.get(q.replace("+", "%2B")).data)
    assert body["area"] == street
    exp = expected_figures(records, cases, since, until, until, timedelta(minutes=settings.whistle_report_minutes), street)
    assert _check(body, exp) > 30
    whole = orjson.loads(client.get(q.replace("+", "%2B").replace(f"&area={street}", "")).data)
    assert sum(r["received"] for r in whole["departments"]) > sum(r["received"] for r in body["departments"])


def test_a_period_in_progress_is_judged_now(simulated, engine, settings):
    """A week that has not ended yet: figures as of now, nothing counted from the future."""
    client, records = simulated
    body = orjson.loads(client.get("/api/v1/rankings?period=week&date=2025-03-05").data)
    assert body["label"] == "2025-W10"
    assert datetime.fromisoformat(body["as_of"].replace("Z", "+00:00")) == datetime(2025, 3, 10, tzinfo=TZ)
    exp = expected_figures(records, stored_cases(engine), datetime(2025, 3, 3, tzinfo=TZ), datetime(2025, 3, 10, tzinfo=TZ),
                    datetime(2025, 3, 10, tzinfo=TZ), timedelta(minutes=settings.whistle_report_minutes))
    assert _check(body, exp) > 100


@pytest.mark.parametrize(("query", "parameter"), [
    ("period=fortnight", "period"), ("period=day&date=2025-13-01", "date"), ("period=day&date=yesterday", "date"),
    ("period=custom&since=2025-03-04", "until"), ("period=custom&until=2025-03-04", "since"),
    ("period=custom&since=2025-03-05&until=2025-03-04", "until"), ("period=week&since=2025-03-04", "since"),
    ("period=custom&date=2025-03-04&since=2025-03-04&until=2025-03-05", "date"), ("area=44031", "area"),
    ("area=440311999", "area"), ("department=cg", "department"), ("period=day&period=week", "period"),
    ("area=%27%3B%20DROP%20TABLE%20cases%3B--", "area"), ("date=" + "9" * 5000, "date"),
])
def test_bad_parameters_get_a_400_naming_them(settings, engine, query, parameter):

    client = accounts.client(settings)
    resp = client.get(f"/api/v1/rankings?{query}")
    assert resp.status_code in (400, 404), resp.data
    body = orjson.loads(resp.data)
    assert body["parameter"] == parameter and body["error"]


def test_definitions_include_every_ranking_figure(settings, engine):

    client = accounts.client(settings)
    body = orjson.loads(client.get("/api/v1/definitions").data)
    ranking_body = orjson.loads(client.get("/api/v1/rankings?period=day&date=2025-03-04").data)
    dept = ranking_body["departments"][0]
    for k in ("received", "accepted_on_time_rate", "resolved_on_time_rate", "overdue_open", "handling_median_s",
              "handling_p90_s", "returned_rate", "reopened_rate", "whistle_on_time_rate", "satisfaction", "score",
              "rank", "rank_change"):
        assert k in body["rankings"] and body["rankings"][k]["definition"], k
        assert k in dept, k
    # an empty store: every department listed, none ranked
    assert all(not r["ranked"] and r["received"] == 0 for r in ranking_body["departments"])
    assert ranking_body["red_list"] == [] and len(ranking_body["departments"]) >= 20


def test_the_migration_backfills_the_same_rows_the_worker_writes(simulated, engine):
    """Existing stores get their assignment rows (0004) and first dispatch and evaluation times (0005) from the stored
    history, by the same rule as the worker."""
    from alembic import command
    from alembic.config import Config

    from config.settings import ROOT
    from store.services import migrate

    cols = ", ".join(assignments.COLUMNS)
    firsts = "SELECT id, dispatched_at, evaluated_at FROM cases ORDER BY id"
    with engine.connect() as conn:
        written = sorted(map(tuple, conn.execute(text(f"SELECT {cols} FROM case_assignments")).all()), key=repr)
        first_written = conn.execute(text(firsts)).all()
    assert len(written) > 500
    assert sum(1 for r in first_written if r[1]) > 100 and sum(1 for r in first_written if r[2]) > 10
    cfg = Config()
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    with engine.begin() as conn:
        cfg.attributes["engine"] = engine
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0003")
    migrate(engine)
    with engine.connect() as conn:
        backfilled = sorted(map(tuple, conn.execute(text(f"SELECT {cols} FROM case_assignments")).all()), key=repr)
        assert conn.execute(text(firsts)).all() == first_written  # migration 0005: the worker's first times again
    # The downgrade also dropped the timeline's ratings (kept on events since this migration), as in a store
    # from before it: an evaluation that a reopen later cleared from the case is lost; every other field is equal.
    assert len(backfilled) == len(written)
    r_at, reo = assignments.COLUMNS.index("rating"), assignments.COLUMNS.index("reopened_at")
    lost = 0
    for b, w in zip(backfilled, written, strict=True):
        if b != w:
            assert b[:r_at] + b[r_at + 1:] == w[:r_at] + w[r_at + 1:] and b[r_at] is None and w[reo] is not None
            lost += 1
    assert lost < len(written) / 50
