"""The case page (/case/<id>): its view model against expectations worked out here from the published records,
bad ids, no personal data, and — in a real headless Chromium — the timeline, the map pin, English, no console
errors. The screenshot is saved under var/test-artifacts/case-page.png (look at it).
"""

from __future__ import annotations

import json

import pandas as pd
import plotly.utils
import pytest
from selenium.common.exceptions import WebDriverException

from ingest.worker import Worker
from store.streams import Producer, read_dead
from tests import accounts
from tests.browser import LiveServer, errors, js, shot, size, wait
from tests.sample_cases import NOW, SECRET_NAME, SECRET_PHONE, H, M, case_grid, full_case, late_case, unlocated_case


@pytest.fixture
def loaded(settings, r, engine, city):
    records = full_case(city) + late_case(city) + unlocated_case(city)
    Producer(r, settings, source="t").cases(records)
    w = Worker(city, settings, engine, r, name="case")
    while w.run_once(50):
        pass
    assert read_dead(r, settings) == []
    from sqlalchemy import text

    with engine.connect() as conn:
        ids = dict(conn.execute(text("SELECT external_id, id FROM cases")).all())
    return records, ids


def _frame(records, ext) -> pd.DataFrame:
    df = pd.DataFrame([x for x in records if x["external_id"] == ext])
    df["t"] = pd.to_datetime(df["occurred_at"], utc=True)
    return df


def _first(df, action) -> pd.Timestamp:
    return df.loc[df["event"] == action, "t"].min()


def _secs(a, b) -> float:
    return (pd.Timestamp(b) - pd.Timestamp(a)).total_seconds()


# --------------------------------------------------------------------------- the view model


def test_a_finished_case_has_every_stage_against_its_limit(loaded, settings, engine):
    from dashboard.casepage import case_view

    records, ids = loaded
    view = case_view(engine, settings, ids["full-1"], now=NOW)
    df = _frame(records, "full-1")
    report = df.iloc[0]
    held = _secs(_first(df, "suspend"), _first(df, "resume"))
    accept_due = pd.Timestamp(report["accept_due_at"]) + pd.Timedelta(seconds=held)  # moved by the held time
    new_due = pd.Timestamp(df.loc[df["event"] == "extend", "due_at"].iloc[0])

    # every event, in order, with its labels' inputs
    assert [e["action"] for e in view["events"]] == list(df["event"])
    assert [e["occurred_at"] for e in view["events"]] == [t.to_pydatetime() for t in df["t"]]

    # stages: first reach of each milestone, durations from the records' times
    stages = [(s["from"], s["to"]) for s in view["stages"]]
    assert stages == [("reported", "registered"), ("registered", "dispatched"), ("dispatched", "accepted"),
                      ("accepted", "resolved"), ("resolved", "closed"), ("closed", "evaluated")]
    order = ["report", "register", "dispatch", "accept", "resolve", "close", "evaluate"]
    for s, (a, b) in zip(view["stages"], zip(order, order[1:], strict=False), strict=True):
        assert s["duration_s"] == _secs(_first(df, a), _first(df, b)), (a, b)
        assert not s["running"]
    by_to = {s["to"]: s for s in view["stages"]}
    assert by_to["accepted"]["deadline"] == accept_due.to_pydatetime() and by_to["accepted"]["met"] is True
    assert by_to["resolved"]["deadline"] == new_due.to_pydatetime() and by_to["resolved"]["met"] is True
    assert by_to["resolved"]["margin_s"] == _secs(_first(df, "resolve"), new_due)
    assert by_to["resolved"]["suspended_s"] == held  # the suspension lies inside 签收 → 办结
    assert by_to["registered"]["deadline"] is None and by_to["registered"]["met"] is None

    # departments from the records: cg the lead, ga and zj summoned
    deps = {(d["department"], d["role"]): d for d in view["departments"]}
    assert set(deps) == {("cg", "lead"), ("ga", "whistle"), ("zj", "whistle")}
    cg = deps[("cg", "lead")]
    assert cg["accepted_at"] == _first(df, "accept").to_pydatetime()
    assert cg["accepted_on_time"] is (_first(df, "accept") <= pd.Timestamp(report["accept_due_at"]))
    assert cg["resolved_on_time"] is (_first(df, "resolve") <= new_due) and cg["rating"] == 4
    limit = settings.whistle_report_minutes * 60
    whistled = _first(df, "whistle")
    checkins = df[df["event"] == "checkin"].explode("departments").set_index("departments")["t"]
    for dept in ("ga", "zj"):
        on_time = _secs(whistled, checkins[dept]) <= limit
        assert deps[(dept, "whistle")]["checkin_status"] == ("on_time" if on_time else "late")
        assert deps[(dept, "whistle")]["checked_in_at"] == checkins[dept].to_pydatetime()
    assert {w["department"]: w["status"] for w in view["whistles"]} == {"ga": "on_time", "zj": "late"}

    # extension: old deadline = the source's, moved by the suspension; who and why
    (ext,) = view["extensions"]
    assert ext["old_due"] == (pd.Timestamp(report["due_at"]) + pd.Timedelta(seconds=held)).to_pydatetime()
    assert ext["new_due"] == new_due.to_pydatetime() and (ext["actor"], ext["note"]) == ("王主任", "需协调供电局")
    (sus,) = view["suspensions"]
    assert sus["held_s"] == held and sus["note"] == "等待产权人确认"
    assert view["evaluation"]["rating"] == 4 and view["evaluation"]["satisfied"] is True
    assert view["evaluation"]["note"] == "处理及时"
    assert not view["open"] and not view["overdue"] and not view["resolved_late"]


