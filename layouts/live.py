"""The live overview page (实时运行概览): component trees only, filled by dashboard/callbacks.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dash import dcc, html

REFRESH_MS = 2000


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
