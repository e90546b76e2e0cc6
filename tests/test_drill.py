"""The leaders' drill-down (/ and /area/<code>): views read from URLs, the panel's figures and the case table against
a pandas selection of what the test published, bad URLs, and — in a real headless Chromium — clicking the map, the
back button, a filter narrowing the table (checked against the API) and opening a case.

Screenshots are saved under var/test-artifacts/ (look at them).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import orjson
import pandas as pd
import pytest

from core.records import CITY_TZ
from tests import accounts
from tests.browser import LiveServer, errors, js, shot, size, wait
from tests.drill_dataset import OPEN, store_dataset


@pytest.fixture
def drilled(settings, r, engine, city):
    return store_dataset(settings, r, engine, city)


def _days_ago(now: datetime, days: int) -> datetime:
    """Midnight (city time) of the day ``days`` before today."""
    local = now.astimezone(CITY_TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    return (local - timedelta(days=days)).astimezone(UTC)


def _newest(df: pd.DataFrame) -> pd.DataFrame:
    """The table's default order: newest report first, the higher id first among equals."""
    return df.sort_values(["reported_at", "id"], ascending=False)


def _select(df: pd.DataFrame, now: datetime, *, area: str | None = None, days: int = 7, **f) -> pd.DataFrame:
    """The expected rows of a view, selected with pandas (the default period: the last 7 local days)."""
    since = _days_ago(now, days - 1)
    out = df[df["reported_at"] >= since]
    if area and len(area) > 6:
        col = {9: "street_code", 12: "community_code", 15: "grid_code"}[len(area)]
        out = out[out[col] == area]
    if "grade" in f:
        out = out[out["grade"].isin(f["grade"])]
    if "source" in f:
        out = out[out["source"].isin(f["source"])]
    if "group" in f:
        out = out[out["group"] == f["group"]]
    if "dept" in f:
        out = out[out["dept"] == f["dept"]]
    if "status" in f:
        out = out[out["status"].isin(f["status"])]
    if "q" in f:
        out = out[out["title"].str.contains(f["q"], regex=False)]
    return out


# --------------------------------------------------------------------------- views, figures and the table


def test_a_view_is_read_from_its_url(app, city, drilled):
    from dashboard import drill

    now, _ = drilled
    street = city.geography.areas("street")[2]
    with accounts.request(app):
        v = drill.parse(f"/area/{street.code}", "?grade=4,3&source=patrol&range=30d", now)
        assert v.area.code == street.code and v.range == "30d"
        assert v.since == _days_ago(now, 29) and v.until == _days_ago(now, -1)
        assert set(v.where.grades) == {3, 4} and set(v.where.sources) == {"patrol"}
        assert v.url() == f"/area/{street.code}?range=30d&grade=4%2C3&source=patrol"
        custom = drill.parse("/", "?since=2026-11-01&until=2026-11-08", now)
        assert custom.range == "custom" and custom.since == datetime(2026, 11, 1, tzinfo=CITY_TZ)
        assert custom.until == datetime(2026, 11, 8, tzinfo=CITY_TZ) and custom.area.level == "district"
        assert [c["name"] for c in drill.trail(v)] == [city.geography.district.name, street.name]