def test_an_open_overdue_case_has_its_stage_running_past_the_limit(loaded, settings, engine):
    from dashboard.casepage import case_view

    records, ids = loaded
    view = case_view(engine, settings, ids["late-1"], now=NOW)
    df = _frame(records, "late-1")
    accept_due = pd.Timestamp(df.iloc[0]["accept_due_at"])
    *done, running = view["stages"]
    assert [(s["from"], s["to"]) for s in done] == [("reported", "registered"), ("registered", "dispatched")]
    assert (running["from"], running["to"], running["running"]) == ("dispatched", "accepted", True)
    assert running["duration_s"] == _secs(_first(df, "dispatch"), NOW)
    assert running["deadline"] == accept_due.to_pydatetime()
    assert running["met"] is False and running["state"] == "overdue"
    assert running["margin_s"] == _secs(NOW, accept_due) < 0
    assert view["open"] and view["overdue"]
    assert [(d["department"], d["role"], d["accepted_at"]) for d in view["departments"]] == [("sw", "lead", None)]
    assert view["extensions"] == [] and view["evaluation"] is None


# --------------------------------------------------------------------------- the rendered page


def _rendered(settings, city, case_id, query=None, role: str = "leader", area: str | None = None) -> str:
    from app import create_app
    from layouts import case

    app = create_app(settings)
    with accounts.request(app, role, area):
        page = case.layout(settings, city, case_id, query or {})
    return json.dumps(page, cls=plotly.utils.PlotlyJSONEncoder, ensure_ascii=False)


@pytest.mark.parametrize(("raw", "expected"), [
    ("abc", "“abc” 不是案件编号"),
    ("-1", "“-1” 不是案件编号"),
    ("0", "“0” 不是案件编号"),
    (str(10**30), "不是案件编号"),
    ("999999", "没有编号为 999999 的案件"),
    ("<script>alert(1)</script>", "“<script>alert(1)</script>” 不是案件编号"),
    ("１２", "“１２” 不是案件编号"),  # full-width digits are not a case number
])
def test_bad_ids_show_a_message_and_a_way_back(loaded, settings, city, raw, expected):
    text = _rendered(settings, city, raw)
    assert expected in text and "case-message" in text and "返回全区概览" in text
    assert "Traceback" not in text
    en = _rendered(settings, city, raw, {"lang": "en"})
    assert ("is not a case number" in en) or ("There is no case numbered" in en)


def test_the_page_and_the_api_answer_bad_ids_without_a_traceback(loaded, settings):

    client = accounts.client(settings)
    for raw in ("abc", "-1", "0", str(10**30), "999999", "%3Cscript%3E"):
        page = client.get(f"/case/{raw}")
        assert page.status_code == 200 and b"Traceback" not in page.data
        api = client.get(f"/api/v1/cases/{raw}")
        assert api.status_code == (404 if raw == "999999" else 400), raw
        assert api.json["parameter"] == "id"


