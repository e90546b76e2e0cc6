"""The leaders' drill-down page (``/`` and ``/area/<code>``): map, breadcrumb, filters, area panels and case table.

The URL is the state (dashboard/drill.py): a click or a filter writes the URL and every part follows it, so back,
reload and a shared link show the same view. A URL that names no view says what is wrong and offers a way back.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlencode

import dash_ag_grid as dag
import dash_leaflet as dl
from dash import Input, Output, State, clientside_callback, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from core.kpis import DEFINITIONS
from core.lifecycle import STATUS_LABELS, Status
from core.records import CITY_TZ
from core.risk import RISK_LEVELS
from dashboard import auth, context, drill, i18n
from layouts import components, drill_actions
from layouts.components import bars, map_bounds, problem, trend

log = logging.getLogger(__name__)

PAGE_SIZE = 50


class ID:
    url = "drill-url"
    title = "drill-title"
    lang = "drill-lang"
    crumbs = "drill-crumbs"
    message = "drill-message"
    range = "drill-range"
    dates = "drill-dates"
    category = "drill-category"
    grade = "drill-grade"
    source = "drill-source"
    status = "drill-status"
    dept = "drill-dept"
    text = "drill-q"
    reset = "drill-reset"
    export = "drill-export"
    compare = "drill-compare"
    briefings = "drill-briefings"
    map = "drill-map"
    areas = "drill-areas"
    outline = "drill-outline"
    mode = "drill-mode"
    children = "drill-children"
    kpis = "drill-kpis"
    trend = "drill-trend"
    groups = "drill-groups"
    sources = "drill-sources"
    overdue = "drill-overdue"
    hotspots = "drill-hotspots"
    sensors = "drill-sensors"
    depts = "drill-depts"
    count = "drill-count"
    grid = "drill-grid"
    period = "drill-period"
    refresh = "drill-refresh"
    body = "drill-body"
    pins = "drill-pins"
    labels = "drill-labels"
    table = "drill-table"


KPI_KEYS = ("cases_total", "resolution_rate", "on_time_rate", "overdue_open", "onsite_rate", "satisfaction",
            "handling_mean_s")


# --------------------------------------------------------------------------- map geometry


@lru_cache(maxsize=512)
def _features(geo, codes: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    from shapely.geometry import mapping

    out = []
    for code in codes:
        a = geo.area(code)
        tolerance = {"street": 0.0001, "community": 0.00005}.get(a.level, 0.00002)
        out.append({"type": "Feature", "properties": {"code": a.code, "name": a.name},
                    "geometry": mapping(geo.geometry(code).simplify(tolerance, preserve_topology=True))})
    return tuple(out)


def map_data(geo, code: str, children: list[dict[str, Any]], t: dict[str, str]) -> dict[str, Any]:
    """The clickable areas one level down (or the grid itself) as GeoJSON, with tooltips and the view's counts."""
    kids = {c["code"]: c for c in children}
    codes = tuple(kids) or (code,)
    feats = []
    for f in _features(geo, codes):
        c = kids.get(f["properties"]["code"])
        props = dict(f["properties"])
        if c is not None:
            props["tooltip"] = (f"{c['name']} · {t['dr_risk']} {t['scr_levels'].split(',')[c['risk_level'] - 1]} · "
                                f"{t['dr_cases']} {c['cases']:,} · {t['dr_open']} {c['open']:,}")
        feats.append({**f, "properties": props})
    return {"type": "FeatureCollection", "features": feats}


# --------------------------------------------------------------------------- layout


def _options(city, lang: str) -> dict[str, list[dict[str, str]]]:
    cats = []
    for g in city.groups:
        cats.append({"label": f"{g.code} {g.name}", "value": g.code})
        for child in getattr(g, "children", ()):
            cats.append({"label": f"\u2003{child.code} {child.name}", "value": child.code})
    return {
        "range": [{"label": i18n.texts(lang)[f"dr_range_{r}"], "value": r} for r in drill.RANGES],
        "category": cats,
        "grade": [{"label": i18n.pick((g.name, g.en), lang), "value": str(g.level)} for g in city.grades.values()],
        "source": [{"label": i18n.source_label(s, lang), "value": s} for s in i18n.SOURCES],
        "status": [{"label": i18n.texts(lang)["dr_status_open"], "value": "open"}]
        + [{"label": i18n.pick(STATUS_LABELS[s], lang), "value": s.value} for s in STATUS_LABELS],
        "dept": [{"label": d.name, "value": code} for code, d in city.departments.items()],
    }


