"""The briefing as a PDF: A4, an embedded CJK font, charts, page numbers and the time it was generated.

HTML (templates/briefing.html) laid out by WeasyPrint; the charts are matplotlib SVG with their text left as text, set
in the same font and searchable. Without a Chinese font (fontconfig; Debian: fonts-noto-cjk) the PDF is refused with
a message naming the package. Nothing is read here: everything shown comes from the Briefing.
"""

from __future__ import annotations

import functools
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.rankings import DEFINITIONS
from core.records import CITY_TZ
from core.risk import RISK_LEVELS

if TYPE_CHECKING:
    from dashboard.briefing_model import Briefing


class FontMissing(RuntimeError):
    """No font with Chinese glyphs is installed, so no PDF can be laid out (the message names the package)."""


TEMPLATES = Path(__file__).resolve().parent / "templates"
# the first of these that fontconfig knows sets the text; the list is also the CSS font-family
FONT_FAMILIES = ("Noto Sans CJK SC", "Source Han Sans SC", "Noto Sans SC", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei")


@functools.lru_cache(maxsize=1)
def cjk_family() -> str:
    """The family name of an installed font that sets Simplified Chinese (FONT_FAMILIES' order)."""
    try:
        found = subprocess.run(["fc-list", ":lang=zh-cn", "family"], capture_output=True, text=True, timeout=30,
                               check=False).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise FontMissing(f"fontconfig (fc-list) could not be run ({exc}); install fontconfig and fonts-noto-cjk") \
            from exc
    names = {name.strip() for line in found.splitlines() for name in line.split(",")}
    for family in FONT_FAMILIES:
        if family in names:
            return family
    raise FontMissing("no Chinese font is installed, so the PDF would print boxes; install one, e.g. "
                      "`apt-get install fonts-noto-cjk` (Debian), and generate the briefing again")


def _env():
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(("html",)),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=_num, pct=_pct, dur=_dur, change=_change, local=_local)
    return env


# --------------------------------------------------------------------------- how figures are written


def _num(v: Any, digits: int = 0) -> str:
    if v is None:
        return "—"
    return f"{v:,.{digits}f}"


def _pct(v: Any) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def _dur(seconds: Any) -> str:
    """A span as 天/小时/分钟, the way a reader says it."""
    if seconds is None:
        return "—"
    s = int(round(float(seconds)))
    if s < 3600:
        return f"{max(s, 0) // 60} 分钟"
    if s < 86400:
        return f"{s / 3600:.1f} 小时"
    return f"{s / 86400:.1f} 天"


def value(v: Any, unit: str) -> str:
    if unit == "share":
        return _pct(v)
    if unit == "seconds":
        return _dur(v)
    if unit in ("cases", "times"):
        return _num(v)
    return _num(v, 2) if isinstance(v, float) else _num(v)


def _change(cur: Any, prev: Any, unit: str) -> str:
    """The change from ``prev`` to ``cur``: percentage points for shares, per cent for counts, the span for times."""
    if cur is None or prev is None:
        return "—"
    if unit == "share":
        d = 100 * (cur - prev)
        return "持平" if abs(d) < 0.05 else f"{d:+.1f} 个百分点"
    if unit == "seconds":
        d = cur - prev
        return "持平" if abs(d) < 60 else ("+" if d > 0 else "−") + _dur(abs(d))
    if prev == 0:
        return "—" if cur == 0 else f"+{_num(cur)}"
    d = 100 * (cur - prev) / prev
    return "持平" if abs(d) < 0.05 else f"{d:+.1f}%"


def _local(t, fmt: str = "%m-%d %H:%M") -> str:
    return "—" if t is None else t.astimezone(CITY_TZ).strftime(fmt)


# --------------------------------------------------------------------------- the document


def html_of(b: Briefing) -> str:
    """The briefing as the HTML WeasyPrint lays out."""
    return _env().get_template("briefing.html").render(b=b, d=context(b), v=value, font=cjk_family(),
                                                      families=FONT_FAMILIES, title=title(b), period=period_text(b))


PDF_ROWS = 20  # the overdue list on paper; the spreadsheet holds them all (briefing.LIST_SIZE)
CHILD_LEVEL = {"district": "街道", "street": "社区", "community": "网格"}


def context(b: Briefing) -> dict[str, Any]:
    """What the template shows beyond the Briefing's own fields: lookups, names, definitions and the charts."""
    rows = {d["department"]: d for d in b.ranking.get("rows", [])}
    weights = b.ranking.get("weights", {})
    defs = [{"zh": d["zh"], "text": d.get("definition_zh") or d["definition"], "weight": weights.get(k)}
            for k, d in DEFINITIONS.items()]
    return {
        "figures": {r["key"]: r for r in b.headline},
        "week_before": any("week_before" in r for r in b.headline),
        "red_names": [rows[c]["name"] for c in b.ranking.get("red", []) if c in rows],
        "black_names": [rows[c]["name"] for c in b.ranking.get("black", []) if c in rows],
        "child_level": CHILD_LEVEL.get(b.area["level"], ""),
        "levels": {lv.level: lv for lv in RISK_LEVELS.values()},
        "defs": defs,
        "charts": charts(b),
        "pdf_rows": PDF_ROWS,
        # a department with nothing received, open or summoned here gets a name in one line, not a row of dashes
        "active": [d for d in b.ranking.get("rows", []) if _active(d)],
        "idle": [d["name"] for d in b.ranking.get("rows", []) if not _active(d)],
    }