def test_personal_data_is_masked_for_a_leader_and_whole_for_a_dispatcher(loaded, settings, city, engine):
    from dashboard.casepage import case_view

    _, ids = loaded
    for ext in ("full-1", "nopos-1"):
        text = _rendered(settings, city, str(ids[ext]))  # a leader of the district
        assert SECRET_NAME not in text and SECRET_PHONE not in text
        assert "李**" in text and "138******00" in text
        whole = _rendered(settings, city, str(ids[ext]), role="dispatcher")
        assert SECRET_NAME in whole and SECRET_PHONE in whole
        assert SECRET_NAME not in json.dumps(case_view(engine, settings, ids[ext]), default=str)  # masked by default
    assert "未定位：此案件没有坐标" in _rendered(settings, city, str(ids["nopos-1"]))
    # a case outside a street leader's street is answered as if it did not exist
    other = next(s.code for s in city.geography.areas("street") if not case_grid(city).code.startswith(s.code))
    outside = _rendered(settings, city, str(ids["full-1"]), area=other)
    assert "李**" not in outside and "人行道井盖缺失" not in outside and f"没有编号为 {ids['full-1']} 的案件" in outside


def test_the_page_shows_every_section_in_both_languages(loaded, settings, city):
    _, ids = loaded
    zh = _rendered(settings, city, str(ids["full-1"]))
    for word in ("人行道井盖缺失", "办理环节时效", "全流程时间线", "区城市管理和综合执法局", "按时报到", "迟到",
                 "需协调供电局", "等待产权人确认", "处理及时", f"/area/{case_grid(city).code}", "?lang=en"):
        assert word in zh, word
    en = _rendered(settings, city, str(ids["full-1"]), {"lang": "en"})
    for word in ("Lifecycle timeline", "Stages against their limits", "Whistle reports", "Extensions", "中文"):
        assert word in en, word
    late = _rendered(settings, city, str(ids["late-1"]))
    assert "超期" in late and "已超" in late


# --------------------------------------------------------------------------- in a real browser


@pytest.fixture
def live_server(loaded, settings, engine, r, city):
    srv = LiveServer(settings, engine, r, city, role="leader")  # a leader: the reporter masked
    srv.start()
    yield srv
    srv.close()


STATE = """
return {rows: Array.from(document.querySelectorAll('#case-timeline .case-ev-action')).map(e => e.textContent),
        stages: document.querySelectorAll('#case-stages tbody tr').length,
        pin: document.querySelectorAll('#case-map path.case-pin').length,
        grid: document.querySelectorAll('#case-map path').length,
        title: (document.querySelector('.case-title') || {}).textContent};
"""


def test_opening_a_case_shows_its_timeline_map_pin_and_english(live_server, browser, loaded, city):
    from core.lifecycle import ACTION_LABELS, Action

    records, ids = loaded
    df = _frame(records, "full-1")
    size(browser, 1920, 1080)
    live_server.open(browser, f"/case/{ids['full-1']}")
    state = wait(lambda: (s := js(browser, STATE)) and s["rows"] and s["pin"] and s["grid"] >= 2 and s)
    assert state, js(browser, STATE)
    assert state["rows"] == [ACTION_LABELS[Action(a)][0] for a in df["event"]]
    assert state["pin"] == 1 and state["grid"] >= 2 and state["stages"] == 6 + 2  # six stages, two whistle reports
    assert state["title"] == "人行道井盖缺失"
    source = browser.page_source
    assert SECRET_NAME not in source and SECRET_PHONE not in source
    shot(browser, "case-page.png")
    size(browser, 1920, js(browser, "return document.documentElement.scrollHeight"))
    shot(browser, "case-page-full.png")  # the whole page, below the fold too
    size(browser, 1920, 1080)
    assert errors(browser) == []

    browser.find_element("id", "case-lang").click()

    def english():
        try:
            s = js(browser, STATE)
        except WebDriverException:  # the page is being replaced
            return None
        return s if s["rows"] and s["rows"][0] == "Report" and s["grid"] >= 2 else None

    en = wait(english)
    assert en and en["rows"] == [ACTION_LABELS[Action(a)][1] for a in df["event"]]
    assert "lang=en" in browser.current_url
    assert errors(browser) == []
    shot(browser, "case-page-en.png")


