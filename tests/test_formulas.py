"""Formula injection: text a spreadsheet would run as a formula comes out of every CSV and XLSX as text (a single
quote in front, the OWASP rule), while numbers stay numbers. Read back with openpyxl and the csv module."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import orjson

from store.streams import Producer
from tests import accounts
from tests.pushed import drain, report

HOSTILE = ['=HYPERLINK("http://x","y")', "=cmd|' /C calc'!A0", "+SUM(1,1)", "-1+1", "@SUM(1,1)", "\tTAB(1)",
           "\rCR(1)"]
HARMLESS = ["路灯不亮 =1", "'already quoted", "1+1"]


def test_the_rule():
    from core.cells import neutralise

    for title in HOSTILE:
        assert neutralise(title) == "'" + title
    for value in [*HARMLESS, "", None, -1, -2.5, 0, 7]:
        assert neutralise(value) == value


def test_the_cases_csv_holds_no_live_formula(settings, r, engine, city):
    titles = HOSTILE + HARMLESS
    Producer(r, settings, source="test").cases(
        [orjson.dumps(report(f"f{i}", city, source="test", title=t)) for i, t in enumerate(titles)])
    drain(city, settings, engine, r)
    text_ = accounts.client(settings).get("/api/v1/cases.csv").get_data(as_text=True).lstrip("\ufeff")
    got = {row["external_id"]: row for row in csv.DictReader(io.StringIO(text_, newline=""))}
    assert len(got) == len(titles)
    for i, t in enumerate(titles):
        t = t.strip()  # the record parser trims a title
        want = "'" + t if t[0] in "=+-@\t\r" else t
        assert got[f"f{i}"]["title"] == want, t
    for row in got.values():  # nothing a spreadsheet would evaluate, in any column
        assert not any(v.startswith(("=", "+", "-", "@", "\t", "\r")) for v in row.values() if v), row


def test_the_briefing_xlsx_holds_no_live_formula(tmp_path):
    from openpyxl import load_workbook

    from dashboard import briefing

    now = datetime(2026, 11, 22, 1, tzinfo=UTC)
    b = briefing.Briefing(kind="day", label="2026-11-21", area={"code": "440311", "name": "测试区"},
                          since=now - timedelta(days=1), until=now, generated_at=now, as_of=now,
                          headline=[{"key": "k", "figure": "变化", "value": -3, "previous": -1.5, "unit": "cases"}])
    b.overdue = [{"id": f"c{i}", "title": t, "grade": 1, "grid": "g", "departments": "-部门",
                  "reported_at": now - timedelta(days=2), "due_at": now - timedelta(days=1), "late_h": -2.5}
                 for i, t in enumerate(HOSTILE + HARMLESS)]
    wb = load_workbook(briefing.write_xlsx(b, tmp_path / "b.xlsx"))
    ws = wb["超期未办结"]
    for row, o in zip(ws.iter_rows(min_row=2), b.overdue, strict=True):
        title = row[1]
        assert title.data_type == "s", o["title"]  # text, never a formula ("f")
        want = "'" + o["title"] if o["title"][0] in "=+-@\t\r" else o["title"]
        assert title.value == want.replace("\r", "\n")  # XML keeps no bare CR
        assert row[4].value == "'-部门"
        assert row[7].value == -2.5 and row[7].data_type == "n"  # a negative number stays a number
    head = wb["核心指标"]
    assert head.cell(2, 2).value == -3 and head.cell(2, 2).data_type == "n"
    assert head.cell(2, 3).value == -1.5 and head.cell(2, 3).data_type == "n"
    for sheet in wb.worksheets:
        assert not any(c.data_type == "f" for r in sheet.iter_rows() for c in r)
