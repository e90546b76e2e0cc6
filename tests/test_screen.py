"""The big screen (/screen): its data against independent recounts, its query parameters, and — in a real headless
Chromium — panels with data, no console errors, countdowns that tick offline, a pushed case reaching the wall, and
the stale banner when the backend goes away and comes back.

Screenshots are saved under var/test-artifacts/ (look at them).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import orjson
import pandas as pd
import pytest
from sqlalchemy import text

from ingest.worker import Worker
from store.streams import Producer
from tests import accounts
from tests.browser import LiveServer, errors, js, shot, size, wait

# --------------------------------------------------------------------------- data behind the screen


@pytest.fixture
def screen_settings(settings, tmp_path):
    rules = tmp_path / "rankings.yaml"
    rules.write_text("min_volume: 1\n", encoding="utf-8")  # a handful of test cases is enough to be ranked
    return settings.model_copy(update={"rankings_file": rules})


def _cases(city, now, n=24):
    grids = city.geography.areas("grid")
    cats = [c for c in city.categories.values() if not c.sensor_only]
    out = []
    for i in range(n):
        g = grids[(i * 7) % len(grids)]
        rep = now - timedelta(minutes=90 - 3 * i)
        ext = f"s{i}"
        out.append({"source": ["hotline12345", "patrol", "citizen"][i % 3], "external_id": ext, "event": "report",
                    "occurred_at": rep.isoformat(), "category": cats[i % len(cats)].code, "title": f"屏幕测试 {i}",
                    "grid_code": g.code, "lon": g.centroid[0], "lat": g.centroid[1], "grade": 1 + i % 4,
                    "due_at": (now + timedelta(minutes=-30 + 17 * i)).isoformat()})
        src = out[-1]["source"]
        if i % 2 == 0:
            out.append({"source": src, "external_id": ext, "event": "register",
                        "occurred_at": (rep + timedelta(seconds=30)).isoformat()})
            out.append({"source": src, "external_id": ext, "event": "dispatch",
                        "occurred_at": (rep + timedelta(minutes=1)).isoformat(), "departments": ["cg" if i % 4 else "sw"]})
        if i % 4 == 0:
            out.append({"source": src, "external_id": ext, "event": "accept",
                        "occurred_at": (rep + timedelta(minutes=2)).isoformat()})
            out.append({"source": src, "external_id": ext, "event": "resolve",
                        "occurred_at": (rep + timedelta(minutes=20)).isoformat()})
    return out


@pytest.fixture
def loaded(screen_settings, r, engine, city):
    now = datetime.now(UTC).replace(microsecond=0)
    recs = _cases(city, now)
    Producer(r, screen_settings, source="t").cases(recs)
    g = city.geography.areas("grid")[3]
    readings = [{"device_id": f"smoke-{i}", "type": "smoke", "value": 9.0, "ts": (now - timedelta(minutes=i)).isoformat(),
                 "lon": g.centroid[0], "lat": g.centroid[1]} for i in range(3)]  # three smoke alarms open now
    Producer(r, screen_settings, source="iot").sensors(readings)
    w = Worker(city, screen_settings, engine, r, name="scr")
    while w.run_once(50):
        pass
    assert w.totals.dead == 0
    return now, recs, readings


def test_the_snapshot_matches_an_independent_recount(loaded, screen_settings, r, engine, city):
    from config.risk import get_risk_model
    from dashboard import screen

    now, recs, readings = loaded
    fast = screen.fast(r, screen_settings, engine, city, get_risk_model(screen_settings.risk_file))
    with engine.connect() as conn:
        df = pd.read_sql(text("SELECT id, title, status, due_at FROM cases"), conn)
    df["due_at"] = pd.to_datetime(df["due_at"], utc=True, format="ISO8601")
    # ticker: the newest stored cases, newest first
    assert [c["id"] for c in fast["ticker"]] == sorted(df["id"], reverse=True)[: screen.TICKER_SIZE]
    # SLA board: the most recently overdue (oldest first), then the next due, all open
    from core.lifecycle import OPEN_STATUSES

    open_ = df[df["status"].isin([st.value for st in OPEN_STATUSES])]
    ts = pd.Timestamp(datetime.now(UTC))
    behind = open_[open_["due_at"] < ts].sort_values("due_at").tail(screen.SLA_BEHIND)
    ahead = open_[open_["due_at"] >= ts].sort_values("due_at").head(screen.SLA_AHEAD)
    assert [c["id"] for c in fast["sla"]] == [*behind["id"], *ahead["id"]]
    # risk levels: the same figures /api/v1/risk gives for every grid

    client = accounts.client(screen_settings)
    api = orjson.loads(client.get("/api/v1/risk?level=grid").data)["items"]
    assert fast["levels"] == {a["code"]: a["risk_level"] for a in api}
    assert fast["open"] == len(open_)
    # no personal data on the wall
    assert "reporter" not in orjson.dumps(fast).decode()

    slow = screen.slow(engine, city, screen_settings)
    reported = sum(1 for x in recs if x["event"] == "report" and datetime.fromisoformat(x["occurred_at"]) >= _midnight(now))
    alarm_cases = sum(1 for x in readings if datetime.fromisoformat(x["ts"]) >= _midnight(now))  # each alarm opens a case
    assert slow["kpis"]["cases_total"] == reported + alarm_cases
    assert sum(slow["hourly_today"]) == slow["kpis"]["cases_total"]
    assert {r["dept"] for r in slow["ranking"]} == {"cg", "sw"}
    # alarms: active now on the wall, at their devices, and counted as opened today
    assert fast["alarms_active"] == 3 and {a["device"] for a in fast["alarms"]} == {"smoke-0", "smoke-1", "smoke-2"}
    assert all(a["lon"] is not None for a in fast["alarms"])
    opened_today = sum(1 for x in readings if datetime.fromisoformat(x["ts"]) >= _midnight(now))
    assert slow["alarms_today"] == opened_today and slow["alarms_yesterday"] == 0


def _midnight(now):
    from core.records import CITY_TZ

    return now.astimezone(CITY_TZ).replace(hour=0, minute=0, second=0, microsecond=0)


@pytest.mark.parametrize(("query", "problems"), [
    ({"layout": "wall", "rotate": "60", "area": "440311001"}, []),
    ({"layout": "sideways"}, ["layout"]),
    ({"rotate": "-5"}, ["rotate"]), ({"rotate": "5"}, ["rotate"]), ({"rotate": "1e9"}, ["rotate"]),
    ({"area": "999999999"}, ["area"]), ({"area": "440311001001001"}, ["area"]),  # a grid is not a view
    ({"area": "<script>alert(1)</script>" * 20}, ["area"]), ({"zoom": "3"}, ["zoom"]), ({"lang": "fr"}, ["lang"]),
])
def test_bad_parameters_fall_back_to_the_default_view(city, query, problems):
    from layouts.screen import parse_params

    opts, found = parse_params(query, city.geography)
    assert [name for name, _ in found] == problems
    for _name, value in found:
        assert len(value) <= 40  # a hostile value is cut, never repeated whole
    if not problems:
        assert opts == {"layout": "wall", "rotate": 60, "area": "440311001", "lang": "zh"}
    else:
        assert opts["layout"] in ("screen", "wall") and opts["rotate"] >= 0


# --------------------------------------------------------------------------- in a real browser


@pytest.fixture
def live_server(loaded, screen_settings, engine, r, city):
    srv = LiveServer(screen_settings, engine, r, city, role="screen")
    srv.start()
    yield srv
    srv.close()


PANELS_FILLED = """
const q = s => document.querySelectorAll(s).length;
return {ticker: q('#scr-ticker .scr-tk'), kpis: q('#scr-kpis .scr-kpi'), sla: q('#scr-sla tbody tr'),
        depts: q('#scr-depts tbody tr'), cats: q('#scr-cats .scr-bar'), sources: q('#scr-sources .scr-bar'),
        trend: q('#scr-trend img'), paths: q('#scr-map path'), feeds: q('#scr-feeds .scr-feed'),
        clock: (document.getElementById('scr-clock') || {}).textContent,
        scroll: document.documentElement.scrollWidth > innerWidth || document.documentElement.scrollHeight > innerHeight};
