"""在线督办 in the drill-down, in a real headless Chromium: a leader ticks an overdue case and selects a row of the case
table, and 督办 (with its 批示) reaches both; 督办 without a 批示 is refused with the server's reason."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.browser import LiveServer, errors, js, shot, size, wait
from tests.test_dispatch_page import queued  # noqa: F401 - the fixture: one case in each of the desk's lists

STATE = """
const r = document.getElementById('drill-act-result');
return {picks: Array.from(document.querySelectorAll('#drill-overdue .drill-pick input')).length,
        rows: document.querySelectorAll('#drill-grid .ag-row').length,
        count: (document.getElementById('drill-act-count') || {}).textContent,
        result: r ? r.textContent : ''};
"""


@pytest.fixture
def leader_server(queued, settings, engine, r, city):  # noqa: F811 - the fixture imported above
    srv = LiveServer(settings, engine, r, city, role="leader")
    srv.start()
    yield srv
    srv.close()


def _supervised(engine) -> dict[str, str | None]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT external_id, supervise_note FROM cases")).all())


def test_a_leader_supervises_the_selected_cases(leader_server, browser, queued, engine):  # noqa: F811
    size(browser, 1920, 1080)
    leader_server.open(browser, "/")
    state = wait(lambda: (s := js(browser, STATE))["picks"] and s["rows"] and s, 30)
    assert state and state["picks"] == 1, js(browser, STATE)  # late-1 is the one overdue case

    browser.find_element("id", "drill-act-supervise").click()  # nothing selected yet
    assert wait(lambda: "请先勾选案件" in js(browser, STATE)["result"])

    browser.find_element("css selector", "#drill-overdue .drill-pick input").click()
    assert wait(lambda: js(browser, STATE)["count"] == "已选 1 件")
    browser.find_element("id", "drill-act-supervise").click()  # no 批示: each case refused with the reason
    assert wait(lambda: "督办需要填写批示" in js(browser, STATE)["result"], 20), js(browser, STATE)

    sent = queued["sent-1"]
    index = wait(lambda: js(browser, "const rows = Array.from(document.querySelectorAll('#drill-grid .ag-row'));"
                                     f"const r = rows.find(r => (r.querySelector('a') || {{}}).textContent === '{sent}');"
                                     "return r && r.getAttribute('row-index');"))
    assert index is not None, "the table shows no row of case sent-1"
    browser.find_element("css selector", f"#drill-grid .ag-row[row-index='{index}'] .ag-selection-checkbox input").click()
    assert wait(lambda: js(browser, STATE)["count"] == "已选 2 件"), js(browser, STATE)

    browser.find_element("id", "drill-act-note").send_keys("限期办结")
    browser.find_element("id", "drill-act-supervise").click()
    assert wait(lambda: "已办理 2 件，未能办理 0 件" in js(browser, STATE)["result"], 20), js(browser, STATE)
    assert wait(lambda: (s := _supervised(engine))["late-1"] == "限期办结" and s["sent-1"] == "限期办结", 20)
    assert _supervised(engine)["unrouted-1"] is None
    assert errors(browser) == []
    shot(browser, "drill-acting.png")
