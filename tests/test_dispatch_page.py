"""The dispatcher's work queue (/dispatch): which case lands in which list (worked out here from the published
records), the viewer's jurisdiction, who may open it, and — in a real headless Chromium — dispatching an unrouted
case from its row moves it from 待分拨 to 待签收. Screenshots go to the test artifacts (look at them)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ingest.worker import Worker
from store.streams import Producer, read_dead
from tests import accounts
from tests.browser import LiveServer, errors, js, shot, size, wait
from tests.events import NOW, report

H = timedelta(hours=1)


def _at(delta: timedelta) -> str:
    return (NOW + delta).isoformat()


def _ev(ext: str, action: str, delta: timedelta, **extra) -> dict:
    return {"source": "test", "external_id": ext, "event": action, "event_id": f"{action}-{ext}",
            "occurred_at": _at(delta), **extra}


def records(city) -> list[dict]:
    """Five cases in one grid: one in each list (a whistle's case is also dispatched, so also 待签收), one done."""
    grid = city.geography.areas("grid")[0]
    far = -3 * H
    return [
        report(city, "unrouted-1", grid=grid, when=NOW + far, title="未分拨的井盖缺失"),
        report(city, "sent-1", grid=grid, when=NOW + far, title="已派遣未签收"),
        _ev("sent-1", "register", far + 0.1 * H), _ev("sent-1", "dispatch", far + 0.2 * H, departments=["cg"]),
        report(city, "late-1", grid=grid, when=NOW + far, title="超期未办", due_at=_at(-H)),
        _ev("late-1", "register", far + 0.1 * H), _ev("late-1", "dispatch", far + 0.2 * H, departments=["sw"]),
        _ev("late-1", "accept", far + 0.3 * H),
        report(city, "whistle-1", grid=grid, when=NOW + far, title="吹哨未报到"),
        _ev("whistle-1", "register", far + 0.1 * H), _ev("whistle-1", "whistle", far + 0.2 * H, departments=["ga"]),
        report(city, "onsite-1", grid=grid, when=NOW + far, title="现场处置完毕"),
        _ev("onsite-1", "onsite", far + 0.1 * H),
    ]


@pytest.fixture
def queued(settings, r, engine, city):
    Producer(r, settings, source="t").cases(records(city))
    w = Worker(city, settings, engine, r, name="dp")
    while w.run_once(50):
        pass
    assert read_dead(r, settings) == []
    from sqlalchemy import text

    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT external_id, id FROM cases")).all())


def _lists(app, role="dispatcher", area=None) -> dict[str, list[int]]:
    from dashboard import dispatch

    with accounts.request(app, role, area):
        view = dispatch.queue()
    return {name: [r["id"] for r in v["rows"]] for name, v in view["lists"].items()} | {
        f"{name}#": v["count"] for name, v in view["lists"].items()}


def test_each_case_lands_in_its_list(app, queued):
    got = _lists(app)
    assert got["unrouted"] == [queued["unrouted-1"]]
    assert sorted(got["unaccepted"]) == sorted([queued["sent-1"], queued["whistle-1"]])
    assert got["overdue"] == [queued["late-1"]]
    assert got["no_checkin"] == [queued["whistle-1"]]
    assert (got["unrouted#"], got["unaccepted#"], got["overdue#"], got["no_checkin#"]) == (1, 2, 1, 1)


def test_the_queue_keeps_to_the_jurisdiction(app, queued, city):
    grid = city.geography.areas("grid")[0]
    other = next(s for s in city.geography.areas("street") if not grid.code.startswith(s.code))
    got = _lists(app, area=other.code)
    assert all(got[f"{n}#"] == 0 and got[n] == [] for n in ("unrouted", "unaccepted", "overdue", "no_checkin"))
    assert _lists(app, area=grid.code[:9])["unrouted"] == [queued["unrouted-1"]]


def test_the_inline_actions_follow_the_role_and_the_status(app, queued):
    from dashboard import dispatch

    with accounts.request(app, "dispatcher"):
        lists = dispatch.queue()["lists"]
    acts = {(name, r["id"]): r["actions"] for name, v in lists.items() for r in v["rows"]}
    assert acts[("unrouted", queued["unrouted-1"])] == ["register"]  # reported: 立案 first, then 派遣
    assert acts[("unaccepted", queued["sent-1"])] == ["remind", "supervise", "transfer"]
    assert acts[("overdue", queued["late-1"])] == ["remind", "supervise"]


def test_a_leader_may_not_use_the_desks_callbacks(app, settings, queued):
    from dashboard.callback_guard import CALLBACK_PAGES

    key = next(k for k, cb in app.callback_map.items()
               if any(i["id"] == "dp-act-submit" for i in cb["inputs"]))  # the desk's 确定
    assert app.server.config[CALLBACK_PAGES][key] == "dispatch"
    body = {"output": key, "outputs": [], "inputs": [{"id": "dp-act-submit", "property": "n_clicks", "value": 1}],
            "state": [], "changedPropIds": ["dp-act-submit.n_clicks"]}
    refused = accounts.client(settings, "leader", app=app).post("/_dash-update-component", json=body)
    assert refused.status_code == 403 and "dispatch page" in refused.get_data(as_text=True)


def test_only_dispatchers_and_admins_may_open_the_desk(settings, queued):
    for role, ok in (("leader", False), ("dispatcher", True), ("admin", True)):
        c = accounts.client(settings, role)
        page = c.post("/_dash-update-component", json={
            "output": "..page-content.children...page-kind.data...page-title.data..",
            "outputs": [{"id": "page-content", "property": "children"}, {"id": "page-kind", "property": "data"},
                        {"id": "page-title", "property": "data"}],
            "inputs": [{"id": "page-url", "property": "pathname", "value": "/dispatch"},
                       {"id": "page-url", "property": "search", "value": ""}],
            "state": [{"id": "page-kind", "property": "data", "value": None}], "changedPropIds": ["page-url.pathname"]})
        assert page.status_code == 200, page.get_data(as_text=True)[:300]
        text = page.get_data(as_text=True)
        assert ("dp-list-unrouted" in text) is ok, role


# --------------------------------------------------------------------------- in a real browser


@pytest.fixture
def desk(queued, settings, engine, r, city):
    srv = LiveServer(settings, engine, r, city, role="dispatcher")
    srv.start()
    yield srv
    srv.close()


ROWS = """
const ids = n => Array.from(document.querySelectorAll('#dp-list-' + n + ' tr.dp-row')).map(r => +r.dataset.case);
return {unrouted: ids('unrouted'), unaccepted: ids('unaccepted'), overdue: ids('overdue'),
        no_checkin: ids('no_checkin'),
        counts: Array.from(document.querySelectorAll('.dp-count')).map(e => e.textContent)};
"""


def test_dispatching_from_the_desk_moves_the_case_on(desk, browser, queued, city):
    cid = queued["unrouted-1"]
    size(browser, 1920, 1080)
    desk.open(browser, "/dispatch")
    state = wait(lambda: (s := js(browser, ROWS)) and s["unrouted"] and s)
    assert state, js(browser, ROWS)
    assert state["unrouted"] == [cid] and state["counts"] == ["1", "2", "1", "1"]
    shot(browser, "dispatch-desk.png")
    # 立案 first, then the row offers 派遣 with a department picker
    browser.find_element("css selector", f"#dp-list-unrouted tr[data-case='{cid}'] .act-register").click()
    assert wait(lambda: js(browser, f"return document.querySelector(\"#dp-list-unrouted tr[data-case='{cid}'] .act-dispatch\") !== null"))
    browser.find_element("css selector", f"#dp-list-unrouted tr[data-case='{cid}'] .dp-picker").click()
    option = wait(lambda: [o for o in browser.find_elements("css selector", ".dash-dropdown-option")
                           if o.text.strip() == city.departments["cg"].short])
    assert option, "the picker shows no 城管"
    option[0].click()
    shot(browser, "dispatch-desk-picking.png")
    from selenium.webdriver.common.keys import Keys

    browser.find_element("tag name", "body").send_keys(Keys.ESCAPE)
    browser.find_element("css selector", f"#dp-list-unrouted tr[data-case='{cid}'] .act-dispatch").click()
    moved = wait(lambda: (s := js(browser, ROWS)) and cid not in s["unrouted"] and cid in s["unaccepted"] and s, 20)
    assert moved, js(browser, ROWS)
    assert moved["counts"][:2] == ["0", "3"]
    assert "派遣" in js(browser, "return document.getElementById('dp-act-result').textContent")
    # 督办 from the overdue row: the form opens with a 批示 to start from; the row then carries the 督 mark
    late = queued["late-1"]
    browser.find_element("css selector", f"#dp-list-overdue tr[data-case='{late}'] .act-supervise").click()
    assert wait(lambda: js(browser, "return document.getElementById('dp-act-form').style.display !== 'none'"))
    assert browser.find_element("id", "dp-act-note").get_attribute("value") == "请尽快办理"
    assert f"#{late}" in browser.find_element("id", "dp-act-title").text
    browser.find_element("id", "dp-act-submit").click()
    marked = f"return document.querySelector(\"#dp-list-overdue tr[data-case='{late}'] .dp-sup\") !== null"
    assert wait(lambda: js(browser, marked), 20), js(browser, "return document.getElementById('dp-act-result').textContent")
    assert "督办" in js(browser, "return document.getElementById('dp-act-result').textContent")
    # a new unrouted case shows up on its own (the desk polls)
    from tests.events import public_categories

    grid = city.geography.areas("grid")[0]
    Producer(desk.r, desk.settings, source="t").cases([report(city, "unrouted-2", grid=grid, title="新上报的占道经营",
                                                              cat=public_categories(city)[0])])
    new = wait(lambda: (s := js(browser, ROWS))["unrouted"] and s, 20)
    assert new and len(new["unrouted"]) == 1 and new["counts"][0] == "1"
    assert errors(browser) == []
    shot(browser, "dispatch-desk-after.png")
    size(browser, 390, 844)
    shot(browser, "dispatch-desk-phone.png")


def test_the_desk_speaks_chinese_first_and_english_on_request(app, city, queued):
    import json

    import plotly.utils

    from layouts import dispatch

    def text(query):
        with accounts.request(app, "dispatcher"):
            page = dispatch.layout(None, city, query)
            body = dispatch.refresh(0, 0, query.get("lang"), None)
        return json.dumps([page, body], cls=plotly.utils.PlotlyJSONEncoder, ensure_ascii=False)

    zh = text({})
    for word in ("分拨工作台", "待分拨", "待签收", "超期", "报到未到", "未分拨的井盖缺失", "立案", "催办", "督办"):
        assert word in zh, word
    en = text({"lang": "en"})
    for word in ("Dispatch desk", "To dispatch", "Not accepted", "Overdue", "Not reported in", "Register", "Reminder"):
        assert word in en, word
    assert "待分拨" not in en