def _controls(view: drill.View | None) -> dict[str, Any]:
    """The filter controls' values for a view (defaults when the URL names none)."""
    if view is None:
        return {"range": drill.DEFAULT_RANGE, "start": None, "end": None, "category": None, "grade": [],
                "source": [], "status": [], "dept": None, "q": ""}
    p = view.params
    start = view.since.astimezone(CITY_TZ).date().isoformat()
    end = (view.until.astimezone(CITY_TZ) - timedelta(seconds=1)).date().isoformat()  # the last day, inclusive
    return {"range": view.range, "start": start, "end": end, "category": p.get("category"),
            "grade": [g for g in p.get("grade", "").split(",") if g], "source": [s for s in p.get("source", "").split(",") if s],
            "status": [s for s in p.get("status", "").split(",") if s], "dept": p.get("dept"), "q": p.get("q", "")}


def _loading(child) -> dcc.Loading:
    """A spinner over a part while its callback works (only if it takes longer than a blink)."""
    return dcc.Loading(child, type="dot", delay_show=250, color="#3b82f6", overlay_style={"opacity": 0.55})


def _panel(title_id: str, title: str, body_id: str, cls: str = "") -> html.Section:
    return html.Section([html.H3(title, id=f"{body_id}-title"), _loading(html.Div(id=body_id, className="dr-pb"))],
                        className=f"dr-panel {cls}".strip(), id=title_id)


def _columns(t: dict[str, str]) -> list[dict[str, Any]]:
    """The case table's columns: values come formatted from the server; colId is what the server sorts by."""
    return [
        {"colId": "id", "field": "link", "headerName": t["dr_col_id"], "width": 110, "cellRenderer": "markdown",
         "sortable": True},
        {"colId": "reported_at", "field": "reported_local", "headerName": t["dr_col_reported"], "width": 160,
         "sortable": True, "sort": "desc", "sortingOrder": ["desc", "asc"]},
        {"colId": "grade", "field": "grade_name", "headerName": t["dr_col_grade"], "width": 100, "sortable": True,
         "cellClassRules": {f"dr-g{g}": f"params.data && params.data.grade == {g}" for g in (1, 2, 3, 4)}},
        {"colId": "title", "field": "title", "headerName": t["dr_col_title"], "flex": 2, "minWidth": 220,
         "sortable": False, "tooltipField": "title"},
        {"colId": "category", "field": "category_name", "headerName": t["dr_col_category"], "width": 150,
         "sortable": True},
        {"colId": "source", "field": "source_name", "headerName": t["dr_col_source"], "width": 120, "sortable": True},
        {"colId": "status", "field": "status_name", "headerName": t["dr_col_status"], "width": 110, "sortable": True},
        {"colId": "street", "field": "street_name", "headerName": t["dr_col_street"], "width": 120, "sortable": False},
        {"colId": "grid", "field": "grid_name", "headerName": t["dr_col_grid"], "width": 150, "sortable": False},
        {"colId": "departments", "field": "department_names", "headerName": t["dr_col_depts"], "flex": 1,
         "minWidth": 140, "sortable": False},
        {"colId": "due_at", "field": "due_local", "headerName": t["dr_col_due"], "width": 160, "sortable": True,
         "cellClassRules": {"dr-late": "params.data && params.data.overdue"}},
    ]


