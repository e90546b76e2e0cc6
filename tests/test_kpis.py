"""KPIs for an area and a period, through the real pipeline, against figures worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from ingest.worker import Worker
from store.streams import Producer
from tests import accounts

H = timedelta(hours=1)
M = timedelta(minutes=1)


@pytest.fixture
def period_client(settings, r, engine, city):
    p0 = (datetime.now(UTC) - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    streets = city.geography.areas("street")
    g = city.geography.grids_within(streets[0].code)[0].code
    other = city.geography.grids_within(streets[1].code)[0].code
    cat = next(c for c in city.categories.values() if not c.sensor_only and c.onsite).code

    def ev(ext, action, at, **extra):
        rec = {"source": "k", "external_id": ext, "event": action, "event_id": action, "occurred_at": (p0 + at).isoformat(),
               **extra}
        if action == "report":
            rec.update(category=cat, title=ext, grid_code=extra.pop("grid", g))
            rec.pop("grid", None)
        return rec

    recs = [
        ev("c1", "report", 1 * H, due_at=(p0 + 5 * H).isoformat()), ev("c1", "onsite", 1 * H + 10 * M),
        ev("c1", "close", 2 * H), ev("c1", "evaluate", 3 * H, rating=5),
        ev("c2", "report", 2 * H, due_at=(p0 + 8 * H).isoformat()), ev("c2", "register", 2 * H + M),
        ev("c2", "dispatch", 2 * H + 30 * M, departments=["cg"]), ev("c2", "accept", 3 * H),
        ev("c2", "escalate", 9 * H), ev("c2", "resolve", 10 * H), ev("c2", "close", 11 * H),
        ev("c2", "evaluate", 12 * H, rating=2),
        ev("c3", "report", 3 * H, due_at=(p0 + 6 * H).isoformat()), ev("c3", "register", 3 * H + M),
        ev("c3", "dispatch", 4 * H, departments=["cg"]),
        ev("c4", "report", 4 * H, due_at=(p0 + 30 * H).isoformat()), ev("c4", "onsite", 4 * H + 5 * M),
        ev("c5", "report", 5 * H, grid=other), ev("c5", "onsite", 5 * H + M),
        ev("c6", "report", -1 * H), ev("c6", "onsite", -1 * H + 30 * M),
    ]
    Producer(r, settings, source="k").cases(recs)
    w = Worker(city, settings, engine, r, name="k")
    while w.run_once(50):
        pass

    return accounts.client(settings), p0, streets


def test_kpis_for_a_street_and_a_day_equal_the_hand_worked_figures(period_client):
    client, p0, streets = period_client
    since, until = p0.isoformat(), (p0 + timedelta(days=1)).isoformat()
    q = f"/api/v1/kpis?area={streets[0].code}&since={since}&until={until}".replace("+", "%2B")
    body = orjson.loads(client.get(q).data)
    k = body["kpis"]
    assert k["cases_total"] == 4  # c1–c4; c5 is in another street, c6 before the period
    assert k["resolved"] == 3 and k["resolution_rate"] == pytest.approx(0.75)
    assert k["on_time_rate"] == pytest.approx(2 / 3)  # c2 resolved at +10 h against a +8 h deadline
    assert k["overdue_open"] == 1  # c3: open, due at +6 h
    assert k["onsite_rate"] == pytest.approx(0.5) and k["grassroots_rate"] == pytest.approx(0.5)  # c2 escalated
    # handling: c1 10 min (600 s), c2 8 h (28,800 s), c4 5 min (300 s)
    assert k["handling_mean_s"] == pytest.approx((600 + 28800 + 300) / 3) and k["handling_median_s"] == 600
    assert k["satisfaction"] == pytest.approx(0.5) and k["rating_mean"] == pytest.approx(3.5)
    assert k["moment_report_to_dispatch_s"] == pytest.approx((1800 + 3600) / 2)
    assert k["moment_dispatch_to_resolve_s"] == pytest.approx(27000)
    assert k["moment_resolve_to_feedback_s"] == pytest.approx((3000 + 3600) / 2)
    assert k["moment_feedback_to_evaluate_s"] == pytest.approx(3600)
    prev = body["previous"]["kpis"]
    assert prev["cases_total"] == 1 and prev["onsite_rate"] == 1.0  # c6
    assert body["change"]["cases_total"] == 3
    whole = orjson.loads(client.get(f"/api/v1/kpis?since={since}&until={until}".replace("+", "%2B")).data)
    assert whole["area"] == streets[0].code[:6] and whole["kpis"]["cases_total"] == 5


def test_kpi_parameters_are_checked(period_client):
    client, _, streets = period_client
    bad = {
        "/api/v1/kpis?since=yesterday": "since",
        "/api/v1/kpis?since=2026-11-20&until=2026-11-19": "until",
        "/api/v1/kpis?area=440311999": "area",
        "/api/v1/kpis?period=week": "period",
    }
    for url, parameter in bad.items():
        resp = client.get(url)
        assert 400 <= resp.status_code < 500, url
        assert orjson.loads(resp.data)["parameter"] == parameter, url
    defs = orjson.loads(client.get("/api/v1/definitions").data)["kpis"]
    assert defs["onsite_rate"]["zh"] == "现场化解率" and "definition" in defs["grassroots_rate"]
