"""Briefings: the XLSX against the API for the same area and period, a few figures recomputed with pandas, the
command line's errors, the archive (once per period, nothing partial), and the PDF rendered back to pictures
(pdftoppm: no blank page) and to text (pdftotext: the Chinese headings, page numbers, the API's figures)."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from core.records import CITY_TZ
from ingest.worker import Worker
from store.streams import Producer
from tests import accounts
from tests.checks import needs_poppler, pdf_text
from tests.drill_dataset import OPEN


def _sheet(wb, name) -> list[list]:
    return [list(row) for row in wb[name].iter_rows(values_only=True)]


def test_the_spreadsheet_equals_the_api_and_a_pandas_recount(app_settings, stored, settings, r, engine, city, tmp_path):
    from openpyxl import load_workbook

    from dashboard import briefing

    now, df = stored
    yesterday = (now.astimezone(CITY_TZ) - timedelta(days=1)).date()
    day0 = datetime(yesterday.year, yesterday.month, yesterday.day, tzinfo=CITY_TZ)
    that_day = df[(df["reported_at"] >= day0) & (df["reported_at"] < day0 + timedelta(days=1))]
    street = city.geography.area(that_day["street_code"].value_counts().index[0])  # the busiest street that day
    b = briefing.build(engine, r, settings, city, "day", yesterday, street.code, now=now)
    path = briefing.write_xlsx(b, tmp_path / f"{briefing.file_name(b)}.xlsx")
    wb = load_workbook(path)
    # every headline figure equals the API's for the same area and day (and the day before)
    client = accounts.client(settings)
    api = orjson.loads(client.get(f"/api/v1/kpis?area={street.code}&since={yesterday.isoformat()}"
                                  f"&until={(yesterday + timedelta(days=1)).isoformat()}").data)
    rows = _sheet(wb, "核心指标")
    assert rows[0][:3] == ["指标", "本期", "上期"]
    for h, row in zip(b.headline, rows[1:], strict=True):
        assert row[1] == pytest.approx(api["kpis"][h["key"]]) if api["kpis"][h["key"]] is not None else row[1] is None
        prev = api["previous"]["kpis"][h["key"]]
        assert row[2] == pytest.approx(prev) if prev is not None else row[2] is None
    # pandas: the day's cases of the street, by source
    sel = df[(df["street_code"] == street.code) & (df["reported_at"] >= day0) & (df["reported_at"] < day0 + timedelta(days=1))]
    assert rows[1][1] == len(sel) >= 2
    assert {s[0]: s[2] for s in _sheet(wb, "分来源")[1:]} == sel["source"].value_counts().to_dict()
    by_community = sel.groupby("community_code").size().to_dict()
    assert {a[0]: a[2] for a in _sheet(wb, "分区域")[1:] if a[2]} == by_community
    # the overdue list: open cases of the street past their deadline at the end of the day
    end = day0 + timedelta(days=1)
    late = df[(df["street_code"] == street.code) & df["status"].isin(OPEN) & (df["due_at"] < end) & (df["reported_at"] < end)]
    assert len(late) >= 1
    assert sorted(o[0] for o in _sheet(wb, "超期未办结")[1:]) == sorted(late["id"].head(briefing.LIST_SIZE))
    ws = wb["超期未办结"]
    assert ws.freeze_panes == "A2"
    if ws.max_row > 1:
        assert ws.cell(2, 6).number_format == "yyyy-mm-dd hh:mm" and isinstance(ws.cell(2, 6).value, datetime)
    assert wb["核心指标"].cell(3, 2).number_format in ("#,##0", "0.0%")


@pytest.fixture
def app_settings(settings):
    return settings


@pytest.mark.parametrize(("args", "message"), [
    (["--date", "2026-13-01"], "--date"),
    (["--date", "2026-11-21", "--period", "fortnight"], "--period"),
    (["--date", "2026-11-21", "--area", "440311999"], "--area"),
    (["--date", "2099-01-01"], "--date: 2099-01-01 is in the future"),
    (["--date", "2026-11-21", "--format", "docx"], "--format"),
])
def test_the_command_line_refuses_bad_input(settings, args, message, tmp_path, capsys, monkeypatch):
    from dashboard import briefing

    for k, v in {"REDIS_URL": settings.redis_url, "DATABASE_URL": settings.database_url,
                 "STREAM_PREFIX": settings.stream_prefix, "VAR_DIR": str(settings.var_dir)}.items():
        if v:
            monkeypatch.setenv(k, str(v))
    from config.settings import get_settings

    out = tmp_path / "out"
    get_settings.cache_clear()  # the command reads its settings from the environment
    try:
        code = briefing.main([*args, "--out", str(out)])
    finally:
        get_settings.cache_clear()
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # nothing written


def test_a_failed_write_leaves_no_partial_file(stored, settings, r, engine, city, tmp_path):
    from dashboard import briefing

    now, _ = stored
    b = briefing.build(engine, r, settings, city, "week", now.astimezone(CITY_TZ).date(), None, now=now)
    folder = tmp_path / "archive"
    target = folder / "out.xlsx"
    target.mkdir(parents=True)  # the rename cannot replace a folder
    with pytest.raises(OSError):
        briefing.write_xlsx(b, target)
    assert [p.name for p in folder.iterdir()] == ["out.xlsx"] and target.is_dir()  # no partial file beside it
    assert not any(Path(folder).glob(".briefing-*"))


def test_what_the_schedule_archives_on_which_day():
    from datetime import date

    from dashboard import briefing

    monday, tuesday, first = date(2026, 11, 23), date(2026, 11, 24), date(2026, 12, 1)
    assert briefing.due("day", tuesday) == date(2026, 11, 23)
    assert briefing.due("week", monday) == date(2026, 11, 16) and briefing.due("week", tuesday) is None
    assert briefing.due("month", first) == date(2026, 11, 30) and briefing.due("month", tuesday) is None
    assert briefing.period_of("week", briefing.due("week", monday)).label == "2026-W47"  # Mon 16 – Sun 22 Nov


def test_the_archive_writes_each_period_once_even_with_several_processes(stored, settings, r, engine, city):
    import threading

    from dashboard import briefing

    now, _ = stored
    results, barrier = [], threading.Barrier(3)

    def run():
        barrier.wait()
        results.append(briefing.archive(settings, "day", now, engine=engine, r=r, city=city))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    written = [p for p in results if p is not None]
    folder = Path(settings.var_dir) / "briefings" / "day"
    assert len(written) == 1  # one process wrote; the others skipped
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in written[0])  # its files, no claim
    yesterday = (now.astimezone(CITY_TZ) - timedelta(days=1)).date()
    name = f"gridwatch-day-{yesterday.isoformat()}-{city.geography.district.code}"
    assert sorted(p.name for p in written[0]) == [f"{name}.pdf", f"{name}.xlsx"]
    assert briefing.archive(settings, "day", now, engine=engine, r=r, city=city) is None  # already archived


def test_a_failed_archive_run_is_logged_leaves_nothing_and_the_next_run_works(stored, settings, r, engine, city,
                                                                              monkeypatch, caplog):
    from dashboard import briefing

    now, _ = stored
    real = briefing.write_xlsx

    def broken(b, path):
        raise OSError("disk full")

    monkeypatch.setattr(briefing, "write_xlsx", broken)
    with caplog.at_level("ERROR"):
        assert briefing.archive(settings, "day", now, engine=engine, r=r, city=city) is None
    assert "disk full" in caplog.text
    folder = Path(settings.var_dir) / "briefings" / "day"
    assert list(folder.iterdir()) == []  # no partial file (not even the PDF written before), no claim left behind
    monkeypatch.setattr(briefing, "write_xlsx", real)
    assert briefing.archive(settings, "day", now, engine=engine, r=r, city=city) is not None


def test_the_scheduler_runs_the_briefings_at_the_configured_time(settings):
    from ingest.scheduler import build

    sched = build(settings.model_copy(update={"briefing_time": "06:45"}))
    jobs = {j.id: j for j in sched.get_jobs()}
    for kind in ("day", "week", "month"):
        trigger = str(jobs[f"briefing_{kind}"].trigger)
        assert "hour='6'" in trigger and "minute='45'" in trigger


# --------------------------------------------------------------------------- the PDF

def _pages(path: Path) -> int:
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"^Pages:\s+(\d+)", info, re.M).group(1))


def _ink(png: Path) -> float:
    """The share of a page's pixels that are not white."""
    from PIL import Image

    im = Image.open(png).convert("L")
    hist = im.histogram()
    return 1 - sum(hist[245:]) / (im.width * im.height)