def _filters(t: dict[str, str], opts: dict[str, list[dict[str, str]]]) -> html.Div:
    """The filter bar: period, 大类/小类, grade, source, status, department, text and reset."""
    values = _controls(None)
    return html.Div([
        html.Div([html.Label(t["dr_period"]),
                  dcc.RadioItems(opts["range"], values["range"], id=ID.range, inline=True, className="dr-range"),
                  dcc.DatePickerRange(id=ID.dates, display_format="YYYY-MM-DD", first_day_of_week=1,
                                      start_date_placeholder_text=t["dr_from"], end_date_placeholder_text=t["dr_to"],
                                      minimum_nights=0, clearable=False, className="dr-dates")],
                 className="dr-filter dr-filter-period"),
        html.Div([html.Label(t["dr_category"]),
                  dcc.Dropdown(opts["category"], values["category"], id=ID.category, placeholder=t["dr_all"],
                               className="dr-dd dr-dd-wide")], className="dr-filter"),
        html.Div([html.Label(t["dr_grade"]),
                  dcc.Dropdown(opts["grade"], values["grade"], id=ID.grade, multi=True, placeholder=t["dr_all"],
                               className="dr-dd")], className="dr-filter"),
        html.Div([html.Label(t["dr_source"]),
                  dcc.Dropdown(opts["source"], values["source"], id=ID.source, multi=True, placeholder=t["dr_all"],
                               className="dr-dd")], className="dr-filter"),
        html.Div([html.Label(t["dr_status"]),
                  dcc.Dropdown(opts["status"], values["status"], id=ID.status, multi=True, placeholder=t["dr_all"],
                               className="dr-dd")], className="dr-filter"),
        html.Div([html.Label(t["dr_dept"]),
                  dcc.Dropdown(opts["dept"], values["dept"], id=ID.dept, placeholder=t["dr_all"],
                               className="dr-dd dr-dd-wide")], className="dr-filter"),
        html.Div([html.Label(t["dr_text"]),
                  dcc.Input(id=ID.text, type="search", value="", debounce=True, maxLength=50,
                            placeholder=t["dr_text_hint"], className="dr-input")], className="dr-filter"),
        html.Button(t["dr_reset"], id=ID.reset, n_clicks=0, className="dr-button"),
    ], className="dr-filters")


def _header(t: dict[str, str], lang: str, district_name: str) -> html.Header:
    """The title and the links to compare, the wall (for the whole district only), briefings and the language."""
    return html.Header([
        html.H1(f"{district_name} · {t['dr_title']}", id=ID.title),
        html.Nav([
            html.A(t["dr_compare"], id=ID.compare, href="/compare", className="dr-link"),
            *([html.A(t["dr_screen"], href="/screen", className="dr-link", target="_blank")]
              if auth.whole_district() else []),  # the wall is the district's
            *drill_actions.desk_link(t, lang),
            html.A(t["dr_briefings"], id=ID.briefings, href="/briefings" + ("?lang=en" if lang == "en" else ""),
                   className="dr-link"),
            html.A(t["switch"], id=f"{ID.lang}-switch", href="?lang=" + ("zh" if lang == "en" else "en"),
                   className="dr-link"),
        ], className="dr-nav"),
    ], className="dr-header")


def _map(t: dict[str, str], geo) -> html.Div:
    """The map with its legend and colour switch, and the list of areas below it."""
    legend = html.Div([html.Span([html.I(className=f"dr-sw dr-l{lv}"), t["scr_levels"].split(",")[lv - 1]])
                       for lv in (4, 3, 2, 1)], className="dr-legend")
    district_bounds = map_bounds(geo, geo.district.code)
    return html.Div([
        html.Div([
            dl.MapContainer([
                dl.GeoJSON(id=ID.outline, data=None, style={"color": "#334155", "weight": 1,
                                                           "fill": False, "opacity": 0.5},
                           interactive=False),
                dl.LayerGroup(id=ID.pins),
                dl.LayerGroup(id=ID.labels),
                dl.GeoJSON(id=ID.areas, data=None, hideout={"mode": "risk", "levels": {}, "colors": LEVEL_COLORS, "counts": {},
                                                            "max": 0},
                           style={"variable": "gridwatch.drill.areaStyle"},
                           hoverStyle={"variable": "gridwatch.drill.hoverStyle"}, zoomToBounds=False),
            ], id=ID.map, bounds=district_bounds, zoomSnap=0.25, attributionControl=False,
                scrollWheelZoom=False, trackViewport=False, className="dr-leaflet", style={"width": "100%", "height": "100%"}),
            legend,
            dcc.RadioItems([{"label": t["dr_color_risk"], "value": "risk"},
                            {"label": t["dr_color_cases"], "value": "cases"}], "risk", id=ID.mode,
                           inline=True, className="dr-mode"),
        ], className="dr-map-wrap"),
        html.Div(id=ID.children, className="dr-children"),
    ], className="dr-left")


def _panels(t: dict[str, str]) -> html.Div:
    """The period, the KPI tiles and the panels beside the map."""
    return html.Div([
        html.Div([html.Span(id=ID.period, className="dr-period")], className="dr-period-row"),
        _loading(html.Div(id=ID.kpis, className="dr-kpis")),
        html.Div([
            _panel("drill-trend-panel", t["dr_trend"], ID.trend, "dr-trend-panel"),
            _panel("drill-groups-panel", t["dr_groups"], ID.groups),
            _panel("drill-sources-panel", t["dr_sources"], ID.sources),
        ], className="dr-row"),
        html.Div([
            _panel("drill-overdue-panel", t["dr_overdue"], ID.overdue, "dr-wide"),
            _panel("drill-hotspots-panel", t["dr_hotspots"], ID.hotspots),
        ], className="dr-row"),
        html.Div([
            _panel("drill-sensors-panel", t["dr_sensors"], ID.sensors),
            _panel("drill-depts-panel", t["dr_depts"], ID.depts, "dr-wide"),
        ], className="dr-row"),
    ], className="dr-right")