"""


@pytest.mark.parametrize(("w", "h"), [(1920, 1080), (3840, 2160)])
def test_the_screen_shows_every_panel_with_data_and_no_console_errors(live_server, browser, city, w, h):
    size(browser, w, h)
    live_server.open(browser, "/screen")

    def filled():
        s = js(browser, PANELS_FILLED)
        ok = all(s[k] > 0 for k in ("ticker", "kpis", "sla", "depts", "cats", "sources", "trend", "feeds"))
        return s if ok and s["paths"] >= len(city.geography.areas("grid")) else None

    state = wait(filled)
    assert state, js(browser, PANELS_FILLED)
    assert state["kpis"] == 6 and state["ticker"] == 12 and not state["scroll"]
    assert state["clock"] != "--:--:--"
    # the canvas fills the screen: uniform scale, no letterbox at 16:9
    scale = float(js(browser, "return document.getElementById('scr-canvas').getAttribute('data-scale')"))
    assert scale == pytest.approx(w / 1920, rel=1e-3)
    time.sleep(2.5)  # a few refreshes
    shot(browser, f"screen-{w}x{h}.png")
    assert errors(browser) == []


def test_the_wall_draws_risk_levels_in_the_one_table_of_colours(live_server, browser):
    from core.risk import RISK_LEVELS

    def rgb(hex_colour: str) -> str:
        return "rgb({}, {}, {})".format(*(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)))

    size(browser, 1920, 1080)
    live_server.open(browser, "/screen")
    assert wait(lambda: js(browser, "return document.querySelectorAll('#scr-map path').length"))
    swatches = js(browser, "return [1,2,3,4].map(l => getComputedStyle(document.querySelector('.scr-l' + l)).backgroundColor)")
    assert swatches == [rgb(RISK_LEVELS[lv].color) for lv in (1, 2, 3, 4)]
    read = ("return Array.from(document.querySelectorAll('#scr-map path[fill]:not(.scr-alarm):not(.scr-pulse)'))"
            ".filter(p => p.getAttribute('stroke') !== '#cfe8ff')"  # the streets' outlines, unfilled
            ".map(p => p.getAttribute('fill').toUpperCase()).filter(f => f !== 'NONE')")
    fills = set(js(browser, read))  # from the first paint on: never a colour of another table
    assert fills and fills <= {r.color.upper() for r in RISK_LEVELS.values()}, fills


def test_countdowns_tick_in_the_browser_without_the_network(live_server, browser):
    size(browser, 1920, 1080)
    live_server.open(browser, "/screen")
    first = wait(lambda: js(browser, "const c = document.querySelector('#scr-sla .scr-cd'); return c && c.textContent"))
    assert first
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.emulateNetworkConditions",
                            {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0})
    read = "return Array.from(document.querySelectorAll('#scr-sla .scr-cd')).map(e => e.textContent).join('|')"
    before = js(browser, read)
    assert wait(lambda: js(browser, read) != before, timeout=3.0)
    assert js(browser, "return document.getElementById('scr-clock').textContent") != "--:--:--"


def test_a_red_case_pushed_through_the_api_reaches_the_ticker_and_the_map(live_server, browser, city, push_headers):
    import requests

    size(browser, 1920, 1080)
    live_server.open(browser, "/screen")
    assert wait(lambda: js(browser, "return document.querySelectorAll('#scr-ticker .scr-tk').length"))
    grid = city.geography.areas("grid")[40]
    title = "燃气泄漏 推送测试"
    rec = {"source": "citizen", "external_id": "push-red-1", "event": "report",
           "occurred_at": datetime.now(UTC).isoformat(), "category": next(
               c.code for c in city.categories.values() if not c.sensor_only), "title": title, "grade": 4,
           "grid_code": grid.code, "lon": grid.centroid[0], "lat": grid.centroid[1]}
    resp = requests.post(live_server.url + "/api/v1/ingest/cases", data=orjson.dumps([rec]),
                         headers={"Content-Type": "application/json", **push_headers("citizen")}, timeout=10)
    assert resp.status_code in (200, 202), resp.text
    in_ticker = ("return Array.from(document.querySelectorAll('#scr-ticker .scr-tk'))"
                 ".some(e => e.textContent.includes('" + title + "') && e.querySelector('.scr-g4'))")
    assert wait(lambda: js(browser, in_ticker), timeout=10)
    assert wait(lambda: js(browser, "return document.querySelectorAll('#scr-map path.scr-pulse').length"), timeout=5)
    shot(browser, "screen-pushed-red-case.png")
    assert errors(browser) == []


def test_stale_banner_when_the_backend_stops_and_it_clears_when_it_returns(live_server, browser):
    size(browser, 1920, 1080)
    live_server.open(browser, "/screen")
    assert wait(lambda: js(browser, "return document.querySelectorAll('#scr-ticker .scr-tk').length"))
    js(browser, "window.__sameDocument = true")
    visible = "const s = document.getElementById('scr-stale'); return s.style.display !== 'none' && s.textContent"
    assert not js(browser, visible)
    live_server.stop()
    banner = wait(lambda: js(browser, visible), timeout=20)
    assert banner and "数据更新中断" in banner
    assert js(browser, "return document.querySelectorAll('#scr-ticker .scr-tk').length") > 0  # last data kept
    shot(browser, "screen-stale.png")
    live_server.start()
    assert wait(lambda: not js(browser, visible), timeout=20)
    assert js(browser, "return window.__sameDocument === true")  # recovered by itself, no reload


def test_the_header_shows_the_newest_data_and_a_banner_when_applying_stops(live_server, browser, city, r,
                                                                           screen_settings, push_headers):
    import requests

    from core.livestate import LiveKeys
    from core.records import CITY_TZ

    def data_time() -> str:  # the worker's own record of its newest applied data, as a wall clock in the city
        at = datetime.fromisoformat(r.get(LiveKeys(screen_settings.stream_prefix).last_event_at).decode())
        return at.astimezone(CITY_TZ).strftime("%H:%M:%S")

    def push(ext: str):
        rec = {"source": "citizen", "external_id": ext, "event": "report", "occurred_at": datetime.now(UTC).isoformat(),
               "category": next(c.code for c in city.categories.values() if not c.sensor_only), "title": ext,
               "grid_code": city.geography.areas("grid")[5].code}
        resp = requests.post(live_server.url + "/api/v1/ingest/cases", data=orjson.dumps([rec]),
                             headers={"Content-Type": "application/json", **push_headers("citizen")}, timeout=10)
        assert resp.status_code in (200, 202), resp.text

    size(browser, 1920, 1080)
    live_server.open(browser, "/screen")
    header = "const e = document.getElementById('scr-updated'); return e && e.textContent"
    visible = "const s = document.getElementById('scr-stale'); return !!s && s.style.display !== 'none' && s.textContent"
    push("header-1")
    assert wait(lambda: r.get(LiveKeys(screen_settings.stream_prefix).last_event_at) and
                js(browser, header) == f"数据更新于 {data_time()}", timeout=10), js(browser, header)
    time.sleep(1.5)  # the server's clock moves on, the data time does not
    assert js(browser, header) == f"数据更新于 {data_time()}" and not js(browser, visible)

    live_server.pause_worker()  # the server still answers; nothing is applied any more
    before = data_time()
    push("header-2")  # accepted, waiting in the stream
    banner = wait(lambda: js(browser, visible), timeout=10)
    assert banner and banner.startswith("数据停止更新") and f"最新数据 {before[:5]}" in banner, banner
    assert "数据更新中断" not in banner
    assert js(browser, header) == f"数据更新于 {before}"  # still the newest applied data, not now
    shot(browser, "screen-applying-stopped.png")

    live_server.start_worker()  # the worker is back: it applies what waited, the banner goes by itself
    assert wait(lambda: not js(browser, visible), timeout=15)
    assert wait(lambda: data_time() != before and js(browser, header) == f"数据更新于 {data_time()}", timeout=10)
    assert errors(browser) == []


def test_the_wall_says_a_drill_is_running_and_stops_saying_it_after(live_server, browser, r, screen_settings):
    from ingest.feeds.replay import DrillMark

    size(browser, 1920, 1080)
    live_server.open(browser, "/screen")
    badge = "const e = document.getElementById('scr-drill'); return !!e && e.style.display !== 'none' && e.textContent"
    assert wait(lambda: js(browser, "return document.querySelectorAll('#scr-ticker .scr-tk').length"))
    assert not js(browser, badge)
    with DrillMark(Producer(r, screen_settings, source="drill"), "run-screen", "drill"):
        shown = wait(lambda: js(browser, badge), timeout=10)
        assert shown and shown.startswith("演练进行中 · 开始于 ")
        time.sleep(1.5)  # a tick or two: every panel drawn for the picture
        shot(browser, "screen-drill.png")
    assert wait(lambda: not js(browser, badge), timeout=10)
    assert errors(browser) == []


def test_bad_query_parameters_show_the_default_view_and_a_notice(live_server, browser):
    size(browser, 1920, 1080)
    live_server.open(browser, "/screen?layout=sideways&rotate=abc&area=123&zoom=9")
    notice = wait(lambda: js(browser, "const n = document.getElementById('scr-notice'); return n && n.textContent"))
    assert "layout=sideways" in notice and "rotate=abc" in notice and "123" in notice and "zoom=9" in notice
    assert wait(lambda: js(browser, "return document.querySelectorAll('#scr-ticker .scr-tk').length"))
    assert errors(browser) == []


def test_a_configured_tile_layer_is_drawn_beneath_and_none_by_default(screen_settings, city):
    import dash_leaflet as dl

    from layouts.screen import layout

    def tiles(settings):
        found = []

        def walk(node):
            if isinstance(node, dl.TileLayer):
                found.append(node.url)
            for child in getattr(node, "children", None) or []:
                if not isinstance(child, str):
                    walk(child)

        walk(layout(settings, city, {}))
        return found

    assert tiles(screen_settings) == []  # a closed network: no tile server at all
    url = "http://tiles.intranet/{z}/{x}/{y}.png"
    assert tiles(screen_settings.model_copy(update={"map_tile_url": url})) == [url]


def test_the_poll_sends_nothing_new_when_nothing_changed_and_keeps_quiet_when_redis_is_away(loaded, screen_settings):
    from dash import no_update
    from dash.exceptions import PreventUpdate

    from app import create_app
    from layouts.screen import snapshot

    app = create_app(screen_settings)
    with accounts.request(app):
        fast, slow, slow_version, digest, beat = snapshot(None, None)
        assert fast["ticker"] and slow["kpis"] and beat == fast["as_of"]
        again = snapshot(digest, slow_version)
        assert again[0] is no_update and again[1] is no_update and again[3] is no_update  # only the heartbeat
        assert again[4] >= beat
    away = screen_settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    app = create_app(away)
    with accounts.request(app), pytest.raises(PreventUpdate):
        snapshot(None, None)  # the wall keeps its last data; the missing heartbeat shows the stale banner


def test_rotation_cycles_the_map_through_the_streets(live_server, browser, city):
    size(browser, 1920, 1080)
    live_server.open(browser, "/screen?rotate=10")
    streets = {a.name for a in city.geography.areas("street")}
    label = "const e = document.getElementById('scr-area-label'); return e ? e.textContent : ''"
    seen = set()
    end = time.monotonic() + 25
    while time.monotonic() < end and len(seen) < 2:
        text_ = js(browser, label)
        if text_:
            seen.add(text_)
        time.sleep(0.5)
    assert len(seen) >= 2 and seen <= streets  # two streets in turn, each named on the map
    assert errors(browser) == []


# --------------------------------------------------------------------------- 督办 on the wall

SUPERVISED = """
const marks = s => Array.from(document.querySelectorAll(s)).map(e => e.textContent);
const tips = s => Array.from(document.querySelectorAll(s)).map(e => e.title);
return {ticker: marks('#scr-ticker .scr-tk .scr-sup-mark'), sla: marks('#scr-sla tbody tr .scr-sup-mark'),
        sla_tips: tips('#scr-sla tbody tr .scr-sup-mark'),
        ticker_rows: document.querySelectorAll('#scr-ticker .scr-tk').length};
