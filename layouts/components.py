"""What several pages draw alike: number and change formats, bar lists and day columns, the problem notice, the
area picker's options and a map's bounds. Components and formatters only: nothing here reads a store."""

from __future__ import annotations

from typing import Any

from dash import dcc, html

from dashboard import auth, drill

LOWER_IS_BETTER = {"overdue_open", "handling_mean_s", "handling_median_s"}
NEUTRAL = {"cases_total", "resolved"}  # more or fewer cases is neither good nor bad


def pct(v: float | None) -> str:
    return "—" if v is None else f"{v * 100:.1f}%"


def dur(s: float | None, t: dict[str, str]) -> str:
    if s is None:
        return "—"
    h = s / 3600
    return t["dr_hours"].format(n=f"{h:.1f}") if h < 48 else t["dr_days"].format(n=f"{h / 24:.1f}")


def fmt(key: str, v: Any, t: dict[str, str]) -> str:
    if v is None:
        return "—"
    if key.endswith("_rate") or key == "satisfaction":
        return pct(v)
    if key.endswith("_s"):
        return dur(v, t)
    if key == "rating_mean":
        return f"{v:.2f}"
    return f"{int(v):,}"


def change(key: str, delta: Any, t: dict[str, str]) -> html.Span:
    if delta is None:
        return html.Span(t["dr_no_change"], className="dr-delta dr-flat")
    if key.endswith("_rate") or key == "satisfaction":
        text, size = f"{delta * 100:+.1f} pt", abs(delta) >= 0.0005
    elif key.endswith("_s"):
        text, size = f"{delta / 3600:+.1f} h", abs(delta) >= 60
    elif key == "rating_mean":
        text, size = f"{delta:+.2f}", abs(delta) >= 0.005
    else:
        text, size = f"{int(delta):+,}", delta != 0
    good = (delta < 0) if key in LOWER_IS_BETTER else (delta > 0)
    cls = "dr-flat" if not size else "dr-neutral" if key in NEUTRAL else ("dr-up" if good else "dr-down")
    arrow = "" if not size else ("▲ " if delta > 0 else "▼ ")
    return html.Span(arrow + text, className=f"dr-delta {cls}")


def bars(rows: list[dict[str, Any]], label: str = "name", value: str = "cases", link=None) -> html.Div:
    top = max([r[value] for r in rows] or [0]) or 1
    out = []
    for r in rows:
        name = dcc.Link(r[label], href=link(r)) if link else r[label]
        out.append(html.Div([html.Span(name, className="dr-bar-label"),
                             html.Span(html.I(style={"width": f"{100 * r[value] / top:.1f}%",
                                                     **({"background": r["color"]} if r.get("color") else {})}),
                                       className="dr-bar-track"),
                             html.Span(f"{r[value]:,}", className="dr-bar-value")], className="dr-bar"))
    return html.Div(out or html.Div("—", className="dr-empty"), className="dr-bars")


def trend(days: list[dict[str, Any]], t: dict[str, str]) -> html.Div:
    top = max([d["cases"] for d in days] or [0]) or 1
    every = max(1, len(days) // 8)
    cols = []
    for i, d in enumerate(days):
        cols.append(html.Div([
            html.Div(html.I(style={"height": f"{100 * d['cases'] / top:.1f}%"}), className="dr-col-bar",
                     title=f"{d['day']}: {d['cases']:,}"),
            html.Div(d["day"][5:] if len(d["day"]) == 10 else d["day"][:2], className="dr-col-label")
            if i % every == 0 else html.Div(className="dr-col-label"),
        ], className="dr-col"))
    total = sum(d["cases"] for d in days)
    return html.Div([html.Div(cols, className="dr-cols"),
                     html.Div(t["dr_trend_total"].format(n=f"{total:,}", peak=f"{top:,}"), className="dr-note")])


def problem(exc: drill.ViewError, t: dict[str, str], home: str) -> list:
    head = (t["dr_bad_area"].format(value=exc.value) if exc.parameter == "area"
            else t["dr_bad_path"] if exc.parameter == "path"
            else t["dr_bad_param"].format(name=exc.parameter[:40], value=exc.value))
    return [html.Strong(head), html.Div(exc.message, className="dr-detail"),
            dcc.Link(t["dr_go_home"], href=home, className="dr-button")]


def area_options(geo) -> list[dict[str, str]]:
    """The areas a viewer may pick (compare, briefings): the jurisdiction, then each street in it followed by its
    communities (indented); a community's or grid's jurisdiction lists itself."""
    def communities(street):
        return [{"label": f"\u2003{c.name}", "value": c.code} for c in geo.children(street.code)]

    home = geo.area(auth.scope() or geo.district.code)
    out = [{"label": home.name, "value": home.code}]
    if home.level == "district":
        for s in geo.areas("street"):
            out += [{"label": s.name, "value": s.code}, *communities(s)]
    elif home.level == "street":
        out += communities(home)
    return out


def map_bounds(geo, code: str | None) -> list[list[float]]:
    """[[south, west], [north, east]] of an area (None or the district: the whole city) for a Leaflet map."""
    x0, y0, x1, y1 = geo.geometry(code).bounds if code and code != geo.district.code else geo.bounds
    return [[y0, x0], [y1, x1]]