@pytest.mark.parametrize(("path", "search", "parameter"), [
    ("/area/440311999", "", "area"),  # no such street
    ("/area/abc", "", "area"),  # not a code
    ("/area/" + "9" * 40, "", "area"),  # overlong
    ("/", "?grade=9", "grade"),
    ("/", "?grade=1&grade=2", "grade"),  # given twice
    ("/", "?since=2026-11-08&until=2026-11-01", "until"),  # inverted
    ("/", "?since=2026-13-45&until=2026-11-01", "since"),  # malformed
    ("/", "?since=2026-11-01", "until"),  # half a custom period
    ("/", "?range=fortnight", "range"),
    ("/", "?range=7d&since=2026-11-01&until=2026-11-02", "range"),
    ("/", "?category=9999", "category"),
    ("/", "?dept=nobody", "dept"),
    ("/", "?status=lost", "status"),
    ("/", "?source=%3Cscript%3E", "source"),
    ("/", "?zoom=3", "zoom"),
    ("/", "?q=" + "井" * 51, "q"),
    ("/nowhere", "", "path"),
])
def test_a_bad_url_names_what_is_wrong_and_shows_no_data(app, drilled, path, search, parameter):
    from dashboard import drill
    from layouts import drill as page

    with accounts.request(app):
        with pytest.raises(drill.ViewError) as err:
            drill.parse(path, search)
        assert err.value.parameter == parameter
        frame = page.frame_of(path, search)
        message = orjson.dumps(frame[1], default=lambda c: c.to_plotly_json()).decode()
        assert frame[2] == {"display": "block"}  # the problem shown …
        named = {"area": "没有编码为「", "path": "没有这个页面"}.get(parameter, f"筛选条件「{parameter}」")
        assert named in message  # … naming what is wrong
        assert frame[3] is None and frame[10] == ""  # no map areas, no count
        assert page.figures_of(path, search) == (None, None, None, None)
        assert page.lists_of(path, search) == (None, None, None, None)
        assert page.rows_of({"startRow": 0, "endRow": 50}, path, search) == {"rowData": [], "rowCount": 0}


def test_the_table_pages_and_sorts_the_views_rows(app, city, drilled):
    """Every block in turn gives exactly the pandas selection, newest first; sorted by grade it follows pandas."""
    from layouts import drill as page

    now, df = drilled
    with accounts.request(app):
        _table_checks(page, city, now, df)


def _table_checks(page, city, now, df):
    street = city.geography.areas("street")[1]
    path = f"/area/{street.code}"
    for search, f in (("?range=30d", {"days": 30}), ("?range=30d&grade=2,4", {"days": 30, "grade": [2, 4]}),
                      ("", {}), ("?range=30d&source=patrol,citizen", {"days": 30, "source": ["patrol", "citizen"]})):
        expected = _newest(_select(df, now, area=street.code, **f))
        assert len(expected) > 3, search
        got, start, count = [], 0, None
        while count is None:
            block = page.rows_of({"startRow": start, "endRow": start + 7, "sortModel": []}, path, search)
            got += [int(r["link"].split("]")[0][1:]) for r in block["rowData"]]
            count = block.get("rowCount")
            start += 7
        assert got == expected["id"].tolist(), search
        assert count == len(expected)
    exp = _select(df, now, area=street.code, days=30).sort_values(["grade", "id"], ascending=[True, False])
    rows = page.rows_of({"startRow": 0, "endRow": 500, "sortModel": [{"colId": "id", "sort": "desc"}]}, path,
                        "?range=30d")["rowData"]
    by_id = _select(df, now, area=street.code, days=30).sort_values("id", ascending=False)
    assert [int(r["link"].split("]")[0][1:]) for r in rows] == by_id["id"].tolist()
    rows = page.rows_of({"startRow": 0, "endRow": 500, "sortModel": [{"colId": "grade", "sort": "asc"}]}, path,
                        "?range=30d")["rowData"]
    assert [int(r["link"].split("]")[0][1:]) for r in rows] == exp["id"].tolist()
    assert all("张三" not in str(r) and "13800000000" not in str(r) for r in rows)  # no personal data
    bad = page.rows_of({"startRow": 0, "endRow": 50, "sortModel": [{"colId": "reporter_phone", "sort": "asc"}]}, path, "")
    assert bad == {"rowData": [], "rowCount": 0}


