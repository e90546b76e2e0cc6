"""Open311 GeoReport v2 pull feed against a real local HTTP server serving real Chicago and SF data.

The server (http.server on 127.0.0.1, a free port) honours start_date/end_date (on requested_datetime,
start inclusive, end exclusive) and page/page_size, serves requests as JSON or as XML built from the same
records, and can fail or send garbage on demand.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pytest
from sqlalchemy import select

from core.lifecycle import Status
from ingest.feedhealth import read_all
from ingest.feeds import open311
from store.schema import Case, CaseEvent
from store.streams import read_dead

DATA = Path(__file__).parent / "data" / "open311"
CHICAGO = DATA / "chicago_open311_requests.json"
SF_SERVICES = DATA / "sf_open311_services.xml"
SINCE = datetime(2014, 1, 1, tzinfo=UTC)
NOW = datetime(2015, 1, 1, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent


def _t(s: str) -> datetime:
    return datetime.fromisoformat(s)


def _xml(tag: str, value) -> ET.Element:
    el = ET.Element(tag)
    if isinstance(value, list):
        child = tag[:-1] if tag.endswith("s") else "item"
        for v in value:
            el.append(_xml(child, v))
    elif isinstance(value, dict):
        for k, v in value.items():
            el.append(_xml(k, v))
    elif value is not None:
        el.text = str(value)
    return el


class Source:
    """What the test server serves, and what it was asked."""

    def __init__(self, records: list[dict] | None = None):
        records = records if records is not None else json.loads(CHICAGO.read_text())
        self.records = sorted(records, key=lambda q: _t(q["requested_datetime"]))
        self.fail_next = 0  # answer this many requests with 500 first
        self.mangle = None  # (resource, params, body) -> body
        self.hits: list[tuple[str, dict]] = []
        self.served = Counter()  # service_request_id -> times served

    def services_json(self) -> bytes:
        root = ET.fromstring(SF_SERVICES.read_bytes().lstrip())
        return json.dumps([{c.tag: (c.text or "").strip() for c in s} for s in root]).encode()

    def requests(self, params: dict, fmt: str) -> bytes:
        start, end = _t(params["start_date"]), _t(params["end_date"])
        page, size = int(params.get("page", 1)), int(params.get("page_size", 1000))
        window = [q for q in self.records if start <= _t(q.get("_when") or q["requested_datetime"]) < end]
        chunk = [{k: v for k, v in q.items() if not k.startswith("_")} for q in window[(page - 1) * size : page * size]]
        self.served.update(q["service_request_id"] for q in chunk)
        if fmt == "json":
            return json.dumps(chunk).encode()
        root = ET.Element("service_requests")
        for q in chunk:
            root.append(_xml("request", q))
        return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="utf-8")


@pytest.fixture
def source():
    src = Source()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            url = urlparse(self.path)
            params = {k: v[0] for k, v in parse_qs(url.query).items()}
            resource = url.path.rsplit("/", 1)[-1]
            src.hits.append((resource, params))
            if src.fail_next > 0:
                src.fail_next -= 1
                return self._send(500, b"upstream exploded", "text/plain")
            if resource == "services.xml":
                body = SF_SERVICES.read_bytes()
            elif resource == "services.json":
                body = src.services_json()
            elif resource in ("requests.json", "requests.xml"):
                body = src.requests(params, resource.rsplit(".", 1)[1])
            else:
                return self._send(404, b'[{"code":404,"description":"not found"}]', "application/json")
            if src.mangle is not None:
                body = src.mangle(resource, params, body)
            self._send(200, body, "application/xml" if resource.endswith("xml") else "application/json")

        def _send(self, code, body, ctype):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    src.url = f"http://127.0.0.1:{server.server_address[1]}/open311/v2"
    yield src
    server.shutdown()
    server.server_close()


def endpoint(url: str, fmt: str = "json", **kw) -> dict:
    return {"name": "chi", "base_url": url, "format": fmt, "mapping": "config/mappings/open311_chicago.yaml",
            "window_hours": 24 * 30, "page_size": 7, "overlap_minutes": 0, "retries": 3, "backoff_seconds": 0.01,
            "backoff_max_seconds": 0.05, "timeout_seconds": 5, "timezone": "America/Chicago", **kw}


def poll(src, settings, r, city, fmt="json", now=NOW, since=SINCE, sleeps=None, **kw):
    return open311.poll_once(endpoint(src.url, fmt, **kw), settings, r, now=now, since=since, city=city,
                             sleep=(sleeps.append if sleeps is not None else lambda s: None))


def apply_all(city, settings, engine, r):
    from ingest.worker import Worker

    w = Worker(city, settings, engine, r, name="t")
    while w.run_once(50):
        pass


def stored_cases(engine) -> dict[str, Case]:
    with engine.connect() as conn:
        return {row.external_id: row for row in conn.execute(select(Case)).all()}


def chicago() -> pd.DataFrame:
    """The Chicago records, read independently of the feed."""
    return pd.DataFrame(json.loads(CHICAGO.read_text()))


def n_windows(since=SINCE, now=NOW, hours=24 * 30) -> int:
    n, t = 0, since
    while t < now:
        n, t = n + 1, t + timedelta(hours=hours)
    return n


# --------------------------------------------------------------------------- services


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_services_in_both_formats(source, fmt):
    client = open311.Client(open311.endpoint_of(endpoint(source.url, fmt)))
    items, bad, error = client.services()
    expected = [s.findtext("service_code") for s in ET.fromstring(SF_SERVICES.read_bytes().lstrip())]
    assert error is None and bad == []
    assert [i["service_code"] for i, _ in items] == expected
    assert len(items) == 36
    assert all(i["service_name"] for i, _ in items)


def test_xml_with_a_dtd_is_refused():
    body = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><services><service><service_code>&a;</service_code></service></services>'
    items, bad, error = open311.parse_xml_items(body)
    assert items == [] and "DTD" in error and bad[0][0] == body


# --------------------------------------------------------------------------- windows, paging, resume


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_windows_and_paging_get_every_request_once(source, settings, r, city, fmt):
    rep = poll(source, settings, r, city, fmt)
    assert rep.ok, rep.error
    total = len(chicago())
    assert rep.fetched == total and rep.cases == total and rep.dead == 0
    assert rep.windows == n_windows()
    assert set(source.served) == set(chicago()["service_request_id"]) and set(source.served.values()) == {1}
    pages = [p for res, p in source.hits if res.startswith("requests")]
    assert any(p["page"] == "2" for p in pages), "a window with more than page_size requests is paged"
    assert all(p["page_size"] == "7" for p in pages)
    assert r.hget(open311.state_key(settings, "chi"), "window_end").decode() == NOW.isoformat()
    assert read_all(r, settings)["open311:chi"]["ok"] is True


def test_resume_after_restart_continues_from_stored_window(source, settings, r, city):
    mid = datetime(2014, 7, 1, tzinfo=UTC)
    first = poll(source, settings, r, city, now=mid)
    assert first.ok and first.window_end == mid.isoformat()
    before = sum(1 for q in source.records if _t(q["requested_datetime"]) < mid)
    assert first.fetched == before
    source.hits.clear()
    # "Restart": a fresh poll without --since resumes from Redis.
    second = open311.poll_once(endpoint(source.url), settings, r, now=NOW, city=city, sleep=lambda s: None)
    assert second.ok
    starts = [_t(p["start_date"]) for res, p in source.hits if res.startswith("requests")]
    assert min(starts) == mid
    assert first.fetched + second.fetched == len(chicago())
    assert set(source.served.values()) == {1}
    # Nothing new: a third poll at the same time fetches no window at all.
    third = open311.poll_once(endpoint(source.url), settings, r, now=NOW, city=city, sleep=lambda s: None)
    assert third.windows == 0 and third.fetched == 0


# --------------------------------------------------------------------------- through the real worker


MAPPED = {"DOB - Conservation": "zj", "DIM, Public Way Management - CDOT": "jt", "Division of Electrical Operations CDOT": "cg",
          "Division of In-House Construction CDOT": "jt", "Bureau of Traffic Services - S/S": "jt"}


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_worker_stores_every_request_with_its_lifecycle(source, settings, r, engine, city, fmt):
    rep = poll(source, settings, r, city, fmt)
    assert rep.ok and rep.dead == 0
    apply_all(city, settings, engine, r)
    assert read_dead(r, settings) == [], "every published sequence was legal"

    df = chicago()
    cases = stored_cases(engine)
    assert len(cases) == len(df)
    for _, q in df.iterrows():
        case = cases[q["service_request_id"]]
        assert case.source == "open311-chi"
        assert case.reported_at == _t(q["requested_datetime"])
        assert MAPPED[q["agency_responsible"]] in case.departments
        closed_notes = [n["datetime"] for n in q["notes"] if n["type"] == "closed"]
        if q["status"] == "closed":
            assert case.status == Status.CLOSED
            assert case.closed_at == _t(closed_notes[-1]) == case.resolved_at
        else:
            assert case.status == Status.DISPATCHED  # "Work Assigned" and no close
            assert case.closed_at is None
        assert case.located is False  # Chicago is not in Guangming: kept, unlocated
        assert q["service_name"] in case.description
    assert cases["14-02155558"].category == "0303"  # Street Light Out
    assert cases["14-00684314"].category == "0302"  # Pothole in Street

    with engine.connect() as conn:
        n_events = conn.execute(select(CaseEvent.id)).all()
        inferred = conn.execute(select(CaseEvent.note).where(CaseEvent.actor == "open311")).scalars().all()
    assert inferred and all(n.startswith("inferred") for n in inferred)

    # Pulling the same windows again republishes the same event ids: nothing changes.
    again = poll(source, settings, r, city, fmt)
    assert again.published == rep.published
    apply_all(city, settings, engine, r)
    with engine.connect() as conn:
        assert len(conn.execute(select(CaseEvent.id)).all()) == len(n_events)
    assert len(stored_cases(engine)) == len(df)
    assert read_dead(r, settings) == []


def test_due_time_from_expected_datetime_wins(source, settings, r, engine, city):
    expected = {}
    for q in source.records[:5]:
        q["expected_datetime"] = (_t(q["requested_datetime"]) + timedelta(days=3)).isoformat()
        expected[q["service_request_id"]] = _t(q["expected_datetime"])
    rep = poll(source, settings, r, city)
    assert rep.ok
    apply_all(city, settings, engine, r)
    cases = stored_cases(engine)
    for rid, due in expected.items():
        assert cases[rid].due_at == due
    other = cases[source.records[10]["service_request_id"]]
    assert other.due_at is not None and other.due_at != other.reported_at + timedelta(days=3)  # from the category's limit


def test_unmapped_service_falls_back_and_keeps_the_name(source, settings, r, engine, city):
    q = source.records[0]
    q["service_name"], q["service_code"] = "Coyote Sighting", "xyz"
    q["agency_responsible"] = "Animal Care"
    poll(source, settings, r, city)
    apply_all(city, settings, engine, r)
    case = stored_cases(engine)[q["service_request_id"]]
    assert case.category == "0101"
    assert "Coyote Sighting" in case.description and "xyz" in case.description
    assert {"unmapped_service", "unmapped_agency"} <= set(case.flags)
    assert case.departments[0] == "cg"  # the fallback category's department (then follow-on agencies)


def test_status_without_notes_infers_steps(source, settings, r, engine, city):
    """Plain GeoReport (no notes[]): closed → resolve + close at updated_datetime, missing steps inferred."""
    for q in source.records:
        q.pop("notes")
    poll(source, settings, r, city)
    apply_all(city, settings, engine, r)
    assert read_dead(r, settings) == []
    for q in source.records:
        case = stored_cases(engine)[q["service_request_id"]]
        if q["status"] == "closed":
            assert case.status == Status.CLOSED and case.closed_at == _t(q["updated_datetime"])
        else:
            assert case.status == Status.REGISTERED


# --------------------------------------------------------------------------- failures


def test_source_down_is_retried_and_reported(settings, r, city):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: connection refused
    sleeps = []
    ep = endpoint(f"http://127.0.0.1:{port}/open311/v2", retries=4, backoff_seconds=1, backoff_max_seconds=3)
    rep = open311.poll_once(ep, settings, r, now=NOW, since=SINCE, city=city, sleep=sleeps.append)
    assert not rep.ok and "after 4 attempts" in rep.error
    assert rep.windows == 0 and rep.fetched == 0
    # services (4 attempts) then the first window's first page (4 attempts): 1, 2, 3 (capped) each time
    assert sleeps == [1, 2, 3, 1, 2, 3]
    health = read_all(r, settings)["open311:chi"]
    assert health["ok"] is False and health["failures"] == 1 and "ConnectionError" in health["error"]
    assert r.hget(open311.state_key(settings, "chi"), "window_end") is None


def test_server_error_then_recovery(source, settings, r, engine, city):
    source.fail_next = 2
    sleeps = []
    rep = poll(source, settings, r, city, sleeps=sleeps)
    assert rep.ok and rep.retried == 2 and len(sleeps) == 2
    assert rep.fetched == len(chicago())
    # Down for a whole poll: nothing advances; the next poll picks up from the same place.
    source.fail_next = 10**6
    down = poll(source, settings, r, city, now=NOW + timedelta(days=40), since=None)
    assert not down.ok and "HTTP 500" in down.error
    assert read_all(r, settings)["open311:chi"]["ok"] is False
    assert r.hget(open311.state_key(settings, "chi"), "window_end").decode() == NOW.isoformat()
    source.fail_next = 0
    up = poll(source, settings, r, city, now=NOW + timedelta(days=40), since=None)
    assert up.ok and up.windows == 2
    assert read_all(r, settings)["open311:chi"]["ok"] is True
    apply_all(city, settings, engine, r)
    assert len(stored_cases(engine)) == len(chicago())


def _first_multi_page_window(source) -> str:
    """start_date of the first window with a full first page (so page 1 holds page_size requests)."""
    t = SINCE
    while True:
        n = sum(1 for q in source.records if t <= _t(q["requested_datetime"]) < t + timedelta(hours=24 * 30))
        if n >= 7:
            return t.strftime("%Y-%m-%dT%H:%M:%SZ")
        t += timedelta(hours=24 * 30)


def test_truncated_json_keeps_the_records_before_the_cut(source, settings, r, engine, city):
    target = _first_multi_page_window(source)
    lost = []

    def mangle(resource, params, body):
        if resource == "requests.json" and params["start_date"] == target and params["page"] == "1":
            records = json.loads(body)
            lost.append(records[-1]["service_request_id"])
            cut = body.rfind(b'"requested_datetime"')  # inside the last record, after its id
            return body[:cut]
        return body

    source.mangle = mangle
    rep = poll(source, settings, r, city)
    assert rep.dead == 1 and rep.fetched == len(chicago()) - 1
    apply_all(city, settings, engine, r)
    cases = stored_cases(engine)
    assert len(cases) == len(chicago()) - 1 and lost[0] not in cases
    dead = [d for d in read_dead(r, settings) if d["source"] == "open311-chi"]
    assert len(dead) == 1 and "invalid JSON" in dead[0]["reason"] and lost[0] in dead[0]["raw"]
    assert read_all(r, settings)["open311:chi"]["ok"] is False  # garbage is shown on /healthz


def test_truncated_xml_keeps_the_records_before_the_cut(source, settings, r, engine, city):
    target = _first_multi_page_window(source)
    lost = []

    def mangle(resource, params, body):
        if resource == "requests.xml" and params["start_date"] == target and params["page"] == "1":
            root = ET.fromstring(body)
            lost.append(root[-1].findtext("service_request_id"))
            return body[: body.rfind(b"<address>")]
        return body

    source.mangle = mangle
    rep = poll(source, settings, r, city, "xml")
    assert rep.dead == 1 and rep.fetched == len(chicago()) - 1
    apply_all(city, settings, engine, r)
    cases = stored_cases(engine)
    assert len(cases) == len(chicago()) - 1 and lost[0] not in cases
    dead = [d for d in read_dead(r, settings) if d["source"] == "open311-chi"]
    assert len(dead) == 1 and "invalid XML" in dead[0]["reason"] and lost[0] in dead[0]["raw"]


def test_a_page_that_is_not_json_is_dead_lettered_and_the_rest_kept(source, settings, r, engine, city):
    target = _first_multi_page_window(source)
    hidden = []

    def mangle(resource, params, body):
        if resource == "requests.json" and params["start_date"] == target and params["page"] == "1":
            hidden.extend(q["service_request_id"] for q in json.loads(body))
            return b"<html><body>502 Bad Gateway</body></html>"
        return body

    source.mangle = mangle
    rep = poll(source, settings, r, city)
    assert rep.dead == 1 and len(hidden) == 7
    assert rep.fetched == len(chicago()) - 7  # page 2 of that window is still fetched
    apply_all(city, settings, engine, r)
    assert len(stored_cases(engine)) == len(chicago()) - 7
    dead = [d for d in read_dead(r, settings) if d["source"] == "open311-chi"]
    assert "invalid JSON" in dead[0]["reason"] and "Bad Gateway" in dead[0]["raw"]


@pytest.mark.parametrize("fmt", ["json", "xml"])
@pytest.mark.parametrize(("field", "value", "reason"), [
    ("lat", "abc", "lat: not a number"),
    ("requested_datetime", "yesterday", "requested_datetime: not an ISO 8601 time"),
    ("notes", "closed", "notes: expected a list"),
])
def test_a_record_with_wrong_types_is_dead_lettered(source, settings, r, engine, city, fmt, field, value, reason):
    bad = source.records[3]
    bad["_when"] = bad["requested_datetime"]  # the server still files it in its window
    bad[field] = value
    rep = poll(source, settings, r, city, fmt)
    assert rep.dead == 1
    apply_all(city, settings, engine, r)
    cases = stored_cases(engine)
    assert len(cases) == len(chicago()) - 1 and bad["service_request_id"] not in cases
    dead = [d for d in read_dead(r, settings) if d["source"] == "open311-chi"]
    assert len(dead) == 1 and reason in dead[0]["reason"] and bad["service_request_id"] in dead[0]["raw"]
    assert read_all(r, settings)["open311:chi"]["ok"] is True  # the source works; one record was bad


# --------------------------------------------------------------------------- config and CLI


def test_shipped_config_and_mapping_are_valid(city, settings):
    eps = open311.load_endpoints(settings, ROOT / "config" / "feeds.yaml")
    assert eps and all(not ep.enabled for ep in eps)  # no network in the demo
    for ep in eps:
        open311.load_mapping(ep.mapping_path(), city)  # every category and department exists


def test_config_errors_name_the_file_and_entry(tmp_path, city):
    bad = tmp_path / "m.yaml"
    bad.write_text('fallback_category: "9999"\ndepartments: {X: nowhere}\n')
    with pytest.raises(open311.Open311ConfigError) as exc:
        open311.load_mapping(bad, city)
    assert "9999" in str(exc.value) and "nowhere" in str(exc.value) and "m.yaml" in str(exc.value)


def test_scheduled_polls_one_per_enabled_endpoint(tmp_path, settings):
    feeds = tmp_path / "feeds.yaml"
    feeds.write_text(
        "open311:\n"
        "  - {name: a, base_url: 'http://127.0.0.1:1/x', mapping: config/mappings/open311_chicago.yaml, poll_seconds: 60}\n"
        "  - {name: b, enabled: false, base_url: 'http://127.0.0.1:1/y', mapping: config/mappings/open311_chicago.yaml}\n"
    )
    jobs = open311.scheduled_polls(settings.model_copy(update={"feeds_file": feeds}))
    assert [(name, seconds) for name, seconds, _ in jobs] == [("open311:a", 60)]
    assert callable(jobs[0][2])


def test_cli_help():
    out = subprocess.run([sys.executable, "-m", "ingest", "open311", "--help"], capture_output=True, text=True,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": ""}, timeout=60)
    assert out.returncode == 0, out.stderr
    for flag in ("--endpoint", "--once", "--since", "--base-url", "--mapping"):
        assert flag in out.stdout


def test_cli_once_against_the_test_server(source, settings, r, tmp_path):
    out = subprocess.run([sys.executable, "-m", "ingest", "open311", "--once", "--base-url", source.url,
                          "--mapping", "config/mappings/open311_chicago.yaml", "--since", "2014-12-01T00:00:00Z"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": "", "REDIS_URL": settings.redis_url,
                              "STREAM_PREFIX": settings.stream_prefix, "VAR_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    december = sum(1 for q in source.records if _t(q["requested_datetime"]) >= datetime(2014, 12, 1, tzinfo=UTC))
    assert report["ok"] and report["fetched"] == december
    assert r.xlen(f"{settings.stream_prefix}:stream:cases") > 0


def test_run_forever_polls_until_stopped(source, settings, r, city):
    ep = open311.endpoint_of(endpoint(source.url, poll_seconds=0.2))
    stop = threading.Event()
    thread = threading.Thread(target=open311.run_forever, args=([ep], settings, r, stop, SINCE), daemon=True)
    thread.start()
    key = open311.state_key(settings, "chi")
    for _ in range(200):
        if r.hget(key, "window_end"):
            break
        stop.wait(0.05)
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert r.hget(key, "window_end") is not None
    assert set(source.served) == set(chicago()["service_request_id"])


def test_scheduler_registers_one_job_per_enabled_endpoint(tmp_path, settings):
    from ingest.scheduler import build

    feeds = tmp_path / "feeds.yaml"
    base = (Path(__file__).parent.parent / "config" / "feeds.yaml").read_text()
    feeds.write_text(base.replace("enabled: false", "enabled: true", 1))
    s = settings.model_copy(update={"feeds_file": feeds})
    ids = {j.id for j in build(s).get_jobs()}
    assert {"sla_sweep", "device_watch"} <= ids
    assert len([i for i in ids if i.startswith("open311:")]) == 1
