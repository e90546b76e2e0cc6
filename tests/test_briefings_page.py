"""The briefings page (/briefings): the archive list holds exactly the well-named files; the download route serves
a generated PDF and XLSX as attachments and answers 404 to traversal and to any other name; a generation job run
through the job functions the page calls records its progress in Redis and ends with the files in the archive and its
links listed; bad input, a briefing being written already, a missing font and an unexpected failure end with the
message in the job's state and nothing written; and — in a real headless Chromium — a street's daily briefing
generated from the form and its PDF downloaded, and a bad date's message.

Screenshots are saved under var/test-artifacts/ (look at them).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest

from core.records import CITY_TZ
from tests import accounts
from tests.browser import LiveServer, errors, js, shot, size, wait

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _yesterday(now: datetime):
    return (now.astimezone(CITY_TZ) - timedelta(days=1)).date()


def _folder(settings, kind: str) -> Path:
    return Path(settings.var_dir) / "briefings" / kind


def _json(component) -> str:
    return orjson.dumps(component, default=lambda c: c.to_plotly_json()).decode()


def _job_hash(r, settings, job: str) -> tuple[str, dict[str, str]]:
    """The job's state as stored in Redis: the one key under this deployment's prefix that names the job."""
    keys = [k.decode() for k in r.scan_iter(f"{settings.stream_prefix}:*{job}*")]
    assert len(keys) == 1, keys
    return keys[0], {k.decode(): v.decode() for k, v in r.hgetall(keys[0]).items()}


def _files_under(settings) -> list[str]:
    root = Path(settings.var_dir) / "briefings"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


# --------------------------------------------------------------------------- the archive list


def test_the_list_holds_exactly_the_well_named_briefings_newest_first(settings, city):
    from dashboard import briefing

    geo = city.geography
    street = geo.areas("street")[0]
    community = geo.children(street.code)[0]
    district = geo.district.code
    good = {  # file → (kind, label, area, format), written with these contents and ages (older first)
        ("day", f"gridwatch-day-2026-11-20-{district}.pdf"): ("2026-11-20", district, "pdf", b"%PDF-1 a", 50),
        ("day", f"gridwatch-day-2026-11-20-{district}.xlsx"): ("2026-11-20", district, "xlsx", b"PK xlsx a!", 40),
        ("week", f"gridwatch-week-2026-W47-{street.code}.xlsx"): ("2026-W47", street.code, "xlsx", b"PK week", 30),
        ("month", f"gridwatch-month-2026-10-{community.code}.pdf"): ("2026-10", community.code, "pdf", b"%PDF-1 m", 20),
        ("day", f"gridwatch-day-2026-11-21-{street.code}.pdf"): ("2026-11-21", street.code, "pdf", b"%PDF-1 s", 10),
    }
    junk = {
        "day": [f"gridwatch-day-2026-11-21-{district}.claim", f"gridwatch-day-2026-11-21-{district}.pdf.claim",
                ".briefing-x1y2z3.pdf", "notes.txt", f"gridwatch-day-2026-11-21-{district}.PDF",
                f"gridwatch-day-2026-11-21-{district}.csv", f"gridwatch-week-2026-W47-{district}.pdf",  # another kind's
                f"gridwatch-day-2026-02-30-{district}.pdf", f"gridwatch-day-20261121-{district}.pdf",
                "gridwatch-day-2026-11-21-4403110.pdf", f"Gridwatch-day-2026-11-21-{district}.pdf"],
        "week": [f"gridwatch-week-2026-W60-{district}.pdf", f"gridwatch-week-2026-11-16-{district}.pdf"],
        "month": [f"gridwatch-month-2026-1-{district}.pdf", f"gridwatch-month-2026-13-{district}.pdf"],
        "other": [f"gridwatch-day-2026-11-19-{district}.pdf"],  # not a kind's folder
    }
    base = datetime(2026, 11, 22, 8, 0, tzinfo=CITY_TZ).timestamp()
    for (kind, name), (_, _, _, body, age) in good.items():
        path = _folder(settings, kind) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        os.utime(path, (base - age * 60, base - age * 60))
    for kind, names in junk.items():
        _folder(settings, kind).mkdir(parents=True, exist_ok=True)
        for name in names:
            (_folder(settings, kind) / name).write_bytes(b"%PDF-1 junk")
    (_folder(settings, "day") / ".briefing-tmpdir").mkdir()  # produce's folder of files being written
    (_folder(settings, "day") / f"gridwatch-day-2026-11-18-{district}.pdf").mkdir()  # a folder, not a file

    rows = briefing.archived(settings)
    expected: dict[tuple[str, str, str], dict] = {}
    for (kind, name), (label, area, fmt, body, age) in good.items():
        e = expected.setdefault((kind, label, area), {"files": {}, "age": age})
        e["files"][fmt] = (name, len(body))
        e["age"] = min(e["age"], age)
    order = sorted(expected, key=lambda k: expected[k]["age"])  # the newest first
    assert [(a.kind, a.label, a.area) for a in rows] == order
    for a in rows:
        e = expected[(a.kind, a.label, a.area)]
        assert a.files == e["files"]
        assert a.generated_at.timestamp() == pytest.approx(base - e["age"] * 60)
    assert [(a.kind, a.label) for a in briefing.archived(settings, limit=2)] == [("day", "2026-11-21"),
                                                                                ("month", "2026-10")]
    # the page: one row per briefing, its kind, its area's name from the geography, its city time, its links
    from layouts import briefings as page

    shown = _json(page.archive_view(rows, geo, page.i18n.texts("zh")))
    for (kind, _, _), e in expected.items():
        for name, _ in e["files"].values():
            assert f'"/briefings/files/{kind}/{name}"' in shown
    for junk_name in (n for names in junk.values() for n in names):
        assert junk_name not in shown
    assert "日报" in shown and "周报" in shown and "月报" in shown
    assert street.name in shown and community.name in shown and geo.district.name in shown
    assert "2026-11-22 07:50" in shown  # the newest, in city time


def test_the_list_shows_at_most_the_latest_200(settings, city):
    from dashboard import briefing

    folder = _folder(settings, "day")
    folder.mkdir(parents=True)
    first = datetime(2026, 1, 1).date()
    for i in range(205):
        path = folder / f"gridwatch-day-{first + timedelta(days=i)}-{city.geography.district.code}.pdf"
        path.write_bytes(b"%PDF")
        os.utime(path, (1_700_000_000 + i, 1_700_000_000 + i))
    rows = briefing.archived(settings)
    assert len(rows) == 200
    assert rows[0].label == str(first + timedelta(days=204)) and rows[-1].label == str(first + timedelta(days=5))


# --------------------------------------------------------------------------- the download route


def test_the_download_route_serves_the_archive_and_refuses_every_other_name(app, settings, r, engine, city, tmp_path):
    from dashboard import briefing, web

    geo = city.geography
    day = datetime.now(CITY_TZ).date() - timedelta(days=1)
    out = briefing.produce(engine, r, settings, city, "day", day, None, _folder(settings, "day"))
    name = f"gridwatch-day-{day.isoformat()}-{geo.district.code}"
    assert sorted(p.name for p in out) == [f"{name}.pdf", f"{name}.xlsx"]
    client = accounts.client(app=app)
    for fmt, mimetype, magic in (("pdf", "application/pdf", b"%PDF"), ("xlsx", XLSX, b"PK")):
        resp = client.get(f"/briefings/files/day/{name}.{fmt}")
        assert resp.status_code == 200, resp.data[:200]
        assert resp.mimetype == mimetype and resp.data.startswith(magic)
        assert resp.data == (_folder(settings, "day") / f"{name}.{fmt}").read_bytes()
        assert resp.headers["Content-Disposition"].startswith("attachment") and f"{name}.{fmt}" in \
            resp.headers["Content-Disposition"]
    # files that must never be served, whatever the name asks for
    secret = Path(settings.var_dir) / "secret.pdf"
    secret.write_bytes(b"%PDF secret")
    folder = _folder(settings, "day")
    (folder / f"{name}.pdf.claim").write_bytes(b"%PDF claim")
    (folder / ".briefing-abc.pdf").write_bytes(b"%PDF temp")
    (folder / f"{name}.PDF").write_bytes(b"%PDF upper")
    (folder / f"{name}.txt").write_bytes(b"%PDF txt")
    _folder(settings, "week").mkdir(parents=True)
    (_folder(settings, "week") / f"{name}.pdf").write_bytes(b"%PDF in the week folder")
    other_day = f"gridwatch-day-{(day - timedelta(days=3)).isoformat()}-{geo.district.code}.pdf"
    (folder / other_day).symlink_to(secret)  # a good name pointing out of the archive
    bad = [
        "/briefings/files/day/../../secret.pdf",
        "/briefings/files/day/..%2F..%2Fsecret.pdf",
        "/briefings/files/day/%2E%2E%2F%2E%2E%2Fsecret.pdf",
        "/briefings/files/day/..%5C..%5Csecret.pdf",
        f"/briefings/files/..%2Fday/{name}.pdf",
        f"/briefings/files/day/..%2Fday%2F{name}.pdf",
        f"/briefings/files/day/.%2F{name}.pdf",
        f"/briefings/files/day//{name}.pdf",
        "/briefings/files/day/" + quote(str(secret), safe=""),
        "/briefings/files/day/" + quote(str(folder / f"{name}.pdf"), safe=""),
        "/briefings/files/" + quote(str(secret), safe=""),
        f"/briefings/files/day/{name}.pdf.claim",
        "/briefings/files/day/.briefing-abc.pdf",
        f"/briefings/files/day/{name}.PDF",
        f"/briefings/files/day/{name}.txt",
        f"/briefings/files/day/{name}.pdf%00",
        f"/briefings/files/week/{name}.pdf",  # another kind's folder
        f"/briefings/files/month/{name}.pdf",
        f"/briefings/files/Day/{name}.pdf",
        f"/briefings/files/day/{other_day}",  # a symlink
        f"/briefings/files/day/gridwatch-day-{(day - timedelta(days=9)).isoformat()}-{geo.district.code}.pdf",  # none
        f"/briefings/files/day/{name}",
        "/briefings/files/day/",
        "/briefings/files/day",
        "/briefings/files/",
        "/briefings/files",
    ]
    for url in bad:
        resp = client.get(url)
        assert resp.status_code == 404, (url, resp.status_code, resp.data[:100])
        assert b"%PDF" not in resp.data, url
        assert b"no archived briefing" in resp.data or resp.data == web.NOT_FOUND.encode(), url  # the route or the edge


# --------------------------------------------------------------------------- generation jobs


def test_a_job_records_its_progress_and_ends_with_its_files_in_the_archive(app, stored, settings, r, engine, city,
                                                                           monkeypatch):
    from dashboard import briefing, briefing_jobs
    from layouts import briefings as page

    now, df = stored
    geo = city.geography
    day = _yesterday(now)
    street = geo.area(df[df["reported_at"] >= now - timedelta(days=2)]["street_code"].value_counts().index[0])
    job = briefing_jobs.new_job(r, settings, "day", day.isoformat(), street.code)
    key, state = _job_hash(r, settings, job)
    assert key.startswith(f"{settings.stream_prefix}:") and state["state"] == "queued"
    assert 0 < r.ttl(key) <= 3600
    seen = []  # the job's state in Redis as each file is being written
    for fmt in ("pdf", "xlsx"):
        real = getattr(briefing, f"write_{fmt}")

        def spy(b, path, real=real, fmt=fmt):
            seen.append((fmt, _job_hash(r, settings, job)[1]))
            return real(b, path)

        monkeypatch.setattr(briefing, f"write_{fmt}", spy)
    briefing_jobs.run_job(engine, r, settings, city, job, "day", day.isoformat(), street.code)
    assert [(f, s["state"], s["step"], float(s["share"])) for f, s in seen] == [
        ("pdf", "running", "pdf", pytest.approx(0.4)), ("xlsx", "running", "xlsx", pytest.approx(0.7))]
    _, state = _job_hash(r, settings, job)
    name = f"gridwatch-day-{day.isoformat()}-{street.code}"
    assert state["state"] == "done" and state["step"] == "done" and float(state["share"]) == 1
    assert sorted(state["files"].split(",")) == [f"{name}.pdf", f"{name}.xlsx"]
    assert _files_under(settings) == ["day", f"day/{name}.pdf", f"day/{name}.xlsx"]  # no claim, nothing aside
    assert 0 < r.ttl(key) <= 3600
    # the page: the job's downloads, and the archive listing the briefing; both links serve the files on disk
    t = page.i18n.texts("zh")
    with accounts.request(app):
        done = _json(page.status_view(briefing_jobs.job_state(r, settings, job), geo, t))
        listed = _json(page.layout(settings, city, {}))
    client = accounts.client(app=app)
    for fmt in ("pdf", "xlsx"):
        href = f"/briefings/files/day/{name}.{fmt}"
        assert f'"{href}"' in done and f'"{href}"' in listed
        assert client.get(href).data == (_folder(settings, "day") / f"{name}.{fmt}").read_bytes()
    assert street.name in done and "日报" in done and day.isoformat() in done
    assert street.name in listed


@pytest.mark.parametrize(("kind", "day", "area", "word"), [
    ("day", "2026-13-01", None, "date"),
    ("day", "21/11/2026", None, "date"),
    ("day", "", None, "date"),
    ("day", None, None, "date"),
    ("day", "tomorrow", None, "future"),
    ("week", "next week", None, "future"),
    ("day", "yesterday", "440311999", "area"),
    ("day", "yesterday", "../../etc", "area"),
    ("fortnight", "yesterday", None, "period"),
    ("../../x", "yesterday", None, "period"),
    (None, "yesterday", None, "period"),
])
def test_bad_input_ends_with_the_message_and_nothing_written(app, settings, r, engine, city, kind, day, area, word):
    from dashboard import briefing_jobs
    from layouts import briefings as page

    today = datetime.now(CITY_TZ).date()
    day = {"tomorrow": (today + timedelta(days=1)).isoformat(), "next week": (today + timedelta(days=7)).isoformat(),
           "yesterday": (today - timedelta(days=1)).isoformat()}.get(day, day)
    job = briefing_jobs.new_job(r, settings, kind, day, area)
    briefing_jobs.run_job(engine, r, settings, city, job, kind, day, area)
    _, state = _job_hash(r, settings, job)
    assert state["state"] == "failed" and state["reason"] == "input"
    assert state["message"].startswith(f"{word}:" if word != "future" else "date:") and word in state["message"]
    assert _files_under(settings) == []  # no file, no folder
    with accounts.request(app):
        shown = _json(page.status_view(briefing_jobs.job_state(r, settings, job), city.geography, page.i18n.texts("zh")))
    assert "无法生成" in shown and state["message"].replace('"', '\\"') in shown


def test_busy_a_missing_font_and_a_failure_are_said_and_leave_nothing(app, settings, r, engine, city, monkeypatch,
                                                                       caplog):
    from dashboard import briefing, briefing_jobs
    from layouts import briefings as page

    day = (datetime.now(CITY_TZ).date() - timedelta(days=1)).isoformat()
    district = city.geography.district.code
    folder = _folder(settings, "day")
    claim = folder / f"gridwatch-day-{day}-{district}.claim"
    t = page.i18n.texts("zh")

    def run() -> dict[str, str]:
        job = briefing_jobs.new_job(r, settings, "day", day, district)
        briefing_jobs.run_job(engine, r, settings, city, job, "day", day, district)
        return briefing_jobs.job_state(r, settings, job)

    # the same briefing being written by another request: it holds the claim (a lock on the claim file)
    import fcntl

    folder.mkdir(parents=True)
    with open(claim, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        state = run()
        assert state["state"] == "busy"
        assert _files_under(settings) == ["day", f"day/{claim.name}"]  # nothing but the other request's claim
        assert t["br_busy"] in _json(page.status_view(state, city.geography, t))
        claim.unlink()

    def no_font(b, path):
        raise briefing.FontMissing("no Chinese font is installed, so the PDF would print boxes; install one, e.g. "
                                   "`apt-get install fonts-noto-cjk` (Debian), and generate the briefing again")

    monkeypatch.setattr(briefing, "write_pdf", no_font)
    state = run()
    assert state["state"] == "failed" and state["reason"] == "font" and "fonts-noto-cjk" in state["message"]
    assert _files_under(settings) == ["day"]
    assert t["br_no_font"] in _json(page.status_view(state, city.geography, t))
    monkeypatch.undo()

    def broken(b, path):
        raise OSError("disk full")

    monkeypatch.setattr(briefing, "write_xlsx", broken)
    with caplog.at_level("ERROR"):
        state = run()
    assert state["state"] == "failed" and state["reason"] == "error" and state["message"] == "OSError: disk full"
    assert "disk full" in caplog.text
    assert _files_under(settings) == ["day"]  # not even the PDF written before
    shown = _json(page.status_view(state, city.geography, t))
    assert t["br_failed"] in shown and "disk full" in shown and "Traceback" not in shown
    assert briefing_jobs.job_state(r, settings, "0" * 32) is None and briefing_jobs.job_state(r, settings, "../x") is None


def test_the_router_draws_the_page_and_the_drill_down_links_to_it(app, settings, city):
    from app import page_of, page_title
    from layouts import drill

    assert page_of("/briefings") == page_of("/briefings/") == "briefings"
    assert page_title("briefings", {}) == "简报中心" and page_title("briefings", {"lang": "en"}) == "Briefings"
    with accounts.request(app):
        assert '"/briefings"' in _json(drill.layout(settings, city, {}))
        assert '"/briefings?lang=en"' in _json(drill.layout(settings, city, {"lang": "en"}))


# --------------------------------------------------------------------------- in a real browser


@pytest.fixture
def server(stored, settings, engine, r, city):
    srv = LiveServer(settings, engine, r, city)
    srv.start()
    yield srv
    srv.close()


STATE = """
const s = document.getElementById('br-status');
const rows = [...document.querySelectorAll('#br-archive tbody tr')];
return {state: s && s.firstElementChild ? s.firstElementChild.dataset.state || '' : '',
        text: s ? s.innerText : '',
        pdf: [...document.querySelectorAll('#br-status a[data-format="pdf"]')].map(a => a.getAttribute('href')),
        xlsx: [...document.querySelectorAll('#br-status a[data-format="xlsx"]')].map(a => a.getAttribute('href')),
        rows: rows.map(r => [r.dataset.kind, r.dataset.label, r.dataset.area]),
        button: (document.getElementById('br-go') || {}).disabled};
