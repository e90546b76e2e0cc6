"""The live overview page (实时运行概览): its layout and its callbacks (the language switch and the 2-second refresh).

The refresh reads the live state in Redis only (no SQL): O(streets) hash reads, stream stats and the dead-letter
counter."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from dash import Dash, Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from core.records import CITY_TZ
from dashboard import auth, context, i18n, overview

REFRESH_MS = 2000


log = logging.getLogger(__name__)


class ID:
    """Component ids of this page (prefix ``live-``), shared with the callbacks."""

    lang = "live-lang"
    lang_button = "live-lang-button"
    interval = "live-interval"
    title = "live-title"
    clock = "live-clock"
    tiles = "live-tiles"
    streets_heading = "live-streets-heading"
    streets = "live-streets"
    footer = "live-footer"

    @staticmethod
    def tile_label(key: str) -> str:
        return f"live-tile-{key}-label"

    @staticmethod
    def tile_value(key: str) -> str:
        return f"live-tile-{key}-value"


TILES = ("cases_total", "cases_open", "overdue_open", "alarms", "dead_letters")
TILE_ACCENTS = {"overdue_open": "warn", "alarms": "alert", "dead_letters": "muted"}


@dataclass(frozen=True)
class GradeColumn:
    level: int
    label: str
    color: str


@dataclass(frozen=True)
class StreetRow:
    name: str
    open: int
    by_grade: dict[int, int]
    overdue: int
    alarms: int
    total: int
    kind: str = "street"  # street | unlocated | total


def _tile(key: str, label: str) -> html.Div:
    return html.Div(
        [html.Div(label, id=ID.tile_label(key), className="tile-label"),
         html.Div("—", id=ID.tile_value(key), className="tile-value")],
        className=f"tile tile-{TILE_ACCENTS.get(key, 'main')}",
    )


def layout(t: dict[str, str], district_name: str) -> html.Div:
    """The page skeleton with labels in the default language; values arrive from the refresh callback."""
    return html.Div(
        [
            dcc.Store(id=ID.lang, storage_type="local"),
            dcc.Interval(id=ID.interval, interval=REFRESH_MS, n_intervals=0),
            html.Header(
                [
                    html.H1(title(t, district_name), id=ID.title),
                    html.Div(
                        [html.Span("", id=ID.clock, className="clock"),
                         html.Button(t["switch"], id=ID.lang_button, className="lang-button", n_clicks=0)],
                        className="header-right",
                    ),
                ],
                className="live-header",
            ),
            html.Section([_tile(k, t[k]) for k in TILES], id=ID.tiles, className="tiles"),
            html.Section(
                [html.H2(t["streets_heading"], id=ID.streets_heading), html.Div(id=ID.streets)],
                className="panel",
            ),
            html.Footer(id=ID.footer, className="live-footer"),
        ],
        className="live-page",
    )


def title(t: dict[str, str], district_name: str) -> str:
    return f"{district_name} · {t['page_title']}"


def _fmt(n: int) -> str:
    return f"{n:,}"


def street_table(rows: Sequence[StreetRow], grades: Sequence[GradeColumn], t: dict[str, str]) -> html.Table:
    """Streets × (open, open by grade with colour swatches, overdue, alarms, total)."""
    head = html.Tr(
        [html.Th(t["street"], className="name"), html.Th(t["open"])]
        + [html.Th([html.Span(className="swatch", style={"backgroundColor": g.color}), g.label]) for g in grades]
        + [html.Th(t["overdue"]), html.Th(t["alarms"]), html.Th(t["total"])]
    )
    body = []
    for row in rows:
        cells = [html.Td(row.name, className="name"), html.Td(_fmt(row.open), className="open")]
        for g in grades:
            n = row.by_grade.get(g.level, 0)
            cells.append(html.Td(_fmt(n), className="grade" + ("" if n else " zero"),
                                 style={"color": g.color} if n else None))
        cells += [
            html.Td(_fmt(row.overdue), className="overdue" + ("" if row.overdue else " zero")),
            html.Td(_fmt(row.alarms), className="alarms" + ("" if row.alarms else " zero")),
            html.Td(_fmt(row.total), className="total"),
        ]
        body.append(html.Tr(cells, className=f"row-{row.kind}"))
    return html.Table([html.Thead(head), html.Tbody(body)], className="street-table")


def footer(items: Sequence[tuple[str, str]], status_text: str | None = None) -> list:
    """Label/value pairs in the footer, and an optional warning."""
    out: list = [
        html.Span([html.Span(label, className="footer-label"), html.Span(value, className="footer-value")],
                  className="footer-item")
        for label, value in items
    ]
    if status_text:
        out.append(html.Span(status_text, className="footer-warning"))
    return out


# --------------------------------------------------------------------------- callbacks

def _ago(then: datetime, now: datetime, t: dict[str, str]) -> str:
    s = max(0, int((now - then).total_seconds()))
    if s < 120:
        return t["seconds_ago"].format(n=s)
    if s < 7200:
        return t["minutes_ago"].format(n=s // 60)
    return t["hours_ago"].format(n=s // 3600)


def _time(iso: str | None, tz: ZoneInfo, t: dict[str, str]) -> str:
    if not iso:
        return t["none_yet"]
    try:
        then = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return f"{then.astimezone(tz):%Y-%m-%d %H:%M:%S} ({_ago(then, datetime.now(UTC), t)})"


def _lag(info: dict) -> str:
    lag = info.get("lag")
    return "—" if lag is None else f"{lag:,}"


def refresh(lang: str) -> tuple:
    """Tile values, the street table and the footer for ``lang``, from the live state."""
    lang = i18n.lang_of(lang)
    t = i18n.texts(lang)
    city = context.city()
    tz = CITY_TZ
    now = datetime.now(tz)
    grades = [GradeColumn(g.level, i18n.pick((g.name, g.en), lang), g.color) for g in city.grades.values()]
    district = city.geography.district
    streets = city.geography.children(district.code)
    try:
        now_data = overview.snapshot([district.code, *(s.code for s in streets)])
        counts, dead, stats, last = now_data["counts"], now_data["dead"], now_data["stats"], now_data["last"]
    except Exception as exc:  # noqa: BLE001 - the wall must keep running; say what is missing
        log.warning("live page refresh failed: %s: %s", type(exc).__name__, exc)
        foot = footer([(t["updated"], f"{now:%H:%M:%S}")], f"{t['unavailable']} ({type(exc).__name__})")
        return (*(["—"] * len(TILES)), street_table([], grades, t), foot, f"{now:%Y-%m-%d %H:%M:%S}")

    d = counts[district.code]
    values = {
        "cases_total": d["total"], "cases_open": d["open"], "overdue_open": d["overdue"],
        "alarms": d["alarms"], "dead_letters": dead["count"],
    }
    rows = [
        StreetRow(s.name, counts[s.code]["open"], counts[s.code]["by_grade"], counts[s.code]["overdue"],
                  counts[s.code]["alarms"], counts[s.code]["total"])
        for s in streets
    ]
    # The district counts unlocated cases too; show them on their own line so the rows add up.
    rest = {k: d[k] - sum(counts[s.code][k] for s in streets) for k in ("open", "overdue", "alarms", "total")}
    rest_grades = {g: d["by_grade"][g] - sum(counts[s.code]["by_grade"][g] for s in streets) for g in d["by_grade"]}
    if any(rest.values()):
        rows.append(StreetRow(t["unlocated"], rest["open"], rest_grades, rest["overdue"], rest["alarms"],
                              rest["total"], kind="unlocated"))
    rows.append(StreetRow(t["district_total"], d["open"], d["by_grade"], d["overdue"], d["alarms"], d["total"],
                          kind="total"))
    cs, ss = stats.get("cases", {}), stats.get("sensors", {})
    foot = footer([
        (t["last_event"], _time(last, tz, t)),
        (t["stream_lag"], f"{t['stream_cases']} {_lag(cs)} · {t['stream_sensors']} {_lag(ss)}"),
        (t["pending"], f"{(cs.get('pending') or 0) + (ss.get('pending') or 0):,}"),
        (t["updated"], f"{now:%H:%M:%S}"),
    ])
    return (*(f"{values[k]:,}" for k in TILES), street_table(rows, grades, t), foot,
            f"{now:%Y-%m-%d %H:%M:%S}")


def register(app: Dash) -> None:
    """Attach the page's callbacks to ``app`` (per app, so several apps can live in one process)."""

    @app.callback(
        Output(ID.lang, "data"),
        Input(ID.lang_button, "n_clicks"),
        State(ID.lang, "data"),
        prevent_initial_call=True,
    )
    def toggle_language(_clicks, lang):
        return "en" if i18n.lang_of(lang) == "zh" else "zh"

    @app.callback(
        Output(ID.title, "children"),
        Output(ID.lang_button, "children"),
        Output(ID.streets_heading, "children"),
        *(Output(ID.tile_label(k), "children") for k in TILES),
        Input(ID.lang, "data"),
    )
    def labels(lang):
        t = i18n.texts(lang)
        return (title(t, context.city().geography.district.name), t["switch"], t["streets_heading"],
                *(t[k] for k in TILES))

    @app.callback(
        *(Output(ID.tile_value(k), "children") for k in TILES),
        Output(ID.streets, "children"),
        Output(ID.footer, "children"),
        Output(ID.clock, "children"),
        Input(ID.interval, "n_intervals"),
        Input(ID.lang, "data"),
    )
    def tick(_n, lang):
        if not auth.whole_district():  # the stream overview is the district's
            raise PreventUpdate
        return refresh(lang)