def test_an_open_overdue_case_in_the_browser_marks_its_running_stage(live_server, browser, loaded):
    _, ids = loaded
    size(browser, 1920, 1080)
    live_server.open(browser, f"/case/{ids['late-1']}")
    running = wait(lambda: js(browser, "const r = document.querySelector('#case-stages tr.case-row-running');"
                                       "return r && r.textContent"))
    assert running and "超时" in running and "已超" in running
    assert js(browser, "return document.querySelectorAll('.case-header .case-bad').length") == 1  # 超期
    shot(browser, "case-page-overdue.png")
    live_server.open(browser, f"/case/{ids['nopos-1']}")
    assert wait(lambda: js(browser, "const u = document.querySelector('.case-unlocated'); return u && u.textContent"))
    assert js(browser, "return document.querySelectorAll('#case-map').length") == 0
    assert errors(browser) == []


def test_an_unknown_case_in_the_browser_shows_the_message(live_server, browser):
    live_server.open(browser, "/case/999999")
    text = wait(lambda: js(browser, "const m = document.getElementById('case-message'); return m && m.textContent"))
    assert text and "没有编号为 999999 的案件" in text
    assert errors(browser) == []
    shot(browser, "case-page-unknown.png")


# --------------------------------------------------------------------------- rounds: 退回, 重新办理, 现场处置


def _events(steps, t0):
    """Timeline rows as get_case returns them, statuses from core.lifecycle (the rule under the worker)."""
    from core import lifecycle

    out, status = [], None
    for action, minutes in steps:
        after = lifecycle.apply(status, action).status
        out.append({"action": action, "occurred_at": t0 + minutes * M, "status_before": status and status.value,
                    "status_after": after.value, "departments": None, "note": None, "actor": None, "due_at": None})
        status = after
    return out, status.value


@pytest.mark.parametrize(("steps", "expected"), [
    # returned, then dispatched elsewhere: the lost time counts into 立案 → 派遣
    ([("report", 0), ("register", 1), ("dispatch", 2), ("return", 5), ("dispatch", 10), ("accept", 20)],
     [("reported", "registered", 1), ("registered", "dispatched", 9), ("dispatched", "accepted", 10)]),
    # reopened after closing: the stages of the new round run from the reopen
    ([("report", 0), ("register", 1), ("dispatch", 2), ("accept", 3), ("resolve", 30), ("close", 40),
      ("reopen", 50), ("dispatch", 55), ("accept", 57)],
     [("reported", "registered", 50), ("registered", "dispatched", 5), ("dispatched", "accepted", 2)]),
    # resolved on the spot: one stage from the report, judged against the due date
    ([("report", 0), ("onsite", 25)], [("reported", "resolved", 25)]),
])
def test_stages_follow_returns_reopens_and_on_the_spot_resolutions(steps, expected):
    from dashboard.casepage import _stages

    t0 = NOW - 10 * H
    events, status = _events(steps, t0)
    case = {"status": status, "reported_at": t0, "accept_due_at": t0 + H, "due_at": t0 + 2 * H, "suspended_at": None}
    stages = _stages(case, events, [], NOW, 0.2)
    done = [(s["from"], s["to"], s["duration_s"] / 60) for s in stages if not s["running"]]
    assert done == expected
    running = [s for s in stages if s["running"]]
    assert len(running) == 1 and running[0]["start"] == events[-1]["occurred_at"]
    if steps[-1][0] == "onsite":
        assert stages[0]["deadline"] == t0 + 2 * H and stages[0]["met"] is True


# --------------------------------------------------------------------------- 在线督办 on the case page

ACTS = """
const q = s => Array.from(document.querySelectorAll(s));
const res = document.getElementById('case-act-result'), form = document.getElementById('case-act-form');
return {buttons: q('#case-acting .case-act-buttons .act-button').map(b => b.textContent),
        status: (document.querySelector('.case-header .case-status') || {}).textContent,
        rows: q('#case-timeline .case-ev-action').map(e => e.textContent),
        depts: q('#case-timeline .case-ev-depts').map(e => e.textContent),
        result: res ? res.textContent : null, form: form ? form.style.display !== 'none' : null,
        supervised: (document.getElementById('case-supervised') || {}).textContent || null};
"""