def test_the_panel_follows_the_view(app, city, drilled):
    """Areas below, count, daily trend, breakdowns and the KPIs' case totals against pandas, for a filtered view."""
    from dashboard import drill

    now, df = drilled
    geo = city.geography
    with accounts.request(app):
        v = drill.parse("/", "?range=30d&grade=1,3", now)
        sel = _select(df, now, days=30, grade=[1, 3])
        kids, total = drill.children(v)
        assert total == len(sel)
        by_street = sel.groupby("street_code").size()
        open_by_street = sel[sel["status"].isin(OPEN)].groupby("street_code").size()
        assert {k["code"]: (k["cases"], k["open"]) for k in kids} == {
            s.code: (int(by_street.get(s.code, 0)), int(open_by_street.get(s.code, 0))) for s in geo.children(geo.district.code)}
        days = drill.daily(v)
        assert len(days) == 30
        per_day = sel["reported_at"].dt.tz_convert(CITY_TZ).dt.strftime("%Y-%m-%d").value_counts()
        assert {d["day"]: d["cases"] for d in days if d["cases"]} == per_day.to_dict()
        b = drill.breakdowns(v)
        assert {x["code"]: x["cases"] for x in b["sources"]} == sel["source"].value_counts().to_dict()
        assert {x["code"]: x["cases"] for x in b["groups"]} == sel["group"].value_counts().to_dict()
        assert {x["grade"]: x["cases"] for x in b["grades"] if x["cases"]} == sel["grade"].value_counts().to_dict()
        k = drill.kpis(v, now)
        assert k["kpis"]["cases_total"] == len(sel)
        resolved = sel["resolved_at"].notna()
        assert k["kpis"]["resolved"] == int(resolved.sum())
        assert k["kpis"]["resolution_rate"] == pytest.approx(resolved.sum() / len(sel))
        p0, p1 = v.previous
        assert p1 == v.since and v.until - v.since == p1 - p0
        prev = df[(df["reported_at"] >= p0) & (df["reported_at"] < p1) & df["grade"].isin([1, 3])]
        assert k["previous"]["cases_total"] == len(prev)
        assert k["change"]["cases_total"] == len(sel) - len(prev)
        f = drill.figures(v, now)  # what the page shows: the same figures, read in one pass
        assert f["daily"] == days and f["breakdowns"] == b
        assert f["kpis"]["kpis"]["cases_total"] == len(sel) and f["kpis"]["previous"]["cases_total"] == len(prev)
        handled = sel[sel["resolved_at"].notna()]
        assert f["kpis"]["kpis"]["handling_mean_s"] == pytest.approx(
            (handled["resolved_at"] - handled["reported_at"]).dt.total_seconds().mean(), abs=0.01)
        assert f["kpis"]["kpis"]["resolution_rate"] == k["kpis"]["resolution_rate"]
        overdue = drill.overdue(v, now)
        late = sel[sel["status"].isin(OPEN) & (sel["due_at"] < now)].sort_values(["due_at", "id"], ascending=False)
        assert [o["id"] for o in overdue] == late["id"].head(drill.LIST_SIZE).tolist()
        # a department filter: only cases it had a part in
        dept = sorted(city.departments)[1]
        vd = drill.parse("/", f"?range=30d&dept={dept}", now)
        assert drill.children(vd)[1] == len(_select(df, now, days=30, dept=dept))


def test_the_export_link_gives_exactly_the_views_rows(app, city, drilled, settings):
    import csv
    import io

    from dashboard import drill

    now, df = drilled
    street = city.geography.areas("street")[0]
    client = accounts.client(app=app)
    with accounts.request(app):
        v = drill.parse(f"/area/{street.code}", "?range=30d&source=hotline12345,citizen", now)
        url = drill.export_url(v)
    resp = client.get(url)
    assert resp.status_code == 200, resp.data[:300]
    rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True).lstrip("\ufeff"))))
    expected = _select(df, now, area=street.code, days=30, source=["hotline12345", "citizen"])
    assert sorted(int(r["id"]) for r in rows) == sorted(expected["id"].tolist())


# --------------------------------------------------------------------------- in a real browser


@pytest.fixture
def server(drilled, settings, engine, r, city):
    srv = LiveServer(settings, engine, r, city)
    srv.start()
    yield srv
    srv.close()


def _api(server, path: str) -> dict:

    resp = server.http().get(server.url + path, timeout=10)
    assert resp.status_code == 200, resp.text[:300]
    return resp.json()


READ = """
const crumbs = [...document.querySelectorAll('#drill-crumbs .dr-crumb')].map(e => e.dataset.code || '');
const rows = [...document.querySelectorAll('#drill-grid .ag-center-cols-container .ag-row')];
const ids = rows.map(r => (r.querySelector('[col-id="id"]') || {}).textContent).filter(Boolean).map(Number);
const streets = rows.map(r => (r.querySelector('[col-id="street"]') || {}).textContent);
return {path: location.pathname, search: location.search, crumbs: crumbs,
        kpis: document.querySelectorAll('#drill-kpis .dr-kpi').length,
        count: (document.getElementById('drill-count') || {}).textContent || '',
        ids: ids, streets: streets, message: (document.getElementById('drill-message') || {}).textContent || '',
        paths: document.querySelectorAll('#drill-map path.leaflet-interactive').length};
"""