@needs_poppler
@pytest.mark.parametrize("kind", ["day", "week", "month"])
def test_the_pdf_renders_every_page_with_its_chinese_headings_and_the_apis_figures(stored, settings, r, engine, city,
                                                                                   tmp_path, kind):
    import yaml

    from dashboard import briefing

    now, df = stored
    rules = yaml.safe_load(Path(settings.rankings_file).read_text(encoding="utf-8"))
    (tmp_path / "rankings.yaml").write_text(yaml.safe_dump({**rules, "min_volume": 1}), encoding="utf-8")
    settings = settings.model_copy(update={"rankings_file": tmp_path / "rankings.yaml"})  # few cases: rank them all
    yesterday = (now.astimezone(CITY_TZ) - timedelta(days=1)).date()
    pdf, xlsx = briefing.produce(engine, r, settings, city, kind, yesterday, None, tmp_path, now=now)
    assert pdf.suffix == ".pdf" and xlsx.suffix == ".xlsx" and pdf.read_bytes()[:5] == b"%PDF-"
    n = _pages(pdf)
    assert n >= 2
    # every page rendered (pdftoppm) carries ink: no blank page
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(pdf), str(tmp_path / "page")], check=True)
    pngs = sorted(tmp_path.glob("page-*.png"))
    assert len(pngs) == n
    assert all(_ink(p) > 0.01 for p in pngs), [round(_ink(p), 4) for p in pngs]
    # the font is embedded (pdffonts: a CJK font, "emb" yes) and the Chinese headings come back as text
    fonts = subprocess.run(["pdffonts", str(pdf)], capture_output=True, text=True, check=True).stdout
    cjk = [ln for ln in fonts.splitlines() if "CJK" in ln]
    assert cjk and all(" yes " in ln for ln in cjk), fonts
    text = pdf_text(pdf)
    title = {"day": "每日简报", "week": "周通报", "month": "月评估"}[kind]
    assert f"{city.geography.district.name}{title}" in text
    for heading in ("一、核心指标", "二、案件分布", "三、超期未办结案件", "五、风险热点", "六、重点案件", "“六个第一”时效"):
        assert heading in text, heading
    assert ("四、部门排名" if kind == "day" else "四、部门考核") in text
    # page numbers on every page, the time it was generated (city time) in the first page's header block
    for i in range(1, n + 1):
        assert f"第{i}页/共{n}页" in re.sub(r"\s+", "", pdf_text(pdf, i))
    assert f"生成于 {now.astimezone(CITY_TZ):%Y-%m-%d %H:%M}" in pdf_text(pdf, 1)
    # the headline row of the case count shows the API's figure for the same period
    p = briefing.period_of(kind, yesterday)
    client = accounts.client(settings)
    api = orjson.loads(client.get(f"/api/v1/kpis?since={p.since.date().isoformat()}"
                                  f"&until={p.until.date().isoformat()}").data)
    row = next(ln for ln in text.splitlines() if ln.strip().startswith("案件总数"))
    assert row.split()[1] == f"{api['kpis']['cases_total']:,}"
    since, until = p.since, p.until
    assert api["kpis"]["cases_total"] == int(((df["reported_at"] >= since) & (df["reported_at"] < until)).sum())
    if kind != "day":  # the assessment: every ranking metric defined, with the weights of config/rankings.yaml
        from core.rankings import DEFINITIONS

        assert "考核指标口径" in text and "综合得分走势" in text
        flat = re.sub(r"\s+", "", text)
        weights = rules["weights"]
        for key, d in DEFINITIONS.items():
            assert re.sub(r"\s+", "", d["zh"]) in flat, key
            if key in weights:
                assert f"{d['zh']}{d['definition_zh']}（权重{100 * weights[key]:.1f}%）".replace(" ", "") in flat, key