"""


def _type_date(browser, value: str):
    from selenium.webdriver.common.keys import Keys

    box = browser.find_element("css selector", "input#br-date")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(value)
    box.send_keys(Keys.TAB)


def test_generating_a_streets_daily_briefing_in_the_browser(server, browser, stored, settings, engine, r, city):

    from dashboard import briefing

    now, _ = stored
    geo = city.geography
    day = _yesterday(now)
    street = geo.areas("street")[0]
    # a few briefings archived before: the district's last week and month
    for kind, when in (("week", day - timedelta(days=7)), ("month", day.replace(day=1) - timedelta(days=1))):
        briefing.produce(engine, r, settings, city, kind, when, None, _folder(settings, kind))
    size(browser, 1920, 1080)
    server.open(browser, "/briefings")
    assert wait(lambda: js(browser, "return document.getElementById('br-go') !== null"))
    assert wait(lambda: len(js(browser, STATE)["rows"]) == 2), js(browser, STATE)
    _type_date(browser, day.isoformat())
    browser.find_element("xpath", "//*[@id='br-kind']//label[normalize-space()='日报']").click()
    browser.find_element("id", "br-area").click()
    option = wait(lambda: [o for o in browser.find_elements("css selector", ".dash-dropdown-option")
                           if o.text.strip() == street.name])
    assert option, "the area dropdown shows no option " + street.name
    option[0].click()
    assert wait(lambda: street.name in browser.find_element("id", "br-area").text)
    browser.find_element("id", "br-go").click()
    done = wait(lambda: (s := js(browser, STATE))["pdf"] and s, timeout=120)
    assert done, js(browser, STATE)
    name = f"gridwatch-day-{day.isoformat()}-{street.code}"
    assert done["pdf"] == [f"/briefings/files/day/{name}.pdf"] and done["xlsx"] == [f"/briefings/files/day/{name}.xlsx"]
    resp = server.http().get(server.url + done["pdf"][0], timeout=30)
    assert resp.status_code == 200 and resp.content.startswith(b"%PDF")
    assert resp.headers["Content-Type"] == "application/pdf" and "attachment" in resp.headers["Content-Disposition"]
    assert resp.content == (_folder(settings, "day") / f"{name}.pdf").read_bytes()
    listed = wait(lambda: ["day", day.isoformat(), street.code] in (s := js(browser, STATE))["rows"] and s)
    assert listed and listed["rows"][0] == ["day", day.isoformat(), street.code]  # the newest first
    assert not listed["button"]
    shot(browser, "briefings.png")
    # a date in the future: the message names the date and why
    _type_date(browser, (datetime.now(CITY_TZ).date() + timedelta(days=3)).isoformat())
    browser.find_element("id", "br-go").click()
    failed = wait(lambda: (s := js(browser, STATE))["state"] == "failed" and s, timeout=60)
    assert failed and "future" in failed["text"] and "无法生成" in failed["text"], js(browser, STATE)
    assert "Traceback" not in browser.page_source
    shot(browser, "briefings-bad-date.png")
    assert sorted(p.name for p in _folder(settings, "day").iterdir()) == [f"{name}.pdf", f"{name}.xlsx"]
    assert errors(browser) == []