def _read(browser):
    return js(browser, READ)


def _shows(state, expected: list[int]) -> bool:
    """The table shows the expected rows from the top (the grid draws only the rows in view)."""
    ids = state["ids"]
    return len(ids) >= min(len(expected), 10) and ids == expected[:len(ids)]


def test_clicking_a_street_drills_in_and_back_returns(server, browser, city, drilled):
    now, df = drilled
    geo = city.geography
    size(browser, 1920, 1080)
    server.open(browser, "/")
    first = wait(lambda: (s := _read(browser))["ids"] and s["kpis"] and s["paths"] >= 6 and s)
    assert first, _read(browser)
    assert first["crumbs"] == [geo.district.code]
    district_count = first["count"]
    js(browser, "window.__sameDocument = true")
    # click a street's shape on the map
    paths = browser.find_elements("css selector", "#drill-map path.leaflet-interactive")
    paths[2].click()
    moved = wait(lambda: (s := _read(browser))["path"].startswith("/area/") and len(s["crumbs"]) == 2 and s)
    assert moved, _read(browser)
    code = moved["path"].rsplit("/", 1)[1]
    assert geo.area(code).level == "street" and moved["crumbs"] == [geo.district.code, code]
    # the panel and the table follow: every row is in that street, the first page is the API's
    name = geo.area(code).name
    expected = _newest(_select(df, now, area=code))["id"].head(50).tolist()
    settled = wait(lambda: _shows(s := _read(browser), expected) and s)
    assert settled, (_read(browser)["ids"], expected)
    assert set(settled["streets"]) == {name}
    assert settled["count"] != district_count and f"{len(_select(df, now, area=code)):,}" in settled["count"]
    shot(browser, "drill-street.png")
    # back: the district again, in the same document
    browser.back()
    back = wait(lambda: (s := _read(browser))["path"] == "/" and s["crumbs"] == [geo.district.code] and
                s["count"] == district_count and s)
    assert back, _read(browser)
    assert js(browser, "return window.__sameDocument === true")
    # forward and a reload show the street view again
    browser.forward()
    assert wait(lambda: _read(browser)["path"] == f"/area/{code}")
    browser.refresh()
    again = wait(lambda: _shows(s := _read(browser), expected) and s["crumbs"] == [geo.district.code, code] and s)
    assert again, _read(browser)
    assert errors(browser) == []


def test_a_filter_narrows_the_table_to_matching_rows_only(server, browser, city, drilled):
    from selenium.webdriver.common.keys import Keys

    now, df = drilled
    size(browser, 1920, 1080)
    server.open(browser, "/?range=30d")
    assert wait(lambda: _read(browser)["ids"])
    grade = city.grades[3]
    browser.find_element("id", "drill-grade").click()  # the dropdown opens a list of options
    option = wait(lambda: [o for o in browser.find_elements("css selector", ".dash-dropdown-option")
                           if o.text.strip() == grade.name])
    assert option, "the grade dropdown shows no option " + grade.name
    option[0].click()
    browser.find_element("tag name", "body").send_keys(Keys.ESCAPE)
    narrowed = wait(lambda: "grade=3" in (s := _read(browser))["search"] and s)
    assert narrowed, _read(browser)
    q = parse_qs(urlparse(narrowed["search"]).query)
    assert q == {"range": ["30d"], "grade": ["3"]}
    since, until = _days_ago(now, 29), _days_ago(now, -1)
    api = _api(server, f"/api/v1/cases?grade=3&since={since.isoformat().replace('+', '%2B')}"
                       f"&until={until.isoformat().replace('+', '%2B')}&limit=500")
    selected = _select(df, now, days=30, grade=[3])
    assert api["items"] and all(c["grade"] == 3 for c in api["items"])
    assert sorted(c["id"] for c in api["items"]) == sorted(selected["id"])  # the API's rows are the view's rows
    by_time = sorted(api["items"], key=lambda c: (c["reported_at"], c["id"]), reverse=True)
    expected = [c["id"] for c in by_time]  # newest report first, as the table shows them
    got = wait(lambda: _shows(s := _read(browser), expected) and s)
    assert got, (_read(browser)["ids"], expected)
    assert f"{len(_select(df, now, days=30, grade=[3])):,}" in got["count"]
    shot(browser, "drill-filtered.png")
    assert errors(browser) == []