@pytest.fixture
def reported(loaded, settings, r, engine, city):
    """One more case, only reported (no department): the dispatcher's to register and dispatch."""
    rec = {"source": "citizen", "external_id": "act-1", "event": "report", "occurred_at": (NOW - H).isoformat(),
           "category": full_case(city)[0]["category"], "title": "绿化带垃圾堆积", "grid_code": case_grid(city).code}
    Producer(r, settings, source="t").cases([rec])
    w = Worker(city, settings, engine, r, name="act")
    while w.run_once(50):
        pass
    from sqlalchemy import text

    with engine.connect() as conn:
        return conn.execute(text("SELECT id FROM cases WHERE external_id = 'act-1'")).scalar_one()


@pytest.fixture
def dispatcher_server(reported, settings, engine, r, city):
    srv = LiveServer(settings, engine, r, city, role="dispatcher")
    srv.start()
    yield srv
    srv.close()


def _label(action: str, lang: int = 0) -> str:
    from core.lifecycle import ACTION_LABELS, Action

    return ACTION_LABELS[Action(action)][lang]


def _press(browser, action: str) -> None:
    """Press the action's button and wait for its form."""
    browser.find_element("css selector", f"#case-acting .act-{action}").click()
    assert wait(lambda: js(browser, ACTS)["form"]), js(browser, ACTS)


def _submit(browser) -> dict:
    browser.find_element("id", "case-act-submit").click()
    return wait(lambda: (s := js(browser, ACTS))["result"] and s, 20)


def test_a_dispatcher_registers_dispatches_and_supervises_from_the_case_page(dispatcher_server, browser, reported,
                                                                            city):
    from core.actions import allowed_for
    from core.lifecycle import STATUS_LABELS, Status

    size(browser, 1920, 1080)
    dispatcher_server.open(browser, f"/case/{reported}")
    state = wait(lambda: (s := js(browser, ACTS))["buttons"] and s)
    assert state["buttons"] == [_label(a) for a in allowed_for("dispatcher", "reported") if a != "resume"]
    assert state["status"] == STATUS_LABELS[Status.REPORTED][0] and state["form"] is False

    _press(browser, "register")
    _submit(browser)
    done = wait(lambda: (s := js(browser, ACTS))["status"] == STATUS_LABELS[Status.REGISTERED][0] and s, 20)
    assert done, js(browser, ACTS)
    assert done["rows"][-1] == _label("register") and _label("register") in done["result"]
    assert done["buttons"] == [_label(a) for a in allowed_for("dispatcher", "registered") if a != "resume"]  # not held

    _press(browser, "dispatch")
    browser.find_element("id", "case-act-depts").click()
    option = wait(lambda: [o for o in browser.find_elements("css selector", ".dash-dropdown-option")
                           if o.text.strip() == city.departments["cg"].short])
    assert option, "the department picker shows no 城管"
    option[0].click()
    from selenium.webdriver.common.keys import Keys

    browser.find_element("tag name", "body").send_keys(Keys.ESCAPE)
    _submit(browser)
    sent = wait(lambda: (s := js(browser, ACTS))["status"] == STATUS_LABELS[Status.DISPATCHED][0] and s, 20)
    assert sent, js(browser, ACTS)
    assert sent["rows"][-1] == _label("dispatch") and sent["depts"][-1] == city.departments["cg"].name

    _press(browser, "supervise")
    browser.find_element("id", "case-act-note").send_keys("请三日内清理完毕")
    _submit(browser)
    sup = wait(lambda: (s := js(browser, ACTS))["supervised"] and s, 20)
    assert sup and "请三日内清理完毕" in sup["supervised"] and sup["rows"][-1] == _label("supervise")
    assert sup["status"] == STATUS_LABELS[Status.DISPATCHED][0]  # 督办 marks, it does not move the case
    assert errors(browser) == []
    shot(browser, "case-acting.png")
    _press(browser, "extend")
    shot(browser, "case-acting-form.png")
    size(browser, 390, 844)
    shot(browser, "case-acting-phone.png")


