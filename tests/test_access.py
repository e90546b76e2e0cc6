"""Access control: login, sessions, CSRF, lockout, roles, jurisdiction on every API route and every Dash callback,
masking, the audit log, the wall's kiosk links and the user command line — against a real Redis and SQL store.

The jurisdiction tests plant cases with unique markers in two streets, then call every registered /api/v1 route and
every registered Dash callback as a leader of the first street (and as nobody): the second street's markers must
never come back. The same calls as an administrator must return them, so the harness provably reaches the data.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from ingest.worker import Worker
from store.streams import Producer
from tests import accounts

PUBLIC = ("/api/v1/openapi.json", "/api/v1/ingest/")


@pytest.fixture
def planted(settings, r, engine, city):
    """Two cases (and their reporters) in a grid of street A and one of street B, each with a unique marker."""
    geo = city.geography
    a, b = geo.areas("street")[0], geo.areas("street")[1]
    ga = next(g for g in geo.areas("grid") if g.code.startswith(a.code))
    gb = next(g for g in geo.areas("grid") if g.code.startswith(b.code))
    cat = next(c for c in city.categories.values() if not c.sensor_only)
    now = datetime.now(UTC).replace(microsecond=0)
    inside, outside = f"INSIDE{uuid.uuid4().hex[:10]}", f"OUTSIDE{uuid.uuid4().hex[:10]}"
    recs = []
    for i, (marker, g) in enumerate(((inside, ga), (outside, gb), (inside, ga), (outside, gb))):
        rep = now - timedelta(hours=3 + i, days=i % 2)
        recs.append({"source": "patrol", "external_id": f"acc{i}", "event": "report", "occurred_at": rep.isoformat(),
                     "category": cat.code, "title": f"{marker} 井盖", "description": f"{marker} 详情", "grade": 3,
                     "grid_code": g.code, "lon": g.centroid[0], "lat": g.centroid[1],
                     "due_at": (rep + timedelta(hours=1)).isoformat(),
                     "reporter_name": f"{marker}姓名", "reporter_phone": "13912345678"})
    Producer(r, settings, source="t").cases(recs)
    w = Worker(city, settings, engine, r, name="acc")
    while w.run_once(100):
        pass
    with engine.connect() as conn:
        ids = dict(conn.exec_driver_sql("SELECT external_id, id FROM cases").all())
    return {"a": a, "b": b, "grid_a": ga, "grid_b": gb, "inside": inside, "outside": outside,
            "id_a": ids["acc0"], "id_b": ids["acc1"]}


def _api_rules(app) -> list[str]:
    rules = [r.rule for r in app.server.url_map.iter_rules() if r.rule.startswith("/api/v1/")]
    return sorted(r for r in rules if not r.startswith(PUBLIC) and "<path:rest>" not in r)


def _api_urls(rule: str, p) -> list[str]:
    url = (rule.replace("<case_id>", str(p["id_b"])).replace("<path:code>", p["b"].code)
           .replace("<code>", p["b"].code))
    out = [url]
    if "<" not in rule:
        out += [f"{url}?area={p['b'].code}", f"{url}?parent={p['b'].code}", f"{url}?area={p['grid_b'].code}"]
    return out


def test_every_api_route_keeps_out_of_jurisdiction_data_out(app, planted, settings):
    p = planted
    leader = accounts.client(settings, "leader", p["a"].code)
    admin = accounts.client(settings, "admin")
    anonymous = app.server.test_client()
    rules = _api_rules(app)
    assert {"/api/v1/cases", "/api/v1/cases.csv", "/api/v1/cases/<case_id>", "/api/v1/summary", "/api/v1/sla",
            "/api/v1/kpis", "/api/v1/rankings", "/api/v1/risk", "/api/v1/risk/<path:code>/explain"} <= set(rules)
    seen_by_admin = seen_inside = 0
    for rule in rules:
        for url in _api_urls(rule, p):
            resp = leader.get(url)
            body = resp.get_data(as_text=True)
            assert resp.status_code < 500, (url, resp.status_code)
            assert p["outside"] not in body, url
            unknown = resp.status_code == 400 and "unknown parameter" in body  # the route takes no such parameter
            if ("area=" in url or "parent=" in url or "/explain" in url) and not unknown:
                assert resp.status_code == 403, (url, resp.status_code)  # an area outside: refused, not emptied
            if rule == "/api/v1/cases/<case_id>":
                assert resp.status_code == 404  # a case outside: as if absent
            assert anonymous.get(url).status_code == 401, url
            seen_by_admin += p["outside"] in admin.get(url).get_data(as_text=True)
        own = leader.get(rule.replace("<case_id>", str(p["id_a"])).replace("<path:code>", p["a"].code))
        seen_inside += p["inside"] in own.get_data(as_text=True)
    assert seen_by_admin >= 3 and seen_inside >= 3  # the same calls reach the data for those allowed to see it
    # without an area, a street leader's lists are their street's
    items = orjson.loads(leader.get("/api/v1/cases?limit=500").data)["items"]
    assert items and all(i["street_code"] == p["a"].code for i in items)
    assert orjson.loads(leader.get("/api/v1/summary").data)["area"] == p["a"].code


def _callback_bodies(app, p) -> list[dict]:
    """Request bodies for every registered callback, with its inputs set to values naming street B (and a few
    neutral values), as a browser (or an attacker) could send them."""
    b, gb, idb = p["b"].code, p["grid_b"].code, p["id_b"]
    values = {
        "pathname": ["/", f"/area/{b}", f"/area/{gb}", f"/case/{idb}", "/compare", "/briefings", "/screen", "/live"],
        "search": ["", f"?a={b}", f"?a={p['a'].code}&b={b}", f"?area={b}", "?range=30d"],
        "getRowsRequest": [{"startRow": 0, "endRow": 200, "sortModel": [], "filterModel": {}}],
        "value": [b, gb], "data": [b, None], "date": [datetime.now(UTC).date().isoformat()],
        "n_clicks": [1], "n_intervals": [1], "clickData": [{"latlng": {"lat": p["grid_b"].centroid[1],
                                                                        "lng": p["grid_b"].centroid[0]}}],
    }
    out = []
    for key, cb in app.callback_map.items():
        outputs = key.strip(".").split("...") if key.startswith("..") else [key]
        outs = [{"id": o.rpartition(".")[0], "property": o.rpartition(".")[2]} for o in outputs]
        deps = [*cb["inputs"], *cb["state"]]
        variants = [{}]
        for d in deps:
            choices = values.get(d["property"], [None])
            if len(choices) > 1 and len(variants) * len(choices) <= 64:
                variants = [{**v, f"{d['id']}.{d['property']}": c} for v in variants for c in choices]
            else:
                variants = [{**v, f"{d['id']}.{d['property']}": choices[0]} for v in variants]
        for v in variants:
            def dep(d, v=v):
                return {"id": d["id"], "property": d["property"], "value": v[f"{d['id']}.{d['property']}"]}
            out.append({"output": key, "outputs": outs if key.startswith("..") else outs[0],
                        "inputs": [dep(d) for d in cb["inputs"]], "state": [dep(d) for d in cb["state"]],
                        "changedPropIds": [f"{d['id']}.{d['property']}" for d in cb["inputs"]]})
    return out


def test_every_dash_callback_keeps_out_of_jurisdiction_data_out(app, planted, settings):
    p = planted
    bodies = _callback_bodies(app, p)
    assert len({b["output"] for b in bodies}) == len(app.callback_map) >= 10
    leader = accounts.client(settings, "leader", p["a"].code, app=app)
    admin = accounts.client(settings, "admin", app=app)
    anonymous = app.server.test_client()
    seen_by_admin = seen_inside = 0
    for body in bodies:
        data = orjson.dumps(body)
        resp = leader.post("/_dash-update-component", data=data, content_type="application/json")
        text = resp.get_data(as_text=True)
        assert p["outside"] not in text, (body["output"], body["inputs"])
        seen_inside += p["inside"] in text
        assert anonymous.post("/_dash-update-component", data=data,
                              content_type="application/json").status_code == 401
        seen_by_admin += p["outside"] in admin.post("/_dash-update-component", data=data,
                                                    content_type="application/json").get_data(as_text=True)
    assert seen_by_admin >= 3 and seen_inside >= 3


# Which page a callback belongs to, by its outputs' id prefix, and which pages each role may open — written from the
# product's rules (the wall link: the wall only; leaders: not the stream overview; the wall and the overview are the
# whole district's), not read from the code.
PAGE_BY_PREFIX = {"page-": "frame", "live-": "live", "scr-": "screen", "drill-": "drill", "cmp-": "compare",
                  "br-": "briefings", "case-": "case", "dp-": "dispatch"}
MAY_USE = {
    "screen": {"frame", "screen"},
    "leader": {"frame", "drill", "compare", "briefings", "screen", "case"},
    "street-leader": {"frame", "drill", "compare", "briefings", "case"},
    "dispatcher": {"frame", "drill", "compare", "briefings", "screen", "live", "case", "dispatch"},
    "admin": {"frame", "drill", "compare", "briefings", "screen", "live", "case", "dispatch"},
}


def _page_of_callback(key: str) -> str:
    ids = {o.rpartition(".")[0] for o in key.strip(".").split("...")}
    pages = {page for i in ids for prefix, page in PAGE_BY_PREFIX.items() if i.startswith(prefix)}
    assert len(pages) == 1, (key, pages)  # a new page's callbacks: add its prefix above
    return pages.pop()


def test_every_dash_callback_is_refused_to_the_roles_that_may_not_open_its_page(app, planted, settings, engine, city):
    from sqlalchemy import text

    from dashboard import auth

    p = planted
    c_screen = app.server.test_client()
    assert c_screen.get(f"/s/{auth.create_screen_link(engine, city, 'hall')}").status_code == 303
    c_screen.environ_base["HTTP_X_CSRFTOKEN"] = c_screen.get_cookie("_csrf_token").value
    clients = {"screen": c_screen, "leader": accounts.client(settings, "leader", app=app),
               "street-leader": accounts.client(settings, "leader", p["a"].code, app=app),
               "dispatcher": accounts.client(settings, "dispatcher", app=app),
               "admin": accounts.client(settings, "admin", app=app)}
    first = {}
    for body in _callback_bodies(app, p):
        for d in (*body["inputs"], *body["state"]):
            d["value"] = None if d["property"] == "data" else d["value"]  # stores as a fresh page holds them
        first.setdefault(body["output"], body)
    assert set(first) == set(app.callback_map) and len(first) >= 10
    forged = {**next(iter(first.values())), "output": "..drill-kpis.children...scr-fast.data.."}
    refusals = 0
    for key, body in [*first.items(), ("forged", forged)]:
        # a browser-side callback has no server function: the server runs it for no one
        page = None if key == "forged" or "callback" not in app.callback_map[key] else _page_of_callback(key)
        for role, c in clients.items():
            resp = c.post("/_dash-update-component", data=orjson.dumps(body), content_type="application/json")
            if page in MAY_USE[role]:
                assert resp.status_code in (200, 204), (role, key, resp.status_code)
            else:
                assert resp.status_code == 403, (role, key, resp.status_code)
                assert resp.is_json and resp.json["error"], (role, key)
                assert p["inside"] not in resp.get_data(as_text=True)
                refusals += 1
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT action, role, ok FROM audit_log")).all()
    assert sum(1 for r in rows if r.action == "refused" and not r.ok) == refusals
    assert not [r for r in rows if r.action == "briefing_generate" and r.role == "screen"]  # the wall started nothing


def test_pages_and_downloads_respect_the_role_and_the_jurisdiction(app, planted, settings, r, engine, city, tmp_path):
    from dashboard import briefing

    p = planted
    leader = accounts.client(settings, "leader", p["a"].code, app=app)
    # the wall and the stream overview are the district's: a street leader is shown the refusal, not the data
    for path in ("/screen", "/live"):
        body = _route(leader, path)
        assert "无权访问此页面" in body, path
    assert "无权访问此页面" not in _route(leader, f"/area/{p['a'].code}")
    # an archived briefing of street B cannot be downloaded by street A's leader; street A's can
    now = datetime.now(UTC)
    day = (now - timedelta(days=1)).date()
    for street in (p["a"], p["b"]):
        briefing.produce(engine, r, settings, city, "day", day, street.code, briefing.archive_folder(settings, "day"),
                         formats=("xlsx",), now=now)
    mine, theirs = (f"/briefings/files/day/{briefing.stem('day', day.isoformat(), s.code)}.xlsx"
                    for s in (p["a"], p["b"]))
    assert leader.get(mine).status_code == 200
    assert leader.get(theirs).status_code == 404
    assert app.server.test_client().get(mine).status_code == 401


def _route(client, path: str) -> str:
    """What the router draws for ``path`` (its callback, as the browser asks for it)."""
    path, _, search = path.partition("?")
    body = {"output": "..page-content.children...page-kind.data...page-title.data..",
            "outputs": [{"id": "page-content", "property": "children"}, {"id": "page-kind", "property": "data"},
                        {"id": "page-title", "property": "data"}],
            "inputs": [{"id": "page-url", "property": "pathname", "value": path},
                       {"id": "page-url", "property": "search", "value": f"?{search}" if search else ""}],
            "state": [{"id": "page-kind", "property": "data", "value": None}],
            "changedPropIds": ["page-url.pathname"]}
    resp = client.post("/_dash-update-component", data=orjson.dumps(body), content_type="application/json")
    assert resp.status_code == 200, resp.status_code
    return resp.get_data(as_text=True)


# --------------------------------------------------------------------------- login, sessions, CSRF, lockout


def _form_token(client) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)


def test_login_sets_an_httponly_samesite_session_and_logout_ends_it(app, settings):
    name = accounts.make_user(settings, "leader")
    c = app.server.test_client()
    resp = c.post("/login", data={"username": name, "password": accounts.PASSWORD, "csrf": _form_token(c),
                                  "next": "/compare"})
    assert resp.status_code == 303 and resp.headers["Location"] == "/compare"
    cookies = {h.split("=", 1)[0]: h for h in resp.headers.getlist("Set-Cookie")}
    assert "HttpOnly" in cookies["gridwatch_session"] and "SameSite=Lax" in cookies["gridwatch_session"]
    assert "HttpOnly" not in cookies["_csrf_token"]  # Dash's renderer reads it to send X-CSRFToken
    assert c.get("/api/v1/summary").status_code == 200
    stolen = c.get_cookie("gridwatch_session").value
    csrf = c.get_cookie("_csrf_token").value
    assert c.post("/logout", headers={"X-CSRFToken": csrf}).status_code == 303
    other = app.server.test_client()
    other.set_cookie("gridwatch_session", stolen)
    assert other.get("/api/v1/summary").status_code == 401  # the old cookie is worth nothing after logout


def test_posts_without_the_sessions_csrf_token_are_refused(app, settings):
    c = accounts.client(settings, "admin", app=app)
    body = orjson.dumps({"output": "live-lang.data", "outputs": {"id": "live-lang", "property": "data"},
                         "inputs": [{"id": "live-lang-button", "property": "n_clicks", "value": 1}],
                         "state": [{"id": "live-lang", "property": "data", "value": "zh"}],
                         "changedPropIds": ["live-lang-button.n_clicks"]})
    good = c.post("/_dash-update-component", data=body, content_type="application/json")
    assert good.status_code == 200
    del c.environ_base["HTTP_X_CSRFTOKEN"]
    assert c.post("/_dash-update-component", data=body, content_type="application/json").status_code == 403
    assert c.post("/_dash-update-component", data=body, content_type="application/json",
                  headers={"X-CSRFToken": "forged"}).status_code == 403
    # the login form: without its own token nobody is logged in
    name = accounts.make_user(settings, "leader")
    fresh = app.server.test_client()
    resp = fresh.post("/login", data={"username": name, "password": accounts.PASSWORD, "csrf": "x"})
    assert "error=csrf" in resp.headers["Location"] and fresh.get("/api/v1/summary").status_code == 401


def test_failed_logins_lock_the_user_and_are_audited(app, settings, engine):
    from sqlalchemy import text

    from dashboard import auth

    name = accounts.make_user(settings, "leader")
    c = app.server.test_client()
    for _ in range(auth.LOCK_AFTER):
        resp = c.post("/login", data={"username": name, "password": "wrong password!!", "csrf": _form_token(c)})
        assert "error=" in resp.headers["Location"]
    resp = c.post("/login", data={"username": name, "password": accounts.PASSWORD, "csrf": _form_token(c)})
    assert "error=failed" in resp.headers["Location"]  # the right password is refused while locked (said as wrong)
    assert c.get("/api/v1/summary").status_code == 401
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT action, ok, address, username FROM audit_log WHERE username = :u"),
                            {"u": name}).all()
    assert [r.ok for r in rows].count(False) == auth.LOCK_AFTER + 1 and all(r.address for r in rows)
    # unknown names answer the same as wrong passwords; the form says so, in English too
    resp = c.post("/login", data={"username": "nobody-here", "password": "x" * 12, "csrf": _form_token(c), "lang": "en"})
    assert "error=failed" in resp.headers["Location"] and resp.headers["Location"].endswith("&lang=en")
    page = c.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Wrong user name or password." in page and "User name" in page and 'lang="en"' in page
    assert "用户名或密码不正确" in c.get("/login?error=failed").get_data(as_text=True)


def test_one_address_may_try_only_so_often(app, settings):
    from dashboard import auth

    c = app.server.test_client()
    codes = []
    for i in range(auth.ADDRESS_TRIES + 2):
        resp = c.post("/login", data={"username": f"guess{i}", "password": "x" * 12, "csrf": _form_token(c)})
        codes.append(re.search(r"error=(\w+)", resp.headers["Location"]).group(1))
    assert codes[:auth.ADDRESS_TRIES] == ["failed"] * auth.ADDRESS_TRIES and codes[-2:] == ["rate", "rate"]


def _login_as(c, name: str, password: str, addr: str):
    c.environ_base["REMOTE_ADDR"] = addr
    return c.post("/login", data={"username": name, "password": password, "csrf": _form_token(c)})


def test_wall_links_neither_count_against_nor_are_blocked_by_the_login_limit(app, settings, engine, city):
    from dashboard import auth

    token = auth.create_screen_link(engine, city, "hall")
    name = accounts.make_user(settings, "leader")
    nat = "192.0.2.50"  # everyone behind one NAT
    wall = app.server.test_client()
    wall.environ_base["REMOTE_ADDR"] = nat
    for _ in range(auth.ADDRESS_TRIES + 5):  # the wall reloads often; its link is not a password guess
        resp = wall.get(f"/s/{token}")
        assert resp.status_code == 303 and resp.headers["Location"] == "/screen"
    c = app.server.test_client()
    assert "error" not in _login_as(c, name, accounts.PASSWORD, nat).headers["Location"]
    codes = [re.search(r"error=(\w+)", _login_as(app.server.test_client(), f"guess{i}", "x" * 12, nat)
                       .headers["Location"]).group(1) for i in range(auth.ADDRESS_TRIES)]
    assert codes[-1] == "rate"  # the password logins from the NAT are used up …
    again = app.server.test_client()
    again.environ_base["REMOTE_ADDR"] = nat
    resp = again.get(f"/s/{token}")  # … and the wall still opens
    assert resp.status_code == 303 and resp.headers["Location"] == "/screen"
    assert "无权访问此页面" not in _route(_with_csrf(again), "/screen")


def _with_csrf(c):
    c.environ_base["HTTP_X_CSRFTOKEN"] = c.get_cookie("_csrf_token").value
    return c


def test_wrong_passwords_lock_a_user_out_from_that_address_only(app, settings, engine, r):
    from dashboard import auth

    name = accounts.make_user(settings, "admin")
    attacker, office = "198.51.100.9", "192.0.2.10"
    for _ in range(auth.LOCK_AFTER):
        _login_as(app.server.test_client(), name, "wrong password!!", attacker)
    c = app.server.test_client()
    assert "error=" in _login_as(c, name, accounts.PASSWORD, attacker).headers["Location"]
    assert c.get("/api/v1/summary").status_code == 401  # locked out from the attacker's address …
    c = app.server.test_client()
    assert "error" not in _login_as(c, name, accounts.PASSWORD, office).headers["Location"]
    assert c.get("/api/v1/summary").status_code == 200  # … not from the office
    assert auth.locks(r, settings, name) == 1
    auth.set_password(engine, r, settings, name, accounts.PASSWORD)  # a new password unlocks
    assert "error" not in _login_as(app.server.test_client(), name, accounts.PASSWORD, attacker).headers["Location"]


def test_locked_wrong_and_unknown_get_the_same_answer_after_the_same_work(app, settings, engine, r, monkeypatch):
    from argon2 import PasswordHasher

    from dashboard import auth

    verified = []
    original = PasswordHasher.verify

    def counting(self, hash_, password):
        verified.append(1)
        return original(self, hash_, password)

    monkeypatch.setattr(PasswordHasher, "verify", counting)
    locked, wrong, disabled = (accounts.make_user(settings, "leader") for _ in range(3))
    for i in range(auth.LOCK_AFTER):
        _login_as(app.server.test_client(), locked, "wrong password!!", f"192.0.2.{i % 2 + 1}")  # two addresses
    for _ in range(auth.LOCK_AFTER):
        _login_as(app.server.test_client(), locked, "wrong password!!", "192.0.2.7")
    auth.set_disabled(engine, r, settings, disabled, True)
    answers = []
    for name, password in ((locked, accounts.PASSWORD), (wrong, "wrong password!!"), (disabled, accounts.PASSWORD),
                           ("nobody-at-all", "x" * 12),
                           ("not a valid name!", "x" * 12)):
        c = app.server.test_client()
        verified.clear()
        resp = _login_as(c, name, password, "192.0.2.7")
        page = c.get(resp.headers["Location"])
        answers.append((resp.status_code, resp.headers["Location"], page.status_code, page.get_data(as_text=True)
                        .replace(re.search(r'name="csrf" value="([^"]+)"', page.get_data(as_text=True)).group(1), "")))
        assert len(verified) == 1, name  # one argon2 verify, whoever asks
    assert all(a == answers[0] for a in answers) and "error=failed" in answers[0][1]
    assert "用户名或密码不正确" in answers[0][3]


def test_trust_proxy_is_a_number_of_hops_and_true_false_still_read():
    from config.settings import Settings

    assert Settings().trust_proxy == 0
    for given, hops in (("true", 1), ("True", 1), ("false", 0), ("0", 0), ("1", 1), ("2", 2), (True, 1), (False, 0)):
        assert Settings(trust_proxy=given).trust_proxy == hops, given
    with pytest.raises(ValueError):
        Settings(trust_proxy="maybe")


@pytest.mark.parametrize("hops", [0, 1, 2])
def test_a_forged_leftmost_forwarded_for_changes_neither_the_limit_nor_the_audit(settings, engine, hops):
    from sqlalchemy import text

    from app import create_app
    from dashboard import auth

    app = create_app(settings.model_copy(update={"trust_proxy": hops}))
    c = app.server.test_client()
    # the client 203.0.113.7 reaches the app through `hops` proxies (the last one, 10.0.0.2, is the peer); each
    # proxy appends the address it saw, so the chain's right end is theirs; the client forges the left end
    seen = ["203.0.113.7", "10.0.0.1"][:hops]  # what proxy 1 (and 2) appended
    client = {0: "10.0.0.2", 1: "203.0.113.7", 2: "203.0.113.7"}[hops]  # written by hand: what the app must see
    codes = []
    for i in range(auth.ADDRESS_TRIES + 1):
        forged = f"198.51.100.{i}"
        c.environ_base.update(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=", ".join([forged, *seen]))
        resp = c.post("/login", data={"username": f"forger{i}", "password": "x" * 12, "csrf": _form_token(c)})
        codes.append(re.search(r"error=(\w+)", resp.headers["Location"]).group(1))
    assert codes == ["failed"] * auth.ADDRESS_TRIES + ["rate"]  # one address, however the header is forged
    with engine.connect() as conn:
        addresses = {a for (a,) in conn.execute(text("SELECT address FROM audit_log WHERE action = 'login'"))}
    assert addresses == {client}


def test_the_wall_link_is_read_only_and_shows_no_personal_data(app, planted, settings, engine, city):
    from dashboard import auth

    token = auth.create_screen_link(engine, city, "hall")
    c = app.server.test_client()
    resp = c.get(f"/s/{token}")
    assert resp.status_code == 303 and resp.headers["Location"] == "/screen"
    c.environ_base["HTTP_X_CSRFTOKEN"] = c.get_cookie("_csrf_token").value
    assert c.get("/api/v1/summary").status_code == 403  # no API
    assert "无权访问此页面" in _route(c, f"/case/{planted['id_a']}")
    assert "无权访问此页面" in _route(c, "/")
    assert "无权访问此页面" not in _route(c, "/screen")
    snapshot = c.post("/_dash-update-component", content_type="application/json", data=orjson.dumps({
        "output": "..scr-fast.data...scr-slow.data...scr-slow-version.data...scr-fast-version.data...scr-heartbeat.data..",
        "outputs": [{"id": i, "property": "data"} for i in ("scr-fast", "scr-slow", "scr-slow-version",
                                                             "scr-fast-version", "scr-heartbeat")],
        "inputs": [{"id": "scr-poll", "property": "n_intervals", "value": 1}],
        "state": [{"id": "scr-fast-version", "property": "data", "value": None},
                  {"id": "scr-slow-version", "property": "data", "value": None}],
        "changedPropIds": ["scr-poll.n_intervals"]})).get_data(as_text=True)
    assert planted["outside"] in snapshot  # the wall shows the district's cases …
    assert "姓名" not in snapshot and "13912345678" not in snapshot  # … and none of their reporters
    auth.revoke_screen_links(engine, "hall")
    assert app.server.test_client().get(f"/s/{token}").status_code == 403
    assert app.server.test_client().get("/s/not-a-token").status_code == 403


def test_the_user_command_line(settings, monkeypatch, capsys, city, app):
    from config.settings import get_settings
    from dashboard import auth

    for k, v in {"REDIS_URL": settings.redis_url, "DATABASE_URL": settings.database_url,
                 "STREAM_PREFIX": settings.stream_prefix, "VAR_DIR": str(settings.var_dir)}.items():
        if v:
            monkeypatch.setenv(k, str(v))
    get_settings.cache_clear()
    street = city.geography.areas("street")[2].code
    try:
        assert auth.main(["add", "zhang", "--role", "leader", "--area", street, "--password", "long enough pw"]) == 0
        assert auth.main(["add", "zhang", "--role", "leader", "--password", "long enough pw"]) == 2
        assert "exists already" in capsys.readouterr().err
        assert auth.main(["add", "li", "--role", "leader", "--area", "440311999"]) == 2
        assert "no area" in capsys.readouterr().err
        assert auth.main(["add", "wang", "--role", "leader", "--password", "short"]) == 2
        assert "at least" in capsys.readouterr().err
        c = app.server.test_client()
        assert accounts.login(c, "zhang", "long enough pw").status_code == 303
        assert orjson.loads(c.get("/api/v1/summary").data)["area"] == street
        assert auth.main(["disable", "zhang"]) == 0
        assert c.get("/api/v1/summary").status_code == 401  # disabling ends the session at once
        assert "error=failed" in accounts.login(app.server.test_client(), "zhang", "long enough pw").headers["Location"]
        assert auth.main(["enable", "zhang"]) == 0 and auth.main(["passwd", "zhang", "--password", "another long pw"]) == 0
        assert accounts.login(app.server.test_client(), "zhang", "another long pw").status_code == 303
        capsys.readouterr()
        assert auth.main(["list"]) == 0
        listed = capsys.readouterr().out
        assert re.search(rf"zhang\s+leader\s+{street}\s+active", listed)
        assert auth.main(["screen-link", "lobby"]) == 0
        link = capsys.readouterr().out.strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:8050/s/[A-Za-z0-9_-]{40,}", link)
        assert auth.main(["audit", "--limit", "20"]) == 0
        log = capsys.readouterr().out
        for action in ("user_add", "user_disable", "user_enable", "user_passwd", "screen_link_add", "login"):
            assert action in log, action
        assert "long enough pw" not in log and "another long pw" not in log
    finally:
        get_settings.cache_clear()


def test_case_views_and_exports_are_audited_without_personal_data(app, planted, settings, engine, caplog):
    from sqlalchemy import text

    c = accounts.client(settings, "dispatcher", app=app)
    with caplog.at_level("DEBUG"):
        detail = c.get(f"/api/v1/cases/{planted['id_a']}")
        assert detail.status_code == 200 and detail.json["reporter"]["name"] == f"{planted['inside']}姓名"
        assert f"{planted['inside']}姓名" in c.get("/api/v1/cases.csv?grade=3").get_data(as_text=True)
        _route(c, f"/case/{planted['id_b']}")
    assert "姓名" not in caplog.text and "13912345678" not in caplog.text  # shown to the dispatcher, never logged
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT action, target, detail, role FROM audit_log ORDER BY id")).all()
    got = [(r.action, r.target) for r in rows if r.action in ("case_view", "export")]
    assert got == [("case_view", str(planted["id_a"])), ("export", "cases.csv"), ("case_view", str(planted["id_b"]))]
    assert all(r.role == "dispatcher" for r in rows if r.action in ("case_view", "export"))
    assert "姓名" not in str(rows) and "13912345678" not in str(rows)


# --------------------------------------------------------------------------- hostile input

XSS = ['<img src=x onerror="window.__xss=1">', "<script>window.__xss=2</script>", '"><svg onload="window.__xss=3">',
       "[点我](javascript:window.__xss=4)", "{{7*7}} ${7*7} <b>粗</b>"]


def test_xss_payloads_in_titles_and_descriptions_render_inert_in_chromium(browser, settings, r, engine, city):
    from tests.browser import LiveServer, errors, js, shot, size, wait

    geo = city.geography
    grid = geo.areas("grid")[3]
    cat = next(c for c in city.categories.values() if not c.sensor_only)
    now = datetime.now(UTC).replace(microsecond=0)
    recs = [{"source": "citizen", "external_id": f"xss{i}", "event": "report",
             "occurred_at": (now - timedelta(minutes=10 + i)).isoformat(), "category": cat.code, "title": payload,
             "description": payload, "address": payload, "grade": 4, "grid_code": grid.code, "lon": grid.centroid[0],
             "lat": grid.centroid[1], "due_at": (now - timedelta(minutes=1)).isoformat(), "reporter_name": payload[:60]}
            for i, payload in enumerate(XSS)]
    Producer(r, settings, source="t").cases(recs)
    srv = LiveServer(settings, engine, r, city, role="dispatcher")  # sees everything, personal data too
    srv.start()
    try:
        w = Worker(city, settings, engine, r, name="xss")
        while w.run_once(100):
            pass
        with engine.connect() as conn:
            first = conn.exec_driver_sql("SELECT id FROM cases WHERE external_id = 'xss0'").scalar()
        size(browser, 1920, 1080)
        inert = "return [window.__xss === undefined, document.querySelectorAll('img[src=\"x\"], svg[onload]').length]"
        for path, expect in ((f"/area/{grid.code}", "[点我](javascript:"), (f"/case/{first}", XSS[0]),
                             (f"/area/{grid.code[:9]}", XSS[1])):
            srv.open(browser, path)
            wait(lambda expect=expect: expect in (js(browser, "return document.body.innerText") or ""), 30)
            assert js(browser, inert) == [True, 0], path
            links = js(browser, "return [...document.querySelectorAll('a')].map(a => a.getAttribute('href') || '')")
            assert not any(h.strip().lower().startswith("javascript:") for h in links), path
        shot(browser, "xss-case.png")
        assert not [e for e in errors(browser) if "__xss" in e]
        # 退出 in the corner ends the session: the next page asks for a login again
        from selenium.webdriver.common.by import By

        browser.find_element(By.CSS_SELECTOR, ".gw-logout").click()
        wait(lambda: "/login" in browser.current_url, 15)
        browser.get(srv.url + "/compare")
        assert wait(lambda: "/login?next=/compare" in browser.current_url, 15)
    finally:
        srv.close()


HOSTILE_VALUES = ["x" * 100_000, 12345, -1.5, True, ["a", {"b": 1}], {"__proto__": {"x": 1}}, "\u0000\ud7ff",
                  {"startRow": "0; DROP", "endRow": 10 ** 12, "sortModel": "desc"}, "../../etc/passwd"]


@pytest.mark.parametrize("hostile", HOSTILE_VALUES, ids=lambda v: type(v).__name__)
def test_every_dash_callback_answers_hostile_values_without_a_500(app, planted, settings, hostile):
    """Each input and state of every callback in turn set to a value of the wrong type, huge or odd: the answer is
    a refusal or nothing new (204/400/403), never a server error."""
    admin = accounts.client(settings, "admin", app=app)
    tried = 0
    for body in {b["output"]: b for b in _callback_bodies(app, planted)}.values():
        for part in ("inputs", "state"):
            for i in range(len(body[part])):
                bad = orjson.loads(orjson.dumps(body))
                bad[part][i]["value"] = hostile
                resp = admin.post("/_dash-update-component", data=orjson.dumps(bad), content_type="application/json")
                assert resp.status_code < 500, (body["output"], part, bad[part][i]["id"], resp.status_code)
                tried += 1
    assert tried >= 40


@pytest.mark.parametrize("value", ["' OR '1'='1", "1; DROP TABLE cases; --", "%", "_", "\\", "<script>",
                                   "440311' --", "${jndi:ldap://x}", "\u0000", "a" * 5000])
def test_injection_like_strings_in_every_filter_are_harmless(app, planted, settings, value):
    from dashboard.api import FILTER_PARAMS

    leader = accounts.client(settings, "leader", planted["a"].code, app=app)
    before = orjson.loads(leader.get("/api/v1/cases?limit=500").data)["items"]
    for name in FILTER_PARAMS:
        for url in (f"/api/v1/cases?{name}=", f"/api/v1/cases.csv?{name}=", f"/area/{planted['a'].code}?{name}="):
            from urllib.parse import quote

            resp = leader.get(url + quote(value, safe=""))
            body = resp.get_data(as_text=True)
            digits = name == "q" and any(c.isdigit() for c in value) and re.search(r"\d{4,}", value)
            assert resp.status_code in ((200, 400, 403) if digits else (200, 400)), (name, value[:20], resp.status_code)
            assert planted["outside"] not in body
            if resp.status_code == 200 and url.startswith("/api/v1/cases?"):
                items = orjson.loads(body)["items"]
                assert len(items) <= len(before)  # never more than the street holds: no condition was broken
    assert orjson.loads(leader.get("/api/v1/cases?limit=500").data)["items"] == before  # nothing was changed