def _table(t: dict[str, str]) -> html.Section:
    """The case table (server-side paging and sorting) with its count and the export link."""
    return html.Section([
        html.Div([html.H3(t["dr_cases_table"]), html.Span(id=ID.count, className="dr-count"),
                  html.A(t["dr_export"], id=ID.export, href="#", className="dr-button dr-export",
                         download="")], className="dr-table-head"),
        dag.AgGrid(id=ID.grid, columnDefs=_columns(t), rowModelType="infinite",
                   defaultColDef={"resizable": True, "suppressHeaderMenuButton": True},
                   dashGridOptions={"pagination": True, "paginationPageSize": PAGE_SIZE,
                                    "cacheBlockSize": PAGE_SIZE, "maxBlocksInCache": 20,
                                    "rowHeight": 34, "tooltipShowDelay": 300, "rowSelection": drill_actions.SELECTION,
                                    "localeText": {"page": t["dr_page"], "of": "/", "to": "–",
                                                   "more": "…", "noRowsToShow": t["dr_no_rows"],
                                                   "loadingOoo": t["dr_loading"]}},
                   className="ag-theme-quartz dr-grid", style={"height": "560px", "width": "100%"}),
    ], className="dr-table", id=ID.table)


def layout(settings, city, query: dict[str, str]) -> html.Div:
    lang = i18n.lang_of(query.get("lang"))
    t = i18n.texts(lang)
    geo = city.geography
    return html.Div([
        dcc.Location(id=ID.url, refresh="callback-nav"),
        dcc.Store(id=ID.lang, data=lang),
        dcc.Store(id=ID.refresh),
        _header(t, lang, geo.district.name),
        html.Div(id=ID.crumbs, className="dr-crumbs"),
        _filters(t, _options(city, lang)),
        html.Div(id=ID.message, className="dr-message", style={"display": "none"}),
        html.Div([_map(t, geo), _panels(t)], className="dr-body", id=ID.body),
        drill_actions.bar(t, lang), _table(t),
    ], className="dr", lang="zh-CN" if lang == "zh" else "en")


# --------------------------------------------------------------------------- drawing the data


def kpi_tiles(data: dict[str, Any], t: dict[str, str], lang: str) -> list:
    tiles = []
    for key in KPI_KEYS:
        d = DEFINITIONS[key]
        tiles.append(html.Div([
            html.Div(d["zh"] if lang == "zh" else d["en"], className="dr-kpi-label"),
            html.Div(components.fmt(key, data["kpis"].get(key), t), className="dr-kpi-value", **{"data-key": key}),
            html.Div([components.change(key, data["change"].get(key), t),
                      html.Span(f" {t['dr_vs_prev']} {components.fmt(key, data['previous'].get(key), t)}",
                                className="dr-prev")], className="dr-kpi-change"),
        ], className="dr-kpi", title=d["definition"]))
    return tiles


def _local(v: datetime | None) -> str:
    return "—" if v is None else v.astimezone(CITY_TZ).strftime("%m-%d %H:%M")


def overdue_list(rows: list[dict[str, Any]], now: datetime, t: dict[str, str]) -> html.Div:
    if not rows:
        return html.Div(t["dr_none"], className="dr-empty")
    items = []
    for r in rows:
        late = now - r["due_at"]
        items.append(html.Tr([
            html.Td(drill_actions.pick(r["id"])), html.Td(dcc.Link(f"#{r['id']}", href=f"/case/{r['id']}")),
            html.Td(html.Span(className=f"dr-dot dr-l{r['grade']}")),
            html.Td(r["title"], className="dr-ellipsis", title=r["title"]),
            html.Td(r.get("grid_name") or "—"),
            html.Td(" ".join(r["department_names"]) or "—"),
            html.Td(t["dr_late_by"].format(d=components.dur(late.total_seconds(), t)), className="dr-late"),
        ]))
    return html.Table(html.Tbody(items), className="dr-list")


