"""The briefing as a spreadsheet: one sheet per table, real numbers, percentages and dates, frozen header rows and
widths that fit. Everything shown comes from the Briefing; dashboard.briefing.write_xlsx writes the file aside."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from core.cells import neutralise
from core.rankings import DEFINITIONS as RANKING_DEFINITIONS
from core.records import CITY_TZ

if TYPE_CHECKING:
    from openpyxl import Workbook

    from dashboard.briefing_model import Briefing

DATE_TIME = "yyyy-mm-dd hh:mm"


def workbook(b: Briefing) -> Workbook:
    """The briefing's workbook, its sheets in the order a reader goes through them."""
    from openpyxl import Workbook

    wb = Workbook()
    wb.remove(wb.active)
    _figures(wb, b)
    _counts(wb, b)
    _ranking(wb, b)
    _trends(wb, b)
    _sheet(wb, "高风险网格", ["编码", "网格", "街道", "风险分", "等级"],
           [[h["code"], h["name"], h["street"], h["score"], h["level"]] for h in b.hottest], {4: "0.0"})
    _sheet(wb, "重点案件", ["编号", "标题", "等级", "小类", "状态", "网格", "上报时间"],
           [[n["id"], n["title"], n["grade"], n["category"], n["status"], n["grid"], _local(n["reported_at"])]
            for n in b.notable], {7: DATE_TIME})
    return wb


def _sheet(wb, title: str, head: list[str], rows: list[list[Any]], formats: dict[int, str] | None = None):
    """A sheet with a bold, frozen header row, the rows (formulas neutralised), column formats and fitting widths."""
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    ws = wb.create_sheet(title)
    ws.append(head)
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for row in rows:
        ws.append([neutralise(v) for v in row])  # a title such as "=HYPERLINK(...)" stays text
    for col, fmt in (formats or {}).items():
        for (cell,) in ws.iter_rows(min_row=2, min_col=col, max_col=col):
            cell.number_format = fmt
    ws.freeze_panes = "A2"
    for i, _ in enumerate(head, start=1):
        width = max((len(str(c.value)) * (2 if any(ord(ch) > 0x2E80 for ch in str(c.value)) else 1)
                     for c in ws[get_column_letter(i)] if c.value is not None), default=6)
        ws.column_dimensions[get_column_letter(i)].width = min(60, max(8, width + 2))
    return ws


def _local(t: datetime | None):
    return None if t is None else t.astimezone(CITY_TZ).replace(tzinfo=None)


def _format_of(unit: str) -> str:
    return {"share": "0.0%", "seconds": "0", "cases": "#,##0"}.get(unit, "0.00")


def _figures(wb, b: Briefing) -> None:
    """The headline figures (each row in its unit's format) and the first moments."""
    head = ["指标", "本期", "上期"] + (["上周同期"] if any("week_before" in h for h in b.headline) else [])
    ws = _sheet(wb, "核心指标", head, [[h["figure"], h["value"], h["previous"]]
                                     + ([h["week_before"]] if "week_before" in h else []) for h in b.headline])
    for i, h in enumerate(b.headline, start=2):
        for col in range(2, len(head) + 1):
            ws.cell(i, col).number_format = _format_of(h["unit"])
    _sheet(wb, "首环节时效", ["环节", "平均用时（秒）"], [[m["figure"], m["value"]] for m in b.moments], {2: "#,##0"})


def _counts(wb, b: Briefing) -> None:
    """The cases by area (when the area has parts), by category group and by source; the overdue list."""
    if b.by_area:
        _sheet(wb, "分区域", ["编码", "区域", "案件数", "在办"],
               [[a["code"], a["name"], a["cases"], a["open"]] for a in b.by_area], {3: "#,##0", 4: "#,##0"})
    _sheet(wb, "分大类", ["编码", "大类", "案件数"], [[c["code"], c["name"], c["cases"]] for c in b.by_category],
           {3: "#,##0"})
    _sheet(wb, "分来源", ["来源", "名称", "案件数"], [[s["code"], s["name"], s["cases"]] for s in b.by_source],
           {3: "#,##0"})
    _sheet(wb, "超期未办结", ["编号", "标题", "等级", "网格", "责任部门", "上报时间", "办理时限", "超期（小时）"],
           [[o["id"], o["title"], o["grade"], o["grid"], o["departments"], _local(o["reported_at"]),
             _local(o["due_at"]), o["late_h"]] for o in b.overdue], {6: DATE_TIME, 7: DATE_TIME, 8: "0.0"})


def _ranking(wb, b: Briefing) -> None:
    """The department ranking with the red and black lists; for weeks and months also how each figure is judged."""
    short = f"不足{b.ranking.get('min_volume', 0)}件，不排名"

    def note(d: dict[str, Any]) -> str:
        if d["department"] in b.ranking["red"]:
            return "红榜"
        if d["department"] in b.ranking["black"]:
            return "黑榜"
        return "" if d["ranked"] else short

    _sheet(wb, "部门排名", ["名次", "部门", "综合得分", "上期名次", "名次变化", "受理", "按时签收率", "按期办结率",
                           "超期在办", "按时报到率", "满意率", "说明"],
           [[d["rank"], d["name"], d["score"], d.get("previous_rank"), d["rank_change"], d["received"],
             d["accepted_on_time_rate"], d["resolved_on_time_rate"], d["overdue_open"], d["whistle_on_time_rate"],
             d["satisfaction"], note(d)] for d in b.ranking.get("rows", [])],
           {3: "0.0", 6: "#,##0", 7: "0.0%", 8: "0.0%", 9: "#,##0", 10: "0.0%", 11: "0.0%"})
    if b.kind != "day":
        weights = b.ranking.get("weights", {})
        _sheet(wb, "考核口径", ["指标", "口径", "权重", "较好"],
               [[d["zh"], d.get("definition_zh") or d["definition"], weights.get(k),
                 {"higher": "越高越好", "lower": "越低越好"}.get(d.get("better"), "")]
                for k, d in RANKING_DEFINITIONS.items()], {3: "0%"})


def _trends(wb, b: Briefing) -> None:
    """The period's trend against the period before; for weeks and months the recent periods and the scores."""
    label = "时段" if b.kind == "day" else "日期"
    _sheet(wb, "走势", [label, "本期案件数", "上期案件数"],
           [[lb, c, p] for lb, c, p in zip(b.trend.get("labels", []), b.trend.get("current", []),
                                           b.trend.get("previous", []), strict=True)], {2: "#,##0", 3: "#,##0"})
    if b.history:
        _sheet(wb, "近期走势", ["期间", "案件数", "办结数", "办结率", "按期办结率", "满意率"],
               [[h["label"], h["cases_total"], h["resolved"], h["resolution_rate"], h["on_time_rate"],
                 h["satisfaction"]] for h in b.history], {2: "#,##0", 3: "#,##0", 4: "0.0%", 5: "0.0%", 6: "0.0%"})
    if b.score_history.get("series"):
        labels = b.score_history["labels"]
        _sheet(wb, "得分走势", ["部门", *labels],
               [[name, *scores] for name, scores in b.score_history["series"].items()],
               dict.fromkeys(range(2, len(labels) + 2), "0.0"))