def _active(d: dict[str, Any]) -> bool:
    return bool(d.get("received") or d.get("open_at_end") or d.get("whistles") or d.get("resolved"))


KIND_TITLES = {"day": "每日简报", "week": "周通报", "month": "月评估"}
WEEKDAYS = "一二三四五六日"


def title(b: Briefing) -> str:
    return f"{b.area['name']}{KIND_TITLES[b.kind]}"


def period_text(b: Briefing) -> str:
    first = b.since.astimezone(CITY_TZ)
    last = b.until.astimezone(CITY_TZ) - timedelta(seconds=1)
    if b.kind == "day":
        return f"{first:%Y年%m月%d日}（星期{WEEKDAYS[first.weekday()]}）"
    if b.kind == "week":
        return f"{first:%Y年%m月%d日} — {last:%m月%d日}（第 {first.isocalendar().week} 周）"
    return f"{first:%Y年%m月}（{first:%m月%d日} — {last:%m月%d日}）"


def write_pdf(b: Briefing, target: str | Path) -> None:
    """Lay the briefing out as an A4 PDF into ``target`` (dashboard.briefing.write_pdf writes it aside and renames
    it, so a failure leaves no file)."""
    from weasyprint import HTML

    HTML(string=html_of(b), base_url=str(TEMPLATES)).write_pdf(target)


# --------------------------------------------------------------------------- charts

INK, MUTED, BLUE, GREY = "#0f172a", "#64748b", "#1b6fd1", "#94a3b8"


def _figure(width_mm: float, height_mm: float):
    """A matplotlib Figure (no pyplot: safe in the web app's threads) sized in millimetres."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    matplotlib.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "gridwatch",
                                "font.family": [_chart_font(), "DejaVu Sans"]})
    fig = Figure(figsize=(width_mm / 25.4, height_mm / 25.4))
    fig.set_layout_engine("constrained")
    return fig


def _axes(width_mm: float, height_mm: float, grid_axis: str = "y"):
    """A figure of that size with one plot in the briefing's style: (figure, axes)."""
    fig = _figure(width_mm, height_mm)
    ax = fig.subplots()
    _style(ax, grid_axis)
    return fig, ax


def _style(ax, grid_axis: str = "y") -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.spines[["left", "bottom"]].set_color(GREY)
    ax.tick_params(colors=MUTED, labelsize=7.5, length=2)
    ax.grid(axis=grid_axis, color="#e2e8f0", linewidth=0.6)
    ax.set_axisbelow(True)


@functools.lru_cache(maxsize=1)
def _chart_font() -> str:
    """The name matplotlib knows the CJK font's file by, registered once (for measuring text in the charts)."""
    from matplotlib import font_manager

    family = cjk_family()
    path = subprocess.run(["fc-match", "-f", "%{file}", f"{family}:lang=zh-cn"], capture_output=True, text=True,
                          timeout=30, check=False).stdout.strip()
    font_manager.fontManager.addfont(path)
    return font_manager.FontProperties(fname=path).get_name()


def _svg(fig) -> str:
    """The figure as an SVG data URI, its text left as text (set by the document's font, so searchable)."""
    import base64
    import io

    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    # a font collection (.ttc) is known to matplotlib by its first face's name (Noto Sans CJK JP): measured with
    # it (the faces share their metrics), the text is set in the Simplified Chinese face
    svg = buf.getvalue().replace(f"'{_chart_font()}'", f"'{cjk_family()}'")
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def charts(b: Briefing) -> dict[str, str]:
    """The briefing's charts as SVG data URIs: trend, categories, risk map; for weeks and months also history and
    department scores. A chart with nothing to show is left out."""
    out = {}
    if b.trend.get("labels"):
        out["trend"] = _trend_chart(b)
    if b.by_category:
        out["categories"] = _category_chart(b)
    if b.shapes:
        out["risk_map"] = _risk_map(b)
    if b.history:
        out["history"] = _history_chart(b)
    if b.score_history.get("series"):
        out["scores"] = _score_chart(b)
    return out