def hotspot_list(rows: list[dict[str, Any]], t: dict[str, str]) -> html.Div:
    if not rows:
        return html.Div(t["dr_none"], className="dr-empty")
    return html.Table(html.Tbody([html.Tr([
        html.Td(h["category_name"]), html.Td("、".join(h["grid_names"]) or "—", className="dr-ellipsis"),
        html.Td(t["dr_reports"].format(n=h.get("count", 0))), html.Td(f"+{h['contribution']:.1f}"),
    ]) for h in rows]), className="dr-list")


def sensor_list(data: dict[str, Any], t: dict[str, str]) -> html.Div:
    if not data["by_type"]:
        return html.Div(t["dr_no_devices"], className="dr-empty")
    head = html.Tr([html.Th(t["dr_sensor_type"]), html.Th(t["dr_devices"]), html.Th(t["dr_alarming"]),
                    html.Th(t["dr_offline"])])
    rows = [html.Tr([html.Td(s["name"]), html.Td(f"{s['devices']:,}"),
                     html.Td(f"{s['alarms']:,}", className="dr-late" if s["alarms"] else ""),
                     html.Td(f"{s['offline']:,}", className="dr-warn" if s["offline"] else "")])
            for s in data["by_type"]]
    return html.Table([html.Thead(head), html.Tbody(rows)], className="dr-list dr-grid-table")


def dept_list(rows: list[dict[str, Any]], t: dict[str, str]) -> html.Div:
    if not rows:
        return html.Div(t["dr_none"], className="dr-empty")
    head = html.Tr([html.Th(t["dr_dept"]), html.Th(t["dr_received"]), html.Th(t["dr_resolved"]),
                    html.Th(t["dr_on_time"]), html.Th(t["dr_open_end"]), html.Th(t["dr_overdue_short"])])
    body = [html.Tr([html.Td(r["name"]), html.Td(f"{r['received']:,}"), html.Td(f"{r['resolved']:,}"),
                     html.Td(components.pct(r["resolved_on_time_rate"])), html.Td(f"{r['open_at_end']:,}"),
                     html.Td(f"{r['overdue_open']:,}", className="dr-late" if r["overdue_open"] else "")])
            for r in rows]
    return html.Table([html.Thead(head), html.Tbody(body)], className="dr-list dr-grid-table")


def child_list(kids: list[dict[str, Any]], t: dict[str, str]) -> html.Table | None:
    if not kids:
        return None  # a grid: nothing below (the box hides itself when empty)
    names = t["scr_levels"].split(",")
    head = html.Tr([html.Th(t[f"dr_level_{kids[0]['level']}"]), html.Th(t["dr_risk"]), html.Th(t["dr_cases"]),
                    html.Th(t["dr_open"])])
    rows = [html.Tr([html.Td(dcc.Link(k["name"], href=k["url"], className="dr-child-link")),
                     html.Td([html.I(className=f"dr-sw dr-l{k['risk_level']}"), names[k["risk_level"] - 1]]),
                     html.Td(f"{k['cases']:,}"), html.Td(f"{k['open']:,}")], **{"data-code": k["code"]})
            for k in kids]
    return html.Table([html.Thead(head), html.Tbody(rows)], className="dr-list dr-grid-table dr-child-table")


def area_labels(geo, kids: list[dict[str, Any]]) -> list:
    """The names of the areas below, written on the map at their label points."""
    out = []
    for k in kids:
        lon, lat = geo.area(k["code"]).centroid
        out.append(dl.CircleMarker(center=[lat, lon], radius=0, opacity=0, fillOpacity=0, interactive=False,
                                   children=dl.Tooltip(k["name"], permanent=True, direction="center",
                                                       className="dr-label")))
    return out


# the map's fill, from core/risk.py's one table (text keys: it travels as JSON)
LEVEL_COLORS = {str(lv): r.color for lv, r in RISK_LEVELS.items()}


def pin_markers(found: list[dict[str, Any]], t: dict[str, str], colours: dict[int, str]) -> list:
    """A grid's cases as dots coloured by grade (``colours``: the city's grades); a click shows the title and a link
    to the case."""
    return [dl.CircleMarker(center=[p["lat"], p["lon"]], radius=7,
                            color="#b91c1c" if p["overdue"] else "#ffffff", weight=2,
                            fillColor=colours.get(p["grade"], "#64748b"), fillOpacity=0.9,
                            children=[dl.Tooltip(f"#{p['id']} {p['title']}"),
                                      dl.Popup(html.A(f"#{p['id']} {p['title']}", href=f"/case/{p['id']}"))])
            for p in found]


