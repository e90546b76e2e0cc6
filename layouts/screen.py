"""The big screen (/screen): the dispatch center's 实时风险预警图 wall, drawn on a 1920×1080 canvas.

The map geometry comes with the page; a poll then fetches small snapshots (``snapshot``) and assets/screen.js draws
them. Query parameters (``layout=wall``, ``rotate``, ``area``, ``lang``) and the poll's design: README, "The big screen".
"""

from __future__ import annotations

import hashlib
import logging
from functools import lru_cache
from typing import Any

import dash_leaflet as dl
import orjson
from dash import Input, Output, State, clientside_callback, dcc, html, no_update
from dash.exceptions import PreventUpdate

from core.risk import RISK_LEVELS, css_colors
from dashboard import auth, context, i18n
from dashboard import screen as wall
from layouts.components import map_bounds

log = logging.getLogger(__name__)

POLL_MS = 500  # the poll answers in a few ms and sends nothing when nothing changed
TICK_MS = 1000
STALE_AFTER_MS = 8000  # no fresh snapshot for this long: the stale banner
ROTATE_MIN, ROTATE_MAX = 10, 3600
PARAMS = ("layout", "rotate", "area", "lang")


class ID:
    canvas = "scr-canvas"
    date = "scr-date"
    feeds = "scr-feeds"
    clock = "scr-clock"
    updated = "scr-updated"
    kpis = "scr-kpis"
    cats = "scr-cats"
    sources = "scr-sources"
    trend = "scr-trend"
    map = "scr-map"
    grids = "scr-grids"
    streets = "scr-streets"
    markers = "scr-markers"
    ticker = "scr-ticker"
    sla = "scr-sla"
    depts = "scr-depts"
    depts_note = "scr-depts-note"
    stale = "scr-stale"
    notice = "scr-notice"
    fast = "scr-fast"
    slow = "scr-slow"
    slow_version = "scr-slow-version"
    fast_version = "scr-fast-version"
    heartbeat = "scr-heartbeat"
    seen = "scr-seen"
    config = "scr-config"
    poll = "scr-poll"
    tick = "scr-tick"
    area_label = "scr-area-label"
    drill = "scr-drill"


def parse_params(args: dict[str, Any], geo) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The screen's options from the query parameters, and the problems (name, value) to note in the footer."""
    opts: dict[str, Any] = {"layout": "screen", "rotate": 0, "area": None, "lang": i18n.DEFAULT_LANG}
    problems: list[tuple[str, str]] = []
    for name, raw in args.items():
        value = raw if isinstance(raw, str) else str(raw)
        shown = value[:40]
        if name not in PARAMS:
            problems.append((name, shown))
        elif name == "layout":
            if value in ("wall", "screen"):
                opts["layout"] = value
            else:
                problems.append((name, shown))
        elif name == "rotate":
            if value.isascii() and value.isdigit() and ROTATE_MIN <= int(value) <= ROTATE_MAX:
                opts["rotate"] = int(value)
            else:
                problems.append((name, shown))
        elif name == "area":
            area = geo.get(value) if len(value) <= 32 else None
            if area is not None and area.level in ("district", "street"):
                opts["area"] = area.code if area.level == "street" else None
            else:
                problems.append((name, shown))
        elif name == "lang":
            if value in i18n.LANGS:
                opts["lang"] = value
            else:
                problems.append((name, shown))
    return opts, problems


@lru_cache(maxsize=32)
def _geojson(geo, level: str) -> dict[str, Any]:
    """The areas of one level as GeoJSON for the map, simplified; worked out once per city, not per page load."""
    from shapely.geometry import mapping

    feats = []
    for a in geo.areas(level):
        g = geo.geometry(a.code).simplify(0.00002, preserve_topology=True)
        feats.append({"type": "Feature", "properties": {"code": a.code, "name": a.name},
                      "geometry": mapping(g)})
    return {"type": "FeatureCollection", "features": feats}


def _panel(title: str, body, cls: str = "", note: Any = None, body_id: str | None = None) -> html.Div:
    head = [html.H2(title)]
    if note is not None:
        head.append(note)
    return html.Div([html.Div(head, className="scr-ph"),
                     html.Div(body, id=body_id, className="scr-pb") if body_id else body],
                    className=f"scr-panel {cls}".strip())


