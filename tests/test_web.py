"""The web edge (dashboard/web.py): crafted paths answer 404, every answer carries the security headers, personal
data is never cached, and a Redis or SQL outage answers 503 with Retry-After — never a 500 or a traceback."""

from __future__ import annotations

import logging
import socket
import subprocess
import time

import orjson
import pytest
import redis

from tests import accounts
from tests.pushed import report

CRAFTED = ["/_dash-component-suites/%2e%2e/app.py", "/_dash-component-suites/dash/..%2f..%2fapp.py",
           "/_dash-component-suites/dash/%2e%2e/%2e%2e/app.py", "/_dash-component-suites/dash/../../app.py",
           "/_dash-component-suites/nothing/x.js", "/_dash-component-suites/dash/%00.js",
           "/_dash-component-suites/dash/..%5c..%5capp.py", "/assets/..%2f..%2fapp.py", "/%2e%2e/%2e%2e/etc/passwd",
           "/_dash-component-suites/dash/deps/%2e/react.js"]


def test_crafted_paths_answer_404_without_a_traceback(settings, r, engine, caplog):
    from app import create_app

    client = create_app(settings).server.test_client()  # anonymous
    with caplog.at_level(logging.INFO):
        for path in CRAFTED:
            assert client.get(path).status_code == 404, path
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR or rec.exc_info], caplog.text
    assert "Traceback" not in caplog.text