def test_a_bad_url_shows_a_message_and_no_rows(server, browser):
    size(browser, 1920, 1080)
    server.open(browser, "/area/440311999?grade=2")
    state = wait(lambda: (s := _read(browser))["message"] and s)
    assert state and "440311999" in state["message"]
    assert js(browser, "return document.querySelectorAll('#drill-grid .ag-row').length") == 0
    server.open(browser, "/?grade=9")
    state = wait(lambda: "grade" in (s := _read(browser))["message"] and s)
    assert state, _read(browser)
    assert state["count"] == "" and js(browser, "return document.querySelectorAll('#drill-grid .ag-row').length") == 0
    shot(browser, "drill-bad-url.png")
    assert "Traceback" not in browser.page_source


# --------------------------------------------------------------------------- compare


def _kpi_cells(component) -> dict[str, tuple[str, str]]:
    """key → (A, B) as shown in the compare table."""
    found = {}

    def walk(c):
        if isinstance(c, list | tuple):
            for x in c:
                walk(x)
            return
        props = getattr(c, "to_plotly_json", lambda: None)()
        if not props:
            return
        p = props["props"]
        if props["type"] == "Tr" and p.get("data-key"):
            cells = p["children"]
            found[p["data-key"]] = (cells[1].children, cells[2].children)
        walk(p.get("children"))

    walk(component)
    return found


def test_compare_two_areas_and_two_periods(app, city, drilled, settings):
    from layouts import compare

    now, df = drilled
    s1, s2 = city.geography.areas("street")[:2]
    with accounts.request(app):
        shown = _kpi_cells(compare.layout(settings, city, {"a": s1.code, "b": s2.code, "range": "30d", "grade": "2,3"}))
        n1 = len(_select(df, now, area=s1.code, days=30, grade=[2, 3]))
        n2 = len(_select(df, now, area=s2.code, days=30, grade=[2, 3]))
        assert shown["cases_total"] == (f"{n1:,}", f"{n2:,}")
        # one area, this 7-day period against the one before
        shown = _kpi_cells(compare.layout(settings, city, {"a": s1.code}))
        this = _select(df, now, area=s1.code)
        before = df[(df["street_code"] == s1.code) & (df["reported_at"] >= _days_ago(now, 13))
                    & (df["reported_at"] < _days_ago(now, 6))]
        assert shown["cases_total"] == (f"{len(this):,}", f"{len(before):,}")
        # explicit second period
        a0, a1 = _days_ago(now, 3).astimezone(CITY_TZ).date(), _days_ago(now, 0).astimezone(CITY_TZ).date()
        shown = _kpi_cells(compare.layout(settings, city, {"a": s1.code, "since_b": a0.isoformat(),
                                                           "until_b": a1.isoformat()}))
        b = df[(df["street_code"] == s1.code) & (df["reported_at"] >= _days_ago(now, 3))
               & (df["reported_at"] < _days_ago(now, 0))]
        assert shown["cases_total"][1] == f"{len(b):,}"


@pytest.mark.parametrize(("query", "parameter"), [
    ({"a": "440311999"}, "area"),
    ({"a": "440311001", "b": "x"}, "area"),
    ({"a": "440311001", "since_b": "2026-11-10", "until_b": "2026-11-01"}, "until_b"),
    ({"a": "440311001", "since_b": "2026-11-10"}, "until_b"),
    ({"a": "440311001", "b": "440311002", "since_b": "2026-11-10"}, "since_b"),
    ({"a": "440311001", "grade": "7"}, "grade"),
    ({"a": "440311001", "colour": "red"}, "colour"),
])
def test_compare_refuses_a_bad_query_with_a_message(app, city, settings, query, parameter):
    from dashboard import drill
    from layouts import compare

    with accounts.request(app):
        with pytest.raises(drill.ViewError) as err:
            compare.views(query)
        assert err.value.parameter == parameter
        shown = orjson.dumps(compare.layout(settings, city, query).to_plotly_json(),
                             default=lambda c: c.to_plotly_json()).decode()
        assert "cmp-message" in shown and "cmp-table" not in shown