@needs_poppler
def test_hostile_titles_print_as_text_in_the_pdf(settings, r, engine, city, tmp_path):
    from dashboard import briefing

    now = datetime.now(UTC).replace(microsecond=0)
    g = city.geography.areas("grid")[0]
    cat = next(c for c in city.categories.values() if not c.sensor_only)
    hostile = '<img src=x onerror=alert(1)></td>&amp; {{ 7*7 }} 标题'
    at = now - timedelta(hours=1)
    Producer(r, settings, source="t").cases([{
        "source": "patrol", "external_id": "x1", "event": "report", "occurred_at": at.isoformat(),
        "category": cat.code, "title": hostile, "grid_code": g.code, "grade": 4}])
    w = Worker(city, settings, engine, r, name="hostile")
    while w.run_once(100):
        pass
    # the briefing of the case's own city day (an hour ago is yesterday just after midnight)
    pdf, _ = briefing.produce(engine, r, settings, city, "day", at.astimezone(CITY_TZ).date(), None, tmp_path, now=now)
    flat = re.sub(r"\s+", "", pdf_text(pdf, mode="-raw"))
    assert re.sub(r"\s+", "", hostile) in flat  # printed as written: neither markup nor a template expression
    assert "49标题" not in flat


def test_without_a_chinese_font_the_pdf_is_refused_with_the_package_to_install(stored, settings, r, engine, city,
                                                                                tmp_path, monkeypatch, capsys):
    from dashboard import briefing, briefing_pdf

    now, _ = stored
    real_run = briefing_pdf.subprocess.run

    def no_cjk(cmd, *a, **kw):  # fontconfig answers as on a machine without a Chinese font
        if cmd[0] == "fc-list":
            return subprocess.CompletedProcess(cmd, 0, stdout="DejaVu Sans\n", stderr="")
        return real_run(cmd, *a, **kw)

    monkeypatch.setattr(briefing_pdf.subprocess, "run", no_cjk)
    briefing_pdf.cjk_family.cache_clear()
    try:
        with pytest.raises(briefing.FontMissing, match="fonts-noto-cjk"):
            briefing.produce(engine, r, settings, city, "day", now.astimezone(CITY_TZ).date(), None, tmp_path / "out",
                             now=now)
        assert [p.name for p in (tmp_path / "out").iterdir()] == []  # not even the spreadsheet: nothing partial
    finally:
        briefing_pdf.cjk_family.cache_clear()


