"""The JSON API and the live page, against a real Redis and a real SQL store.

A known set of cases and sensor readings goes through the real streams and worker; the expected
figures are computed here with pandas from what the test published, not by the code under test.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import orjson
import pandas as pd
import pytest

from core.lifecycle import Status
from tests import accounts
from tests.api_dataset import NOW, OPEN, PATHS, apply, build_dataset


def expected_counts(df: pd.DataFrame, alarms: pd.DataFrame) -> dict:
    open_ = df[df.status.isin(OPEN)]
    return {
        "total": len(df),
        "open": len(open_),
        "overdue": int(open_.overdue.sum()),
        "alarms": len(alarms),
        "by_grade": {str(g): int((open_.grade == g).sum()) for g in (1, 2, 3, 4)},
        "by_status": {s.value: int((df.status == s.value).sum()) for s in Status},
    }


@pytest.fixture
def loaded(city, settings, engine, r):
    events, readings, df, alarms = build_dataset(city)
    apply(city, settings, engine, r, cases=events, sensors=readings)
    return df, alarms


@pytest.fixture
def client(settings, r, engine):
    from app import create_app

    app = create_app(settings)
    return accounts.client(app=app)


def get(client, url: str, status: int = 200):
    resp = client.get(url)
    assert resp.status_code == status, (url, resp.status_code, resp.data[:500])
    assert resp.mimetype == "application/json", (url, resp.mimetype)
    return orjson.loads(resp.data)


def all_cases(client, query: str = "", limit: int = 500) -> list[dict]:
    items, cursor, seen_cursors = [], None, set()
    while True:
        url = f"/api/v1/cases?limit={limit}" + (f"&{query}" if query else "") + (f"&cursor={cursor}" if cursor else "")
        body = get(client, url)
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
        assert cursor not in seen_cursors
        seen_cursors.add(cursor)


# --------------------------------------------------------------------------- health


def test_healthz_shape_and_ok(client, loaded, settings, r):
    from core.livestate import LiveKeys
    from ingest.heartbeat import Heartbeat

    beat = Heartbeat(r, LiveKeys(settings.stream_prefix), "w-api").start()  # a worker process is alive
    try:
        body = get(client, "/healthz")
    finally:
        beat.stop()
    assert body["status"] == "ok", body
    assert body["workers"]["w-api"]["alive"] is True and body["workers"]["w-api"]["failing"] == 0
    assert body["redis"] == "ok" and body["database"] == "ok"
    for kind in ("cases", "sensors"):
        info = body["streams"][kind]
        assert {"length", "pending", "lag"} <= set(info)
        assert info["length"] > 0 and info["pending"] == 0 and info["lag"] == 0
    assert "dead" in body["streams"]
    assert body["dead_letters"] == {"count": 0, "length": 0}
    assert body["last_event_at"]
    datetime.fromisoformat(body["last_event_at"])
    assert set(body["feeds"]) >= {"test", "sensor"}


def test_healthz_degraded_before_any_worker(settings, r, engine):
    from app import create_app

    resp = create_app(settings).server.test_client().get("/healthz")
    body = orjson.loads(resp.data)
    assert resp.status_code == 200 and body["status"] == "degraded"
    assert any("consumer group" in reason for reason in body["reasons"])


def test_healthz_down_when_redis_unreachable(settings, engine):
    from app import create_app

    broken = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    resp = create_app(broken).server.test_client().get("/healthz")
    assert resp.status_code == 503
    body = orjson.loads(resp.data)
    # anonymous: the status and the reasons, never the address it failed to reach
    assert body == {"status": "down", "reasons": ["redis: not reachable"]}
    assert b"127.0.0.1" not in resp.data


# --------------------------------------------------------------------------- live figures


def test_summary_district_and_street(client, loaded, city):
    df, alarms = loaded
    district = city.geography.district.code
    body = get(client, "/api/v1/summary")
    exp = expected_counts(df, alarms)
    assert body["area"] == district and body["name"] == city.geography.district.name
    assert body["cases_total"] == exp["total"] == len(df)
    assert body["cases_open"] == exp["open"]
    assert body["overdue_open"] == exp["overdue"] > 0
    assert body["sensor_alarms_active"] == exp["alarms"] == 1
    assert body["by_grade"] == exp["by_grade"]
    assert body["by_status"] == exp["by_status"]
    assert datetime.fromisoformat(body["as_of"]).tzinfo is not None
    explicit = get(client, f"/api/v1/summary?area={district}")
    assert {k: v for k, v in explicit.items() if k != "as_of"} == {k: v for k, v in body.items() if k != "as_of"}

    for street in df.street.dropna().unique():
        body = get(client, f"/api/v1/summary?area={street}")
        exp = expected_counts(df[df.street == street], alarms[alarms.street == street])
        assert body["cases_total"] == exp["total"]
        assert body["cases_open"] == exp["open"]
        assert body["overdue_open"] == exp["overdue"]
        assert body["sensor_alarms_active"] == exp["alarms"]
        assert body["by_grade"] == exp["by_grade"]
        assert body["by_status"] == exp["by_status"]


def test_areas_children_and_levels(client, loaded, city):
    df, alarms = loaded
    geo = city.geography
    # default: the streets of the district
    streets = get(client, "/api/v1/areas")
    assert [a["code"] for a in streets] == [s.code for s in geo.children(geo.district.code)]
    assert get(client, "/api/v1/areas?level=street") == streets
    for a in streets:
        exp = expected_counts(df[df.street == a["code"]], alarms[alarms.street == a["code"]])
        assert (a["open"], a["overdue"], a["alarms"], a["by_grade"]) == (exp["open"], exp["overdue"], exp["alarms"],
                                                                         exp["by_grade"])
        assert a["level"] == "street" and a["parent"] == geo.district.code and a["name"]

    street = df.street.dropna().iloc[0]
    comms = get(client, f"/api/v1/areas?parent={street}")
    assert [a["code"] for a in comms] == [c.code for c in geo.children(street)]
    for a in comms:
        exp = expected_counts(df[df.community == a["code"]], alarms[alarms.community == a["code"]])
        assert a["open"] == exp["open"] and a["by_grade"] == exp["by_grade"] and a["alarms"] == exp["alarms"]

    grids = get(client, f"/api/v1/areas?parent={street}&level=grid")
    assert [a["code"] for a in grids] == [g.code for g in geo.grids_within(street)]
    by_code = {a["code"]: a for a in grids}
    for grid, part in df[df.street == street].groupby("grid"):
        exp = expected_counts(part, alarms[alarms.grid == grid])
        assert by_code[grid]["open"] == exp["open"] and by_code[grid]["by_grade"] == exp["by_grade"]
        assert by_code[grid]["kind"] and by_code[grid]["level"] == "grid"
    assert len(get(client, "/api/v1/areas?level=grid")) == len(geo.areas("grid"))


# --------------------------------------------------------------------------- cases


def test_cases_filters_and_pagination(client, loaded, city):
    df, _ = loaded
    everything = all_cases(client, limit=7)
    ids = [c["id"] for c in everything]
    assert len(ids) == len(set(ids)) == len(df)
    assert ids == sorted(ids, reverse=True)
    assert {c["external_id"] for c in everything} == set(df.ext)
    assert all_cases(client, limit=500) == everything

    street = df.street.dropna().iloc[0]
    community = df.community.dropna().iloc[-1]
    grid = df.grid.dropna().iloc[3]
    for query, expected in [
        (f"area={city.geography.district.code}", df),
        (f"area={street}", df[df.street == street]),
        (f"area={community}", df[df.community == community]),
        (f"area={grid}", df[df.grid == grid]),
        ("status=resolved", df[df.status == "resolved"]),
        ("status=open", df[df.status.isin(OPEN)]),
        ("status=closed,evaluated", df[df.status.isin({"closed", "evaluated"})]),
        (f"category={df.category.iloc[0]}", df[df.category == df.category.iloc[0]]),
        (f"category={df.category.iloc[0][:2]}", df[df.category.str[:2] == df.category.iloc[0][:2]]),
        (f"area={street}&status=open", df[(df.street == street) & df.status.isin(OPEN)]),
    ]:
        got = all_cases(client, query, limit=2)
        assert sorted(c["external_id"] for c in got) == sorted(expected.ext), query
        assert len(expected) > 0, query

    one = get(client, "/api/v1/cases?limit=1")
    assert len(one["items"]) == 1 and one["next_cursor"]
    case = one["items"][0]
    assert case["reporter"] == "hidden"
    assert not {"reporter_name", "reporter_phone"} & set(case)
    assert "张三丰" not in client.get("/api/v1/cases?limit=500").get_data(as_text=True)


def test_case_filters_by_time_grade_source_and_department_and_the_csv_export(client, loaded, city, settings):
    """Each filter against a pandas selection of the dataset as it was built (not as it was stored)."""
    import csv
    import io

    df, _ = loaded
    mid = NOW + timedelta(minutes=300)
    iso = mid.isoformat().replace("+", "%2B")
    dept = df.dept.dropna().iloc[0]
    g = int(df[df.dept == dept].grade.iloc[-1])
    late = df[df.dept == dept].reported.iloc[-1]
    late_iso = late.isoformat().replace("+", "%2B")
    cases = [
        (f"since={iso}", df[df.reported >= mid]),
        (f"until={iso}", df[df.reported < mid]),
        ("grade=4", df[df.grade == 4]),
        ("grade=1,3", df[df.grade.isin([1, 3])]),
        ("source=sensor", df[df.source == "sensor"]),
        ("source=test,sensor", df),
        (f"dept={dept}", df[df.dept == dept]),
        (f"dept={dept}&grade={g}&since={late_iso}", df[(df.dept == dept) & (df.grade == g) & (df.reported >= late)]),
    ]
    for query, expected in cases:
        got = all_cases(client, query, limit=3)
        assert sorted(c["external_id"] for c in got) == sorted(expected.ext), query
        resp = client.get(f"/api/v1/cases.csv?{query}")
        assert resp.status_code == 200 and resp.mimetype == "text/csv"
        text_ = resp.get_data(as_text=True)
        assert text_.startswith("\ufeff")
        table = list(csv.DictReader(io.StringIO(text_.lstrip("\ufeff"))))
        assert sorted(r["external_id"] for r in table) == sorted(expected.ext), query
    assert len(cases[-1][1]) > 0 and len(cases[0][1]) > 0
    # the reporter: whole for an administrator, masked for a leader (core.access)
    everything = list(csv.DictReader(io.StringIO(client.get("/api/v1/cases.csv").get_data(as_text=True).lstrip("\ufeff"))))
    assert {(r["reporter_name"], r["reporter_phone"]) for r in everything} >= {("张三丰", "13800138000")}
    leader = accounts.client(settings, "leader").get("/api/v1/cases.csv").get_data(as_text=True)
    assert "张三丰" not in leader and "13800138000" not in leader and "张**" in leader and "138******00" in leader
    for query, parameter in [("grade=5", "grade"), ("grade=a", "grade"), ("source=%3Cscript%3E", "source"),
                             ("dept=nobody", "dept"), ("since=yesterday", "since"),
                             (f"since={iso}&until={iso}", "until"), ("sort=title", "sort")]:
        for route in ("/api/v1/cases", "/api/v1/cases.csv"):
            body = get(client, f"{route}?{query}", 400)
            assert body["parameter"] == parameter, (route, query)


def test_case_detail_timeline_in_order(client, loaded, settings):
    df, _ = loaded
    items = all_cases(client, "status=closed")
    target = next(c for c in items if c["source"] == "test")
    body = get(client, f"/api/v1/cases/{target['id']}")
    assert body["external_id"] == target["external_id"] and body["status"] == "closed"
    assert [e["action"] for e in body["timeline"]][: 1 + len(PATHS["closed"])] == ["report", *PATHS["closed"]]
    times = [datetime.fromisoformat(e["occurred_at"]) for e in body["timeline"]]
    assert times == sorted(times) and all(x.utcoffset() == timedelta(0) for x in times)
    assert body["timeline"][0]["status_before"] is None and body["timeline"][-1]["status_after"] in ("closed",)
    assert body["reporter"] == {"name": "张三丰", "phone": "13800138000", "masked": False}  # an administrator
    assert "reporter_phone" not in body and "reporter_name" not in body
    masked = get(accounts.client(settings, "leader"), f"/api/v1/cases/{target['id']}")
    assert masked["reporter"] == {"name": "张**", "phone": "138******00", "masked": True}
    assert "张三丰" not in str(masked) and "13800138000" not in str(masked)
    assert body["reported_at"].endswith(("Z", "+00:00"))


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("url", "status", "parameter"),
    [
        ("/api/v1/summary?area=44031", 400, "area"),
        ("/api/v1/summary?area=abcdef", 400, "area"),
        ("/api/v1/summary?area=440311999", 404, "area"),
        ("/api/v1/summary?area=", 400, "area"),
        ("/api/v1/summary?area=440311&area=440311001", 400, "area"),
        ("/api/v1/summary?zone=440311", 400, "zone"),
        ("/api/v1/areas?level=city", 400, "level"),
        ("/api/v1/areas?parent=12", 400, "parent"),
        ("/api/v1/areas?parent=440311999", 404, "parent"),
        ("/api/v1/areas?parent=440311001&level=street", 400, "level"),
        ("/api/v1/cases?area=4403110010", 400, "area"),
        ("/api/v1/cases?area=440311999999", 404, "area"),
        ("/api/v1/cases?status=lost", 400, "status"),
        ("/api/v1/cases?status=open,nope", 400, "status"),
        ("/api/v1/cases?category=9999", 400, "category"),
        ("/api/v1/cases?category=x", 400, "category"),
        ("/api/v1/cases?limit=ten", 400, "limit"),
        ("/api/v1/cases?limit=0", 400, "limit"),
        ("/api/v1/cases?limit=501", 400, "limit"),
        ("/api/v1/cases?limit=-3", 400, "limit"),
        ("/api/v1/cases?cursor=zzz", 400, "cursor"),
        ("/api/v1/cases?cursor=YzE6LTE", 400, "cursor"),
        ("/api/v1/cases?stauts=open", 400, "stauts"),
        ("/api/v1/cases/abc", 400, "id"),
        ("/api/v1/cases/0", 400, "id"),
        ("/api/v1/cases/987654321", 404, "id"),
    ],
)
def test_bad_input_names_the_parameter(client, url, status, parameter):
    body = get(client, url, status)
    assert body["parameter"] == parameter
    assert parameter in body["error"]
    assert "Traceback" not in body["error"]


def test_unknown_api_route_and_method_are_json(client):
    body = get(client, "/api/v1/nothing-here", 404)
    assert "error" in body
    resp = client.post("/api/v1/summary")
    assert resp.status_code == 405 and "error" in orjson.loads(resp.data)


# --------------------------------------------------------------------------- the live page


def test_pages_and_dash_endpoints(client, loaded, settings, city):
    df, alarms = loaded
    for path in ("/", "/area/440311001", "/screen", "/live", "/no/such/page"):
        resp = client.get(path)  # the app's page; the router draws the view for the path in the browser
        assert resp.status_code == 200, path
        assert "基层治理分析" in resp.get_data(as_text=True)
    layout = client.get("/_dash-layout")
    assert layout.status_code == 200 and "page-url" in layout.get_data(as_text=True)
    deps = client.get("/_dash-dependencies").get_data(as_text=True)
    for component in ("live-interval", "scr-poll", "drill-grid", "drill-url", "page-content"):
        assert component in deps


def test_live_refresh_reads_the_live_state(loaded, settings, r, engine, city):
    from app import create_app
    from dashboard import i18n
    from layouts import live as callbacks
    from layouts.live import TILES

    df, alarms = loaded
    exp = expected_counts(df, alarms)
    app = create_app(settings)
    with accounts.request(app):
        out = callbacks.refresh("zh")
        values = dict(zip(TILES, out[: len(TILES)], strict=True))
        assert values == {"cases_total": f"{exp['total']:,}", "cases_open": f"{exp['open']:,}",
                          "overdue_open": f"{exp['overdue']:,}", "alarms": f"{exp['alarms']:,}", "dead_letters": "0"}
        table = str(out[len(TILES)])
        for street in city.geography.children(city.geography.district.code):
            assert street.name in table
        assert i18n.TEXTS["zh"]["unlocated"] in table  # the unlocated case gets its own row
        en = callbacks.refresh("en")
        assert i18n.TEXTS["en"]["district_total"] in str(en[len(TILES)])


def test_sla_lists_warning_and_overdue_cases_nearest_deadline_first(settings, r, engine, city):
    """Expected states are worked out here by plain arithmetic on each case's window, not by core.sla."""
    from datetime import UTC, datetime, timedelta

    from ingest.worker import Worker
    from store.streams import Producer

    now = datetime.now(UTC).replace(microsecond=0)
    streets = city.geography.areas("street")
    g1 = city.geography.grids_within(streets[0].code)[0]
    g2 = city.geography.grids_within(streets[1].code)[0]
    cat = next(c for c in city.categories.values() if not c.sensor_only).code
    plan = {  # external id: (grid, reported hours ago, due in hours, resolved?)
        "late": (g1, 10, -1, False),
        "near": (g1, 10, 1, False),
        "fresh": (g1, 1, 10, False),
        "done-late": (g1, 10, -2, True),
        "other-street": (g2, 10, -3, False),
    }
    recs = []
    for ext, (grid, ago, due_in, done) in plan.items():
        rep = now - timedelta(hours=ago)
        recs.append({"source": "t", "external_id": ext, "event": "report", "occurred_at": rep.isoformat(),
                     "category": cat, "title": ext, "grid_code": grid.code,
                     "due_at": (now + timedelta(hours=due_in)).isoformat()})
        if done:
            recs.append({"source": "t", "external_id": ext, "event": "onsite", "occurred_at": rep.isoformat()})
    Producer(r, settings, source="t").cases(recs)
    w = Worker(city, settings, engine, r, name="t")
    while w.run_once(50):
        pass

    def expected(area_grids, states):
        out = []
        for ext, (grid, ago, due_in, done) in sorted(plan.items(), key=lambda kv: kv[1][2]):
            if done or grid.code not in area_grids:
                continue
            window, left = ago + due_in, due_in
            st = "overdue" if left < 0 else ("warning" if left / window <= settings.sla_warn_share else "on_track")
            if st in states:
                out.append((ext, st))
        return out

    client = accounts.client(settings)
    every = {g.code for g in city.geography.areas("grid")}
    body = orjson.loads(client.get("/api/v1/sla").data)
    assert [(c["external_id"], c["sla_state"]) for c in body["items"]] == expected(every, {"warning", "overdue"})
    body = orjson.loads(client.get("/api/v1/sla?state=overdue").data)
    assert [(c["external_id"], c["sla_state"]) for c in body["items"]] == expected(every, {"overdue"})
    street = {g.code for g in city.geography.grids_within(streets[0].code)}
    body = orjson.loads(client.get(f"/api/v1/sla?state=warning,overdue&area={streets[0].code}").data)
    assert [(c["external_id"], c["sla_state"]) for c in body["items"]] == expected(street, {"warning", "overdue"})
    assert all(c["seconds_left"] < 0 for c in body["items"] if c["sla_state"] == "overdue")
    bad = client.get("/api/v1/sla?state=late")
    assert bad.status_code == 400 and orjson.loads(bad.data)["parameter"] == "state"
    assert client.get("/api/v1/sla?area=999999").status_code == 404