def _trend_chart(b: Briefing) -> str:
    import numpy as np

    t = b.trend
    x = np.arange(len(t["labels"]))
    fig, ax = _axes(178, 52)
    ax.bar(x, t["current"], color=BLUE, width=0.7, label="本期")
    prev = [np.nan if v is None else v for v in t["previous"]]
    ax.plot(x, prev, color="#f97316", linewidth=1.2, marker="o", markersize=2, label="上期")
    step = max(1, len(x) // 12)
    labels = [lb[5:] if len(lb) == 10 else lb for lb in t["labels"]]  # 2026-11-21 → 11-21
    ax.set_xticks(x[::step], labels[::step])
    ax.set_ylabel("案件数", fontsize=7.5, color=MUTED)
    ax.legend(fontsize=7.5, frameon=False, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=2)
    return _svg(fig)


def _category_chart(b: Briefing) -> str:
    top = b.by_category[:10][::-1]
    fig, ax = _axes(178, 8 + 6.5 * len(top), "x")
    bars = ax.barh([c["name"] for c in top], [c["cases"] for c in top], color=BLUE, height=0.65)
    ax.bar_label(bars, fmt="{:,.0f}", fontsize=7, color=INK, padding=2)
    ax.tick_params(axis="y", labelsize=8, colors=INK)
    ax.set_title("按大类案件数（前十）", fontsize=8.5, color=INK, loc="left")
    return _svg(fig)


def _history_chart(b: Briefing) -> str:
    import numpy as np

    h = b.history
    x = np.arange(len(h))
    fig, ax = _axes(178, 55)
    ax.bar(x, [r["cases_total"] or 0 for r in h], color="#93c5fd", width=0.6, label="案件数")
    ax.set_xticks(x, [r["label"] for r in h])
    ax.set_ylabel("案件数", fontsize=7.5, color=MUTED)
    ax2 = ax.twinx()
    ax2.spines[["top", "left"]].set_visible(False)
    ax2.tick_params(colors=MUTED, labelsize=7.5, length=2)
    for key, name, color in (("resolution_rate", "办结率", BLUE), ("on_time_rate", "按期办结率", "#15803d"),
                             ("satisfaction", "满意率", "#f97316")):
        ax2.plot(x, [np.nan if r[key] is None else 100 * r[key] for r in h], color=color, marker="o", markersize=2.5,
                 linewidth=1.3, label=name)
    ax2.set_ylim(0, 105)
    ax2.set_ylabel("%", fontsize=7.5, color=MUTED)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, frameon=False, loc="lower left", ncols=4)
    ax.set_title(f"近 {len(h)} 期走势", fontsize=8.5, color=INK, loc="left")
    return _svg(fig)


def _score_chart(b: Briefing) -> str:
    import numpy as np

    s = b.score_history
    x = np.arange(len(s["labels"]))
    fig, ax = _axes(178, 58)
    colors = ["#15803d", "#22c55e", "#86efac", "#fca5a5", "#ef4444", "#991b1b"]
    for i, (name, scores) in enumerate(s["series"].items()):
        ax.plot(x, [np.nan if v is None else v for v in scores], marker="o", markersize=2.5, linewidth=1.3,
                color=colors[i % len(colors)], label=name)
    ax.set_xticks(x, s["labels"])
    ax.set_ylabel("综合得分", fontsize=7.5, color=MUTED)
    ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title("综合得分走势（本期前三与后三）", fontsize=8.5, color=INK, loc="left")
    return _svg(fig)


def _risk_map(b: Briefing) -> str:
    """The area's grids filled by their live risk level; the hottest numbered as in the table beside it."""
    import math

    from matplotlib.collections import PolyCollection

    xs = [x for s in b.shapes for ring in s["rings"] for x, _ in ring]
    ys = [y for s in b.shapes for ring in s["rings"] for _, y in ring]
    if not xs:
        return ""
    aspect = (max(ys) - min(ys)) / max(1e-9, (max(xs) - min(xs)) * math.cos(math.radians(sum(ys) / len(ys))))
    width = 96
    fig = _figure(width, max(40, min(150, width * aspect)))
    ax = fig.subplots()
    polys, colors = [], []
    for s in b.shapes:
        for ring in s["rings"]:
            polys.append(ring)
            colors.append(RISK_LEVELS[s["level"]].color)
    ax.add_collection(PolyCollection(polys, facecolors=colors, edgecolors="#ffffff", linewidths=0.25, alpha=0.85))
    hot = {h["code"]: i for i, h in enumerate(b.hottest, start=1)}
    for s in b.shapes:
        if s["code"] in hot:
            ring = max(s["rings"], key=len)
            cx, cy = sum(p[0] for p in ring) / len(ring), sum(p[1] for p in ring) / len(ring)
            ax.add_collection(PolyCollection([ring], facecolors="none", edgecolors=INK, linewidths=0.9))
            ax.annotate(str(hot[s["code"]]), (cx, cy), fontsize=6.5, ha="center", va="center", color=INK,
                        fontweight="bold")
    ax.set_xlim(min(xs), max(xs))
    ax.set_ylim(min(ys), max(ys))
    ax.set_aspect(1 / math.cos(math.radians(sum(ys) / len(ys))))
    ax.set_axis_off()
    return _svg(fig)