def test_a_leader_may_only_supervise_remind_and_note_and_a_refusal_shows_the_reason(live_server, browser, loaded):
    _, ids = loaded
    size(browser, 1920, 1080)
    live_server.open(browser, f"/case/{ids['late-1']}")
    state = wait(lambda: (s := js(browser, ACTS))["buttons"] and s)
    assert state["buttons"] == [_label("supervise"), _label("remind"), _label("note")]

    _press(browser, "supervise")  # no 批示: the server refuses and says why
    refused = _submit(browser)
    assert "督办需要填写批示" in refused["result"] and refused["form"] is True  # the server's reason, in Chinese
    assert refused["supervised"] is None

    browser.find_element("id", "case-act-note").send_keys("限期整改")
    _submit(browser)
    sup = wait(lambda: (s := js(browser, ACTS))["supervised"] and s, 20)
    assert sup and "限期整改" in sup["supervised"] and sup["rows"][-1] == _label("supervise")

    _press(browser, "note")  # a double click on 确定 acts once: one request id per opening of the form
    browser.find_element("id", "case-act-note").send_keys("已电话联系水务")
    js(browser, "const b = document.getElementById('case-act-submit'); b.click(); b.click(); return 1;")
    noted = wait(lambda: (s := js(browser, ACTS))["rows"][-1] == _label("note") and s, 20)
    assert noted and noted["rows"].count(_label("note")) == sup["rows"].count(_label("note")) + 1
    assert errors(browser) == []


def test_a_viewer_who_may_not_act_sees_no_buttons_and_the_server_refuses_anyway(loaded, settings, city, app):
    from dashboard import actions
    from dashboard.viewers import Viewer

    _, ids = loaded
    leader = _rendered(settings, city, str(ids["late-1"]))
    assert "case-act-buttons" in leader and '"action": "supervise"' in leader
    assert '"action": "dispatch"' not in leader and '"action": "transfer"' not in leader
    shown = _rendered(settings, city, str(ids["late-1"]), role="screen")
    assert "case-act-buttons" not in shown and "case-act-form" not in shown
    other = next(s.code for s in city.geography.areas("street") if not case_grid(city, 9).code.startswith(s.code))
    outside = _rendered(settings, city, str(ids["late-1"]), area=other)  # a leader of another street
    assert "case-act-buttons" not in outside and f"没有编号为 {ids['late-1']} 的案件" in outside
    district = city.geography.district.code
    with accounts.request(app, "screen"):
        out = actions.perform(Viewer("wall", "screen", district), ids["late-1"], {"action": "remind"}, wait_s=0)
    assert out.status == 403 and "may not remind" in out.body["error"]


def test_the_page_shows_the_auto_routing_and_the_newest_supervision(loaded, settings, r, engine, city):
    from datetime import timedelta

    from core.records import CITY_TZ
    from dashboard.casepage import case_view
    from layouts import case

    due = (NOW + timedelta(days=2)).replace(minute=0, second=0)
    base = {"source": "citizen", "external_id": "auto-1"}
    recs = [
        {**base, "event": "report", "occurred_at": (NOW - 2 * H).isoformat(), "title": "路面塌陷",
         "category": full_case(city)[0]["category"], "grid_code": case_grid(city).code},
        {**base, "event": "register", "event_id": "auto:r", "occurred_at": (NOW - 2 * H + M).isoformat(),
         "actor": "gridwatch"},
        {**base, "event": "dispatch", "event_id": "auto:d", "occurred_at": (NOW - 2 * H + 2 * M).isoformat(),
         "actor": "gridwatch", "departments": ["zj"], "note": "智能分拨 · 规则「塌陷归住建」"},
        {**base, "event": "supervise", "event_id": "s1", "occurred_at": (NOW - H).isoformat(),
         "actor": "leader-a (leader)", "note": "先前的批示"},
        {**base, "event": "supervise", "event_id": "s2", "occurred_at": (NOW - 30 * M).isoformat(),
         "actor": "leader-b (leader)", "note": "后来的批示：两日内修复", "due_at": due.isoformat()},
    ]
    Producer(r, settings, source="t").cases(recs)
    w = Worker(city, settings, engine, r, name="auto")
    while w.run_once(50):
        pass
    assert read_dead(r, settings) == []
    from sqlalchemy import text

    with engine.connect() as conn:
        cid = conn.execute(text("SELECT id FROM cases WHERE external_id = 'auto-1'")).scalar_one()
    page = _rendered(settings, city, str(cid))
    acting_zh = json.dumps(case._acting(case._Fmt(city, "zh"), case_view(engine, settings, cid), "leader"),
                           cls=plotly.utils.PlotlyJSONEncoder, ensure_ascii=False)
    assert "规则「塌陷归住建」" in acting_zh and "智能分拨" in acting_zh and city.departments["zj"].name in acting_zh
    assert "后来的批示：两日内修复" in page and due.astimezone(CITY_TZ).strftime("%Y-%m-%d %H:%M:%S") in page
    acting = case._acting(case._Fmt(city, "zh"), case_view(engine, settings, cid), "leader")
    line = json.dumps(acting, cls=plotly.utils.PlotlyJSONEncoder, ensure_ascii=False)
    assert "后来的批示" in line and "先前的批示" not in line  # the newest order only (the timeline keeps both)
    en = _rendered(settings, city, str(cid), {"lang": "en"})
    assert "Auto-routed" in en and "Supervision instruction" in en and "rule “塌陷归住建”" in en