@needs_poppler
def test_a_street_leader_gets_the_briefing_of_their_street_alone(stored, settings, r, engine, city, tmp_path):
    from dashboard import briefing

    now, df = stored
    yesterday = (now.astimezone(CITY_TZ) - timedelta(days=1)).date()
    street = city.geography.area(df["street_code"].value_counts().index[0])
    others = [s.name for s in city.geography.areas("street") if s.code != street.code]
    pdf, _ = briefing.produce(engine, r, settings, city, "week", yesterday, street.code, tmp_path, now=now)
    assert pdf.name == f"gridwatch-week-{briefing.period_of('week', yesterday).label}-{street.code}.pdf"
    text = pdf_text(pdf)
    assert f"{street.name}周通报" in text and "按社区" in text
    communities = [c.name for c in city.geography.children(street.code)]
    assert all(c in text for c in communities)
    # the area table lists this street's communities, not the other streets
    table = text[text.index("按社区"):text.index("按大类")]
    assert not any(o in table for o in others)
    p = briefing.period_of("week", yesterday)
    sel = df[(df["street_code"] == street.code) & (df["reported_at"] >= p.since) & (df["reported_at"] < p.until)]
    row = next(ln for ln in text.splitlines() if ln.strip().startswith("案件总数"))
    assert row.split()[1] == f"{len(sel):,}"


