"""HTTP push (POST /api/v1/ingest/cases and /sensors) through the real app, streams and worker.

Every rejected item must be answered with errors naming the field and leave exactly one dead
letter with its reason.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from store.streams import read_dead
from tests.pushed import NOW, drain, report

CASES = "/api/v1/ingest/cases"
SENSORS = "/api/v1/ingest/sensors"


@pytest.fixture
def make_client(settings, r, engine, push_headers):
    """A test client of an app built with ``settings`` (or an override of them) that pushes as ``source`` with its
    token (``source=None``: no source header and no token), logged in to read back through the API what it pushed
    (the push routes themselves need no session)."""
    from tests import accounts

    def make(s=None, source: str | None = "push-test"):
        client = accounts.client(s or settings)
        if source is not None:
            for name, value in push_headers(source).items():
                client.environ_base["HTTP_" + name.upper().replace("-", "_")] = value
        return client

    return make


@pytest.fixture
def client(make_client):
    return make_client()


def post(client, url: str, body, content_type: str = "application/json"):
    data = body if isinstance(body, bytes | str) else orjson.dumps(body)
    return client.post(url, data=data, content_type=content_type)


def cases_by_ext(client) -> dict[str, dict]:
    body = orjson.loads(client.get("/api/v1/cases?limit=500").data)
    return {c["external_id"]: c for c in body["items"]}


def assert_dead(r, settings, reasons: list[str]) -> list[dict]:
    """One dead letter per rejection, each reason containing the expected text (in any order)."""
    dead = read_dead(r, settings, count=1000)
    assert len(dead) == len(reasons), [d["reason"] for d in dead]
    got = sorted(d["reason"] for d in dead)
    for want in reasons:
        match = next((g for g in got if want in g), None)
        assert match is not None, (want, got)
        got.remove(match)
    return dead


def test_valid_batch_accepted_and_applied(client, city, settings, engine, r):
    resp = post(client, CASES, [report("p1", city), report("p2", city, grade=3)])
    assert resp.status_code == 200
    body = orjson.loads(resp.data)
    assert body["accepted"] == 2 and body["rejected"] == 0
    assert [i["status"] for i in body["items"]] == ["accepted", "accepted"] and all(i["id"] for i in body["items"])
    drain(city, settings, engine, r)
    found = cases_by_ext(client)
    assert set(found) == {"p1", "p2"} and found["p2"]["grade"] == 3 and found["p1"]["status"] == "reported"
    assert read_dead(r, settings) == []
    summary = orjson.loads(client.get("/api/v1/summary").data)
    assert summary["cases_total"] == 2 and summary["cases_open"] == 2


def test_single_object_body_is_one_item(client, city):
    resp = post(client, CASES, report("solo", city))
    assert resp.status_code == 200 and orjson.loads(resp.data)["accepted"] == 1


def test_mixed_batch_is_207_with_errors_per_item(client, city, settings, engine, r):
    good = report("m1", city)
    bad = report("m2", city, category="9999")
    resp = post(client, CASES, [good, bad])
    assert resp.status_code == 207
    body = orjson.loads(resp.data)
    assert body["accepted"] == 1 and body["rejected"] == 1
    item = body["items"][1]
    assert item["index"] == 1 and item["status"] == "rejected"
    assert any(e.startswith("category:") for e in item["errors"])
    assert_dead(r, settings, ["category: unknown category '9999'"])
    drain(city, settings, engine, r)
    assert set(cases_by_ext(client)) == {"m1"}


def test_all_bad_is_422(client, city, r, settings):
    resp = post(client, CASES, [report("a1", city, category="9999"), report("a2", city, grade=9)])
    assert resp.status_code == 422
    body = orjson.loads(resp.data)
    assert body["accepted"] == 0 and body["rejected"] == 2
    assert any(e.startswith("grade:") for e in body["items"][1]["errors"])
    assert_dead(r, settings, ["category:", "grade:"])


def test_broken_json_is_400_and_dead_lettered(client, r, settings):
    resp = post(client, CASES, b'[{"source": "x", "external_id": ')
    assert resp.status_code == 400
    assert "JSON" in orjson.loads(resp.data)["error"]
    dead = assert_dead(r, settings, ["not valid JSON"])
    assert dead[0]["raw"].startswith('[{"source"')


def test_not_an_array_is_400(client, r, settings):
    resp = post(client, CASES, b'"just a string"')
    assert resp.status_code == 400
    assert_dead(r, settings, ["JSON array"])


def test_wrong_content_type_is_415(client, city, r, settings):
    resp = post(client, CASES, orjson.dumps([report("w1", city)]), content_type="text/plain")
    assert resp.status_code == 415
    assert "application/json" in orjson.loads(resp.data)["error"]
    assert_dead(r, settings, ["content type"])


def test_body_over_limit_is_413_and_dead_lettered(make_client, city, r, settings):
    small = settings.model_copy(update={"max_push_bytes": 2000})
    client = make_client(small)
    batch = [report(f"big{i}", city, description="长" * 100) for i in range(10)]
    resp = post(client, CASES, batch)
    assert resp.status_code == 413
    assert "2000" in orjson.loads(resp.data)["error"]
    assert_dead(r, settings, ["exceeds the limit of 2000 bytes"])


def test_record_over_payload_limit_is_rejected(client, city, r, settings):
    huge = report("huge", city, description="x" * (1024 * 1024))
    resp = post(client, CASES, [huge, report("ok", city)])
    assert resp.status_code == 207
    item = orjson.loads(resp.data)["items"][0]
    assert item["status"] == "rejected" and item["errors"][0].startswith("record:")
    assert str(settings.max_payload_bytes) in item["errors"][0]
    assert_dead(r, settings, ["per-record limit"])


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"category": "9999"}, "category"),
        ({"lon": 200.0, "lat": 22.7}, "lon"),
        ({"lon": 113.9, "lat": -95.0}, "lat"),
        ({"lon": 113.9}, "lon/lat"),
        ({"external_id": None}, "external_id"),
        ({"occurred_at": None}, "occurred_at"),
        ({"title": None}, "title"),
        ({"grade": "high"}, "grade"),
        ({"occurred_at": 12345}, "occurred_at"),
        ({"departments": "cg"}, "departments"),
        ({"onsite": "maybe"}, "onsite"),
        ({"title": "井盖\x07缺失"}, "title"),
        ({"title": "第一行\n第二行"}, "title"),
        ({"title": "长" * 201}, "title"),
        ({"address": "路" * 301}, "address"),
        ({"description": "字" * 4001}, "description"),
        ({"reporter_phone": "call me"}, "reporter_phone"),
        ({"grid_code": "440311999999999"}, "grid_code"),
        ({"occurred_at": (datetime.now(UTC) + timedelta(days=3)).isoformat()}, "occurred_at"),
        ({"surprise": 1}, "surprise"),
        ({"event": "explode"}, "event"),
    ],
)
def test_bad_fields_are_named(client, city, r, settings, change, field):
    rec = report("bad", city)
    for k, v in change.items():
        if v is None:
            rec.pop(k)
        else:
            rec[k] = v
    resp = post(client, CASES, [rec])
    assert resp.status_code == 422, resp.data
    errors = orjson.loads(resp.data)["items"][0]["errors"]
    assert any(e.startswith(f"{field}:") for e in errors), errors
    dead = assert_dead(r, settings, [f"{field}:"])
    assert dead[0]["stream"] == settings.key("stream", "cases")


def test_html_in_title_is_stored_verbatim(client, city, settings, engine, r):
    title = '<script>alert("x")</script><b>井盖</b> & "quotes"'
    resp = post(client, CASES, [report("html", city, title=title)])
    assert resp.status_code == 200
    drain(city, settings, engine, r)
    case = cases_by_ext(client)["html"]
    detail = client.get(f"/api/v1/cases/{case['id']}")
    assert detail.mimetype == "application/json"
    assert orjson.loads(detail.data)["title"] == title


def test_sensor_push(client, city, settings, engine, r):
    grid = city.geography.areas("grid")[7]
    smoke = city.sensor_types["smoke"]
    good = {"device_id": "sm-9", "type": "smoke", "value": smoke.threshold + 1, "ts": NOW.isoformat(),
            "grid_code": grid.code}
    bad = {"device_id": "xx-1", "type": "teleporter", "value": 1, "ts": NOW.isoformat()}
    resp = post(client, SENSORS, [good, bad])
    assert resp.status_code == 207
    errors = orjson.loads(resp.data)["items"][1]["errors"]
    assert any(e.startswith("type:") for e in errors)
    assert_dead(r, settings, ["type: unknown sensor type"])
    drain(city, settings, engine, r)
    summary = orjson.loads(client.get(f"/api/v1/summary?area={grid.code}").data)
    assert summary["sensor_alarms_active"] == 1 and summary["cases_open"] == 1


def test_gcj02_push_is_converted_at_the_edge(client, city, settings, engine, r):
    """AMap (GCJ-02) coordinates pushed with ?crs=gcj02 land in the grid that holds the true (WGS84) point."""
    from core.coords import from_wgs84

    grid = city.geography.areas("grid")[40]
    lon, lat = grid.centroid
    glon, glat = from_wgs84(lon, lat, "gcj02")
    rec = {k: v for k, v in report("amap-1", city).items() if k != "grid_code"}
    resp = post(client, f"{CASES}?crs=gcj02", [{**rec, "lon": glon, "lat": glat}])
    assert resp.status_code == 200
    bad = post(client, f"{CASES}?crs=utm", [rec])
    assert bad.status_code == 400 and "unknown coordinate system" in orjson.loads(bad.data)["error"]
    drain(city, settings, engine, r)
    case = cases_by_ext(client)["amap-1"]
    assert case["grid_code"] == grid.code
    assert abs(case["lon"] - lon) < 1e-5 and abs(case["lat"] - lat) < 1e-5


def test_a_deadline_days_ahead_is_accepted_but_an_event_from_the_future_is_not(client, city, settings, engine, r):
    due = (datetime.now(UTC) + timedelta(days=10)).replace(microsecond=0)
    resp = post(client, CASES, [report("due-later", city, due_at=due.isoformat()),
                                report("from-future", city, occurred_at=(datetime.now(UTC) + timedelta(days=2)).isoformat())])
    body = orjson.loads(resp.data)
    assert resp.status_code == 207
    assert body["items"][0]["status"] == "accepted"
    assert body["items"][1]["status"] == "rejected" and "occurred_at" in body["items"][1]["errors"][0]
    drain(city, settings, engine, r)
    found = cases_by_ext(client)["due-later"]
    assert datetime.fromisoformat(found["due_at"].replace("Z", "+00:00")) == due


# --------------------------------------------------------------------------- credentials


def _stream_lengths(r, settings) -> tuple[int, int]:
    return r.xlen(settings.key("stream", "cases")), r.xlen(settings.key("stream", "sensors"))


def test_refused_pushes_are_401_unpublished_counted_and_never_show_the_token(make_client, city, settings, r, caplog):
    caplog.set_level(logging.DEBUG)
    client = make_client(source=None)
    right = settings.feed_token("push-test")
    wrong = "not-the-token-" + right[::-1]
    others = settings.feed_token("citizen")  # a real token, of another source
    body = [report("nope", city)]
    sent = [  # (url, headers, expected reason): 2 missing, 3 wrong, 3 for sources without a token
        (CASES, {"X-Gridwatch-Source": "push-test"}, "missing"),
        (SENSORS, {"X-Gridwatch-Source": "push-test", "Authorization": f"Basic {right}"}, "missing"),
        (CASES, {"X-Gridwatch-Source": "push-test", "Authorization": f"Bearer {wrong}"}, "wrong"),
        (CASES, {"X-Gridwatch-Source": "push-test", "Authorization": f"Bearer {others}"}, "wrong"),
        (SENSORS, {"X-Gridwatch-Source": "push-test", "Authorization": f"Bearer {right}x"}, "wrong"),
        (CASES, {"X-Gridwatch-Source": "nobody", "Authorization": f"Bearer {right}"}, "unconfigured"),
        (CASES, {"X-Gridwatch-Source": "nobody-else"}, "unconfigured"),
        (SENSORS, {"X-Gridwatch-Source": "x" * 40, "Authorization": f"Bearer {right}"}, "unconfigured"),
    ]
    answers = []
    for url, headers, expected in sent:
        resp = client.post(url, data=orjson.dumps(body), content_type="application/json", headers=headers)
        assert resp.status_code == 401, (expected, resp.data)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
        error = orjson.loads(resp.data)["error"]
        answers.append(resp.data.decode())
        if expected == "unconfigured":
            assert "is not configured" in error and "FEED_TOKENS" in error and "X-Gridwatch-Source" in error
        else:
            assert "'Authorization: Bearer <token>'" in error and "'push-test'" in error
    # missing and wrong differ in one word: the answer says what to send, never what was wrong with it
    missing, wrong_answer = orjson.loads(answers[0])["error"], orjson.loads(answers[2])["error"]
    assert missing.replace("required", "refused") == wrong_answer

    assert _stream_lengths(r, settings) == (0, 0)
    assert read_dead(r, settings) == [] and r.get(settings.key("dead", "count")) is None
    assert r.hgetall(settings.key("live", "feed_refused")) == {
        b"push|push-test|token missing": b"2", b"push|push-test|token wrong": b"3", b"push|*|source not configured": b"3"}

    health = orjson.loads(client.get("/healthz").data)
    assert health["feed_status"]["push"]["ok"] is True
    assert health["feed_status"]["push"]["refused"] == {
        "push-test": {"token missing": 2, "token wrong": 3}, "*": {"source not configured": 3}}
    assert not any("push" in reason for reason in health["reasons"]), health["reasons"]

    refusals = [rec for rec in caplog.records if rec.name == "ingest.feeds.push" and "refused" in rec.getMessage()]
    assert len(refusals) == len(sent)
    assert all(rec.levelno == logging.WARNING and "127.0.0.1" in rec.getMessage() for rec in refusals)
    assert sum("'nobody'" in rec.getMessage() and "source not configured" in rec.getMessage() for rec in refusals) == 1
    secrets = [wrong, *(settings.feed_token(source) for source in settings.feed_tokens)]  # right and others too
    for rec in caplog.records:
        text = rec.getMessage() + repr(rec.args)
        assert not any(t in text for t in secrets), text
    assert not any(t in a for t in secrets for a in answers)


def test_the_right_token_is_accepted_and_counts_nothing(make_client, city, settings, r, push_headers):
    client = make_client(source=None)
    resp = client.post(CASES, data=orjson.dumps([report("ok-1", city)]), content_type="application/json",
                       headers=push_headers("push-test"))
    assert resp.status_code == 200 and orjson.loads(resp.data)["accepted"] == 1
    lower = {**push_headers("push-test"), "Authorization": "bearer " + settings.feed_token("push-test")}
    resp = client.post(CASES, data=orjson.dumps([report("ok-2", city)]), content_type="application/json", headers=lower)
    assert resp.status_code == 200  # the scheme is case-insensitive (RFC 7235)
    # without X-Gridwatch-Source the source is "push", with its own token
    resp = client.post(CASES, data=orjson.dumps([report("ok-3", city, source="push")]), content_type="application/json",
                       headers={"Authorization": f"Bearer {settings.feed_token('push')}"})
    assert resp.status_code == 200
    assert _stream_lengths(r, settings) == (3, 0)
    assert not r.exists(settings.key("live", "feed_refused"))


def test_a_record_of_another_source_is_rejected(client, city, settings, r):
    resp = post(client, CASES, [report("own", city), report("theirs", city, source="citizen")])
    assert resp.status_code == 207
    item = orjson.loads(resp.data)["items"][1]
    assert item["status"] == "rejected" and item["errors"][0].startswith("source:")
    assert "'citizen'" in item["errors"][0] and "'push-test'" in item["errors"][0]
    dead = assert_dead(r, settings, ["source: the record says 'citizen'"])
    assert orjson.loads(dead[0]["raw"])["external_id"] == "theirs"
    assert _stream_lengths(r, settings) == (1, 0)