def crumbs(view: drill.View, t: dict[str, str]) -> list:
    out: list = []
    trail = drill.trail(view)
    for i, c in enumerate(trail):
        if i:
            out.append(html.Span("›", className="dr-sep"))
        if i == len(trail) - 1:
            out.append(html.Span(c["name"], className="dr-crumb dr-here", **{"data-code": c["code"]}))
        else:
            out.append(html.Span(dcc.Link(c["name"], href=c["url"]), className="dr-crumb", **{"data-code": c["code"]}))
    return out


def period_text(view: drill.View, t: dict[str, str]) -> str:
    a = view.since.astimezone(CITY_TZ)
    b = view.until.astimezone(CITY_TZ) - timedelta(seconds=1)
    p0, p1 = view.previous
    q0, q1 = p0.astimezone(CITY_TZ), p1.astimezone(CITY_TZ) - timedelta(seconds=1)
    if a.date() == b.date():  # one day: say it once
        return t["dr_period_day"].format(a=f"{a:%Y-%m-%d}", c=f"{q0:%Y-%m-%d}")
    return t["dr_period_text"].format(a=f"{a:%Y-%m-%d}", b=f"{b:%Y-%m-%d}", c=f"{q0:%Y-%m-%d}", d=f"{q1:%Y-%m-%d}")


# --------------------------------------------------------------------------- callbacks


def _view(pathname, search):
    """(view, None) or (None, ViewError) for the URL."""
    try:
        return drill.parse(pathname, search), None
    except drill.ViewError as exc:
        return None, exc


def _filter_params(trigger, range_, start, end, filters: tuple) -> dict[str, str]:
    """The URL's parameters for the filter controls (none after 重置); PreventUpdate until a custom period has
    both ends."""
    if trigger == ID.reset:
        return {}
    params: dict[str, str] = {}
    if trigger == ID.dates:  # picking dates means a custom period
        range_ = "custom"
    if range_ == "custom":
        if not start or not end:
            raise PreventUpdate  # wait until both ends are picked
        params["since"] = start[:10]
        params["until"] = (datetime.fromisoformat(end[:10]) + timedelta(days=1)).date().isoformat()
    elif range_ and range_ != drill.DEFAULT_RANGE:
        params["range"] = range_
    category, grade, source, status, dept, text = filters
    for name, value in (("category", category), ("grade", grade), ("source", source), ("status", status),
                        ("dept", dept), ("q", (text or "").strip())):
        if isinstance(value, list):
            value = ",".join(sorted(str(v) for v in value))
        if value:
            params[name] = str(value)
    return params


def sync_of(trigger, search, pathname, range_, start, end, filters: tuple, clicked) -> tuple:
    """The URL and the filter controls kept in step: a control or a map click writes the URL; a URL (loaded,
    or by the back button) sets the controls. A URL that names no view is left as it is (and reported)."""
    view, err = _view(pathname, search)
    if trigger in (None, ID.url):
        c = _controls(view)
        return (no_update, no_update, c["range"], c["start"], c["end"], c["category"], c["grade"], c["source"],
                c["status"], c["dept"], c["q"])
    lang = view.lang if view else i18n.lang_of(None)
    code = view.area.code if view else None
    if trigger == ID.areas:
        picked = ((clicked or {}).get("properties") or {}).get("code")
        if not picked or view is None or picked == code:
            raise PreventUpdate
        url = view.url(picked)
        path, _, query = url.partition("?")
        return ("?" + query if query else "", path, *([no_update] * 9))
    params = _filter_params(trigger, range_, start, end, filters)
    if code is None:  # the URL names no area: start again from the viewer's jurisdiction with these filters
        code = auth.scope() or context.city().geography.district.code
    url = drill.view_url(code, params, lang)
    path, _, query = url.partition("?")
    new_search = "?" + query if query else ""
    if path == (pathname or "/") and new_search == (search or ""):
        raise PreventUpdate
    return new_search, path, *([no_update] * 9)