def _config(opts: dict[str, Any], t: dict[str, str], city) -> dict[str, Any]:
    """What the browser's script needs (travels as JSON with the page): options, areas, texts and colours."""
    geo = city.geography
    streets = [{"code": a.code, "name": a.name, "bounds": map_bounds(geo, a.code)} for a in geo.areas("street")]
    return {
        "lang": opts["lang"], "layout": opts["layout"], "rotate": opts["rotate"], "area": opts["area"],
        "district": {"code": geo.district.code, "name": geo.district.name, "bounds": map_bounds(geo, None)},
        "streets": streets, "stale_after_ms": STALE_AFTER_MS, "texts": {k: v for k, v in t.items() if k.startswith("scr_")},
        "sources": {code: i18n.source_label(code, opts["lang"]) for code in i18n.SOURCES},
        "level_colors": {str(lv): r.color for lv, r in RISK_LEVELS.items()},  # text keys: it travels as JSON
        "grade_colors": {str(g): x.color for g, x in city.grades.items()},
    }


def _header(title: str) -> html.Header:
    return html.Header([
        html.Div([html.Div(id=ID.date, className="scr-date"), html.Div(id=ID.feeds, className="scr-feeds")],
                 className="scr-hl"),
        html.H1(title, className="scr-title"),
        html.Div([html.Div("--:--:--", id=ID.clock, className="scr-clock"),
                  html.Div(id=ID.updated, className="scr-updated")], className="scr-hr"),
    ], className="scr-hdr")


def _left(t: dict[str, str]) -> html.Div:
    """Today's KPIs, the category and source bars and the hourly trend."""
    return html.Div([
        _panel(t["scr_today"], html.Div(t["scr_waiting"], className="scr-wait"), "scr-kpi-panel",
               html.Span(t["scr_vs"], className="scr-note"), ID.kpis),
        _panel(t["scr_categories"], None, "scr-bars-panel", body_id=ID.cats),
        _panel(t["scr_sources"], None, "scr-bars-panel", body_id=ID.sources),
        _panel(t["scr_trend"], None, "scr-trend-panel", body_id=ID.trend),
    ], className="scr-col scr-left")


def _center(settings, geo, t: dict[str, str], level_colors: dict[str, str], start: list[list[float]]) -> html.Div:
    """The risk map (an optional tile layer beneath the grids and streets) with its legend, and the ticker."""
    layers = []
    if settings.map_tile_url:
        layers.append(dl.TileLayer(url=settings.map_tile_url, attribution=""))
    layers += [
        dl.GeoJSON(id=ID.grids, data=_geojson(geo, "grid"), hideout={"levels": {}, "colors": level_colors},
                   style={"variable": "gridwatch.screen.gridStyle"}, interactive=False),
        dl.GeoJSON(id=ID.streets, data=_geojson(geo, "street"),
                   style={"variable": "gridwatch.screen.streetStyle"}, interactive=False),
        dl.LayerGroup(id=ID.markers),
    ]
    level_names = t["scr_levels"].split(",")
    legend = html.Div([html.Span([html.I(className=f"scr-sw scr-l{lv}"), level_names[lv - 1]])
                       for lv in (4, 3, 2, 1)], className="scr-legend")
    return html.Div([
        html.Div([
            dl.MapContainer(layers, id=ID.map, bounds=start, zoomControl=False, attributionControl=False,
                            dragging=False, scrollWheelZoom=False, doubleClickZoom=False, keyboard=False,
                            touchZoom=False, boxZoom=False, zoomSnap=0.1, trackViewport=False,
                            className="scr-leaflet",
                            style={"width": "100%", "height": "100%"}),
            html.Div(id=ID.area_label, className="scr-area-label"),
            html.Div(id=ID.drill, className="scr-drill", style={"display": "none"}),
            legend,
        ], className="scr-panel scr-map-panel"),
        _panel(t["scr_ticker"], None, "scr-ticker-panel", body_id=ID.ticker),
    ], className="scr-col scr-center")


def _right(t: dict[str, str]) -> html.Div:
    """The SLA board and the department board."""
    return html.Div([
        _panel(t["scr_sla"], None, "scr-sla-panel", body_id=ID.sla),
        html.Div([html.Div(html.H2(t["scr_depts"]), className="scr-ph"),
                  html.Div(id=ID.depts, className="scr-pb"),
                  html.Div(id=ID.depts_note, className="scr-note scr-foot-note")],
                 className="scr-panel scr-depts-panel"),
    ], className="scr-col scr-right")