def test_the_weekly_spreadsheets_assessment_and_history_equal_the_api(stored, settings, r, engine, city, tmp_path):
    import yaml
    from openpyxl import load_workbook

    from dashboard import briefing

    now, df = stored
    rules = yaml.safe_load(Path(settings.rankings_file).read_text(encoding="utf-8"))
    (tmp_path / "rankings.yaml").write_text(yaml.safe_dump({**rules, "min_volume": 1}), encoding="utf-8")
    settings = settings.model_copy(update={"rankings_file": tmp_path / "rankings.yaml"})
    day = now.astimezone(CITY_TZ).date() - timedelta(days=1)
    (xlsx,) = briefing.produce(engine, r, settings, city, "week", day, None, tmp_path, now=now, formats=("xlsx",))
    wb = load_workbook(xlsx)
    client = accounts.client(settings)
    api = orjson.loads(client.get(f"/api/v1/rankings?period=week&date={day.isoformat()}").data)
    sheet = _sheet(wb, "部门排名")
    head = sheet[0]
    by_name = {row[head.index("部门")]: row for row in sheet[1:]}
    assert set(by_name) == {d["name"] for d in api["departments"]}
    ranked = 0
    for d in api["departments"]:
        row = by_name[d["name"]]
        for col, key in (("名次", "rank"), ("上期名次", "previous_rank"), ("名次变化", "rank_change"), ("受理", "received"),
                         ("超期在办", "overdue_open")):
            assert row[head.index(col)] == d[key], (d["name"], col)
        for col, key in (("综合得分", "score"), ("按时签收率", "accepted_on_time_rate"),
                         ("按期办结率", "resolved_on_time_rate"), ("按时报到率", "whistle_on_time_rate"),
                         ("满意率", "satisfaction")):
            assert row[head.index(col)] == (pytest.approx(d[key]) if d[key] is not None else None), (d["name"], col)
        ranked += d["rank"] is not None
        if d["department"] in api["red_list"]:
            assert row[head.index("说明")] == "红榜"
    assert ranked >= 2
    # the last six weeks: each row equals /api/v1/kpis for that week
    weeks = _sheet(wb, "近期走势")[1:]
    assert len(weeks) == briefing.HISTORY and weeks[-1][0] == briefing.period_of("week", day).label
    p = briefing.period_of("week", day)
    for row in reversed(weeks):
        k = orjson.loads(client.get(f"/api/v1/kpis?since={p.since.date().isoformat()}"
                                    f"&until={p.until.date().isoformat()}").data)["kpis"]
        assert row[0] == p.label and row[1] == k["cases_total"] and row[2] == k["resolved"]
        assert row[4] == (pytest.approx(k["on_time_rate"]) if k["on_time_rate"] is not None else None)
        p = p.previous(CITY_TZ)
    # the daily trend: per local day, recounted with pandas
    trend = {row[0]: row[1] for row in _sheet(wb, "走势")[1:]}
    p = briefing.period_of("week", day)
    sel = df[(df["reported_at"] >= p.since) & (df["reported_at"] < p.until)]
    counts = sel["reported_at"].dt.tz_convert(CITY_TZ).dt.strftime("%Y-%m-%d").value_counts().to_dict()
    assert {k: v for k, v in trend.items() if v} == counts and len(trend) == 7
    # the definitions sheet names every ranking metric with its weight
    defs = {row[0]: row for row in _sheet(wb, "考核口径")[1:]}
    from core.rankings import DEFINITIONS

    assert set(defs) == {d["zh"] for d in DEFINITIONS.values()}
    for key, w in rules["weights"].items():
        assert defs[DEFINITIONS[key]["zh"]][2] == pytest.approx(w)