"""


def test_a_supervised_case_carries_the_mark_and_its_shortened_instruction(live_server, browser, loaded, screen_settings,
                                                                          r, city):
    from dashboard import screen as model

    now, recs, _ = loaded
    note = "请街道办于今日内完成整改并回复 联系13812345678 逾期问责处理"
    masked_short = "请街道办于今日内完成整改并回复 联系138****5678"[:model.SUP_NOTE_CHARS - 1] + "…"
    sup = [{"source": x["source"], "external_id": x["external_id"], "event": "supervise", "note": note,
            "occurred_at": (now - timedelta(seconds=10)).isoformat(), "actor": "leader-1 (leader)"}
           for x in recs if x["event"] == "report" and x["external_id"] in ("s1", "s23")]
    Producer(r, screen_settings, source="t").cases(sup)
    size(browser, 1920, 1080)
    live_server.open(browser, "/screen")
    state = wait(lambda: (s := js(browser, SUPERVISED))["ticker"] and s["sla"] and s)
    assert state, js(browser, SUPERVISED)
    assert state["ticker"] == ["督" + masked_short]  # s23 is among the newest; s1 is past its deadline
    assert state["sla"] == ["督"] and state["sla_tips"] == [masked_short]  # the board keeps the title in view
    assert "13812345678" not in browser.page_source
    shot(browser, "screen-supervised.png")
    assert errors(browser) == []


def test_the_sla_board_says_which_cases_no_department_holds_yet(live_server, browser, loaded, screen_settings, engine):
    from sqlalchemy import text

    size(browser, 1920, 1080)
    live_server.open(browser, "/screen")
    read = ("return Array.from(document.querySelectorAll('#scr-sla tbody tr'))"
            ".map(r => [r.querySelector('td').textContent, r.querySelectorAll('td')[1].textContent])")
    rows = wait(lambda: js(browser, read))
    assert rows and all(dept != "—" for _, dept in rows)
    with engine.connect() as conn:  # the open cases without a department, by title, straight from SQL
        bare = {t for t, d in conn.execute(text("SELECT title, departments FROM cases WHERE status IN "
                                                 "('reported', 'registered')")).all()}
    shown_bare = [title for title, dept in rows if dept == "待派遣"]
    assert shown_bare and all(any(title.endswith(b) or b in title for b in bare) for title in shown_bare)
    assert errors(browser) == []
