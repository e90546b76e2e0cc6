"""Briefings (issue 7, first step: the content and the spreadsheet): the XLSX against the API for the same area and
period, a few figures recomputed with pandas, and the command line's errors."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest

from tests.test_drill import OPEN, TZ, store_dataset


@pytest.fixture
def stored(settings, r, engine, city):
    return store_dataset(settings, r, engine, city)


def _sheet(wb, name) -> list[list]:
    return [list(row) for row in wb[name].iter_rows(values_only=True)]


def test_the_spreadsheet_equals_the_api_and_a_pandas_recount(app_settings, stored, settings, r, engine, city, tmp_path):
    from openpyxl import load_workbook

    from app import create_app
    from dashboard import briefing

    now, df = stored
    yesterday = (now.astimezone(TZ) - timedelta(days=1)).date()
    day0 = datetime(yesterday.year, yesterday.month, yesterday.day, tzinfo=TZ)
    that_day = df[(df["reported_at"] >= day0) & (df["reported_at"] < day0 + timedelta(days=1))]
    street = city.geography.area(that_day["street_code"].value_counts().index[0])  # the busiest street that day
    b = briefing.build(engine, r, settings, city, "day", yesterday, street.code, now=now)
    path = briefing.write_xlsx(b, tmp_path / f"{briefing.file_name(b)}.xlsx")
    wb = load_workbook(path)
    # every headline figure equals the API's for the same area and day (and the day before)
    client = create_app(settings).server.test_client()
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
    (["--date", "2026-11-21", "--period", "fortnight"], "period"),
    (["--date", "2026-11-21", "--area", "440311999"], "area"),
    (["--date", "2099-01-01"], "future"),
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
    b = briefing.build(engine, r, settings, city, "week", now.astimezone(TZ).date(), None, now=now)
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
    yesterday = (now.astimezone(TZ) - timedelta(days=1)).date()
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