def test_a_case_no_rule_could_place_shows_the_routers_note(loaded, settings, r, engine, city):
    from core.routing import AUTO_ACTOR
    from dashboard.casepage import case_view

    base = {"source": "citizen", "external_id": "unrouted-9"}
    why = "待分拨：智能分拨未能确定承办部门（无匹配规则），请人工分拨"
    Producer(r, settings, source="t").cases([
        {**base, "event": "report", "occurred_at": (NOW - H).isoformat(), "title": "邻里纠纷",
         "category": full_case(city)[0]["category"], "grid_code": case_grid(city).code},
        {**base, "event": "note", "event_id": "auto:unrouted", "occurred_at": (NOW - H + M).isoformat(),
         "actor": AUTO_ACTOR, "note": why}])
    w = Worker(city, settings, engine, r, name="unrouted")
    while w.run_once(50):
        pass
    from sqlalchemy import text

    with engine.connect() as conn:
        cid = conn.execute(text("SELECT id FROM cases WHERE external_id = 'unrouted-9'")).scalar_one()
    auto = case_view(engine, settings, cid)["auto_route"]
    assert auto["unrouted"] is True and auto["note"] == why and auto["rule"] is None
    assert why in _rendered(settings, city, str(cid), role="dispatcher")


@pytest.mark.parametrize(("action", "depts", "note", "due", "expected"), [
    ("extend", ["cg"], "协调供电", "2026-12-07T18:00",
     {"note": "协调供电", "due_at": "2026-12-07T18:00:00+08:00"}),  # the city's wall time, sent with its offset
    ("supervise", [], "限期整改", "2026-12-08T09:30", {"note": "限期整改", "due_at": "2026-12-08T09:30:00+08:00"}),
    ("supervise", [], "限期整改", "", {"note": "限期整改"}),
    ("dispatch", ["cg", "sw"], "", "2026-12-08T09:30", {"departments": ["cg", "sw"]}),  # no deadline to send
    ("remind", ["cg"], "   ", None, {}),
])
def test_the_form_sends_only_the_fields_its_action_takes(action, depts, note, due, expected):
    from layouts import components

    choice = {"case": 7, "action": action, "request_id": "r" * 32}
    assert components.body_of(choice, depts, note, due) == {"action": action, "request_id": "r" * 32, **expected}


def test_each_opening_of_the_form_has_its_own_request_id():
    from dashboard import i18n
    from layouts import components

    t = i18n.texts("zh")
    first, second = (components.form_for("remind", 7, t, "zh")[0] for _ in range(2))
    assert first["case"] == second["case"] == 7 and first["request_id"] != second["request_id"]


def _pick(browser, city, codes) -> None:
    from selenium.webdriver.common.keys import Keys

    browser.find_element("id", "case-act-depts").click()
    for code in codes:
        option = wait(lambda c=code: [o for o in browser.find_elements("css selector", ".dash-dropdown-option")
                                      if o.text.strip() == city.departments[c].short])
        assert option, f"the department picker shows no {code}"
        option[0].click()
    browser.find_element("tag name", "body").send_keys(Keys.ESCAPE)


SET_DUE = """const el = document.getElementById('case-act-due');
Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set.call(el, arguments[0]);
el.dispatchEvent(new Event('input', {bubbles: true})); return el.value;"""