def test_security_headers_and_no_store(settings, r, engine, city):
    from store.streams import Producer
    from tests.pushed import drain

    Producer(r, settings, source="test").cases([orjson.dumps(report("h1", city, source="test"))])
    drain(city, settings, engine, r)
    client = accounts.client(settings)
    case_id = orjson.loads(client.get("/api/v1/cases").data)["items"][0]["id"]
    for path in ["/", "/screen", f"/case/{case_id}", "/briefings", "/api/v1/summary", "/api/v1/cases",
                 f"/api/v1/cases/{case_id}", "/api/v1/cases.csv", "/login", "/_dash-layout"]:
        resp = client.get(path)
        assert resp.status_code == 200, path
        csp = resp.headers.get("Content-Security-Policy", "")
        directives = dict((d.strip().split(" ", 1) + [""])[:2] for d in csp.split(";") if d.strip())
        assert directives.get("default-src") == "'self'", (path, csp)
        assert "'unsafe-inline'" not in directives["script-src"] and "'unsafe-eval'" not in directives["script-src"]
        assert "frame-ancestors" in directives and "object-src" in directives
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["X-Frame-Options"] == "SAMEORIGIN"
        assert resp.headers["Referrer-Policy"] == "same-origin"
        assert resp.headers.get("Cache-Control") == "no-store", path
    # Dash's inline scripts are allowed by their hashes, and only those
    import base64
    import hashlib
    import re

    page = client.get("/")
    allowed = set(re.findall(r"'(sha256-[^']+)'", page.headers["Content-Security-Policy"]))
    inline = re.findall(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>(.*?)</script>",
                        page.get_data(as_text=True).split("<![endif]-->")[-1], re.S)
    assert inline
    for body in inline:
        assert "sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() in allowed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of this test's own on a free port (the bundled binary), which the test may kill."""
    from store.services import _redis_server_binary

    port = _free_port()
    proc = subprocess.Popen([_redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(200):
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield proc, url
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)


def test_push_and_pages_answer_503_while_redis_is_away(own_redis, settings, engine, city, push_headers, caplog):
    proc, url = own_redis
    s = settings.model_copy(update={"redis_url": url})
    client = accounts.client(s)  # logged in while Redis is there
    body = orjson.dumps([report("x1", city)])
    assert client.post("/api/v1/ingest/cases", data=body, content_type="application/json",
                       headers=push_headers()).status_code == 200
    proc.kill()
    proc.wait(5)
    with caplog.at_level(logging.INFO):
        answers = [client.post("/api/v1/ingest/cases", data=body, content_type="application/json",
                               headers=push_headers()),
                   client.get("/api/v1/summary"), client.get("/api/v1/cases"), client.get("/")]
    for resp in answers:
        assert resp.status_code == 503, (resp.request.path, resp.status_code, resp.get_data(as_text=True)[:300])
        assert int(resp.headers["Retry-After"]) == s.retry_after_s > 0
        got = orjson.loads(resp.data)
        assert "redis" in got["error"].lower() and "REDIS_URL" in got["fix"]
    assert "Traceback" not in caplog.text and not [rec for rec in caplog.records if rec.exc_info]


def test_api_answers_503_while_the_sql_store_is_away(settings, r, engine, tmp_path, caplog):
    from store.services import get_engine

    if engine.dialect.name != "sqlite":
        pytest.skip("takes the SQLite file away; a stopped PostgreSQL is tests/test_outage.py's and test_faults.py's")
    client = accounts.client(settings)
    assert client.get("/api/v1/cases").status_code == 200
    db = tmp_path / "test.db"
    get_engine(settings).dispose()
    db.rename(tmp_path / "gone.db")
    db.mkdir()  # the store's file is now a folder: every new connection fails as a lost server would
    with caplog.at_level(logging.INFO):
        resp = client.get("/api/v1/cases")
    assert resp.status_code == 503, resp.get_data(as_text=True)[:300]
    assert int(resp.headers["Retry-After"]) == settings.retry_after_s
    got = orjson.loads(resp.data)
    assert "database" in got["error"] and "DATABASE_URL" in got["fix"]
    assert "Traceback" not in caplog.text and not [rec for rec in caplog.records if rec.exc_info]


# --------------------------------------------------------------------------- the pages under the CSP, in Chromium

CSP_WATCH = ("window.__csp=[];document.addEventListener('securitypolicyviolation',function(e){"
             "window.__csp.push(e.violatedDirective+' '+e.blockedURI+' '+(e.sample||''));});")
PAGES = {  # a page, and what shows that its callbacks ran (Dash drew it, its figures and map are there)
    "/": "document.querySelectorAll('.leaflet-container').length > 0 && document.querySelectorAll('.dr').length > 0",
    "/screen": "document.querySelectorAll('#scr-kpis *').length > 0 && document.querySelectorAll('.leaflet-container').length > 0",
    "/case/{id}": "document.querySelectorAll('.case-title').length > 0",
    "/briefings": "document.querySelectorAll('#br-go').length > 0",
}


@pytest.fixture
def csp_server(settings, r, engine, city):
    from store.streams import Producer
    from tests.browser import LiveServer
    from tests.sample_cases import full_case, late_case

    Producer(r, settings, source="t").cases(full_case(city) + late_case(city))
    srv = LiveServer(settings, engine, r, city, role="admin")
    srv.start()
    yield srv
    srv.close()


def test_the_main_pages_render_under_the_csp_in_chromium(csp_server, browser, engine):
    from sqlalchemy import text

    from tests.browser import errors, wait

    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CSP_WATCH})
    assert wait(lambda: engine.connect().execute(text("SELECT count(*) FROM cases")).scalar() >= 2, 20)
    case_id = engine.connect().execute(text("SELECT id FROM cases ORDER BY id LIMIT 1")).scalar()
    for path, drawn in PAGES.items():
        csp_server.open(browser, path.format(id=case_id))
        assert wait(lambda drawn=drawn: browser.execute_script(f"return {drawn};"), 30), path
        violations = browser.execute_script("return window.__csp || [];")
        logged = [e for e in errors(browser) if "Content Security Policy" in e or "Refused to" in e]
        assert violations == [] and logged == [], (path, violations, logged)
        # and the policy is in force: a script injected into the page does not run
        browser.execute_script("var s=document.createElement('script');s.textContent='window.__ran=1;';"
                               "document.body.appendChild(s);")
        assert browser.execute_script("return window.__ran === undefined;"), path
        assert wait(lambda: browser.execute_script("return window.__csp.length;") == 1, 5), path
        browser.get_log("browser")  # that refusal is expected: not the next page's