def _register_sync(app) -> None:
    @app.callback(
        Output(ID.url, "search"), Output(ID.url, "pathname"),
        Output(ID.range, "value"), Output(ID.dates, "start_date"), Output(ID.dates, "end_date"),
        Output(ID.category, "value"), Output(ID.grade, "value"), Output(ID.source, "value"),
        Output(ID.status, "value"), Output(ID.dept, "value"), Output(ID.text, "value"),
        Input(ID.url, "search"), Input(ID.url, "pathname"),
        Input(ID.range, "value"), Input(ID.dates, "start_date"), Input(ID.dates, "end_date"),
        Input(ID.category, "value"), Input(ID.grade, "value"), Input(ID.source, "value"),
        Input(ID.status, "value"), Input(ID.dept, "value"), Input(ID.text, "value"), Input(ID.reset, "n_clicks"),
        Input(ID.areas, "clickData"),
    )
    def sync(search, pathname, range_, start, end, category, grade, source, status, dept, text, _reset, clicked):
        return sync_of(ctx.triggered_id, search, pathname, range_, start, end,
                       (category, grade, source, status, dept, text), clicked)


def _register_frame(app) -> None:
    @app.callback(
        Output(ID.crumbs, "children"), Output(ID.message, "children"), Output(ID.message, "style"),
        Output(ID.areas, "data"), Output(ID.outline, "data"), Output(ID.areas, "hideout"), Output(ID.map, "viewport"),
        Output(ID.children, "children"), Output(ID.period, "children"), Output(ID.export, "href"),
        Output(ID.count, "children"), Output(ID.compare, "href"), Output(f"{ID.lang}-switch", "href"),
        Output(ID.body, "style"), Output(ID.table, "style"), Output(ID.pins, "children"),
        Output(ID.labels, "children"),
        Input(ID.url, "pathname"), Input(ID.url, "search"), State(ID.mode, "value"),
    )
    def frame(pathname, search, mode):
        """Breadcrumb, message, map, the list of areas below, the period, the count and the links."""
        return frame_of(pathname, search, mode)

    @app.callback(Output(ID.areas, "hideout", allow_duplicate=True), Input(ID.mode, "value"),
                  State(ID.areas, "hideout"), prevent_initial_call=True)
    def colour_mode(mode, hideout):
        if not isinstance(mode, str) or not isinstance(hideout or {}, dict):
            raise PreventUpdate  # not what the radio buttons and the map send
        return {**(hideout or {}), "mode": mode}


def _register_data(app) -> None:
    @app.callback(
        Output(ID.kpis, "children"), Output(ID.trend, "children"), Output(ID.groups, "children"),
        Output(ID.sources, "children"),
        Input(ID.url, "pathname"), Input(ID.url, "search"),
    )
    def figures(pathname, search):
        """KPIs with their change, the daily trend and the breakdowns."""
        return figures_of(pathname, search)

    @app.callback(
        Output(ID.overdue, "children"), Output(ID.hotspots, "children"), Output(ID.sensors, "children"),
        Output(ID.depts, "children"),
        Input(ID.url, "pathname"), Input(ID.url, "search"),
    )
    def lists(pathname, search):
        """Overdue cases, hotspots, sensors and departments."""
        return lists_of(pathname, search)

    @app.callback(Output(ID.grid, "getRowsResponse"), Input(ID.grid, "getRowsRequest"),
                  State(ID.url, "pathname"), State(ID.url, "search"), prevent_initial_call=True)
    def rows(request, pathname, search):
        """One block of the case table, for the URL's view (server-side paging and sorting)."""
        return rows_of(request, pathname, search)

    clientside_callback(  # a new view: the table asks for its rows again
        "function(p, s) { return window.gridwatch.drill.refreshGrid(p, s); }",
        Output(ID.refresh, "data"), Input(ID.url, "pathname"), Input(ID.url, "search"), prevent_initial_call=True,
    )


def register(app) -> None:
    """The URL and the controls in step; the frame (map, breadcrumb, links) and the data panels follow the URL."""
    _register_sync(app)
    _register_frame(app)
    _register_data(app)
    drill_actions.register(app)


