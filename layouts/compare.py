"""Compare (``/compare``): two areas over the same period, or one area over two periods, side by side.

    /compare?a=CODE&b=CODE[&range=…|&since=…&until=…][&category=…&grade=…&source=…&status=…&dept=…]
    /compare?a=CODE[&range=…|&since=…&until=…]&since_b=…&until_b=…   (no b, no since_b: the period just before)

The views are read by the drill-down's rules (dashboard/drill.py), so a bad area, date or filter gets the same
message; the figures come from the same functions. Drawn whole on the server; the form writes a new URL.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from dash import Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from core.kpis import DEFINITIONS
from core.records import CITY_TZ
from dashboard import auth, context, drill, i18n
from layouts import components as page

PARAMS = ("a", "b", "since_b", "until_b", *(p for p in drill.PAGE_PARAMS))
ROWS = ("cases_total", "resolved", "resolution_rate", "on_time_rate", "overdue_open", "onsite_rate",
        "grassroots_rate", "satisfaction", "rating_mean", "handling_median_s", "moment_report_to_dispatch_s",
        "moment_dispatch_to_resolve_s")


class ID:
    url = "cmp-url"
    a = "cmp-a"
    b = "cmp-b"
    mode = "cmp-mode"
    go = "cmp-go"
    query = "cmp-query"


def views(query: dict[str, str]) -> tuple[drill.View, drill.View, str]:
    """(view A, view B, "areas" or "periods") from the query; drill.ViewError if it names no comparison."""
    for name in query:
        if name not in PARAMS:
            raise drill.ViewError(f"unknown parameter {name[:40]!r}; compare takes: {', '.join(PARAMS)}", name,
                                  query[name])
    geo = context.city().geography
    a = query.get("a") or auth.scope() or geo.district.code
    shared = {k: v for k, v in query.items() if k in drill.PAGE_PARAMS}
    search = "?" + urlencode(shared)
    view_a = drill.parse(f"{drill.AREA_PREFIX}{a}", search)
    if "b" in query:
        if "since_b" in query or "until_b" in query:
            raise drill.ViewError("since_b: compare two areas or two periods, not both; leave out b or since_b",
                                  "since_b", query.get("since_b", ""))
        return view_a, drill.parse(f"{drill.AREA_PREFIX}{query['b']}", search), "areas"
    if "since_b" in query or "until_b" in query:
        period = {k: v for k, v in shared.items() if k not in ("range", "since", "until")}
        period.update(since=query.get("since_b", ""), until=query.get("until_b", ""))
        try:
            view_b = drill.parse(f"{drill.AREA_PREFIX}{a}", "?" + urlencode(period))
        except drill.ViewError as exc:  # name the parameter as the user gave it
            raise drill.ViewError(exc.message.replace(exc.parameter, exc.parameter + "_b", 1),
                                  exc.parameter + "_b", exc.value) from None
    else:
        p0, p1 = view_a.previous
        view_b = dataclasses.replace(view_a, since=p0, until=p1,
                                     where=dataclasses.replace(view_a.where, since=p0, until=p1))
    return view_a, view_b, "periods"


def _label(v: drill.View, mode: str) -> str:
    a = v.since.astimezone(CITY_TZ)
    b = v.until.astimezone(CITY_TZ) - timedelta(seconds=1)
    period = f"{a:%Y-%m-%d} – {b:%Y-%m-%d}"
    return v.area.name if mode == "areas" else period


def _figures(v: drill.View) -> dict[str, Any]:
    return {"kpis": drill.kpis(v)["kpis"], "daily": drill.daily(v), "breakdowns": drill.breakdowns(v)}


def _table(fa: dict, fb: dict, la: str, lb: str, t: dict[str, str], lang: str) -> html.Table:
    head = html.Tr([html.Th(t["cmp_figure"]), html.Th(la), html.Th(lb), html.Th(t["cmp_difference"])])
    body = []
    for key in ROWS:
        d = DEFINITIONS[key]
        va, vb = fa["kpis"].get(key), fb["kpis"].get(key)
        delta = None if va is None or vb is None else vb - va
        body.append(html.Tr([html.Td(d["zh"] if lang == "zh" else d["en"], title=d["definition"]),
                             html.Td(page.fmt(key, va, t), className="cmp-a"),
                             html.Td(page.fmt(key, vb, t), className="cmp-b"),
                             html.Td(page.change(key, delta, t))], **{"data-key": key}))
    return html.Table([html.Thead(head), html.Tbody(body)], className="dr-list dr-grid-table cmp-table")


def layout(settings, city, query: dict[str, str]) -> html.Div:
    lang = i18n.lang_of(query.get("lang"))
    t = i18n.texts(lang)
    geo = city.geography
    options = page.area_options(geo)
    try:
        va, vb, mode = views(query)
        error = None
    except drill.ViewError as exc:
        va = vb = None
        mode = "periods" if "b" not in query else "areas"
        error = exc
    form = html.Div([
        dcc.RadioItems([{"label": t["cmp_two_areas"], "value": "areas"},
                        {"label": t["cmp_two_periods"], "value": "periods"}], mode, id=ID.mode, inline=True,
                       className="dr-range"),
        html.Div([html.Label("A"), dcc.Dropdown(options, va.area.code if va else query.get("a"), id=ID.a,
                                                clearable=False, className="dr-dd dr-dd-wide")], className="dr-filter"),
        html.Div([html.Label("B"), dcc.Dropdown(options, vb.area.code if vb and mode == "areas" else query.get("b"),
                                                id=ID.b, className="dr-dd dr-dd-wide")], className="dr-filter"),
        html.Button(t["cmp_go"], id=ID.go, n_clicks=0, className="dr-button"),
        html.Span(t["cmp_hint"], className="dr-note"),
    ], className="dr-filters")
    header = html.Header([
        html.H1(f"{geo.district.name} · {t['cmp_title']}"),
        html.Nav([dcc.Link(t["cmp_back"], href=va.url() if va else "/", className="dr-link")], className="dr-nav"),
    ], className="dr-header")
    parts: list = [dcc.Location(id=ID.url, refresh="callback-nav"), dcc.Store(id=ID.query, data=query), header, form]
    if error is not None:
        parts.append(html.Div(page.problem(error, t, "/compare" + ("?lang=en" if lang == "en" else "")),
                              className="dr-message", id="cmp-message"))
        return html.Div(parts, className="dr cmp", lang="zh-CN" if lang == "zh" else "en")
    fa, fb = _figures(va), _figures(vb)
    la, lb = _label(va, mode), _label(vb, mode)
    if mode == "periods":
        parts.append(html.Div(t["cmp_periods_of"].format(area=va.area.name), className="dr-crumbs"))
    else:
        parts.append(html.Div(t["cmp_areas_in"].format(period=_label(va, "periods")), className="dr-crumbs"))
    parts.append(html.Div([
        html.Section([html.H3(t["cmp_kpis"]), _table(fa, fb, la, lb, t, lang)], className="dr-panel"),
        html.Section([html.H3(t["dr_trend"]), html.Div([
            html.Div([html.Div(la, className="cmp-label"), page.trend(fa["daily"], t)], className="cmp-side"),
            html.Div([html.Div(lb, className="cmp-label"), page.trend(fb["daily"], t)], className="cmp-side"),
        ], className="cmp-pair")], className="dr-panel"),
    ], className="cmp-grid"))
    parts.append(html.Div([
        html.Section([html.H3(t["dr_groups"]), html.Div([
            html.Div([html.Div(la, className="cmp-label"), page.bars(fa["breakdowns"]["groups"])], className="cmp-side"),
            html.Div([html.Div(lb, className="cmp-label"), page.bars(fb["breakdowns"]["groups"])], className="cmp-side"),
        ], className="cmp-pair")], className="dr-panel"),
        html.Section([html.H3(t["dr_sources"]), html.Div([
            html.Div([html.Div(la, className="cmp-label"), page.bars(fa["breakdowns"]["sources"])],
                     className="cmp-side"),
            html.Div([html.Div(lb, className="cmp-label"), page.bars(fb["breakdowns"]["sources"])],
                     className="cmp-side"),
        ], className="cmp-pair")], className="dr-panel"),
    ], className="cmp-grid"))
    return html.Div(parts, className="dr cmp", lang="zh-CN" if lang == "zh" else "en")


def register(app) -> None:
    @app.callback(Output(ID.url, "search"), Input(ID.go, "n_clicks"), State(ID.mode, "value"), State(ID.a, "value"),
                  State(ID.b, "value"), State(ID.query, "data"), prevent_initial_call=True)
    def go(_n, mode, a, b, query):
        """The form's choice as a new URL (the router draws the page again)."""
        if not isinstance(a, str) or not isinstance(query or {}, dict) or not isinstance(b or "", str):
            raise PreventUpdate  # not what the form sends: nothing to do (the page checks what the URL says)
        q = {k: v for k, v in (query or {}).items() if k not in ("a", "b", "since_b", "until_b")}
        q["a"] = a
        if mode == "areas":
            if not b:
                raise PreventUpdate
            q["b"] = b
        return "?" + urlencode(q)


def skeleton() -> html.Div:
    """The components the callbacks use, for the app's validation layout (nothing is read)."""
    return html.Div([dcc.Location(id=ID.url), dcc.Store(id=ID.query), dcc.RadioItems([], id=ID.mode),
                     dcc.Dropdown([], id=ID.a), dcc.Dropdown([], id=ID.b), html.Button(id=ID.go)])


def title(lang: str | None = None) -> str:
    return i18n.texts(lang)["cmp_title"]

