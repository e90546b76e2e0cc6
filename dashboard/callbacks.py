"""Callbacks of the live overview page: the language switch and the 2-second refresh.

The refresh reads the live state in Redis only (no SQL): O(streets) hash reads, stream stats and
the dead-letter counter.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from dash import Dash, Input, Output, State
from dash.exceptions import PreventUpdate

from core.records import CITY_TZ
from dashboard import auth, context, i18n, live
from layouts import live as page
from layouts.live import ID, TILES, GradeColumn, StreetRow

log = logging.getLogger(__name__)


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
    settings = context.settings()
    city = context.city()
    tz = CITY_TZ
    now = datetime.now(tz)
    grades = [GradeColumn(g.level, i18n.pick((g.name, g.en), lang), g.color) for g in city.grades.values()]
    district = city.geography.district
    streets = city.geography.children(district.code)
    try:
        r = context.redis_client()
        counts = live.area_counts(r, settings, [district.code, *(s.code for s in streets)])
        dead = live.dead_letters(r, settings)
        stats = live.streams(r, settings)
        last = live.last_event_at(r, settings)
    except Exception as exc:  # noqa: BLE001 - the wall must keep running; say what is missing
        log.warning("live page refresh failed: %s: %s", type(exc).__name__, exc)
        footer = page.footer([(t["updated"], f"{now:%H:%M:%S}")], f"{t['unavailable']} ({type(exc).__name__})")
        return (*(["—"] * len(TILES)), page.street_table([], grades, t), footer, f"{now:%Y-%m-%d %H:%M:%S}")

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
    footer = page.footer([
        (t["last_event"], _time(last, tz, t)),
        (t["stream_lag"], f"{t['stream_cases']} {_lag(cs)} · {t['stream_sensors']} {_lag(ss)}"),
        (t["pending"], f"{(cs.get('pending') or 0) + (ss.get('pending') or 0):,}"),
        (t["updated"], f"{now:%H:%M:%S}"),
    ])
    return (*(f"{values[k]:,}" for k in TILES), page.street_table(rows, grades, t), footer,
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
        return (page.title(t, context.city().geography.district.name), t["switch"], t["streets_heading"],
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