def frame_of(pathname, search, mode="risk") -> tuple:
    view, err = _view(pathname, search)
    lang = view.lang if view else i18n.lang_of(dict(_pairs(search)).get("lang"))
    t = i18n.texts(lang)
    geo_city = context.city()
    geo = geo_city.geography
    if err is not None:
        home = "/" + ("?lang=en" if lang == "en" else "")
        mine = geo.area(auth.scope() or geo.district.code)
        none = [html.Span(dcc.Link(mine.name, href=home), className="dr-crumb")]
        hidden = {"display": "none"}  # a URL that names no view shows no data at all
        return (none, problem(err, t, home), {"display": "block"}, None, None, no_update, no_update, None, "",
                "#", "", "/compare", _switch(pathname, search, lang), hidden, hidden, [], [])
    kids, total = drill.children(view)
    data = map_data(geo, view.area.code, kids, t)
    outline = {"type": "FeatureCollection", "features": list(_features(geo, (view.area.code,)))}
    hideout = {"mode": mode or "risk", "levels": {k["code"]: k["risk_level"] for k in kids}, "colors": LEVEL_COLORS,
               "counts": {k["code"]: k["cases"] for k in kids}, "max": max([k["cases"] for k in kids] or [0]),
               "leaf": not kids}
    n = total if total is not None else drill.case_count(view)
    compare = "/compare?" + urlencode({"a": view.area.code, **view.params, **({"lang": "en"} if lang == "en" else {})})
    return (crumbs(view, t), None, {"display": "none"}, data, outline, hideout,
            {"bounds": map_bounds(geo, view.area.code), "transition": "flyToBounds"}, child_list(kids, t),
            period_text(view, t), drill.export_url(view), t["dr_count"].format(n=f"{n:,}"), compare,
            _switch(pathname, search, lang), {}, {}, pin_markers(drill.pins(view), t, {g: x.color for g, x in geo_city.grades.items()}) if not kids else [],
            area_labels(geo, kids))


def _pairs(search):
    return parse_qsl((search or "").lstrip("?"))


def _switch(pathname, search, lang) -> str:
    q = [(k, v) for k, v in _pairs(search) if k != "lang"]
    if lang == "zh":
        q.append(("lang", "en"))
    return (pathname or "/") + ("?" + urlencode(q) if q else "")


def figures_of(pathname, search) -> tuple:
    view, err = _view(pathname, search)
    if err is not None:
        return None, None, None, None
    t = i18n.texts(view.lang)
    f = drill.figures(view)
    link = lambda r: view.url(category=r["code"])  # noqa: E731 - the 大类 bars narrow the view to that 大类
    return (kpi_tiles(f["kpis"], t, view.lang), trend(f["daily"], t), bars(f["breakdowns"]["groups"], link=link),
            bars(f["breakdowns"]["sources"]))


def lists_of(pathname, search) -> tuple:
    view, err = _view(pathname, search)
    if err is not None:
        return None, None, None, None
    t = i18n.texts(view.lang)
    now = datetime.now(UTC)
    late, hot, sensors, depts = drill.side_by_side(lambda: drill.overdue(view, now), lambda: drill.hotspots(view),
                                                   lambda: drill.sensors(view), lambda: drill.departments(view, now))
    return overdue_list(late, now, t), hotspot_list(hot, t), sensor_list(sensors, t), dept_list(depts, t)


def rows_of(request, pathname, search) -> dict[str, Any]:
    view, err = _view(pathname, search)
    if err is not None or not request:
        return {"rowData": [], "rowCount": 0}
    start, end = int(request.get("startRow") or 0), int(request.get("endRow") or PAGE_SIZE)
    try:
        rows, last = drill.table_page(view, start, end, request.get("sortModel") or [])
    except ValueError as exc:
        log.warning("drill table: %s", exc)
        return {"rowData": [], "rowCount": 0}
    t_lang = view.lang
    grades = _grade_names(t_lang)
    for r in rows:
        r["link"] = f"[{r['id']}](/case/{r['id']})"
        r["reported_local"] = _stamp(r.get("reported_at"))
        r["due_local"] = _stamp(r.get("due_at"))
        r["grade_name"] = grades.get(r["grade"], str(r["grade"]))
        r["source_name"] = i18n.source_label(r["source"], t_lang)
        status = Status._value2member_map_.get(r["status"])
        r["status_name"] = i18n.pick(STATUS_LABELS[status], t_lang) if status in STATUS_LABELS else r["status"]
        for c in ("reported_at", "due_at", "resolved_at"):
            r[c] = r[c].astimezone(UTC).isoformat() if r.get(c) else None
    out: dict[str, Any] = {"rowData": rows}
    if last is not None:
        out["rowCount"] = last
    return out


def _stamp(v: datetime | None) -> str:
    return "" if v is None else v.astimezone(CITY_TZ).strftime("%Y-%m-%d %H:%M")


def _grade_names(lang: str) -> dict[int, str]:
    return {g.level: i18n.pick((g.name, g.en), lang) for g in context.city().grades.values()}


def title(lang: str | None = None, district_name: str | None = None) -> str:
    return f"{district_name or context.city().geography.district.name} · {i18n.texts(lang)['dr_title']}"