def test_opening_a_case_from_the_table_shows_its_timeline(server, browser, city, drilled, engine):
    from sqlalchemy import text

    size(browser, 1920, 1080)
    server.open(browser, "/?range=30d")
    state = wait(lambda: (s := _read(browser))["ids"] and s)
    assert state, _read(browser)
    case_id = state["ids"][0]
    link = browser.find_element("css selector", f"#drill-grid a[href='/case/{case_id}']")
    link.click()
    assert wait(lambda: js(browser, "return location.pathname") == f"/case/{case_id}")
    actions = wait(lambda: js(browser, "return [...document.querySelectorAll('#case-timeline .case-ev-action')]"
                                       ".map(e => e.textContent)"))
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT count(*) FROM case_events WHERE case_id = :i"), {"i": case_id}).scalar()
    assert actions and len(actions) == stored  # every event of the case, in the timeline
    shot(browser, "drill-opened-case.png")
    browser.back()  # back to the table's view
    assert wait(lambda: (s := _read(browser))["path"] == "/" and s["ids"] and s["ids"][0] == case_id)
    assert errors(browser) == []


def test_a_grid_pins_its_cases_and_the_page_speaks_english(server, browser, city, drilled):
    now, df = drilled
    grid = df[df["reported_at"] >= _days_ago(now, 29)]["grid_code"].value_counts().index[0]
    expected = len(_select(df, now, area=grid, days=30))
    size(browser, 1920, 1080)
    server.open(browser, f"/area/{grid}?range=30d&lang=en")
    pins = wait(lambda: js(browser, "return document.querySelectorAll('#drill-map path.leaflet-interactive').length")
                >= expected + 1)  # the grid's outline and a dot per case
    assert pins, js(browser, "return document.querySelectorAll('#drill-map path.leaflet-interactive').length")
    crumbs = wait(lambda: len(_read(browser)["crumbs"]) == 4 and _read(browser)["crumbs"])
    assert crumbs and crumbs[-1] == grid
    heading = js(browser, "return document.getElementById('drill-title').textContent")
    assert "Grid governance analysis" in heading
    assert wait(lambda: "Cases per day" in js(browser, "return document.body.innerText"))
    shot(browser, "drill-grid-en.png")
    assert errors(browser) == []


def test_a_title_search_narrows_the_view_and_the_export(app, city, drilled):
    """q: words in the title (LIKE with % and _ taken literally), on the page, the API and the export alike."""
    import csv
    import io

    from layouts import drill as page

    now, df = drilled
    client = accounts.client(app=app)
    with accounts.request(app):
        for q in ("测试 1", "试 4", "%", "_", "nothing-like-this"):
            expected = _newest(_select(df, now, days=30, q=q))
            rows = page.rows_of({"startRow": 0, "endRow": 500, "sortModel": []}, "/",
                                "?range=30d&q=" + q.replace("%", "%25").replace(" ", "+"))["rowData"]
            assert [int(r["link"].split("]")[0][1:]) for r in rows] == expected["id"].tolist(), q
            if q in ("%", "_", "nothing-like-this"):
                assert rows == []  # taken literally: never all data
        since = _days_ago(now, 29).isoformat().replace("+", "%2B")
        resp = client.get(f"/api/v1/cases.csv?since={since}&q=%E6%B5%8B%E8%AF%95+1")  # 测试 1
        ids = sorted(int(r["id"]) for r in csv.DictReader(io.StringIO(resp.get_data(as_text=True).lstrip("\ufeff"))))
        assert ids == sorted(_select(df, now, days=30, q="测试 1")["id"].tolist())
        assert client.get("/api/v1/cases?q=" + "x" * 51).status_code == 400