def test_every_action_a_dispatcher_may_take_by_clicking(dispatcher_server, browser, reported, city, settings, r):
    """Each of the dispatcher's actions through its button and form, in a case's whole handling; the status and the
    timeline's newest row after each are the lifecycle's (core.lifecycle.TRANSITIONS read for the expected status)."""
    from datetime import timedelta

    from core.lifecycle import STATUS_LABELS, TRANSITIONS, Action, Status
    from core.records import CITY_TZ

    due = (NOW.astimezone(CITY_TZ) + timedelta(days=5)).strftime("%Y-%m-%dT%H:%M")
    steps = [("register", {}), ("dispatch", {"depts": ["cg"]}), ("transfer", {"depts": ["zj"]}),
             ("whistle", {"depts": ["ga"]}), ("remind", {"note": "请加快办理"}), ("suspend", {"note": "等待业主配合"}),
             ("resume", {}), ("extend", {"due": due}), ("return", {"note": "非本单位职责"}),
             ("dispatch", {"depts": ["cg"]}), ("note", {"note": "已电话联系报事人"})]
    size(browser, 1920, 1080)
    dispatcher_server.open(browser, f"/case/{reported}")
    status = Status.REPORTED
    for action, fields in steps:
        wait(lambda a=action: browser.find_elements("css selector", f"#case-acting .act-{a}"), 20)
        _press(browser, action)
        if "depts" in fields:
            _pick(browser, city, fields["depts"])
        if "note" in fields:
            browser.find_element("id", "case-act-note").send_keys(fields["note"])
        if "due" in fields:
            assert browser.execute_script(SET_DUE, fields["due"]) == fields["due"]
        _submit(browser)
        status = TRANSITIONS[Action(action)][1] if Action(action) in TRANSITIONS else status
        done = wait(lambda a=action, st=status: (s := js(browser, ACTS))["rows"][-1] == _label(a)
                    and s["status"] == STATUS_LABELS[st][0] and s, 20)
        assert done, (action, js(browser, ACTS))
    # the department does its part (a feed's events), then the dispatcher checks and closes, and reopens
    from datetime import UTC, datetime

    now = datetime.now(UTC) - 5 * M  # before the close the dispatcher is about to click
    Producer(r, settings, source="t").cases([
        {"source": "citizen", "external_id": "act-1", "event": e, "event_id": f"dept-{e}",
         "occurred_at": (now + i * M).isoformat(), "actor": "城管"} for i, e in enumerate(("accept", "resolve"))])
    wait(lambda: browser.find_elements("css selector", "#case-acting .act-close"), 30)
    for action, note, st in (("close", None, Status.CLOSED), ("reopen", "回访不满意", Status.REGISTERED)):
        _press(browser, action)
        if note:
            browser.find_element("id", "case-act-note").send_keys(note)
        _submit(browser)
        done = wait(lambda a=action, s_=st: (s := js(browser, ACTS))["rows"][-1] == _label(a)
                    and s["status"] == STATUS_LABELS[s_][0] and s, 20)
        assert done, (action, js(browser, ACTS))
    assert errors(browser) == []


def test_a_routed_case_names_its_lead_and_the_departments_the_rule_summoned(loaded, settings, r, engine, city):
    import yaml
    from sqlalchemy import text

    from dashboard.casepage import case_view
    from ingest.router import Router
    from tests.test_dispatching import ROOT

    rule = next(x for x in yaml.safe_load((ROOT / "config/routing.yaml").read_text("utf-8"))["rules"]
                if x["name"] == "电梯困人-应急联动")
    Producer(r, settings, source="t").cases([
        {"source": "sensor", "external_id": "lift-9", "event": "report", "occurred_at": (NOW - H).isoformat(),
         "title": "电梯困人", "category": "1305", "grid_code": case_grid(city).code}])

    def drain():
        w = Worker(city, settings, engine, r, name="lift")
        while w.run_once(50):
            pass

    drain()
    Router(city, settings).route_once()
    drain()
    with engine.connect() as conn:
        cid = conn.execute(text("SELECT id FROM cases WHERE external_id = 'lift-9'")).scalar_one()
    auto = case_view(engine, settings, cid)["auto_route"]
    assert (auto["rule"], auto["departments"], auto["summoned"]) == (rule["name"], rule["lead"], rule["summon"])
    page = _rendered(settings, city, str(cid), role="dispatcher")
    assert all(city.departments[d].name in page for d in rule["lead"] + rule["summon"]) and "吹哨" in page