def layout(settings, city, args: dict[str, Any]) -> html.Div:
    geo = city.geography
    opts, problems = parse_params(args, geo)
    t = i18n.texts(opts["lang"])
    notices = []
    for name, value in problems:
        key = "scr_unknown_area" if name == "area" else "scr_bad_param"
        notices.append(t[key].format(name=name, value=value))
    config = _config(opts, t, city)
    start = map_bounds(geo, opts["area"])
    title = settings.screen_title or t["scr_title"]
    return html.Div([
        html.Div([
            _header(title),
            html.Div([_left(t), _center(settings, geo, t, config["level_colors"], start), _right(t)],
                     className="scr-grid"),
            html.Div(id=ID.stale, className="scr-stale", style={"display": "none"}),
            html.Footer(" · ".join(notices), id=ID.notice, className="scr-notice"),
        ], id=ID.canvas, className=f"scr-canvas scr-{opts['layout']}"),
        dcc.Store(id=ID.config, data=config),
        dcc.Store(id=ID.fast),
        dcc.Store(id=ID.slow),
        dcc.Store(id=ID.slow_version),
        dcc.Store(id=ID.fast_version),
        dcc.Store(id=ID.heartbeat),
        dcc.Store(id=ID.seen),
        dcc.Interval(id=ID.poll, interval=POLL_MS),
        dcc.Interval(id=ID.tick, interval=TICK_MS),
    ], className="scr", lang="zh-CN" if opts["lang"] == "zh" else "en",
        style=css_colors({g: x.color for g, x in city.grades.items()}))


def snapshot(fast_version: Any, slow_version: Any) -> tuple[Any, Any, Any, Any, int]:
    """The poll's answer: (fast part, slow part, slow version, fast version, heartbeat).

    A part the browser already has is sent as no_update; the heartbeat (server time, ms) always comes, so the
    browser can tell a quiet city from a dead server. PreventUpdate if the stores fail: the wall keeps its data.
    """
    settings = context.settings()
    try:
        fast, slow = wall.parts(settings)
    except Exception:  # noqa: BLE001 - Redis or SQL away: the wall keeps its last data and shows since when
        log.warning("screen: no snapshot (stores unreachable)", exc_info=True)
        raise PreventUpdate from None
    beat = fast["as_of"]
    digest = hashlib.blake2b(orjson.dumps({k: v for k, v in fast.items() if k != "as_of"}), digest_size=8).hexdigest()
    fast_out = no_update if digest == fast_version else fast
    digest_out = no_update if digest == fast_version else digest
    if slow is None or slow.get("as_of") == slow_version:
        return fast_out, no_update, no_update, digest_out, beat
    return fast_out, slow, slow["as_of"], digest_out, beat


def register(app) -> None:
    @app.callback(Output(ID.fast, "data"), Output(ID.slow, "data"), Output(ID.slow_version, "data"),
                  Output(ID.fast_version, "data"), Output(ID.heartbeat, "data"),
                  Input(ID.poll, "n_intervals"), State(ID.fast_version, "data"), State(ID.slow_version, "data"))
    def _poll(_n, fast_version, slow_version):
        if not auth.whole_district():  # the wall is the district's: nothing for a narrower jurisdiction
            raise PreventUpdate
        return snapshot(fast_version, slow_version)

    clientside_callback(  # when the last answer came (browser clock): the stale banner counts from here
        "function(beat) { return beat ? Date.now() : window.dash_clientside.no_update; }",
        Output(ID.seen, "data"), Input(ID.heartbeat, "data"),
    )

    clientside_callback(
        "function(fast, cfg) { return window.gridwatch.screen.onFast(fast, cfg); }",
        Output(ID.grids, "hideout"), Output(ID.markers, "children"), Output(ID.ticker, "children"),
        Output(ID.feeds, "children"),
        Input(ID.fast, "data"), State(ID.config, "data"),
    )
    clientside_callback(  # 演练: while a drill replay runs (its cases are left out of every figure on the wall)
        "function(fast, cfg) { return window.gridwatch.screen.onDrill(fast, cfg); }",
        Output(ID.drill, "children"), Output(ID.drill, "style"), Input(ID.fast, "data"), State(ID.config, "data"),
    )
    clientside_callback(
        "function(slow, fast, cfg) { return window.gridwatch.screen.onSlow(slow, fast, cfg); }",
        Output(ID.kpis, "children"), Output(ID.cats, "children"), Output(ID.sources, "children"),
        Output(ID.trend, "children"), Output(ID.depts, "children"), Output(ID.depts_note, "children"),
        Input(ID.slow, "data"), Input(ID.fast, "data"), State(ID.config, "data"),
    )
    clientside_callback(
        "function(n, fast, seen, beat, cfg) { return window.gridwatch.screen.onTick(n, fast, seen, beat, cfg); }",
        Output(ID.clock, "children"), Output(ID.date, "children"), Output(ID.updated, "children"),
        Output(ID.sla, "children"), Output(ID.stale, "children"), Output(ID.stale, "style"),
        Output(ID.map, "viewport"), Output(ID.area_label, "children"), Output(ID.map, "invalidateSize"),
        Input(ID.tick, "n_intervals"), State(ID.fast, "data"), State(ID.seen, "data"), State(ID.heartbeat, "data"),
        State(ID.config, "data"),
    )


def title(lang: str = i18n.DEFAULT_LANG) -> str:
    return i18n.texts(lang)["scr_title"]
